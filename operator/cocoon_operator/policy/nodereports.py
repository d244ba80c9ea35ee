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

from cocoon_operator.api.nodereport import NodeReport, VmRecord


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
