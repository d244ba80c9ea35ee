"""Write a node's report to its ConfigMap: only when it changed, or to show the agent lives."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api.nodereport import REPORT_KEY, NodeReport, report_name
from cocoon_operator.desired.nodeagent import report_config_map
from cocoon_operator.k8s.client import MERGE_PATCH


@dataclass
class Publisher:
    """Compare-then-write for one node's report.

    Remembers what it last wrote, so a host that does not change costs one
    write per ``heartbeat`` (the operator reads the stamp to tell a silent
    agent from a quiet host), not one per probe.
    """

    api: client.ApiClient
    namespace: str
    heartbeat: dt.timedelta
    _written: str | None = None
    _written_at: dt.datetime | None = None
    _loaded: bool = False

    async def _load(self, node: str) -> None:
        try:
            cm = await client.CoreV1Api(self.api).read_namespaced_config_map(
                report_name(node), self.namespace
            )
        except ApiException as err:
            if err.status != 404:
                raise
        else:
            self._written = (cm.data or {}).get(REPORT_KEY)
        self._loaded = True

    async def publish(self, report: NodeReport, now: dt.datetime) -> bool:
        """Write ``report`` if it differs from the stored one or the heartbeat is due."""
        if not self._loaded:
            await self._load(report.node)
        text = report.to_json()
        due = self._written_at is None or now - self._written_at >= self.heartbeat
        if text == self._written and not due:
            return False
        # The builder's plain manifest; the client serialises dicts as they are.
        body: Any = report_config_map(self.namespace, report, now)
        core = client.CoreV1Api(self.api)
        try:
            await core.patch_namespaced_config_map(
                body["metadata"]["name"], self.namespace, body, **MERGE_PATCH
            )
        except ApiException as err:
            if err.status != 404:
                raise
            await core.create_namespaced_config_map(self.namespace, body)
        self._written, self._written_at = text, now
        return True
