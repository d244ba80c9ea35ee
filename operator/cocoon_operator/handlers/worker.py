"""kopf handlers for CocoonWorker and its launcher Pods.

Each cause (create, update, resume, a launcher Pod changing, the slow resync)
runs the same level-based reconcile (handlers/reconciler.py); deletion waits
for the drain and for every launcher pod to be gone before the finalizer goes.
Pods are watched, not polled, so a fleet at rest costs no API requests beyond
the watches. The entry point (cli.py) is the only importer of this module.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import kopf

from cocoon_operator.api.labels import LABEL_WORKER, LAUNCHER_SELECTOR, PAUSE_ANNOTATION
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.parsed import forget_worker
from cocoon_operator.handlers.reconciler import reconcile
from cocoon_operator.handlers.retry import quiet_outages
from cocoon_operator.handlers.runtime import (
    WORKERS,
    Indexes,
    Logger,
    Runtime,
    Tick,
    WorkerIndex,
    gone,
)
from cocoon_operator.k8s.latest import LatestObjects

RESYNC_SECONDS = 600.0


async def reconcile_worker(rt: Runtime, *, body: kopf.Body, logger: Logger, **kwargs: Any) -> None:
    if rt.checks is not None:
        rt.checks.track(body)  # its periodic checks from now on (kopf's indexes are complete)
    result = await reconcile(rt, body, Indexes.of(kwargs), logger)
    if result.waiting:
        # Retried by kopf until the old worker is drained and its pod deleted.
        raise kopf.TemporaryError(result.waiting, delay=2)


def resync_check(runtime: Runtime) -> Check:
    """A slow safety net (every :data:`RESYNC_SECONDS`, one of the scheduler's
    checks: see handlers/checks.py); changes are handled from watch events."""

    async def resync_worker(tick: Tick) -> None:
        await reconcile(runtime, tick.body, tick.indexes, tick.logger)

    return Check("resync", resync_worker, RESYNC_SECONDS, at_start=False)


async def launcher_pod_changed(
    rt: Runtime,
    *,
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    logger: Logger,
    **kwargs: Any,
) -> None:
    """A launcher pod moved (scheduled, running, gate flipped, gone): reconcile its worker."""
    deps = rt.deps
    deps.release_pod(namespace or "", labels.get(LABEL_WORKER, ""), body["metadata"]["name"])
    if type == "DELETED":
        deps.latest_pods.forget(LatestObjects.key(body))
        deps.unreachable.pop(LatestObjects.key(body), None)
    else:
        deps.latest_pods.freshest(body)  # forgets our copy once the watch has it
    snapshots: WorkerIndex = kwargs["workers"]
    for snapshot in snapshots.get((namespace or "", labels.get(LABEL_WORKER, "")), []):
        body = kopf.Body(cast(kopf.RawBody, snapshot))
        await reconcile(rt, body, Indexes.of(kwargs), logger)


async def delete_worker(rt: Runtime, *, body: kopf.Body, logger: Logger, **kwargs: Any) -> None:
    """Drain the worker, stop the VM and release the GPU before the finalizer goes.

    The drain (disable, wait for in-flight requests, final payout; each bounded)
    is the control step's (``Runtime.drain``); the finalizer stays until no
    launcher pod of this worker is left, so no GPU is left held.
    """
    indexes = Indexes.of(kwargs)
    meta = body["metadata"]
    result = await reconcile(rt, body, indexes, logger, deleting=True)
    if result.waiting:
        raise kopf.TemporaryError(result.waiting, delay=2)
    remaining = list(indexes.pods.get((meta["namespace"], meta["name"]), []))
    if remaining:
        names = ", ".join(sorted(p.name for p in remaining))
        raise kopf.TemporaryError(f"waiting for launcher pods to stop: {names}", delay=2)
    deps = rt.deps
    deps.metrics.set_phase(meta["namespace"], meta["name"], None)
    deps.coefficients.pop((meta["namespace"], meta["name"]), None)
    deps.latest.forget((meta["namespace"], meta["name"]))


async def worker_gone(rt: Runtime, *, body: kopf.Body, **_: Any) -> None:
    """Forget a deleted worker's diff base (a pool's: see handlers/pool.py), what this
    operator verified and read for it, and its parsed body."""
    deps = rt.deps
    deps.diffbase.forget(body)
    meta = body.get("metadata") or {}
    deps.trust.forget((meta.get("namespace", ""), meta.get("name", "")))
    forget_worker(meta.get("uid"))


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> Check:
    """Add the worker's and its launcher pods' handlers to ``registry``; the resync,
    for the checks' scheduler (:mod:`.checks`)."""
    bound = functools.partial(reconcile_worker, runtime)
    kopf.on.resume(*WORKERS, id="reconcile_worker", registry=registry)(bound)
    kopf.on.create(*WORKERS, id="reconcile_worker", registry=registry)(bound)
    kopf.on.update(*WORKERS, field="spec", id="reconcile_worker", registry=registry)(bound)
    kopf.on.update(
        *WORKERS,
        field=("metadata", "annotations", PAUSE_ANNOTATION),
        id="reconcile_worker",
        registry=registry,
    )(bound)
    kopf.on.event("pods", labels=LAUNCHER_SELECTOR, id="launcher_pod_changed", registry=registry)(
        quiet_outages(functools.partial(launcher_pod_changed, runtime))
    )
    kopf.on.delete(*WORKERS, id="delete_worker", registry=registry)(
        functools.partial(delete_worker, runtime)
    )
    kopf.on.event(*WORKERS, when=gone, id="worker_gone", registry=registry)(
        functools.partial(worker_gone, runtime)
    )
    return resync_check(runtime)
