"""The per-node agents' reports, read by the operator: GPUs into status, orphaned VMs reported.

Off unless ``--node-report-namespace`` names the one namespace whose report
ConfigMaps are trusted (the chart's: where the agent DaemonSet runs). A watch
on that namespace keeps the reports in memory; the launcher pods' watch events
keep the set of live pods. A sweep every few seconds compares the two, in
memory, with no API reads:

- a VM the agent sees running with no launcher pod of its uid, for longer than
  the grace, gets a Warning Event ``OrphanedVM`` on its worker, once, and counts
  in ``cocoon_orphaned_vms``; ``OrphanedVMGone`` when the agent sees it stopped;
- each running worker's GPU (PCI address) goes to ``status.gpu`` when it changes,
  and is cleared when that VM stops or its pod goes.

The reports also say how each node's model cache is doing (``models``): every
reconcile reads them for the worker's ``ModelReady`` condition and a new pod's
preferred nodes (handlers/worker.py ``with_models``), and the ``model`` check
(one of the workers' shared timer's) reconciles a worker when what its pods'
nodes say of its model changes.
A report older than ``max_age_seconds`` (its ``reported-at`` stamp, capped at
when the operator saw it) vouches for nothing: not the host, not a quote, not a
node wallet, not an orphan (see :func:`policy.nodereports.fresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.nodereport import (
    REPORT_KEY,
    REPORT_LABEL,
    REPORTED_AT_ANNOTATION,
    ModelRecord,
    NodeReport,
    report_name,
)
from cocoon_operator.desired.launcher import LABEL_WORKER
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.worker import LAUNCHER_SELECTOR, Deps, Indexes, Logger, reconcile_body
from cocoon_operator.k8s.events import record
from cocoon_operator.k8s.rest import Kube, path
from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.policy.nodereports import (
    LivePod,
    Orphan,
    StaleReport,
    fresh,
    model_on,
    orphaned,
    report_stamp,
    worker_gpus,
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
    gpus_written: dict[tuple[str, str], str] = field(default_factory=dict)
    # What each worker's pods' nodes said of its model at its last reconcile by the model check.
    models_seen: dict[tuple[str, str], tuple[tuple[str, ModelRecord | None], ...]] = field(
        default_factory=dict
    )
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


async def sweep(tracker: NodeReports, deps: Deps) -> None:
    """One comparison of reports and pods; acts only on what changed since the last."""
    now = deps.clock()
    reports = tracker.fresh_reports()
    found, tracker.first_seen = orphaned(
        reports,
        tracker.live,
        tracker.first_seen,
        now=now,
        grace=dt.timedelta(seconds=tracker.options.grace_seconds),
    )
    per_node: dict[str, int] = dict.fromkeys(tracker.reports, 0)
    current = {o.key: o for o in found}
    for o in found:
        per_node[o.node] = per_node.get(o.node, 0) + 1
    for node in tracker.reports:
        report = reports.get(node)  # a stale report vouches for no host
        deps.metrics.node_host_ready.labels(node).set(1 if report and report.host_ready else 0)
    for node, count in per_node.items():
        deps.metrics.orphaned_vms.labels(node).set(count)
    for key, o in current.items():
        if key in tracker.announced:
            continue
        tracker.announced[key] = o
        log.warning("orphaned VM: %s", o.describe())
        ref = tracker.worker_ref(o.vm.namespace, o.vm.worker)
        if ref is not None:
            await record(
                deps.api, ref, reason="OrphanedVM", message=o.describe(), warning=True, now=now
            )
    for key in [k for k in tracker.announced if k not in current]:
        o = tracker.announced.pop(key)
        message = f"VM of pod {o.vm.pod} on node {o.node} is no longer running"
        log.info("%s", message)
        ref = tracker.worker_ref(o.vm.namespace, o.vm.worker)
        if ref is not None:
            await record(deps.api, ref, reason="OrphanedVMGone", message=message, now=now)
    gpus = worker_gpus(reports, tracker.live)
    for (namespace, worker), pci in gpus.items():
        if tracker.gpus_written.get((namespace, worker)) != pci:
            await deps.patch_status(namespace, worker, {"gpu": pci})
            tracker.gpus_written[(namespace, worker)] = pci
    for namespace, worker in [k for k in tracker.gpus_written if k not in gpus]:
        # Its VM stopped or its pod went: that GPU is no longer the worker's.
        await deps.patch_status(namespace, worker, {"gpu": None})
        del tracker.gpus_written[(namespace, worker)]


async def _watch_reports(tracker: NodeReports, api: Kube) -> None:
    namespace = tracker.options.namespace
    reports = path("v1", "configmaps", namespace=namespace)
    selector = {"labelSelector": f"{REPORT_LABEL}=true"}
    while True:
        try:
            listed = await api.request("GET", reports, query=selector)
            tracker.reports.clear()
            tracker.report_nodes.clear()
            for cm in listed.get("items") or []:
                tracker.observe_report("ADDED", cm)
            version = listed["metadata"]["resourceVersion"]
            events = api.watch(reports, query={**selector, "resourceVersion": version})
            async with contextlib.aclosing(events):  # the stream closes however the loop ends
                async for event in events:
                    tracker.observe_report(event["type"], event["object"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watching node reports in %s: %s; retrying", namespace, exc)
            await asyncio.sleep(5)


async def _sweep_forever(tracker: NodeReports, deps: Deps) -> None:
    while True:
        await asyncio.sleep(tracker.options.sweep_seconds)
        try:
            await sweep(tracker, deps)
        except Exception as exc:
            log.warning("node report sweep: %s", exc)


async def start(*, memo: Any, **_: Any) -> None:
    options: NodeReportOptions = memo["node_report_options"]
    deps: Deps = memo["deps"]
    tracker = NodeReports(options, clock=deps.clock)
    memo["node_reports"] = tracker
    tracker.tasks = [
        asyncio.create_task(_watch_reports(tracker, deps.api)),
        asyncio.create_task(_sweep_forever(tracker, deps)),
    ]


async def stop(*, memo: Any, **_: Any) -> None:
    tracker: NodeReports | None = memo.get("node_reports")
    if tracker is None:
        return
    for task in tracker.tasks:
        task.cancel()
    await asyncio.gather(*tracker.tasks, return_exceptions=True)


async def launcher_pod_seen(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    tracker: NodeReports | None = memo.get("node_reports")
    if tracker is not None:
        tracker.observe_pod(type, body)


async def model_check(*, body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
    """Reconcile the worker when its pods' nodes say something new of its model
    (Downloading with more bytes, Ready, Failed): its ModelReady condition follows."""
    tracker: NodeReports | None = memo.get("node_reports")
    if tracker is None:
        return
    deps: Deps = memo["deps"]
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if meta.get("deletionTimestamp"):
        tracker.models_seen.pop(key, None)
        return
    verity = ((body.get("spec") or {}).get("model") or {}).get("verityHash")
    if not isinstance(verity, str):
        return
    pods = deps.worker_pods(kwargs["launcher_pods"], *key)
    nodes = sorted({p.node for p in pods if p.node and not p.deleting})
    # Its pods' nodes' reports only (every node's, per worker and check, was 3% of
    # the operator's steady-state CPU at 1,000 workers).
    reports = {n: r for n in nodes if isinstance(r := tracker.current(n), NodeReport)}
    said = tuple((node, model_on(reports[node], verity)) for node in nodes if node in reports)
    if tracker.models_seen.get(key) == said:
        return
    first = key not in tracker.models_seen
    tracker.models_seen[key] = said
    if first and not said:
        return  # nothing to say yet: the pods' own events reconcile it
    await reconcile_body(deps.fresh(body), memo, Indexes.of(kwargs), logger)


def register(registry: kopf.OperatorRegistry, interval: float = 5.0) -> Check:
    """Add the node-report step to ``registry``; the model check, every ``interval``
    seconds, for the workers' shared timer (:mod:`.checks`)."""
    kopf.on.startup(id="node-reports-start", registry=registry)(start)
    kopf.on.cleanup(id="node-reports-stop", registry=registry)(stop)
    kopf.on.event("pods", labels=LAUNCHER_SELECTOR, id="node-reports-pods", registry=registry)(
        launcher_pod_seen
    )
    return Check("model", model_check, interval)
