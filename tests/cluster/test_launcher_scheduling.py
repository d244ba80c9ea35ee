"""The launcher Pod the builder makes is placed by the real kube-scheduler: only
on CC-ready nodes, and never two pods of the same instance index on one node."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import READINESS_GATE
from cocoon_operator.desired.config import InstanceSlot
from cocoon_operator.desired.launcher import launcher_pod
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text
from tests.cluster.helpers import create_worker_ref, example_worker
from tests.cluster.wait import eventually

# The operator's control public key the launcher pods built here trust.
CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key

FIELD_MANAGER = "cocoon-tests"


async def apply(api: client.ApiClient, obj: dict[str, Any]) -> None:
    core = client.CoreV1Api(api)
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    await core.patch_namespaced_pod(
        name,
        ns,
        obj,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


async def test_same_instance_never_shares_a_node_and_lands_only_on_cc_nodes(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    cc_nodes = {
        n.metadata.name
        for n in (await core.list_node(label_selector="cocoon.network/sim-node-kind=cc")).items
    }
    spec = v1alpha1.CocoonWorkerSpec.model_validate(example_worker()["spec"])
    # One more instance-0 worker than there are CC nodes.
    workers = [await create_worker_ref(api, namespace, f"w{i}") for i in range(len(cc_nodes) + 1)]
    for worker in workers:
        await apply(api, launcher_pod(worker, spec, InstanceSlot(0), control_key=CONTROL_KEY))

    async def settled() -> list[client.V1Pod] | None:
        pods = (await core.list_namespaced_pod(namespace)).items
        placed = [p for p in pods if p.spec.node_name]
        pending = [
            p for p in pods if any(c.reason == "Unschedulable" for c in (p.status.conditions or []))
        ]
        if len(placed) == len(cc_nodes) and len(pending) == 1:
            return pods
        return None

    pods = await eventually(settled, within=60, what="all CC nodes used once, one pod pending")
    placed = [p for p in pods if p.spec.node_name]
    assert {p.spec.node_name for p in placed} == cc_nodes  # one instance-0 per node
    (pending,) = [p for p in pods if not p.spec.node_name]
    message = next(c.message for c in pending.status.conditions if c.type == "PodScheduled")
    assert "free ports" in message, message

    # Another instance index fits beside instance 0 on the same nodes.
    extra = await create_worker_ref(api, namespace, "w-extra")
    await apply(api, launcher_pod(extra, spec, InstanceSlot(1), control_key=CONTROL_KEY))

    async def extra_placed() -> str | None:
        pod = await core.read_namespaced_pod(
            launcher_pod(extra, spec, InstanceSlot(1), control_key=CONTROL_KEY)["metadata"]["name"],
            namespace,
        )
        return pod.spec.node_name

    assert await eventually(extra_placed, within=30, what="instance 1 scheduled") in cc_nodes


async def test_readiness_gate_is_declared_and_left_to_the_operator(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    spec = v1alpha1.CocoonWorkerSpec.model_validate(example_worker()["spec"])
    worker = await create_worker_ref(api, namespace, "gated")
    desired = launcher_pod(worker, spec, InstanceSlot(0), control_key=CONTROL_KEY)
    await apply(api, desired)

    async def running() -> client.V1Pod | None:
        pod = await core.read_namespaced_pod(desired["metadata"]["name"], namespace)
        return pod if pod.status.phase == "Running" else None

    pod = await eventually(running, within=30, what="launcher pod Running")
    assert [g.condition_type for g in pod.spec.readiness_gates] == [READINESS_GATE]
    assert pod.metadata.owner_references[0].uid == worker.uid
    # Running is not Ready: nobody but the operator may set the gate.
    assert condition(pod, "Ready") == ("False", "ReadinessGatesNotReady")
    assert condition(pod, READINESS_GATE) is None

    async def gate(status: str) -> None:
        await core.patch_namespaced_pod_status(
            pod.metadata.name,
            namespace,
            {"status": {"conditions": [{"type": READINESS_GATE, "status": status}]}},
        )

    async def ready_is(status: str) -> bool:
        got = await core.read_namespaced_pod(pod.metadata.name, namespace)
        ready = condition(got, "Ready")
        return ready is not None and ready[0] == status

    await gate("True")
    await eventually(lambda: ready_is("True"), within=30, what="Ready after the gate is set")
    await gate("False")
    await eventually(lambda: ready_is("False"), within=30, what="not Ready once the gate drops")


def condition(pod: client.V1Pod, kind: str) -> tuple[str, str | None] | None:
    for c in pod.status.conditions or []:
        if c.type == kind:
            return c.status, c.reason
    return None
