"""kopf handlers for CocoonWorkerPool: create and delete workers, one roll step at a time.

Every cause (the pool changed, one of its workers changed, a slow resync) runs
the same reconcile: gather the pool's workers from an index, ``plan_pool``,
then create (wallet Secret first, then the worker) and delete (the worker's
own finalizer drains and pays it out). Creates and deletes are idempotent, so
a reconcile that runs again before it sees its own writes is harmless.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.conditions import ConditionType
from cocoon_operator.api.labels import LABEL_POOL, LABEL_POOL_REVISION
from cocoon_operator.api.pool import POOL_PLURAL, CocoonWorkerPool
from cocoon_operator.desired.pool import (
    PoolRef,
    pool_selector,
    pool_worker,
    template_revision,
    wallet_secret,
)
from cocoon_operator.handlers.retry import quiet_outages
from cocoon_operator.handlers.runtime import WORKERS, Deps, Logger, Runtime, gone
from cocoon_operator.k8s.latest import resource_version
from cocoon_operator.k8s.objects import (
    create_if_absent,
    delete_worker,
    patch_pool_status,
    patch_worker_spec,
)
from cocoon_operator.policy.pool import (
    Expectations,
    PoolMember,
    PoolPlan,
    next_names,
    plan_pool,
    slow_start,
)

POOLS = (v1alpha1.GROUP, v1alpha1.VERSION, POOL_PLURAL)
RESYNC_SECONDS = 300.0

# Per (namespace, pool): each member, its spec's coefficient, and the resource
# version the index saw it at.
Members = kopf.Index[tuple[str, str], tuple[PoolMember, int | None, int | None]]
Pools = kopf.Index[tuple[str, str], dict[str, Any]]


def _member(body: Mapping[str, Any]) -> PoolMember:
    meta = body.get("metadata") or {}
    ready = False
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ConditionType.READY:
            ready = cond.get("status") == "True"
    return PoolMember(
        name=meta.get("name") or "",
        revision=(meta.get("labels") or {}).get(LABEL_POOL_REVISION),
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
    )


async def pool_members(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], tuple[PoolMember, int | None, int | None]]:
    """Workers by (namespace, pool), with their spec's coefficient and version."""
    value = (_member(body), spec.get("coefficient"), resource_version(body))
    return {(namespace or "", labels[LABEL_POOL]): value}


def _members(
    deps: Deps, namespace: str, entries: Sequence[tuple[PoolMember, int | None, int | None]]
) -> list[PoolMember]:
    """The pool's members from its index, each as new as this operator knows it.

    The index follows kopf's watch, which under load runs minutes behind the
    status this operator writes: under load it still showed nearly all of them
    not Ready minutes after they all were (docs/bench.md), and old workers that are not Ready
    cost a rotation no availability, so all of them were deleted at once. A
    worker whose own status write is newer than the index is read from that.
    """
    members = []
    for member, _, version in entries:
        newer = deps.latest.ahead_of((namespace, member.name), version)
        members.append(member if newer is None else _member(newer))
    return members


async def pools(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", name): dict(body)}


def _lock(deps: Deps, namespace: str, name: str) -> asyncio.Lock:
    return deps.locks[("pool", namespace + "/" + name)]


async def _reconcile_pool(
    body: kopf.Body, deps: Deps, members_index: Members, logger: Logger
) -> None:
    async with _lock(deps, body["metadata"]["namespace"], body["metadata"]["name"]):
        await _reconcile_pool_held(body, deps, members_index, logger)


async def _reconcile_pool_held(
    body: kopf.Body, deps: Deps, members_index: Members, logger: Logger
) -> None:
    """The pool's reconcile, its lock held."""
    # Every member's event reconciles the pool from kopf's snapshot of it,
    # which lags the status this operator wrote a moment ago.
    body = deps.fresh(body, deps.latest_pools)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return  # garbage collection deletes the workers; their finalizers drain them
    try:
        pool = CocoonWorkerPool.model_validate(dict(body))
    except ValidationError as err:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors())
        raise kopf.PermanentError(f"invalid pool spec fields: {fields}") from None
    entries = list(members_index.get((namespace, name), []))
    expected = deps.pool_expectations.setdefault((namespace, name), Expectations())
    members = expected.apply(_members(deps, namespace, entries), time.monotonic())
    revision = template_revision(pool.spec.template)
    plan = plan_pool(
        members,
        replicas=pool.spec.replicas,
        revision=revision,
        max_unavailable=pool.spec.strategy.max_unavailable,
        max_surge=pool.spec.strategy.max_surge,
    )
    ref = PoolRef(name, namespace, meta["uid"])
    if not pool.spec.paused:
        await _apply(
            deps,
            body,
            ref,
            pool=pool,
            revision=revision,
            plan=plan,
            members=members,
            expected=expected,
            logger=logger,
        )
        await _sync_coefficients(deps, namespace, entries, pool.spec.template.spec.coefficient)
    status = {
        "replicas": plan.replicas,
        "selector": pool_selector(name),
        "readyReplicas": plan.ready,
        "updatedReplicas": plan.updated,
        "unavailableReplicas": plan.unavailable,
        "updateRevision": revision,
        "observedGeneration": meta.get("generation"),
    }
    current = {k: (body.get("status") or {}).get(k) for k in status}
    if current != status:
        deps.latest_pools.wrote(await patch_pool_status(deps.api, namespace, name, status))


async def _apply(
    deps: Deps,
    body: kopf.Body,
    ref: PoolRef,
    *,
    pool: CocoonWorkerPool,
    revision: str,
    plan: PoolPlan,
    members: Sequence[PoolMember],
    expected: Expectations,
    logger: Logger,
) -> None:

    async def delete(worker: str) -> None:
        deleted = await delete_worker(deps.api, ref.namespace, worker)
        # Deleting or gone either way (False: it already was); held until the
        # index shows it. A request that raised is not held: the next plan
        # sees the worker as it is and may ask for the same deletion again.
        expected.deleted.add(worker)
        if deleted:
            message = f"deleted worker {worker}"
            await deps.record(body, "WorkerDeleted", message)
            logger.info("pool %s: %s", ref.name, message)

    async def create(worker: str) -> None:
        # The key Secret first: a worker never exists without its wallet.
        await create_if_absent(deps.api, wallet_secret(ref, worker, os.urandom(32)))
        created = await create_if_absent(
            deps.api, pool_worker(ref, pool.spec.template, revision, worker)
        )
        expected.created[worker] = (revision, time.monotonic())
        if created:
            message = f"created worker {worker} (revision {revision})"
            await deps.record(body, "WorkerCreated", message)
            logger.info("pool %s: %s", ref.name, message)

    await _in_batches(list(plan.delete), delete)
    taken = {m.name for m in members}
    await _in_batches(next_names(ref.name, revision, taken, plan.create), create)


async def _in_batches(workers: list[str], write: Callable[[str], Awaitable[None]]) -> None:
    """``write`` each worker, in growing batches (``slow_start``); a batch with a
    failure is the last, and its first error is raised once the batch is done."""
    start = 0
    for size in slow_start(len(workers)):
        batch = workers[start : start + size]
        start += size
        results = await asyncio.gather(*(write(w) for w in batch), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _sync_coefficients(
    deps: Deps,
    namespace: str,
    entries: Sequence[tuple[PoolMember, int | None, int | None]],
    wanted: int,
) -> None:
    """The coefficient is not part of the revision: set it on every worker in place."""
    for member, coefficient, _ in entries:
        if not member.deleting and coefficient != wanted:
            await patch_worker_spec(deps.api, namespace, member.name, {"coefficient": wanted})


async def reconcile_pool(rt: Runtime, *, body: kopf.Body, logger: Logger, **kwargs: Any) -> None:
    await _reconcile_pool(body, rt.deps, kwargs["pool_members"], logger)


async def pool_gone(rt: Runtime, *, body: kopf.Body, **_: Any) -> None:
    """Forget a deleted pool's diff base (see k8s/diffbase.py)."""
    rt.deps.diffbase.forget(body)


async def resync_pool(rt: Runtime, *, body: kopf.Body, logger: Logger, **kwargs: Any) -> None:
    await _reconcile_pool(body, rt.deps, kwargs["pool_members"], logger)


async def pool_worker_changed(
    rt: Runtime,
    *,
    namespace: str | None,
    labels: kopf.Labels,
    logger: Logger,
    **kwargs: Any,
) -> None:
    """A worker of a pool changed (Ready, deleted): take the pool's next roll step.

    One pass waiting for the pool's lock serves every member event that comes
    before it starts: it reads the members' index once it holds the lock, and
    kopf updates that index before it runs an event's handlers. A pass per
    event reads every member each time: quadratic in the pool's size, it took a
    large share of the operator's CPU during a rotation and left new members
    unreconciled (docs/bench.md).
    """
    deps = rt.deps
    key = (namespace or "", labels[LABEL_POOL])
    if key in deps.pools_queued:
        return
    deps.pools_queued.add(key)
    started = False
    try:
        async with _lock(deps, *key):
            # From here on, a new event needs a pass of its own.
            deps.pools_queued.discard(key)
            started = True
            snapshots: Pools = kwargs["pools"]
            for snapshot in snapshots.get(key, []):
                body = kopf.Body(cast(kopf.RawBody, snapshot))
                await _reconcile_pool_held(body, deps, kwargs["pool_members"], logger)
    finally:
        if not started:  # cancelled while waiting
            deps.pools_queued.discard(key)


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Add the pools' indexes and handlers to ``registry``."""
    kopf.index(*WORKERS, labels={LABEL_POOL: kopf.PRESENT}, id="pool_members", registry=registry)(
        pool_members
    )
    kopf.index(*POOLS, id="pools", registry=registry)(pools)
    bound = functools.partial(reconcile_pool, runtime)
    kopf.on.resume(*POOLS, id="reconcile_pool", registry=registry)(bound)
    kopf.on.create(*POOLS, id="reconcile_pool", registry=registry)(bound)
    kopf.on.update(*POOLS, field="spec", id="reconcile_pool", registry=registry)(bound)
    kopf.on.event(*POOLS, when=gone, id="pool_gone", registry=registry)(
        functools.partial(pool_gone, runtime)
    )
    kopf.timer(
        *POOLS, interval=RESYNC_SECONDS, idle=RESYNC_SECONDS, id="resync_pool", registry=registry
    )(functools.partial(resync_pool, runtime))
    kopf.on.event(
        *WORKERS, labels={LABEL_POOL: kopf.PRESENT}, id="pool_worker_changed", registry=registry
    )(quiet_outages(functools.partial(pool_worker_changed, runtime)))
