"""The per-node agents' reports, read by the operator: GPUs into status, orphaned VMs reported.

Off unless ``--node-report-namespace`` names the one namespace whose report
ConfigMaps are trusted (the chart's: where the agent DaemonSet runs). A watch
on that namespace keeps the reports in memory; the launcher pods' watch events
keep the set of live pods. A sweep every few seconds compares the two, in
memory; the only API read is of a pod whose VM is about to be called an orphan
(:func:`confirmed`):

- a VM the agent sees running with no launcher pod of its uid, for longer than
  the grace, gets a Warning Event ``OrphanedVM`` on its worker, once, and counts
  in ``cocoon_orphaned_vms``; ``OrphanedVMGone`` when the agent sees it stopped;
- each running worker's GPU (PCI address) goes to ``status.gpu`` when it changes,
  and is cleared when that VM stops or its pod goes.

The reports also say how each node's model cache is doing (``models``): every
reconcile reads them for the worker's ``ModelReady`` condition and a new pod's
preferred nodes (handlers/reconciler.py ``with_models``), and the ``model`` check
(one of the checks' scheduler's) reconciles a worker when what its pods'
nodes say of its model changes.
A report older than ``max_age_seconds`` (its ``reported-at`` stamp, capped at
when the operator saw it) vouches for nothing: not the host, not a quote, not a
node wallet, not an orphan (see :func:`policy.nodereports.fresh`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from cocoon_operator.api.labels import LAUNCHER_SELECTOR
from cocoon_operator.api.nodereport import (
    REPORT_LABEL,
    NodeReport,
)
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.nodetracker import NodeReportOptions, NodeReports
from cocoon_operator.handlers.reconciler import reconcile_body
from cocoon_operator.handlers.runtime import CheckFn, Deps, Runtime, Tick
from cocoon_operator.k8s.reflect import list_and_watch
from cocoon_operator.k8s.rest import Kube, path
from cocoon_operator.policy.nodereports import (
    NewsAction,
    Orphan,
    model_news_action,
    model_on,
    orphaned,
    vm_gpu,
)

log = logging.getLogger(__name__)


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

    async def read_pod(namespace: str, name: str) -> dict[str, Any] | None:
        return await deps.api.request_unless_gone(
            "GET", path("v1", "pods", namespace=namespace, name=name)
        )

    found = await confirmed(found, tracker, now=now, read_pod=read_pod)
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
            await deps.record(ref, "OrphanedVM", o.describe(), warning=True)
    for key in [k for k in tracker.announced if k not in current]:
        o = tracker.announced.pop(key)
        message = f"VM of pod {o.vm.pod} on node {o.node} is no longer running"
        log.info("%s", message)
        ref = tracker.worker_ref(o.vm.namespace, o.vm.worker)
        if ref is not None:
            await deps.record(ref, "OrphanedVMGone", message)


ReadPod = Callable[[str, str], Awaitable[dict[str, Any] | None]]


async def confirmed(
    found: list[Orphan], tracker: NodeReports, *, now: dt.datetime, read_pod: ReadPod
) -> list[Orphan]:
    """The orphans the apiserver does not contradict.

    The launcher pods come to the tracker through kopf's queue, which under a large
    fleet's load runs behind the operator's own watch of the reports by more than the
    grace: at 3,000 workers, 376 running VMs were called orphans and then "no longer
    running" once their pods came through (docs/bench.md). So a VM about to be
    announced has its pod read by name first; if the pod is there with the VM's uid,
    on the VM's node or none yet, it is not an orphan and its grace starts again (at
    most one read per VM per grace while the queue is behind). If the read fails,
    the VM is announced, as it would have been without the read: a warning the
    apiserver cannot contradict is not held back."""
    out = []
    for o in found:
        if o.key in tracker.announced:
            out.append(o)
            continue
        try:
            pod = await read_pod(o.vm.namespace, o.vm.pod)
        except Exception as exc:  # any failure: announce as before the read
            log.info("orphan check of pod %s/%s: %s", o.vm.namespace, o.vm.pod, exc)
            pod = None
        meta = (pod or {}).get("metadata") or {}
        bound = ((pod or {}).get("spec") or {}).get("nodeName")
        if pod is not None and meta.get("uid") == o.vm.pod_uid and bound in (None, o.node):
            tracker.first_seen[o.key] = now
            continue
        out.append(o)
    return out


async def _watch_reports(tracker: NodeReports, api: Kube) -> None:
    namespace = tracker.options.namespace
    await list_and_watch(
        api,
        path("v1", "configmaps", namespace=namespace),
        query={"labelSelector": f"{REPORT_LABEL}=true"},
        observe=tracker.observe_report,
        what=f"node reports in {namespace}",
    )


async def _sweep_forever(tracker: NodeReports, deps: Deps) -> None:
    while True:
        await asyncio.sleep(tracker.options.sweep_seconds)
        try:
            await sweep(tracker, deps)
        except Exception as exc:
            log.warning("node report sweep: %s", exc)


def _check(runtime: Runtime, tracker: NodeReports) -> CheckFn:
    async def model_check(tick: Tick) -> None:
        """Reconcile the worker when its pods' nodes say something new of its model
        (Downloading with more bytes, Ready, Failed) or of the GPU its VM holds: its
        ModelReady condition and status.gpu follow. News of the GPU alone waits a
        while for the attestation's write of a worker that is Attesting
        (policy/nodereports.py ``model_news_action``)."""
        key, body = tick.key, tick.body
        if tick.deleting:
            tracker.models_seen.pop(key, None)
            tracker.gpu_held.pop(key, None)
            return
        verity = ((body.get("spec") or {}).get("model") or {}).get("verityHash")
        if not isinstance(verity, str):
            return
        pods = tick.pods()
        nodes = sorted({p.node for p in pods if p.node and not p.deleting})
        # Its pods' nodes' reports only: every node's, per worker and check, costs
        # in proportion to the fleet's size (docs/bench.md).
        reports = {
            n: r
            for n in {p.node for p in pods if p.node}
            if isinstance(r := tracker.current(n), NodeReport)
        }
        models = tuple((node, model_on(reports[node], verity)) for node in nodes if node in reports)
        said = (models, vm_gpu(reports, pods))
        seen = tracker.models_seen.get(key)
        if seen == said:
            return  # the common case: nothing new
        body = tick.deps.fresh(body)  # the status as last written, GPU and phase
        status = body.get("status") or {}
        now = tracker.clock()
        action = model_news_action(
            seen,
            said,
            status_gpu=status.get("gpu"),
            phase=status.get("phase"),
            held_since=tracker.gpu_held.get(key),
            now=now,
        )
        if action is NewsAction.HOLD:
            tracker.gpu_held.setdefault(key, now)
            return
        tracker.gpu_held.pop(key, None)
        if action is NewsAction.NOTHING:
            tracker.models_seen[key] = said
            return
        first = seen is None
        tracker.models_seen[key] = said
        if first and said == ((), None):
            return  # nothing to say yet: the pods' own events reconcile it
        await reconcile_body(runtime, body, tick.indexes, tick.logger)

    return model_check


def register(
    registry: kopf.OperatorRegistry,
    runtime: Runtime,
    options: NodeReportOptions,
    interval: float = 5.0,
) -> Check:
    """Add the node-report step to ``registry``; its tracker is ``runtime.node_reports``
    (made here, filled from startup); the model check, every ``interval`` seconds,
    for the checks' scheduler (:mod:`.checks`)."""
    tracker = runtime.node_reports = NodeReports(options)

    async def start(**_: Any) -> None:
        deps = runtime.deps
        tracker.clock = deps.clock
        tracker.tasks = [
            asyncio.create_task(_watch_reports(tracker, deps.api)),
            asyncio.create_task(_sweep_forever(tracker, deps)),
        ]

    async def stop(**_: Any) -> None:
        for task in tracker.tasks:
            task.cancel()
        await asyncio.gather(*tracker.tasks, return_exceptions=True)

    async def launcher_pod_seen(*, type: str | None, body: kopf.Body, **_: Any) -> None:
        tracker.observe_pod(type, body)

    kopf.on.startup(id="node-reports-start", registry=registry)(start)
    kopf.on.cleanup(id="node-reports-stop", registry=registry)(stop)
    kopf.on.event("pods", labels=LAUNCHER_SELECTOR, id="node-reports-pods", registry=registry)(
        launcher_pod_seen
    )
    return Check("model", _check(runtime, tracker), interval)
