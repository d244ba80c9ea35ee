"""Decisions over the per-node agents' reports (pure).

Two facts matter to the operator. A VM the launcher started still runs but no
launcher pod of that uid exists: its GPU may still be held while the scheduler
counts it free (a force-deleted pod, a kubelet that lost its pod). And which
GPU each running worker VM got, for ``status.gpu``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from cocoon_operator.api.nodereport import (
    MODEL_READY,
    ModelRecord,
    NodeReport,
    RelayedQuote,
    VmRecord,
)


@dataclass(frozen=True)
class LivePod:
    """A launcher pod the apiserver still has."""

    namespace: str
    worker: str
    worker_uid: str | None
    pod: str
    node: str | None


@dataclass(frozen=True)
class Orphan:
    node: str
    vm: VmRecord

    @property
    def key(self) -> tuple[str, str]:
        return (self.node, self.vm.pod_uid)

    def describe(self) -> str:
        gpu = f"GPU {self.vm.pci}" if self.vm.pci else "its GPU"
        return (
            f"VM of pod {self.vm.pod} (instance {self.vm.instance}, pid {self.vm.pid}) still runs"
            f" on node {self.node} with no launcher pod: it may hold {gpu}, which the scheduler"
            " now counts as free; stop it on the node"
        )


def orphaned(
    reports: Mapping[str, NodeReport],
    live: Mapping[str, LivePod],
    first_seen: Mapping[tuple[str, str], dt.datetime],
    *,
    now: dt.datetime,
    grace: dt.timedelta,
) -> tuple[list[Orphan], dict[tuple[str, str], dt.datetime]]:
    """Running VMs without their pod for at least ``grace``, and the updated first-seen map.

    The grace covers a report written before the launcher removed its state
    file on a normal stop, and an operator that has not listed all pods yet.
    """
    seen: dict[tuple[str, str], dt.datetime] = {}
    out = []
    for node, report in sorted(reports.items()):
        for vm in report.vms:
            pod = live.get(vm.pod_uid)
            if not vm.running or (pod is not None and pod.node in (None, node)):
                continue
            key = (node, vm.pod_uid)
            since = first_seen.get(key, now)
            seen[key] = since
            if now - since >= grace:
                out.append(Orphan(node, vm))
    return out, seen


def worker_gpus(
    reports: Mapping[str, NodeReport], live: Mapping[str, LivePod]
) -> dict[tuple[str, str], str]:
    """The PCI address of the GPU each live pod's running VM holds, by (namespace, worker)."""
    out = {}
    for node, report in reports.items():
        for vm in report.vms:
            pod = live.get(vm.pod_uid)
            if vm.running and vm.pci and pod is not None and pod.node == node:
                out[(pod.namespace, pod.worker)] = vm.pci
    return out


@dataclass(frozen=True)
class HostProblem:
    """Why the node agent's report does not vouch for a worker's VM.

    ``definite``: the host is wrong (a failing host check, a GPU not passed to
    the VM); otherwise the agent has simply not reported the VM yet, which is
    waited out like a VM that is still booting.
    """

    message: str
    definite: bool


def host_problem(report: NodeReport | None, *, node: str, pod_uid: str) -> HostProblem | None:
    """What is wrong with the host of the VM of launcher pod ``pod_uid`` on ``node``, if anything.

    The evidence a VM presents proves what runs inside it; the agent's report
    is the operator's view of the host around it: TDX and the devices the
    launch needs present, and this VM holding a GPU bound to ``vfio-pci``
    (passed through, not shared with the host's driver).
    """
    if report is None:
        return HostProblem(f"no report from the node agent on {node}", definite=False)
    failing = report.failing()
    if failing:
        checks = "; ".join(f"{c.name}: {c.message}" for c in failing)
        return HostProblem(f"host checks failing on {node}: {checks}", definite=True)
    vm = next((v for v in report.vms if v.pod_uid == pod_uid and v.running), None)
    if vm is None:
        return HostProblem(
            f"the node agent on {node} does not report this pod's VM running (yet)",
            definite=False,
        )
    return _gpu_problem(report, vm, node)


def _gpu_problem(report: NodeReport, vm: VmRecord, node: str) -> HostProblem | None:
    if not vm.pci:
        return HostProblem(f"the VM on {node} holds no GPU", definite=True)
    gpu = next((g for g in report.gpus if g.pci == vm.pci), None)
    if gpu is None:
        return HostProblem(f"GPU {vm.pci} of the VM is not among {node}'s GPUs", definite=True)
    if gpu.driver != "vfio-pci":
        return HostProblem(
            f"GPU {vm.pci} on {node} is bound to {gpu.driver or 'no driver'}, not vfio-pci",
            definite=True,
        )
    return None


@dataclass(frozen=True)
class NoQuote:
    """Why no relayed quote can be used for a pod's VM (waited out like a booting VM)."""

    message: str


def relayed_quote(
    report: NodeReport | None, *, node: str, pod_uid: str, instance: int
) -> RelayedQuote | NoQuote:
    """The latest quote the launcher relayed for the VM of launcher pod ``pod_uid``.

    Taken only from the report of the node the pod runs on, only from the record
    of a running VM with the pod's uid *and* instance: a quote filed under any
    other pod, instance or node is not this VM's, whatever it measures.
    """
    if report is None or report.node != node:
        return NoQuote(f"no report from the node agent on {node}")
    vm = next(
        (v for v in report.vms if v.pod_uid == pod_uid and v.instance == instance and v.running),
        None,
    )
    if vm is None:
        return NoQuote(f"the node agent on {node} does not report this pod's VM running (yet)")
    if vm.quote is None:
        return NoQuote(f"the launcher on {node} has relayed no quote for instance {instance} yet")
    return vm.quote


def model_on(report: NodeReport | None, verity: str) -> ModelRecord | None:
    """What ``report``'s node says of the model ``verity`` in its cache, if anything."""
    if report is None:
        return None
    return next((m for m in report.models if m.verity == verity), None)


#: At most this many nodes in a launcher pod's preferred-node term.
MAX_PREFERRED_NODES = 32


def nodes_with_model(
    reports: Mapping[str, NodeReport], verity: str, limit: int = MAX_PREFERRED_NODES
) -> list[str]:
    """The nodes whose report lists the model ``verity`` Ready, sorted (at most ``limit``):
    a new launcher pod prefers them (no download, no build)."""
    found = [
        node
        for node, report in reports.items()
        if (m := model_on(report, verity)) is not None and m.phase == MODEL_READY
    ]
    return sorted(found)[:limit]
