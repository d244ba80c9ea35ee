"""The operator decides on the newest copy of a worker it knows (pure)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, cast

import kopf
import pytest

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import READINESS_GATE
from cocoon_operator.api.v1alpha1 import CocoonWorkerStatus, ConditionStatus
from cocoon_operator.desired.launcher import WorkerRef
from cocoon_operator.handlers.indexes import workers
from cocoon_operator.handlers.runtime import Deps
from cocoon_operator.k8s.latest import LatestObjects, newer, resource_version
from cocoon_operator.reconcile.gather import pod_facts
from cocoon_operator.reconcile.worker import ObservedWorker, plan
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text
from tests.unit.helpers import T0, spec

CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key


def obj(rv: str, *, uid: str = "u1", phase: str = "Pending", name: str = "w") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv},
        "status": {"phase": phase},
    }


def test_resource_versions_compare_as_integers_not_strings() -> None:
    assert resource_version(obj("10")) == 10
    assert newer(obj("10"), obj("9"))  # "10" < "9" as strings
    assert not newer(obj("9"), obj("10"))
    assert not newer(obj("9"), obj("9"))


def test_an_opaque_or_missing_resource_version_never_counts_as_newer() -> None:
    assert resource_version(obj("abc")) is None
    assert not newer(obj("abc"), obj("1"))
    assert not newer(obj("2"), obj("abc"))
    assert not newer({"metadata": {"uid": "u1"}}, obj("1"))


def test_a_recreated_object_is_not_a_later_state_of_the_old_one() -> None:
    assert not newer(obj("20", uid="u2"), obj("10", uid="u1"))


def test_the_operators_own_write_wins_over_an_older_body() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", phase="Ready"))
    got = latest.freshest(obj("10", phase="Registering"))
    assert got["status"]["phase"] == "Ready"
    assert len(latest) == 1  # kept until the watch catches up


def test_the_held_copy_leaves_out_managed_fields_and_keeps_the_rest() -> None:
    latest = LatestObjects()
    answer = obj("11", phase="Ready")
    answer["metadata"]["managedFields"] = [{"manager": "kopf", "fieldsV1": {"f:status": {}}}]
    latest.wrote(answer)
    got = latest.freshest(obj("10"))
    assert "managedFields" not in got["metadata"]
    assert got["metadata"] == {k: v for k, v in answer["metadata"].items() if k != "managedFields"}
    assert got["status"] == {"phase": "Ready"}
    assert "managedFields" in answer["metadata"]  # the caller's answer is left as it was


def test_the_copy_is_dropped_once_the_watch_delivers_it_or_something_newer() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", phase="Ready"))
    body = obj("11", phase="Ready")
    assert latest.freshest(body) is body
    assert len(latest) == 0

    latest.wrote(obj("11", phase="Ready"))
    body = obj("15", phase="Failed")  # someone else wrote after us
    assert latest.freshest(body) is body
    assert len(latest) == 0


def test_a_copy_handed_on_by_a_step_is_not_taken_for_the_watch_catching_up() -> None:
    # A timer takes our copy over kopf's older body, then hands it to the
    # reconcile, which asks again: kopf has still not seen version 11.
    latest = LatestObjects()
    latest.wrote(obj("11", phase="Ready"))
    ours = latest.freshest(obj("10", phase="Registering"))
    assert latest.freshest(ours, delivered=False) is ours
    assert latest.freshest(obj("10", phase="Registering"))["status"]["phase"] == "Ready"
    # Something newer than our copy is newer whoever hands it over.
    body = obj("12", phase="Failed")
    assert latest.freshest(body, delivered=False) is body
    assert len(latest) == 0


def test_only_a_newer_write_replaces_the_held_copy() -> None:
    latest = LatestObjects()
    latest.wrote(obj("12", phase="Ready"))
    latest.wrote(obj("11", phase="Attesting"))  # an answer that arrived late
    assert latest.freshest(obj("10"))["status"]["phase"] == "Ready"
    latest.wrote(None)  # the object was gone: nothing to hold
    assert len(latest) == 1


def test_objects_are_held_apart_and_forgotten_on_deletion() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", name="a", phase="Ready"))
    latest.wrote(obj("12", name="b", phase="Failed"))
    assert latest.freshest(obj("5", name="a"))["status"]["phase"] == "Ready"
    assert latest.freshest(obj("5", name="b"))["status"]["phase"] == "Failed"
    latest.forget(("ns", "a"))
    assert latest.freshest(obj("5", name="a"))["status"]["phase"] == "Pending"


def test_a_recreated_worker_is_decided_on_from_its_own_body() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", uid="old", phase="Ready"))
    body = obj("30", uid="new")
    assert latest.freshest(body) is body
    assert len(latest) == 0


def launcher(rv: str, *, gate: str | None) -> dict[str, Any]:
    conditions = [] if gate is None else [{"type": READINESS_GATE, "status": gate}]
    return {
        "metadata": {"namespace": "ns", "name": "w-abc", "uid": "p1", "resourceVersion": rv},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "conditions": conditions},
    }


def test_a_gate_we_wrote_counts_before_the_pods_watch_delivers_it() -> None:
    # A gate not yet in the index would be verified and announced again.
    deps = Deps(api=cast(Any, None), clock=lambda: dt.datetime.now(dt.UTC))
    index = {("ns", "w"): [pod_facts(launcher("5", gate=None))]}
    deps.latest_pods.wrote(launcher("7", gate="True"))
    (pod,) = deps.worker_pods(cast(Any, index), "ns", "w")
    assert pod.attested_gate is ConditionStatus.TRUE
    # The watch caught up (and someone closed the gate since): the index wins.
    index = {("ns", "w"): [pod_facts(launcher("9", gate="False"))]}
    (pod,) = deps.worker_pods(cast(Any, index), "ns", "w")
    assert pod.attested_gate is ConditionStatus.FALSE
    assert len(deps.latest_pods) == 0


def test_a_pod_we_created_counts_before_the_pods_watch_shows_it() -> None:
    """At 3,000 workers a reconcile ran before the watch showed the pod the one
    before had created, and planned it again: a 409 and a second LauncherCreated."""
    worker_spec = spec()
    ref = WorkerRef("w", "ns", "u1")
    first = plan(worker_observed(ref, worker_spec, ()), now=T0)
    (created,) = first.apply
    deps = Deps(api=cast(Any, None), clock=lambda: dt.datetime.now(dt.UTC))
    deps.reserve_pod("ns", "w", created)
    index: dict[Any, list[Any]] = {}
    (pod,) = deps.worker_pods(cast(Any, index), "ns", "w")
    assert pod.name == created["metadata"]["name"] and pod.node is None
    assert deps.worker_pods(cast(Any, index), "ns", "other") == []
    # Its instance counts too, until the instance index shows the pod (once).
    instance = pod.instance
    assert instance is not None
    assert deps.instances_in_use(cast(Any, {}))[instance] == 1
    shown_at = {instance: [created["metadata"]["name"]]}
    assert deps.instances_in_use(cast(Any, shown_at))[instance] == 1
    # A reconcile now plans no second pod, and writes nothing more than the first did.
    status = CocoonWorkerStatus.model_validate(first.status)
    pods = tuple(deps.worker_pods(cast(Any, index), "ns", "w"))
    again = plan(worker_observed(ref, worker_spec, pods, status), now=T0)
    assert again.empty, again
    # Without it (the index alone), the same reconcile creates the pod again.
    assert plan(worker_observed(ref, worker_spec, (), status), now=T0).apply
    # The watch shows it: the index speaks for it (one copy, not two), then the entry goes.
    shown = {**created, "spec": {**created["spec"], "nodeName": "n1"}}
    index = {("ns", "w"): [pod_facts(shown)]}
    (pod,) = deps.worker_pods(cast(Any, index), "ns", "w")
    assert pod.node == "n1"
    deps.release_pod("ns", "w", created["metadata"]["name"])
    assert deps.unindexed_pods == {}
    assert deps.worker_pods(cast(Any, {}), "ns", "w") == []


def worker_observed(
    ref: WorkerRef,
    worker_spec: v1alpha1.CocoonWorkerSpec,
    pods: tuple[Any, ...],
    status: CocoonWorkerStatus | None = None,
) -> ObservedWorker:
    return ObservedWorker(
        ref=ref,
        generation=1,
        spec=worker_spec,
        status=status or CocoonWorkerStatus(),
        pods=pods,
        instances_in_use={},
        control_key=CONTROL_KEY,
    )


async def test_a_pod_that_already_existed_is_not_announced_again(monkeypatch: Any) -> None:
    from cocoon_operator.handlers import reconciler as handlers  # noqa: PLC0415
    from cocoon_operator.reconcile.worker import Event, Plan  # noqa: PLC0415

    recorded: list[str] = []

    async def exists(api: Any, obj: dict[str, Any]) -> bool:
        return False  # 409: another reconcile (or replica) created it

    async def record(deps: Any, body: Any, reason: str, message: str, **_: Any) -> None:
        recorded.append(reason)

    monkeypatch.setattr(handlers, "create_if_absent", exists)
    monkeypatch.setattr(Deps, "record", record)
    ref = WorkerRef("w", "ns", "u1")
    first = plan(worker_observed(ref, spec(), ()), now=T0)
    (pod,) = first.apply
    deps = Deps(api=cast(Any, None), clock=lambda: dt.datetime.now(dt.UTC))
    deps.reserve_pod("ns", "w", pod)  # as the reconcile does before executing
    body: Any = {"metadata": {"namespace": "ns", "name": "w"}}
    result = Plan(apply=[pod], events=[*first.events, Event("Other", "something else")])
    await handlers._execute(deps, body, result, logging.getLogger("test"))
    assert recorded == ["Other"]
    assert [p.name for p in deps.worker_pods(cast(Any, {}), "ns", "w")] == [pod["metadata"]["name"]]


async def test_a_pod_whose_create_failed_is_no_longer_counted(monkeypatch: Any) -> None:
    from cocoon_operator.handlers import reconciler as handlers  # noqa: PLC0415
    from cocoon_operator.reconcile.worker import Plan  # noqa: PLC0415

    async def refused(api: Any, obj: dict[str, Any]) -> bool:
        raise RuntimeError("quota exceeded")

    monkeypatch.setattr(handlers, "create_if_absent", refused)
    (pod,) = plan(worker_observed(WorkerRef("w", "ns", "u1"), spec(), ()), now=T0).apply
    deps = Deps(api=cast(Any, None), clock=lambda: dt.datetime.now(dt.UTC))
    deps.reserve_pod("ns", "w", pod)
    body: Any = {"metadata": {"namespace": "ns", "name": "w"}}
    with pytest.raises(RuntimeError):
        await handlers._execute(deps, body, Plan(apply=[pod]), logging.getLogger("t"))
    assert deps.worker_pods(cast(Any, {}), "ns", "w") == []
    assert deps.instances_in_use(cast(Any, {})) == {}


async def test_the_workers_index_drops_managed_fields_from_the_body_kopf_keeps() -> None:
    """kopf holds every worker's last watch body for its timer; the index sees that
    very body and leaves it without managedFields, the rest untouched."""
    raw = obj("7", phase="Ready")
    raw["metadata"]["managedFields"] = [{"manager": "kopf", "fieldsV1": {"f:status": {}}}]
    body = kopf.Body(cast(kopf.RawBody, raw))
    indexed = await workers(namespace="ns", name="w", body=body)
    assert "managedFields" not in raw["metadata"]
    assert "managedFields" not in body["metadata"]
    assert indexed == {("ns", "w"): {"metadata": raw["metadata"], "status": {"phase": "Ready"}}}
    assert body["metadata"]["resourceVersion"] == "7" and body["status"]["phase"] == "Ready"


async def test_the_workers_index_shares_strings_between_the_bodies_kopf_keeps() -> None:
    """Two workers' bodies, decoded apart as kopf decodes each event: after the
    index saw them, their keys and short values are the same objects (held once
    for the fleet), and the bodies are what they were."""
    decoded = [json.loads(json.dumps(obj("7", phase="Ready"))) for _ in range(2)]
    assert next(iter(decoded[0]["status"])) is not next(iter(decoded[1]["status"]))
    copies = [json.loads(json.dumps(raw)) for raw in decoded]
    for i, raw in enumerate(decoded):
        await workers(namespace="ns", name=f"w{i}", body=kopf.Body(cast(kopf.RawBody, raw)))
    assert decoded == copies
    first, second = (raw["status"] for raw in decoded)
    assert next(iter(first)) is next(iter(second))  # the key "phase"
    assert first["phase"] is second["phase"]  # the value "Ready"
