"""The per-node agent, run as its own process on a host tree of one simulated node,
publishes that node's report; the operator puts the GPU of the worker's VM into
``status.gpu``, and when the launcher pod is force-deleted while its VM runs on,
reports the orphaned VM on the worker (once), then reports it gone once it stops."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api.nodereport import (
    REPORT_KEY,
    HostCheck,
    NodeReport,
    report_name,
)
from cocoon_operator.desired.nodeagent import report_config_map
from tests.cluster.helpers import attested_is, conditions, create_worker, get_worker, worker_pods
from tests.cluster.operator import running_cli, running_operator
from tests.cluster.simulated import running_agent
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually
from tests.unit.nodeagent.hosts import gpu, tdx_host, vm_state

PCI = "0000:1b:00.0"


def running_node_agent(
    kubeconfig: Path, namespace: str, node: str, host: Path, log: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return running_cli(
        kubeconfig,
        log,
        "node-agent",
        f"--node-name={node}",
        f"--namespace={namespace}",
        f"--host-root={host}",
        "--interval=0.5",
    )


@contextmanager
def qemu_stand_in(instance: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process named as the launcher names the VM's QEMU."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(600)",
            "-name",
            f"cocoon-instance-{instance}",
        ]
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def events(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    listed = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return list(listed.items)


async def test_the_agent_reports_the_gpu_and_a_force_deleted_pods_vm_is_reported(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    args = ("--attestation-boot-grace-seconds", "0")
    agents = ("--node-report-namespace", namespace, "--orphan-grace-seconds", "2")
    with running_operator(stack.kubeconfig, namespace, log, *args, *agents) as operator:
        await create_worker(api, namespace, "w")

        async def scheduled() -> Any:
            pods = [p for p in await worker_pods(api, namespace, "w") if p.spec.node_name]
            return pods[0] if pods and pods[0].status.phase == "Running" else None

        pod = await eventually(scheduled, within=60, what="a running launcher pod")
        node, instance = pod.spec.node_name, int(pod.metadata.labels["cocoon.network/instance"])

        host = tmp_path / "host"
        host.mkdir()
        os.symlink("/proc", host / "proc")
        tdx_host(host)
        gpu(host, PCI)
        with (
            qemu_stand_in(instance) as qemu,
            running_node_agent(stack.kubeconfig, namespace, node, host, tmp_path / "agent.log"),
        ):
            vm_state(
                host,
                instance=instance,
                namespace=namespace,
                worker="w",
                pod=pod.metadata.name,
                pod_uid=pod.metadata.uid,
                pci=PCI,
                pid=qemu.pid,
            )

            async def published() -> dict[str, Any] | None:
                try:
                    cm = await client.CoreV1Api(api).read_namespaced_config_map(
                        report_name(node), namespace
                    )
                except ApiException:
                    return None
                got: dict[str, Any] = json.loads(cm.data[REPORT_KEY])
                return got if got["vms"] and got["vms"][0]["running"] else None

            report = await eventually(published, within=30, what="the node's report")
            assert report["node"] == node and [g["pci"] for g in report["gpus"]] == [PCI]
            # No vsock on this machine: the agent says so rather than guessing.
            failing = {c["name"] for c in report["checks"] if not c["ok"]}
            assert failing <= {"quote-service", "seal-server"}, report["checks"]

            async def gpu_in_status() -> str | None:
                gpu: str | None = (
                    (await get_worker(api, namespace, "w")).get("status", {}).get("gpu")
                )
                return gpu

            assert await eventually(gpu_in_status, within=30, what="status.gpu") == PCI

            async def gpu_in_status_is(value: str | None) -> bool:
                return await gpu_in_status() == value

            # Force-delete the pod: the apiserver forgets it at once; its VM runs on.
            await client.CoreV1Api(api).delete_namespaced_pod(
                pod.metadata.name, namespace, grace_period_seconds=0
            )

            async def reported(reason: str) -> list[Any]:
                return [e for e in await events(api, namespace, "w") if e.reason == reason]

            orphan = await eventually(
                lambda: reported("OrphanedVM"), within=30, what="an OrphanedVM event"
            )
            assert len(orphan) == 1 and orphan[0].type == "Warning"
            # The replacement pod has no VM yet: the old GPU is not claimed for it.
            assert await eventually(
                lambda: gpu_in_status_is(None), within=30, what="status.gpu cleared"
            )
            assert node in orphan[0].message and PCI in orphan[0].message
            assert pod.metadata.name in orphan[0].message

            qemu.kill()  # someone stopped it on the node
            qemu.wait()
            gone = await eventually(
                lambda: reported("OrphanedVMGone"), within=30, what="an OrphanedVMGone event"
            )
            assert len(gone) == 1 and node in gone[0].message
            assert len(await reported("OrphanedVM")) == 1  # said once, not every sweep
        assert operator.poll() is None, log.read_text()[-3000:]


async def _write_report(api: client.ApiClient, namespace: str, pod: Any, *, tdx_ok: bool) -> None:
    """The node's report as its agent publishes it (the pod's VM and its relayed quote),
    with the host's tdx check passing or failing."""
    core = client.CoreV1Api(api)

    async def quoted() -> NodeReport | None:
        try:
            cm = await core.read_namespaced_config_map(report_name(pod.spec.node_name), namespace)
        except ApiException as err:
            if err.status == 404:
                return None  # not published yet
            raise
        report = NodeReport.model_validate_json(cm.data[REPORT_KEY])
        mine = [v for v in report.vms if v.pod_uid == pod.metadata.uid and v.quote]
        return report if mine else None

    published = await eventually(quoted, within=30, what="the pod's VM reported with a quote")
    check = HostCheck(
        name="tdx",
        ok=tdx_ok,
        message="kvm_intel tdx=Y" if tdx_ok else "kvm_intel tdx is not enabled",
    )
    others = [c for c in published.checks if c.name != "tdx"]
    report = published.model_copy(update={"checks": [check, *others]})
    body: Any = report_config_map(namespace, report, dt.datetime.now(dt.UTC))
    await core.replace_namespaced_config_map(body["metadata"]["name"], namespace, body)


async def test_a_host_its_node_agent_objects_to_keeps_the_worker_out_of_ready(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Evidence that verifies is not enough: the node agent's report of the host
    (TDX enabled, the VM's GPU passed through) must vouch for it too."""
    log = tmp_path / "operator.log"
    with running_agent(stack.kubeconfig, namespace, tmp_path) as agent:
        args = agent.operator_args()
        with running_operator(stack.kubeconfig, namespace, log, *args) as operator:
            await create_worker(api, namespace, "w")

            async def running() -> Any:
                pods = [p for p in await worker_pods(api, namespace, "w") if p.spec.node_name]
                return pods[0] if pods and pods[0].status.phase == "Running" else None

            pod = await eventually(running, within=60, what="a running launcher pod")
            await _write_report(api, namespace, pod, tdx_ok=False)
            worker = await eventually(
                attested_is(api, namespace, "w", "False", "HostRejected"),
                within=30,
                what="Attested=False for the host",
            )
            message = conditions(worker)["Attested"]["message"]
            assert "tdx is not enabled" in message and pod.spec.node_name in message, message
            assert worker["status"]["phase"] != "Ready"

            await _write_report(api, namespace, pod, tdx_ok=True)
            worker = await eventually(
                attested_is(api, namespace, "w", "True"), within=30, what="Attested=True"
            )
            assert "failure" not in worker["status"]["attestation"]
            assert operator.poll() is None, log.read_text()[-3000:]


async def test_the_simulation_agent_stands_in_for_node_agents_on_the_local_stack(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """With ``--node-reports`` the simulation agent publishes each simulated node's
    report as the DaemonSet would: the gate gets the host's vouching and the worker's
    ``status.gpu`` the PCI address of its VM's GPU; a deleted pod's VM leaves the report."""
    log = tmp_path / "operator.log"
    with running_agent(stack.kubeconfig, namespace, tmp_path) as agent:
        args = agent.operator_args()
        with running_operator(stack.kubeconfig, namespace, log, *args) as operator:
            await create_worker(api, namespace, "w")

            async def attested_with_gpu() -> dict[str, Any] | None:
                w = await get_worker(api, namespace, "w")
                attested = conditions(w).get("Attested", {}).get("status") == "True"
                return w if attested and w["status"].get("gpu") else None

            worker = await eventually(attested_with_gpu, within=60, what="Attested, status.gpu")
            (pod,) = await worker_pods(api, namespace, "w")
            cm = await client.CoreV1Api(api).read_namespaced_config_map(
                report_name(pod.spec.node_name), namespace
            )
            report = NodeReport.model_validate_json(cm.data[REPORT_KEY])
            (vm,) = [v for v in report.vms if v.pod_uid == pod.metadata.uid]
            assert worker["status"]["gpu"] == vm.pci
            assert report.host_ready and vm.running

            await client.CoreV1Api(api).delete_namespaced_pod(pod.metadata.name, namespace)

            async def vm_gone() -> bool:
                cm = await client.CoreV1Api(api).read_namespaced_config_map(
                    report_name(pod.spec.node_name), namespace
                )
                now = NodeReport.model_validate_json(cm.data[REPORT_KEY])
                return all(v.pod_uid != pod.metadata.uid for v in now.vms)

            await eventually(vm_gone, within=30, what="the deleted pod's VM left the report")
            assert operator.poll() is None, log.read_text()[-3000:]
