"""The node agents' reports as the operator holds them: the node-report step's state.

Written by that step (handlers/nodes.py: the reports' watch, the launcher pods'
events) and read by the others through :class:`~cocoon_operator.handlers.runtime.Runtime`:
the attestation check (a relayed quote, the host's objection, the guest's
health), the chain step (the node wallet a launcher derived) and every
reconcile (what the nodes say of the worker's model). Its own module, so the
readers need not import the step.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import LABEL_WORKER
from cocoon_operator.api.nodereport import (
    REPORT_KEY,
    REPORTED_AT_ANNOTATION,
    NodeReport,
    report_name,
)
from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.policy.nodereports import (
    LivePod,
    ModelNews,
    Orphan,
    StaleReport,
    fresh,
    report_stamp,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeReportOptions:
    namespace: str
    grace_seconds: float = 60.0
    sweep_seconds: float = 5.0
    # Past this age a report vouches for nothing (the agent rewrites it every heartbeat).
    max_age_seconds: float = 900.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class NodeReports:
    """What the operator knows of nodes and launcher pods, and what it already said."""

    options: NodeReportOptions
    reports: dict[str, NodeReport] = field(default_factory=dict)
    stamps: dict[str, dt.datetime | None] = field(default_factory=dict)  # node -> written at
    report_nodes: dict[str, str] = field(default_factory=dict)  # ConfigMap name -> node
    clock: Callable[[], dt.datetime] = _utcnow
    live: dict[str, LivePod] = field(default_factory=dict)
    # Worker uids from every launcher pod seen: an orphan's own pod is gone.
    worker_uids: dict[tuple[str, str], str] = field(default_factory=dict)
    first_seen: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    announced: dict[tuple[str, str], Orphan] = field(default_factory=dict)
    # What each worker's pods' nodes said of its model, and of the GPU its VM holds, at
    # its last reconcile by the model check.
    models_seen: dict[tuple[str, str], ModelNews] = field(default_factory=dict)
    # Since when the model check has held back news of a worker's GPU (it waits for
    # the attestation's write: policy/nodereports.py ``model_news_action``).
    gpu_held: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def observe_pod(self, event_type: str | None, body: kopf.Body) -> None:
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if not uid:
            return
        if event_type == "DELETED":
            self.live.pop(uid, None)
            return
        owner: dict[str, Any] = next(
            (o for o in meta.get("ownerReferences", []) or [] if o.get("kind") == v1alpha1.KIND),
            {},
        )
        pod = LivePod(
            namespace=meta.get("namespace", ""),
            worker=(meta.get("labels") or {}).get(LABEL_WORKER, ""),
            worker_uid=owner.get("uid"),
            pod=meta.get("name", ""),
            node=(body.get("spec") or {}).get("nodeName") or None,
        )
        self.live[uid] = pod
        if pod.worker_uid:
            self.worker_uids[(pod.namespace, pod.worker)] = pod.worker_uid

    def observe_report(self, event_type: str | None, obj: dict[str, Any]) -> None:
        text = (obj.get("data") or {}).get(REPORT_KEY)
        name = obj.get("metadata", {}).get("name", "?")
        if event_type == "DELETED" or text is None:
            node = self.report_nodes.pop(name, None)
            if node is not None:
                self.reports.pop(node, None)
                self.stamps.pop(node, None)
            return
        try:
            report = NodeReport.model_validate_json(text)
        except ValidationError as exc:
            log.warning("node report %s is not valid: %s", name, exc.errors()[:1])
            return
        if report_name(report.node) != name:
            # One node's agent speaks for its own node only: the report's name says which.
            log.warning("node report %s speaks for node %s: ignored", name, report.node)
            return
        self.report_nodes[name] = report.node
        self.reports[report.node] = report
        annotations = obj.get("metadata", {}).get("annotations") or {}
        self.stamps[report.node] = report_stamp(
            parse_rfc3339(annotations.get(REPORTED_AT_ANNOTATION)), observed=self.clock()
        )

    def current(self, node: str | None) -> NodeReport | StaleReport | None:
        """``node``'s report if it is fresh now; why not, if it is stale; None if none."""
        report = self.reports.get(node or "")
        return fresh(
            report,
            self.stamps.get(node or ""),
            now=self.clock(),
            max_age=dt.timedelta(seconds=self.options.max_age_seconds),
        )

    def fresh_reports(self) -> dict[str, NodeReport]:
        """Every node's report that still vouches for its host."""
        out = {}
        for node in self.reports:
            report = self.current(node)
            if isinstance(report, NodeReport):
                out[node] = report
        return out

    def node_wallet(self, node: str | None, pod_uid: str | None) -> str | None:
        """The node wallet the launcher of pod ``pod_uid`` derived from its key and owner,
        as that node's agent reports it (the only source trusted for it), while fresh."""
        report = self.current(node)
        if not isinstance(report, NodeReport) or not pod_uid:
            return None
        return next((vm.node_wallet for vm in report.vms if vm.pod_uid == pod_uid), None)

    def worker_ref(self, namespace: str, worker: str) -> dict[str, Any] | None:
        """A reference to the worker to hang an Event on, if one of its pods was seen."""
        uid = self.worker_uids.get((namespace, worker))
        if uid is None:
            return None
        return {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.KIND,
            "metadata": {"name": worker, "namespace": namespace, "uid": uid},
        }
