"""The coefficient on the wire and COCOON's arithmetic for it (WorkerRunner.h:173-183):
``static_cast<td::int32>(strtod(text) * 1000)``."""

from __future__ import annotations

import pytest

from cocoon_operator.api.v1alpha1 import COEFFICIENT_MAX, COEFFICIENT_MIN
from cocoon_operator.workerapi import applied_per_mille, wire_coefficient


def test_a_plain_decimal_comes_back_one_lower_for_95_of_the_spec_range() -> None:
    # Why the operator does not send f"{v / 1000:g}": 1.001 is a double just below it.
    assert applied_per_mille("1.001") == 1000
    lower = [
        v
        for v in range(COEFFICIENT_MIN, COEFFICIENT_MAX + 1)
        if applied_per_mille(f"{v / 1000:g}") != v
    ]
    assert len(lower) == 95
    assert all(applied_per_mille(f"{v / 1000:g}") == v - 1 for v in lower)


def test_what_the_operator_sends_lands_on_every_value_the_spec_allows() -> None:
    for v in range(COEFFICIENT_MIN, COEFFICIENT_MAX + 1):
        assert applied_per_mille(wire_coefficient(v)) == v, v


def test_the_wire_form_is_the_plain_decimal_where_that_lands() -> None:
    assert wire_coefficient(1500) == "1.5"
    assert wire_coefficient(1000) == "1.0"
    assert wire_coefficient(1001) == "1.0010000000000001"


@pytest.mark.parametrize("text", ["1.5x", "x", "nan", "1e400"])
def test_what_the_worker_refuses_or_cannot_hold_applies_nothing(text: str) -> None:
    assert applied_per_mille(text) is None


def test_out_of_range_values_are_not_sent() -> None:
    with pytest.raises(ValueError, match="out of range"):
        wire_coefficient(-1)
