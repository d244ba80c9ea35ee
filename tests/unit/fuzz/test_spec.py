"""Fuzzing the CocoonWorker spec: any JSON a user may apply is either a valid spec or
refused with errors that name the fields; the webhook's checks never crash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cocoon_operator.api.v1alpha1 import CocoonWorkerSpec
from cocoon_operator.policy.admission import address_errors

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "cocoonworker.yaml"
BASE: dict[str, Any] = next(
    d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "CocoonWorker"
)["spec"]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=80),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(paths(value, (*prefix, key)))
    return out


PATHS = paths(BASE)


@st.composite
def mutated_spec(draw: st.DrawFn) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        parent = spec
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                break
            parent = parent[key]
        else:
            if draw(st.booleans()):
                parent[path[-1]] = draw(leaves)
            else:
                parent.pop(path[-1], None)
    if draw(st.booleans()):
        spec[draw(st.text(min_size=1, max_size=10))] = draw(leaves)
    return spec


@settings(max_examples=400, deadline=None)
@given(mutated_spec())
def test_a_mutated_spec_is_valid_or_refused_naming_the_field(spec: dict[str, Any]) -> None:
    try:
        CocoonWorkerSpec.model_validate(spec)
    except ValidationError as err:
        for error in err.errors():
            assert error["loc"], error  # every refusal names where
            assert error["msg"]
    errors = address_errors(spec)
    assert all(isinstance(e, str) and e for e in errors)
