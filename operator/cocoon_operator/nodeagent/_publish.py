"""Write a node's report to its ConfigMap: only when it changed, or to show the agent lives."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

from cocoon_operator.api.nodereport import REPORT_KEY, NodeReport, report_name
from cocoon_operator.desired.nodeagent import report_config_map
from cocoon_operator.k8s.rest import MERGE_PATCH, Kube, NotFound, path


@dataclass
class Publisher:
    """Compare-then-write for one node's report.

    Remembers what it last wrote, so a host that does not change costs one
    write per ``heartbeat`` (the operator reads the stamp to tell a silent
    agent from a quiet host), not one per probe. Writes are one at a time: two
    at once could both find no ConfigMap and both create it (409 for one).
    """

    api: Kube
    namespace: str
    heartbeat: dt.timedelta
    _written: str | None = None
    _written_at: dt.datetime | None = None
    _loaded: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _load(self, node: str) -> None:
        cm = await self.api.request_unless_gone("GET", self._path(report_name(node)))
        if cm is not None:
            self._written = (cm.get("data") or {}).get(REPORT_KEY)
        self._loaded = True

    def _path(self, name: str | None = None) -> str:
        return path("v1", "configmaps", namespace=self.namespace, name=name)

    async def publish(self, report: NodeReport, now: dt.datetime) -> bool:
        """Write ``report`` if it differs from the stored one or the heartbeat is due."""
        async with self._lock:
            return await self._publish(report, now)

    async def _publish(self, report: NodeReport, now: dt.datetime) -> bool:
        if not self._loaded:
            await self._load(report.node)
        text = report.to_json()
        due = self._written_at is None or now - self._written_at >= self.heartbeat
        if text == self._written and not due:
            return False
        body = report_config_map(self.namespace, report, now)
        try:
            await self.api.request(
                "PATCH", self._path(body["metadata"]["name"]), body=body, content_type=MERGE_PATCH
            )
        except NotFound:
            await self.api.request("POST", self._path(), body=body)
        self._written, self._written_at = text, now
        return True
