"""Write a node's report to its ConfigMap: only when it changed, or to show the agent lives."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cocoon_operator.api.nodereport import NodeReport
from cocoon_operator.desired.nodeagent import report_config_map
from cocoon_operator.k8s.rest import MERGE_PATCH, Kube, NotFound, path


def said(report: NodeReport) -> NodeReport:
    """What ``report`` says, without the times of readings that said the same again.

    A VM's health record carries when the launcher last read the guest's health
    monitor (``checkedAt``): every poll moves it (the launcher's
    ``--health-seconds``, 60 by default), so a host of eight VMs would have its
    report rewritten at nearly every probe, and every such write is watched and
    parsed by the operator: 1,250 nodes at 15 s probes, over 80 writes of about
    60 KB a second, for a time nothing decides on (the operator compares the
    health's hashes with the verified quote: policy/attestation.py,
    ``cross_check_health``).
    A change of what the monitor reports is written at once; the reading's time
    goes out with the next write or heartbeat.
    """
    if not any(vm.health is not None for vm in report.vms):
        return report
    vms = [
        vm.model_copy(update={"health": vm.health.model_copy(update={"checked_at": ""})})
        if vm.health is not None
        else vm
        for vm in report.vms
    ]
    return report.model_copy(update={"vms": vms})


@dataclass
class Publisher:
    """Compare-then-write for one node's report.

    Remembers what it last wrote, so a host that does not change costs one
    write per ``heartbeat`` (the operator reads the stamp to tell a silent
    agent from a quiet host), not one per probe, and once at start, which
    refreshes the stamp. A new health reading that says what the last one said
    is not a change (:func:`said`). Writes are one at a time: two at once could
    both find no ConfigMap and both create it (409 for one).

    The heartbeats keep a phase of the agent's own: the first comes a random
    part of a heartbeat after the first write, each later one a whole
    heartbeat after the one before, whatever was written between. Agents
    started together (a DaemonSet's rollout; the simulation agent, which
    publishes every node) would otherwise beat together, and the operator
    parses every node's report (about 60 KB for eight VMs) in one burst: 375
    of them at once held its event loop up to 0.7 s at 3,000 workers
    (docs/bench.md). A phase drawn once spreads them without the writes a
    random delay at every beat adds (a mean three quarters of a heartbeat
    apart made a third more writes), and a change that every node writes at
    the same moment does not pull their heartbeats back into step. No
    heartbeat passes without a write but by the wait for the next probe.
    """

    api: Kube
    namespace: str
    heartbeat: dt.timedelta
    _written: str | None = None  # what the last write said (:func:`said`), as JSON
    # Where in the heartbeat this agent beats, drawn once: [0, 1).
    phase: Callable[[], float] = random.random
    _due_at: dt.datetime | None = None  # the next heartbeat
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.heartbeat <= dt.timedelta(0):
            raise ValueError(f"the heartbeat must be positive, got {self.heartbeat}")

    def _path(self, name: str | None = None) -> str:
        return path("v1", "configmaps", namespace=self.namespace, name=name)

    async def publish(self, report: NodeReport, now: dt.datetime) -> bool:
        """Write ``report`` if it differs from the stored one or the heartbeat is due."""
        async with self._lock:
            return await self._publish(report, now)

    async def _publish(self, report: NodeReport, now: dt.datetime) -> bool:
        text = said(report).to_json()
        due = self._due_at is None or now >= self._due_at
        if text == self._written and not due:
            return False
        body = report_config_map(self.namespace, report, now)
        try:
            await self.api.request(
                "PATCH", self._path(body["metadata"]["name"]), body=body, content_type=MERGE_PATCH
            )
        except NotFound:
            await self.api.request("POST", self._path(), body=body)
        self._written = text
        if self._due_at is None:
            self._due_at = now + self.heartbeat * (1 - self.phase())
        while self._due_at <= now:
            self._due_at += self.heartbeat
        return True
