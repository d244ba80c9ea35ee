"""The operator, run as its own process against the real control plane, takes a
CocoonWorker from creation to a scheduled, running VM launcher, reports why it
cannot when no node qualifies, pauses on request, rotates on a model change and
leaves nothing behind on deletion."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import LABEL_REVISION, LABEL_WORKER
from tests.cluster.helpers import (
    API,
    conditions,
    create_worker,
    example_worker,
    get_worker,
    worker_deleted,
    worker_pods,
)
from tests.cluster.operator import StartOperator, running_operator
from tests.cluster.stack import Stack
from tests.cluster.wait import OperatorMetrics, eventually


@pytest.fixture
def metrics() -> OperatorMetrics:
    """Where the ``operator_log`` fixture's process serves its metrics."""
    return OperatorMetrics.on_free_port()


@pytest.fixture
def operator_log(operator: StartOperator, tmp_path: Path, metrics: OperatorMetrics) -> Path:
    """The operator these tests run against, started for the test's namespace; its log.
    No grace for booting VMs: no quote will come on this stack (no agent)."""
    log = tmp_path / "operator.log"
    operator("--attestation-boot-grace-seconds", "0", *metrics.args(), log=log)
    return log


async def touch_pod(api: client.ApiClient, namespace: str, name: str, value: str) -> None:
    """Annotate a launcher pod (a key the operator never reads): a pod event, so the
    operator reconciles the pod's worker once more, with nothing else changed."""
    await client.CoreV1Api(api).patch_namespaced_pod(
        name, namespace, {"metadata": {"annotations": {"test.cocoon.network/touched": value}}}
    )


async def generation_observed(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Whether the operator has reconciled the worker's current spec."""
    worker = await get_worker(api, namespace, name)
    return bool(
        worker["metadata"]["generation"] == worker.get("status", {}).get("observedGeneration")
    )


async def phase_is(
    api: client.ApiClient, namespace: str, name: str, phase: str
) -> dict[str, Any] | None:
    worker = await get_worker(api, namespace, name)
    return worker if worker.get("status", {}).get("phase") == phase else None


async def test_worker_reaches_a_cc_node_and_status_progresses(
    api: client.ApiClient, namespace: str, operator_log: Path
) -> None:
    await create_worker(api, namespace, "w0")
    worker = await eventually(
        lambda: phase_is(api, namespace, "w0", "Attesting"), within=60, what="phase Attesting"
    )
    conds = conditions(worker)
    assert conds["Scheduled"]["status"] == "True"
    assert conds["VMRunning"]["status"] == "True"
    assert conds["Attested"]["status"] == "False"
    assert conds["OnChainAllowed"]["status"] == "Unknown"
    assert conds["Ready"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in conds.values())
    status = worker["status"]
    assert status["observedGeneration"] == 1
    assert status["currentRevision"] == status["targetRevision"]
    (pod,) = await worker_pods(api, namespace, "w0")
    assert status["node"] == pod.spec.node_name
    assert status["pod"] == pod.metadata.name
    node = await client.CoreV1Api(api).read_node(pod.spec.node_name)
    assert node.metadata.labels["cocoon.network/sim-node-kind"] == "cc"
    # kopf's diff base is kept by the operator, not written onto the worker
    # (k8s/diffbase.py); its finalizer is the one metadata write it makes.
    annotations = worker["metadata"].get("annotations") or {}
    assert not [a for a in annotations if a.startswith("kopf.")], annotations
    assert worker["metadata"]["finalizers"] == ["cocoon.network/finalizer"]

    # No quote reaches this operator (it reads no node reports, and no VM runs
    # without the simulation agent): the attestation step says so, naming where
    # quotes come from. The condition's reason changes, its status does not, so
    # its transition time stays.
    async def no_quote() -> dict[str, Any] | None:
        w = await get_worker(api, namespace, "w0")
        return w if conditions(w)["Attested"]["reason"] == "QuoteNotReported" else None

    after = conditions(await eventually(no_quote, within=30, what="QuoteNotReported"))
    assert "--node-report-namespace" in after["Attested"]["message"]
    assert after["Attested"]["status"] == "False"
    assert after["Scheduled"]["lastTransitionTime"] == conds["Scheduled"]["lastTransitionTime"]
    assert after["Attested"]["lastTransitionTime"] == conds["Attested"]["lastTransitionTime"]

    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=w0"
    )
    assert "LauncherCreated" in {e.reason for e in events.items}


async def test_a_worker_whose_host_ports_are_taken_everywhere_moves_to_another_instance(
    api: client.ApiClient, namespace: str, operator_log: Path
) -> None:
    core = client.CoreV1Api(api)
    cc = await core.list_node(label_selector="cocoon.network/sim-node-kind=cc")
    # Something else already listens on instance 0's host port on every CC node: its
    # control relay's, the one port a launcher pod publishes (desired/launcher.py).
    for node in cc.items:
        await core.create_namespaced_pod(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"squatter-{node.metadata.name}"},
                "spec": {
                    "nodeName": node.metadata.name,
                    "containers": [
                        {
                            "name": "c",
                            "image": "registry.local/squatter:1",
                            "ports": [{"containerPort": 12002, "hostPort": 12002}],
                        }
                    ],
                },
            },
        )
    await create_worker(api, namespace, "w0")

    async def scheduled() -> dict[str, Any] | None:
        w = await get_worker(api, namespace, "w0")
        return w if conditions(w).get("Scheduled", {}).get("status") == "True" else None

    worker = await eventually(scheduled, within=60, what="scheduled on another instance")
    assert worker["status"]["instance"] != 0
    assert "instancesTried" not in worker["status"]  # cleared once placed
    (pod,) = await worker_pods(api, namespace, "w0")
    ports = {p.host_port for p in pod.spec.containers[0].ports}
    assert 12002 not in ports
    events = await core.list_namespaced_event(namespace, field_selector="involvedObject.name=w0")
    moved = [e.message for e in events.items if e.reason == "InstanceMoved"]
    assert moved and "instance 0" in moved[0]


async def test_no_qualifying_node_is_a_condition_not_a_crash_loop(
    api: client.ApiClient, namespace: str, operator_log: Path, metrics: OperatorMetrics
) -> None:
    await create_worker(api, namespace, "h200", gpu={"product": "NVIDIA-H200"})

    async def unschedulable() -> dict[str, Any] | None:
        w = await get_worker(api, namespace, "h200")
        scheduled = conditions(w).get("Scheduled", {})
        return w if scheduled.get("reason") == "Unschedulable" else None

    worker = await eventually(unschedulable, within=60, what="Scheduled=False Unschedulable")
    scheduled = conditions(worker)["Scheduled"]
    assert scheduled["status"] == "False"
    assert "node affinity" in scheduled["message"] or "didn't match" in scheduled["message"]
    assert worker["status"]["phase"] == "Pending"
    # One pod, waiting; not recreated over and over: two more reconciles of the
    # worker (each of a change to its pod) leave it as it is.
    pods = await worker_pods(api, namespace, "h200")
    first = [p.metadata.uid for p in pods]
    for touch in ("1", "2"):
        poke = functools.partial(touch_pod, api, namespace, pods[0].metadata.name, touch)
        await metrics.reconciled_after(poke, what="the worker reconciled for its touched pod")
    assert [p.metadata.uid for p in await worker_pods(api, namespace, "h200")] == first
    assert len(first) == 1


async def test_launcher_pods_get_the_priority_class_the_operator_is_given(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """--launcher-priority-class (the chart's launcher.priorityClassName) reaches the
    pods the operator creates, and the apiserver resolves it to the class's value."""
    scheduling = client.SchedulingV1Api(api)
    name = f"{namespace}-launchers"[:63]
    await scheduling.create_priority_class(
        {"metadata": {"name": name}, "value": 100000, "description": "test launchers"}
    )
    log = tmp_path / "operator.log"
    grace = ("--attestation-boot-grace-seconds", "0")
    try:
        with running_operator(
            stack.kubeconfig, namespace, log, *grace, f"--launcher-priority-class={name}"
        ) as proc:
            await create_worker(api, namespace, "ranked")
            (pod,) = await eventually(
                lambda: worker_pods(api, namespace, "ranked"), within=60, what="launcher pod"
            )
            assert pod.spec.priority_class_name == name
            assert pod.spec.priority == 100000  # the Priority admission plugin's doing
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
    finally:
        await scheduling.delete_priority_class(name)


async def test_deletion_leaves_no_pod_and_no_finalizer(
    api: client.ApiClient, namespace: str, operator_log: Path
) -> None:
    await create_worker(api, namespace, "gone")
    await eventually(
        lambda: phase_is(api, namespace, "gone", "Attesting"), within=60, what="worker up"
    )
    worker = await get_worker(api, namespace, "gone")
    assert "cocoon.network/finalizer" in worker["metadata"]["finalizers"]
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        *API, namespace, v1alpha1.PLURAL, "gone"
    )

    gone = worker_deleted(api, namespace, "gone")
    await eventually(gone, within=60, what="worker deleted (finalizer released)")
    assert await worker_pods(api, namespace, "gone") == []

    # Its configuration was in the pod (an annotation), never an object of its own.
    cms = await client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector=f"{LABEL_WORKER}=gone"
    )
    assert cms.items == []


async def test_pause_stops_reconciliation_and_resume_rotates_to_the_new_model(
    api: client.ApiClient, namespace: str, operator_log: Path
) -> None:
    custom = client.CustomObjectsApi(api)
    await create_worker(api, namespace, "rot")
    await eventually(lambda: phase_is(api, namespace, "rot", "Attesting"), within=60, what="up")
    (old_pod,) = await worker_pods(api, namespace, "rot")

    await custom.patch_namespaced_custom_object(
        *API,
        namespace,
        v1alpha1.PLURAL,
        "rot",
        {"metadata": {"annotations": {"cocoon.network/paused": "true"}}},
        _content_type="application/merge-patch+json",
    )
    await eventually(lambda: phase_is(api, namespace, "rot", "Paused"), within=30, what="Paused")
    model = example_worker()["spec"]["model"]
    await custom.patch_namespaced_custom_object(
        *API,
        namespace,
        v1alpha1.PLURAL,
        "rot",
        {"spec": {"model": {**model, "name": "Qwen/Qwen3-32B"}}},
        _content_type="application/merge-patch+json",
    )
    # The new spec reconciled (its generation observed), paused: no new pod.
    await eventually(
        lambda: generation_observed(api, namespace, "rot"), within=30, what="the spec reconciled"
    )
    assert [p.metadata.uid for p in await worker_pods(api, namespace, "rot")] == [
        old_pod.metadata.uid
    ]

    await custom.patch_namespaced_custom_object(
        *API,
        namespace,
        v1alpha1.PLURAL,
        "rot",
        {"metadata": {"annotations": {"cocoon.network/paused": None}}},
        _content_type="application/merge-patch+json",
    )

    async def rotated() -> list[client.V1Pod] | None:
        pods = await worker_pods(api, namespace, "rot")
        if len(pods) == 1 and pods[0].metadata.uid != old_pod.metadata.uid:
            return pods
        return None

    (new_pod,) = await eventually(rotated, within=60, what="rotation to the new revision")
    assert new_pod.metadata.labels[LABEL_REVISION] != old_pod.metadata.labels[LABEL_REVISION]
    worker = await eventually(
        lambda: phase_is(api, namespace, "rot", "Attesting"), within=60, what="new VM up"
    )
    assert worker["status"]["targetRevision"] == new_pod.metadata.labels[LABEL_REVISION]
    assert worker["status"]["currentRevision"] == worker["status"]["targetRevision"]


async def test_cordoned_node_workers_move_and_the_node_stays_cordoned(
    api: client.ApiClient, namespace: str, operator_log: Path
) -> None:
    core = client.CoreV1Api(api)
    await create_worker(api, namespace, "mover")
    await eventually(lambda: phase_is(api, namespace, "mover", "Attesting"), within=60, what="up")
    (pod,) = await worker_pods(api, namespace, "mover")
    node = pod.spec.node_name
    await core.patch_node(node, {"spec": {"unschedulable": True}})
    try:

        async def moved() -> list[client.V1Pod] | None:
            pods = await worker_pods(api, namespace, "mover")
            running = [p for p in pods if p.spec.node_name and p.status.phase == "Running"]
            if len(pods) == 1 and running and running[0].spec.node_name != node:
                return pods
            return None

        (new_pod,) = await eventually(moved, within=60, what="worker moved off the node")
        worker = await eventually(
            lambda: phase_is(api, namespace, "mover", "Attesting"), within=60, what="up again"
        )
        assert worker["status"]["node"] == new_pod.spec.node_name
        events = await core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=mover"
        )
        assert "NodeCordoned" in {e.reason for e in events.items}
        # The operator never uncordons a node it did not cordon.
        assert (await core.read_node(node)).spec.unschedulable is True
    finally:
        await core.patch_node(node, {"spec": {"unschedulable": None}})
