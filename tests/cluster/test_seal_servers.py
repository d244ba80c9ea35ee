"""Seal servers on the local stack (``run --seal-servers``): the operator's DaemonSet per
enclave is scheduled by the real scheduler onto the CC nodes, a worker's VM is placed
only on a node whose seal server is Ready (the operator's node label), waiting with
Scheduled=False SealServerNotReady until then, and an enclave no worker uses loses its
DaemonSet. kwok stands in for the kubelet: it runs the scheduled pods and reports them
Ready (the seal server's own readiness, the enclave line and the vsock port, is
tested in tests/unit/launcher/test_seal.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import labels
from cocoon_operator.desired.sealserver import daemonset_name
from cocoon_operator.simulator._release import seal_digests
from tests.cluster.helpers import (
    conditions,
    create_worker,
    example_worker,
    get_worker,
    pod_ready,
    seal_pods,
    worker_deleted,
    worker_pods,
)
from tests.cluster.operator import running_operator
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

ENCLAVE = seal_digests()["enclave"]
OTHER_ENCLAVE = "f" * 64


@pytest.fixture
async def operator(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> AsyncIterator[Path]:
    log = tmp_path / "operator.log"
    image = with_enclave(ENCLAVE)["image"]
    args = (
        "--attestation-boot-grace-seconds",
        "0",
        "--seal-server-release",
        f"{image}={ENCLAVE}",
        "--seal-server-release",
        f"{image}={OTHER_ENCLAVE}",
        "--seal-servers",
        "--seal-server-namespace",
        namespace,
        "--seal-server-sweep-seconds",
        "0.5",
        "--seal-server-settle-seconds",
        "2",
    )
    try:
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            yield log
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
    finally:
        # The stack's nodes outlive the test namespace: leave no seal label behind.
        core = client.CoreV1Api(api)
        for node in (await core.list_node(label_selector=labels.SEAL_ENCLAVE)).items:
            await core.patch_node(
                node.metadata.name, {"metadata": {"labels": {labels.SEAL_ENCLAVE: None}}}
            )


def with_enclave(enclave: str | None) -> dict[str, Any]:

    release = example_worker()["spec"]["release"]
    release["files"]["enclave"] = enclave
    return release


async def cc_nodes(core: client.CoreV1Api) -> set[str]:
    nodes = await core.list_node(label_selector="cocoon.network/sim-node-kind=cc")
    return {n.metadata.name for n in nodes.items}


async def block_port(core: client.CoreV1Api, namespace: str, nodes: set[str]) -> list[str]:
    """A pod holding host port 12345 on each node: no seal server can be placed there."""
    names = []
    for node in sorted(nodes):
        name = f"port-holder-{node}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "tolerations": [{"operator": "Exists"}],
                "containers": [
                    {
                        "name": "c",
                        "image": "holder",
                        "ports": [{"containerPort": 12345, "hostPort": 12345}],
                    }
                ],
            },
        }
        await core.create_namespaced_pod(namespace, pod)
        names.append(name)
    return names


async def test_a_vm_waits_for_its_nodes_seal_server_then_lands_where_one_is_ready(
    api: client.ApiClient, namespace: str, operator: Path
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    nodes = await cc_nodes(core)
    holders = await block_port(core, namespace, nodes)
    await create_worker(api, namespace, "w0", release=with_enclave(ENCLAVE))

    # The DaemonSet exists, checks the release's enclave, and cannot be placed yet.
    ds = await eventually(
        # The operator's start included: slow on a loaded machine.
        lambda: _read_ds(apps, namespace, daemonset_name(ENCLAVE)),
        within=120,
        what="DaemonSet",
    )
    args = ds.spec.template.spec.containers[0].args
    assert f"--expect-enclave-sha256={ENCLAVE}" in args
    assert ds.spec.template.spec.containers[0].image == with_enclave(ENCLAVE)["image"]

    async def waiting() -> dict[str, Any] | None:
        worker = await get_worker(api, namespace, "w0")
        cond = conditions(worker).get("Scheduled", {})
        return worker if cond.get("reason") == "SealServerNotReady" else None

    worker = await eventually(waiting, within=30, what="Scheduled=False SealServerNotReady")
    message = conditions(worker)["Scheduled"]["message"]
    assert ENCLAVE[:16] in message and daemonset_name(ENCLAVE) in message
    (pod,) = await worker_pods(api, namespace, "w0")
    assert not pod.spec.node_name  # held: no node has a ready seal server
    assert all(not p.spec.node_name for p in await seal_pods(core, namespace, ENCLAVE))

    # The port frees: the seal servers are placed and Ready, the nodes labelled, the VM placed.
    for name in holders:
        await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    async def placed() -> client.V1Pod | None:
        # One pod, placed: while the operator moves the held pod to another instance
        # (InstanceMoved) there are briefly none, or the old one deleting beside it.
        pods = [
            p
            for p in await worker_pods(api, namespace, "w0")
            if p.spec.node_name and not p.metadata.deletion_timestamp
        ]
        return pods[0] if len(pods) == 1 else None

    launcher = await eventually(placed, within=60, what="the launcher pod placed")
    node = await core.read_node(launcher.spec.node_name)
    assert node.metadata.labels[labels.SEAL_ENCLAVE] == ENCLAVE[:16]
    on_node = [
        p
        for p in await seal_pods(core, namespace, ENCLAVE)
        if p.spec.node_name == node.metadata.name
    ]
    assert on_node and pod_ready(on_node[0])

    async def scheduled() -> bool:
        cond = conditions(await get_worker(api, namespace, "w0")).get("Scheduled", {})
        return cond.get("status") == "True"

    await eventually(scheduled, within=30, what="Scheduled=True")


async def test_one_seal_server_per_node_and_an_unused_enclave_loses_its_daemonset(
    api: client.ApiClient, namespace: str, operator: Path
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    nodes = await cc_nodes(core)
    # Paused: no VM, but the worker names the enclave, so its seal server runs.
    await create_worker(api, namespace, "a", release=with_enclave(ENCLAVE), paused=True)

    async def all_ready() -> bool:
        pods = await seal_pods(core, namespace, ENCLAVE)
        return {p.spec.node_name for p in pods if pod_ready(p)} == nodes

    await eventually(all_ready, within=60, what="a Ready seal server on every CC node")
    # A second enclave cannot share a node with the first (one vsock port 12345 per host).
    await create_worker(api, namespace, "b", release=with_enclave(OTHER_ENCLAVE), paused=True)
    await eventually(
        lambda: _read_ds(apps, namespace, daemonset_name(OTHER_ENCLAVE)),
        within=30,
        what="2nd DaemonSet",
    )

    async def second_pending() -> list[client.V1Pod] | None:
        pods = await seal_pods(core, namespace, OTHER_ENCLAVE)
        unschedulable = [
            p for p in pods if any(c.reason == "Unschedulable" for c in p.status.conditions or [])
        ]
        return pods if pods and len(unschedulable) == len(pods) else None

    pods = await eventually(second_pending, within=60, what="the second enclave's pods Pending")
    assert all(not p.spec.node_name for p in pods)

    # Its last worker gone, the second enclave's DaemonSet goes; the first's stays.
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "cocoon.network", "v1alpha1", namespace, "cocoonworkers", "b"
    )
    await eventually(worker_deleted(api, namespace, "b"), within=60, what="worker b deleted")

    async def gone() -> bool:
        return await _read_ds(apps, namespace, daemonset_name(OTHER_ENCLAVE)) is None

    await eventually(gone, within=30, what="the unused DaemonSet deleted")
    assert await _read_ds(apps, namespace, daemonset_name(ENCLAVE)) is not None


async def _read_ds(apps: client.AppsV1Api, namespace: str, name: str) -> client.V1DaemonSet | None:
    try:
        return await apps.read_namespaced_daemon_set(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
