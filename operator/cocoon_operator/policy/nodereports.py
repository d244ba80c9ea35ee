"""Decisions over the per-node agents' reports (pure).

Two facts matter to the operator. A VM the launcher started still runs but no
launcher pod of that uid exists: its GPU may still be held while the scheduler
counts it free (a force-deleted pod, a kubelet that lost its pod). And which
GPU each running worker VM got, for ``status.gpu``.

A report vouches only while it is fresh: the agent rewrites it at least every
heartbeat, so one older than the operator's ``--node-report-max-age-seconds``
comes from an agent that stopped (or a node that went), and it counts as no
report at all (:class:`StaleReport`), never as the last word on the host.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocoon_operator.api.conditions import Phase
from cocoon_operator.api.nodereport import (
    MODEL_READY,
    GuestHealthReport,
    ModelRecord,
    NodeReport,
    RelayedQuote,
    VmRecord,
)

if TYPE_CHECKING:
    from cocoon_operator.policy.worker import PodFacts


@dataclass(frozen=True)
class StaleReport:
    """A report too old to vouch for anything: its agent stopped writing."""

    node: str
    reported_at: dt.datetime | None  # None: no readable stamp
    max_age: dt.timedelta

    def describe(self) -> str:
        if self.reported_at is None:
            return f"the node agent's report for {self.node} carries no reported-at stamp"
        stamp = self.reported_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"the node agent on {self.node} last reported at {stamp}, more than"
            f" {int(self.max_age.total_seconds())}s ago: is it running?"
        )


def report_stamp(reported_at: dt.datetime | None, *, observed: dt.datetime) -> dt.datetime | None:
    """When a report was written, for its freshness: the agent's own stamp, but never
    later than when the operator saw the report (a node's clock running ahead, or
    a stamp in the future, buys no extra life)."""
    if reported_at is None:
        return None
    return min(reported_at, observed)


def fresh(
    report: NodeReport | None,
    stamp: dt.datetime | None,
    *,
    now: dt.datetime,
    max_age: dt.timedelta,
) -> NodeReport | StaleReport | None:
    """``report`` while it is at most ``max_age`` old, else why it no longer counts."""
    if report is None:
        return None
    if stamp is None or now - stamp > max_age:
        return StaleReport(report.node, stamp, max_age)
    return report


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


def vm_gpu(reports: Mapping[str, NodeReport], pods: Iterable[PodFacts]) -> str | None:
    """The PCI address of the GPU a worker's running VM holds, by its node's report:
    its current pod's VM first, else that of a pod being stopped whose VM still
    runs; None when no report shows a VM of its pods running with a GPU.

    A VM counts only on the node its pod is bound to, and only for that pod's uid:
    a node's agent speaks for its own VMs.
    """
    held = None
    for pod in sorted(pods, key=lambda p: not p.deleting):  # the current pod last: it wins
        report = reports.get(pod.node or "")
        if report is None or not pod.uid:
            continue
        vm = next((v for v in report.vms if v.pod_uid == pod.uid), None)
        if vm is not None and vm.running and vm.pci:
            held = vm.pci
    return held


#: What a worker's pods' nodes say of its model (node, record) and the GPU its VM
#: holds: the model check's news (handlers/nodes.py).
ModelNews = tuple[tuple[tuple[str, ModelRecord | None], ...], str | None]

#: The longest a worker's new GPU waits for the attestation step's write: three of
#: the chart's attestation checks (attestation.checkSeconds, 10 s).
GPU_NEWS_HOLD = dt.timedelta(seconds=30)


class NewsAction(enum.Enum):
    """What the model check does with what the reports say of a worker."""

    NOTHING = "nothing"  # nothing new, or nothing the status does not show already
    HOLD = "hold"  # only a GPU, which the attestation's write will carry
    RECONCILE = "reconcile"


def model_news_action(
    seen: ModelNews | None,
    said: ModelNews,
    *,
    status_gpu: str | None,
    phase: str | None,
    held_since: dt.datetime | None,
    now: dt.datetime,
) -> NewsAction:
    """Whether the reports' news of a worker calls for a reconcile now.

    A VM's GPU shows in its node's report about when its quote does, and a
    worker that is Attesting is about to be written by the attestation step,
    which reads that report for the quote and writes the whole status, GPU
    included (handlers/reconciler.py ``with_models``). A reconcile of its own
    for the GPU was a status write per worker on its way to Ready (0.8 of 12
    at 1,000 workers: docs/bench.md), so news of the GPU alone waits for that
    write, at most :data:`GPU_NEWS_HOLD`. News of the model never waits: its
    progress is the ModelReady condition users watch. A GPU the status already
    shows is no news.
    """
    if seen == said:
        return NewsAction.NOTHING
    if seen is None or seen[0] != said[0]:
        return NewsAction.RECONCILE
    if said[1] == status_gpu:
        return NewsAction.NOTHING
    waiting = held_since is None or now - held_since < GPU_NEWS_HOLD
    if phase == Phase.ATTESTING.value and said[1] is not None and waiting:
        return NewsAction.HOLD
    return NewsAction.RECONCILE


@dataclass(frozen=True)
class HostProblem:
    """Why the node agent's report does not vouch for a worker's VM.

    ``definite``: the host is wrong (a failing host check, a GPU not passed to
    the VM); otherwise the agent has simply not reported the VM yet, which is
    waited out like a VM that is still booting.
    """

    message: str
    definite: bool


def host_problem(
    report: NodeReport | StaleReport | None, *, node: str, pod_uid: str
) -> HostProblem | None:
    """What is wrong with the host of the VM of launcher pod ``pod_uid`` on ``node``, if anything.

    The evidence a VM presents proves what runs inside it; the agent's report
    is the operator's view of the host around it: TDX and the devices the
    launch needs present, and this VM holding a GPU bound to ``vfio-pci``
    (passed through, not shared with the host's driver).
    """
    if report is None:
        return HostProblem(f"no report from the node agent on {node}", definite=False)
    if isinstance(report, StaleReport):
        return HostProblem(report.describe(), definite=False)
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
    report: NodeReport | StaleReport | None, *, node: str, pod_uid: str, instance: int
) -> RelayedQuote | NoQuote:
    """The latest quote the launcher relayed for the VM of launcher pod ``pod_uid``.

    Taken only from the report of the node the pod runs on, only from the record
    of a running VM with the pod's uid *and* instance: a quote filed under any
    other pod, instance or node is not this VM's, whatever it measures.
    """
    if isinstance(report, StaleReport):
        return NoQuote(report.describe())
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


def guest_health(
    report: NodeReport | None, *, node: str, pod_uid: str, instance: int
) -> GuestHealthReport | None:
    """What the guest health monitor of the VM of launcher pod ``pod_uid`` last said,
    bound exactly as :func:`relayed_quote` (this node's report, this pod's uid and
    instance); None when the host has no reading (it may not reach the monitor)."""
    if report is None or report.node != node:
        return None
    vm = next(
        (v for v in report.vms if v.pod_uid == pod_uid and v.instance == instance and v.running),
        None,
    )
    return None if vm is None else vm.health
