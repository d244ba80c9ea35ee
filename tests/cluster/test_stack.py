"""The local control plane is real: a real scheduler places GPU pods only on
CC-ready nodes, kwok runs them, and the real controller-manager garbage-collects
them when their owner goes away."""

from __future__ import annotations

import asyncio
import json
import subprocess

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import labels
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

CC_SELECTOR = {labels.TDX_ENABLED: "true", labels.CC_MODE_STATE: "on"}


def gpu_pod(name: str, owner: client.V1ConfigMap | None, gpus: int = 1) -> client.V1Pod:
    owner_refs = None
    if owner is not None:
        owner_refs = [
            client.V1OwnerReference(
                api_version="v1",
                kind="ConfigMap",
                name=owner.metadata.name,
                uid=owner.metadata.uid,
                block_owner_deletion=True,
            )
        ]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, owner_references=owner_refs),
        spec=client.V1PodSpec(
            node_selector=CC_SELECTOR,
            containers=[
                client.V1Container(
                    name="launcher",
                    image="example.invalid/launcher:test",
                    resources=client.V1ResourceRequirements(
                        requests={labels.PASSTHROUGH_GPU_RESOURCE: str(gpus)},
                        limits={labels.PASSTHROUGH_GPU_RESOURCE: str(gpus)},
                    ),
                )
            ],
        ),
    )


async def test_version_reports_the_pinned_release(stack: Stack, api: client.ApiClient) -> None:
    info = await client.VersionApi(api).get_code()
    assert info.git_version == "v1.34.4"
    assert (info.major, info.minor) == ("1", "34")
    kubectl = await asyncio.to_thread(
        subprocess.run,
        [str(stack.bin / "kubectl"), "--kubeconfig", str(stack.kubeconfig), "version", "-o=json"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(kubectl.stdout)["serverVersion"]["gitVersion"] == "v1.34.4"


async def test_simulated_nodes_carry_the_cc_labels_and_gpu_capacity(
    api: client.ApiClient,
) -> None:
    nodes = (await client.CoreV1Api(api).list_node()).items
    kinds = {n.metadata.labels.get("cocoon.network/sim-node-kind") for n in nodes}
    assert {"cc", "gpu", "cpu"} <= kinds
    for node in nodes:
        node_labels = node.metadata.labels
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
        if node_labels.get("cocoon.network/sim-node-kind") == "cc":
            assert node_labels[labels.TDX_ENABLED] == "true"
            assert node_labels[labels.CC_MODE_STATE] == "on"
            assert node_labels[labels.GPU_WORKLOAD_CONFIG] == "vm-passthrough"
            assert node_labels[labels.GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"
            assert node.status.capacity[labels.PASSTHROUGH_GPU_RESOURCE] == "8"


async def test_gpu_pods_land_only_on_cc_nodes_run_and_are_garbage_collected(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    owner = await core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    names = [f"gpu-{i}" for i in range(6)]
    for name in names:
        await core.create_namespaced_pod(namespace, gpu_pod(name, owner))

    async def all_running() -> list[client.V1Pod] | None:
        pods = (await core.list_namespaced_pod(namespace)).items
        if len(pods) == len(names) and all(p.status.phase == "Running" for p in pods):
            return pods
        return None

    pods = await eventually(all_running, within=60, what="6 GPU pods Running")
    nodes = {n.metadata.name: n for n in (await core.list_node()).items}
    for pod in pods:
        node = nodes[pod.spec.node_name]
        assert node.metadata.labels.get("cocoon.network/sim-node-kind") == "cc", pod.spec.node_name
        # Bound by the scheduler, not by us.
        scheduled = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        assert scheduled and scheduled[0].status == "True"

    await core.delete_namespaced_config_map("owner", namespace)

    async def pods_gone() -> bool:
        return not (await core.list_namespaced_pod(namespace)).items

    await eventually(pods_gone, within=60, what="garbage collection of the owned pods")


async def test_a_pod_no_node_can_fit_stays_pending_with_the_schedulers_reason(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(namespace, gpu_pod("too-big", None, gpus=9))

    async def unschedulable() -> client.V1PodCondition | None:
        pod = await core.read_namespaced_pod("too-big", namespace)
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.reason == "Unschedulable":
                return cond
        return None

    cond = await eventually(unschedulable, within=30, what="PodScheduled=False Unschedulable")
    assert "Insufficient nvidia.com/pgpu" in cond.message
    pod = await core.read_namespaced_pod("too-big", namespace)
    assert pod.spec.node_name is None
    try:
        await core.delete_namespaced_pod("too-big", namespace, grace_period_seconds=0)
    except ApiException as err:  # pragma: no cover - cleanup only
        assert err.status == 404
