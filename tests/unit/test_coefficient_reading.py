"""What one reading of a worker's stats tells the coefficient check (Deps.saw_coefficient):
nothing to do when the worker runs the spec's value, and a value that moved since
it was applied sends the check back to work. The chain step's reading (every
check) and the coefficient check's own share it."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from cocoon_operator.handlers.runtime import Deps

KEY = ("fleet", "w0")


def deps() -> Deps:
    return Deps(api=cast(Any, None), clock=lambda: dt.datetime(2026, 12, 6, tzinfo=dt.UTC))


def test_a_reading_of_the_wanted_value_marks_it_applied_for_that_pod() -> None:
    d = deps()
    assert d.saw_coefficient(KEY, "w0-abc", wanted=1500, seen=1500)
    assert d.coefficients[KEY] == ("w0-abc", 1500)


def test_a_worker_that_reports_no_coefficient_has_nothing_to_set() -> None:
    d = deps()
    assert d.saw_coefficient(KEY, "w0-abc", wanted=1500, seen=None)
    assert d.coefficients[KEY] == ("w0-abc", 1500)


def test_a_value_moved_since_it_was_applied_clears_the_mark() -> None:
    d = deps()
    d.saw_coefficient(KEY, "w0-abc", wanted=1000, seen=1000)
    assert not d.saw_coefficient(KEY, "w0-abc", wanted=1000, seen=2500)
    assert KEY not in d.coefficients
    # Applied again by the check, then read back by the chain step.
    assert d.saw_coefficient(KEY, "w0-abc", wanted=1000, seen=1000)
    assert d.coefficients[KEY] == ("w0-abc", 1000)


def test_a_spec_change_is_not_marked_applied_by_a_reading_of_the_old_value() -> None:
    d = deps()
    d.saw_coefficient(KEY, "w0-abc", wanted=1000, seen=1000)
    assert not d.saw_coefficient(KEY, "w0-abc", wanted=1700, seen=1000)
    assert KEY not in d.coefficients


def test_marks_are_per_worker() -> None:
    d = deps()
    d.saw_coefficient(KEY, "w0-abc", wanted=1000, seen=1000)
    d.saw_coefficient(("fleet", "w1"), "w1-abc", wanted=1000, seen=900)
    assert d.coefficients == {KEY: ("w0-abc", 1000)}
