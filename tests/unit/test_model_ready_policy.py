"""ModelReady: from the node agent's record of the model, else the init container; a new
launcher pod prefers the nodes holding the model Ready (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.conditions import ConditionType, Phase, Reason
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.nodereport import ModelRecord, NodeReport
from cocoon_operator.api.v1alpha1 import CocoonWorkerStatus, ConditionStatus
from cocoon_operator.desired.launcher import WorkerRef, launcher_pod, revision
from cocoon_operator.policy.conditions import ObservedCondition as Obs
from cocoon_operator.policy.nodereports import nodes_with_model
from cocoon_operator.policy.worker import ModelFacts, PodFacts, view
from cocoon_operator.reconcile.gather import pod_facts
from cocoon_operator.reconcile.worker import ObservedWorker, plan
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text

CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE
REPO = Path(__file__).resolve().parents[2]
REF = WorkerRef("w", "ns", "uid-1")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
VERITY = "7ed74afe17a2c27c8292ffadf79b8f88d255891766fa2ddd9850e2e595c792ec"
MODEL = f"Qwen/Qwen3-8B@9b5a8ef0fa05a010d8339363a7eb176c14275e51:{VERITY}"
GIB = 1 << 30


def spec() -> v1alpha1.CocoonWorkerSpec:
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    raw = next(d for d in docs if d["kind"] == v1alpha1.KIND)["spec"]
    return v1alpha1.CocoonWorkerSpec.model_validate(raw)


def pod(**changes: Any) -> PodFacts:
    base: dict[str, Any] = {"name": "w-1", "node": "n1", "phase": "Pending", "instance": 0}
    return PodFacts(**{**base, **changes})


def record(phase: str, **changes: Any) -> ModelRecord:
    return ModelRecord(verity=VERITY, model=MODEL, phase=phase, **changes)


def condition(worker_view: Any, kind: ConditionType) -> Obs:
    return next(c for c in worker_view.conditions if c.type is kind)


def model_ready(p: PodFacts | None, facts: ModelFacts | None = None) -> Obs:
    return condition(view(p, model=facts), ConditionType.MODEL_READY)


def test_a_model_being_downloaded_is_not_ready_and_the_message_counts_the_bytes() -> None:
    facts = ModelFacts(True, record("Downloading", bytes_done=4 * GIB, bytes_total=16 * GIB))
    c = model_ready(pod(), facts)
    assert (c.status, c.reason) == (F, Reason.DOWNLOADING)
    assert c.message == "Downloading on node n1: 4.0 GiB of 16.0 GiB (25%)"


def test_building_and_verifying_are_their_own_reasons() -> None:
    for phase, reason in (("Building", Reason.BUILDING), ("Verifying", Reason.VERIFYING)):
        c = model_ready(pod(), ModelFacts(True, record(phase)))
        assert (c.status, c.reason) == (F, reason)


def test_a_failed_preparation_names_its_cause_and_fails_the_worker() -> None:
    failed = record(
        "Failed",
        reason="HashMismatch",
        message=f"hash mismatch: the model id says verity {VERITY}, the image's root hash is 00",
    )
    worker_view = view(pod(phase="Running"), model=ModelFacts(True, failed))
    c = condition(worker_view, ConditionType.MODEL_READY)
    assert (c.status, c.reason) == (F, Reason.MODEL_FAILED)
    assert "failed: HashMismatch: hash mismatch" in c.message
    assert worker_view.phase is Phase.FAILED
    assert "ModelReady" in condition(worker_view, ConditionType.READY).message


def test_a_ready_record_makes_the_model_ready() -> None:
    c = model_ready(pod(), ModelFacts(True, record("Ready")))
    assert (c.status, c.reason) == (T, Reason.READY)


def test_the_report_wins_over_a_running_pod_on_the_local_stack() -> None:
    # kwok reports the pod Running at once; the simulated node still prepares the model.
    worker_view = view(pod(phase="Running"), model=ModelFacts(True, record("Building")))
    assert condition(worker_view, ConditionType.MODEL_READY).status is F
    assert worker_view.phase is Phase.STARTING


def test_a_node_agent_that_does_not_list_the_model_yet_means_preparing() -> None:
    c = model_ready(pod(phase="Running"), ModelFacts(reported=True))
    assert (c.status, c.reason) == (F, Reason.PREPARING)


def test_without_a_node_agent_the_init_container_decides() -> None:
    running = model_ready(pod(model_init="running"))
    assert (running.status, running.reason) == (F, Reason.PREPARING)
    failed = model_ready(
        pod(model_init="failed", model_init_error="Unauthorized: HTTP 401 from the Hub")
    )
    assert (failed.status, failed.reason) == (F, Reason.MODEL_FAILED)
    assert failed.message.endswith("Unauthorized: HTTP 401 from the Hub")
    assert model_ready(pod(model_init="done")).status is T
    assert model_ready(pod(phase="Running")).status is T  # the launcher runs after it
    assert model_ready(pod()).status is F


def test_an_unscheduled_worker_awaits_its_node() -> None:
    assert model_ready(pod(node=None)).reason == Reason.AWAITING_NODE
    assert model_ready(None).reason == Reason.AWAITING_NODE


def test_once_attested_ready_no_longer_waits_for_the_model() -> None:
    attested = pod(phase="Running", attested_gate=T)
    worker_view = view(attested, model=ModelFacts(True, record("Failed", reason="DiskFull")))
    ready = condition(worker_view, ConditionType.READY)
    assert "ModelReady" not in ready.message
    before = view(pod(phase="Running"), model=ModelFacts(True, record("Failed")))
    assert "ModelReady" in condition(before, ConditionType.READY).message


def test_the_init_container_status_is_gathered_with_its_last_words() -> None:
    def status(*init: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": "p"}, "status": {"initContainerStatuses": list(init)}}

    running = {"name": "model", "state": {"running": {}}}
    assert pod_facts(status(running)).model_init == "running"
    done = {"name": "model", "state": {"terminated": {"exitCode": 0}}}
    assert pod_facts(status(done)).model_init == "done"
    crashed = {
        "name": "model",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "message": "Downloading\ncocoon-operator model ensure: DiskFull: disk full",
            }
        },
    }
    facts = pod_facts(status(crashed))
    assert (facts.model_init, facts.model_init_error) == (
        "failed",
        "cocoon-operator model ensure: DiskFull: disk full",
    )
    assert pod_facts(status({"name": "other", "state": {"running": {}}})).model_init is None


def test_the_model_init_container_keeps_its_failure_as_termination_message() -> None:
    (init,) = launcher_pod(REF, spec(), InstanceSlot(0), control_key=CONTROL_KEY)["spec"][
        "initContainers"
    ]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_a_new_pod_prefers_the_nodes_whose_report_lists_the_model_ready() -> None:
    reports = {
        "a": NodeReport(node="a", agent_version="x", models=[record("Ready")]),
        "b": NodeReport(node="b", agent_version="x", models=[record("Downloading")]),
        "c": NodeReport(node="c", agent_version="x"),
    }
    assert nodes_with_model(reports, VERITY) == ["a"]
    observed = ObservedWorker(
        ref=REF,
        control_key=CONTROL_KEY,
        generation=1,
        spec=spec(),
        status=CocoonWorkerStatus(),
        pods=(),
        instances_in_use={},
        model_nodes=("b", "a"),
    )
    (created,) = plan(observed, now=NOW).apply
    preferred = created["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    # One term per node: the apiserver takes a single value in a node field selector.
    assert preferred == [
        {
            "weight": 100,
            "preference": {
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]
            },
        }
        for node in ("a", "b")
    ]
    plain = plan(dataclasses.replace(observed, model_nodes=()), now=NOW).apply[0]
    assert (
        "preferredDuringSchedulingIgnoredDuringExecution"
        not in (plain["spec"]["affinity"]["nodeAffinity"])
    )


def test_the_plan_reads_the_record_of_the_pods_own_node() -> None:
    rev = revision(spec())
    current = pod(name=f"w-{rev}", revision=rev, phase="Running")
    observed = ObservedWorker(
        ref=REF,
        control_key=CONTROL_KEY,
        generation=1,
        spec=spec(),
        status=CocoonWorkerStatus(),
        pods=(current,),
        instances_in_use={},
        node_models={"n1": record("Verifying"), "n2": record("Ready")},
    )
    conditions = plan(observed, now=NOW).status["conditions"]
    model = next(c for c in conditions if c["type"] == "ModelReady")
    assert (model["status"], model["reason"]) == ("False", "Verifying")
