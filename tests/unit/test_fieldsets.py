"""Parses share one copy of each fields set (api/fieldsets.py), and nothing a
caller can do to one parse changes another's: pydantic never adds to the set of
a frozen model, and ``model_copy`` copies it before it updates the copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from cocoon_operator.api import nodereport, v1alpha1
from cocoon_operator.api.fieldsets import share_fields_set
from cocoon_operator.api.v1alpha1 import CocoonWorker
from cocoon_operator.handlers.parsed import forget_worker, parse_worker
from tests.unit.helpers import node_report

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cocoonworker.yaml"
CONDITION_TYPES = ("Scheduled", "ModelReady", "VMRunning", "Attested", "Ready")


def ready_worker(name: str, uid: str) -> dict[str, Any]:
    docs = yaml.safe_load_all(EXAMPLE.read_text())
    body: dict[str, Any] = next(d for d in docs if d["kind"] == v1alpha1.KIND)
    body["metadata"] = {"namespace": "fleet", "name": name, "uid": uid, "resourceVersion": "7"}
    body["status"] = {
        "phase": "Ready",
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": "Ok",
                "message": f"{kind} for {name}",
                "lastTransitionTime": "2026-12-07T08:00:00Z",
                "observedGeneration": 1,
            }
            for kind in CONDITION_TYPES
        ],
    }
    return body


def fields_sets(model: pydantic.BaseModel) -> list[set[str]]:
    """Every model's fields set within ``model``, itself first."""
    out = [model.__pydantic_fields_set__]
    for value in model.__dict__.values():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, pydantic.BaseModel):
                out += fields_sets(item)
    return out


def test_two_workers_parses_share_their_fields_sets() -> None:
    a = parse_worker(ready_worker("a", "uid-a"))
    b = parse_worker(ready_worker("b", "uid-b"))
    try:
        assert a.status.conditions[0].message != b.status.conditions[0].message
        sets_a, sets_b = fields_sets(a), fields_sets(b)
        assert len(sets_a) == len(sets_b) > len(CONDITION_TYPES)
        # Every model its input gave; a default pydantic copied (an attestation
        # policy left out) keeps its own empty set, validated by nobody.
        assert all(x is y for x, y in zip(sets_a, sets_b, strict=True) if x)
        # Every condition named the same six fields: one set for all of them.
        assert len({id(c.__pydantic_fields_set__) for c in a.status.conditions}) == 1
    finally:
        forget_worker("uid-a")
        forget_worker("uid-b")


def test_sharing_saves_the_sets_bytes_and_keeps_what_each_model_was_given() -> None:
    body = ready_worker("a", "uid-a")
    parsed = CocoonWorker.model_validate(body)
    sets = fields_sets(parsed)
    distinct = {id(s): s for s in sets}.values()
    # Each condition's six names, once: fewer distinct sets than models.
    assert len(distinct) < len(sets)
    assert len({id(c.__pydantic_fields_set__) for c in parsed.status.conditions}) == 1
    # What each model was given is what its input named.
    first = body["status"]["conditions"][0]
    assert {
        v1alpha1.Condition.model_fields[f].alias or f
        for f in parsed.status.conditions[0].model_fields_set
    } == set(first)
    assert parsed.status.model_fields_set == {"phase", "conditions"}
    assert parsed.model_dump(exclude_unset=True, by_alias=True)["status"] == body["status"]


def test_an_unfrozen_model_keeps_its_own_set() -> None:
    class Open(pydantic.BaseModel):
        a: int = 0

        def model_post_init(self, context: Any, /) -> None:
            share_fields_set(self)

    one, two = Open(a=1), Open(a=2)
    assert one.__pydantic_fields_set__ is not two.__pydantic_fields_set__
    one.a = 3  # pydantic adds to the set of an assignable model
    assert one.model_fields_set == {"a"}


def test_a_copy_with_updates_leaves_the_shared_set_alone() -> None:
    a = CocoonWorker.model_validate(ready_worker("a", "uid-a"))
    b = CocoonWorker.model_validate(ready_worker("b", "uid-b"))
    shared = a.status.__pydantic_fields_set__
    assert shared is b.status.__pydantic_fields_set__
    assert "node" not in shared

    moved = a.status.model_copy(update={"node": "gpu-1"})

    assert "node" in moved.model_fields_set
    assert "node" not in b.status.model_fields_set
    assert "node" not in b.status.model_dump(exclude_unset=True)


def test_a_frozen_model_refuses_assignment_so_pydantic_never_adds_to_the_set() -> None:
    parsed = CocoonWorker.model_validate(ready_worker("a", "uid-a"))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        parsed.status.node = "gpu-1"  # type: ignore[misc]
    assert "node" not in parsed.status.model_fields_set


@pytest.mark.parametrize(
    "module", [v1alpha1, nodereport], ids=lambda m: m.__name__.rsplit(".", 1)[-1]
)
def test_every_model_kept_in_memory_is_frozen(module: Any) -> None:
    models = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, pydantic.BaseModel)
        and value.__module__ == module.__name__
    ]
    assert len(models) > 5
    assert [m.__name__ for m in models if not m.model_config.get("frozen")] == []


def test_a_node_report_kept_by_the_tracker_shares_its_sets() -> None:
    from cocoon_operator.handlers.nodetracker import NodeReportOptions, NodeReports  # noqa: PLC0415

    tracker = NodeReports(NodeReportOptions(namespace="ops"))
    for node in ("gpu-1", "gpu-2"):
        name = nodereport.report_name(node)
        text = node_report(0, 1, 2, node=node).to_json()
        cm = {"metadata": {"name": name}, "data": {nodereport.REPORT_KEY: text}}
        tracker.observe_report("ADDED", cm)
    one, two = tracker.reports["gpu-1"], tracker.reports["gpu-2"]
    assert one.vms[0].__pydantic_fields_set__ is two.vms[2].__pydantic_fields_set__
