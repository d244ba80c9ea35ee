"""Executing a worker's reconcile: gather, plan, hold, write.

Every cause (create, update, resume, the resync check, a launcher Pod changing,
a step that learned something) runs this same level-based reconcile: observe
the worker from kopf's in-memory indexes (no list calls) and the optional
steps' readings (handlers/runtime.py ``Runtime``), ``reconcile.worker.plan``,
then create, delete, patch and record what the plan says, one worker at a time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.nodereport import NodeReport
from cocoon_operator.desired.launcher import WorkerRef
from cocoon_operator.handlers.nodetracker import NodeReports
from cocoon_operator.handlers.runtime import Deps, Indexes, Logger, Runtime, paused
from cocoon_operator.k8s.objects import create_if_absent, delete_pod
from cocoon_operator.policy.admission import address_errors
from cocoon_operator.policy.launcherimages import LauncherImages
from cocoon_operator.policy.nodereports import model_on, nodes_with_model, vm_gpu
from cocoon_operator.policy.sealserver import SealFacts
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.worker import (
    ObservedWorker,
    Plan,
    apply_merge_patch,
    held_for_drain,
    plan,
    with_recorded,
)


def _observe(
    body: kopf.Body,
    pods: list[PodFacts],
    usage: tuple[Mapping[int, int], Mapping[int, int], Mapping[int, int]],
    *,
    control_key: str,
    deleting: bool = False,
    chain_enabled: bool = False,
    images: LauncherImages,
    seal: SealFacts | None = None,
    priority_class: str | None = None,
) -> ObservedWorker:
    meta = body["metadata"]
    # Not parse_worker: a reconcile may be handed a copy of the body with a step's
    # just-learned facts merged into its status under the same resourceVersion.
    parsed = v1alpha1.CocoonWorker.model_validate(dict(body))
    ref = WorkerRef(meta["name"], meta["namespace"], meta["uid"])
    return ObservedWorker(
        ref=ref,
        generation=int(meta.get("generation", 0)),
        spec=parsed.spec,
        status=parsed.status,
        pods=tuple(pods),
        instances_in_use=usage[0],
        control_key=control_key,
        instance_room=usage[1],
        instance_coming=usage[2],
        paused=paused(body),
        spec_errors=tuple(address_errors(body.get("spec", {}))),
        deleting=deleting or meta.get("deletionTimestamp") is not None,
        chain_enabled=chain_enabled,
        image_refused=images.refusal(parsed.spec.release.image),
        seal=seal,
        priority_class=priority_class,
    )


def with_models(observed: ObservedWorker, tracker: NodeReports | None) -> ObservedWorker:
    """``observed`` with the node agents' word on its model (see handlers/nodes.py): on
    its pods' nodes, and, when a new pod is due, the nodes that hold it Ready; and on
    the GPU its running VM holds (status.gpu, written in the reconcile's one status
    patch rather than one of its own)."""
    if tracker is None:
        return observed
    # Fresh reports only: a node whose agent went quiet vouches for no model either.
    # Every node's only when a new pod is to be placed: at every reconcile, that read
    # of every node costs in proportion to the fleet's size (docs/bench.md).
    verity = observed.spec.model.verity_hash
    nodes = {p.node for p in observed.pods if p.node}
    new_pod_due = all(p.deleting for p in observed.pods)
    reports = (
        tracker.fresh_reports()
        if new_pod_due
        else {n: r for n in nodes if isinstance(r := tracker.current(n), NodeReport)}
    )
    return dataclasses.replace(
        observed,
        node_models={n: model_on(reports[n], verity) for n in nodes if n in reports},
        model_nodes=tuple(nodes_with_model(reports, verity)) if new_pod_due else (),
        gpu=vm_gpu(reports, observed.pods),
        gpu_known=True,
    )


async def _execute(deps: Deps, body: kopf.Body, result: Plan, logger: Logger) -> None:
    namespace, worker = body["metadata"]["namespace"], body["metadata"]["name"]
    events = result.events
    for obj in result.apply:
        try:
            created = await create_if_absent(deps.api, obj)
        except Exception:
            deps.release_pod(namespace, worker, obj["metadata"]["name"])
            raise
        if not created:
            # Another reconcile (or replica) made it first: its Event said so.
            name = obj["metadata"]["name"]
            events = [e for e in events if e.creates != name]
    for name in result.delete_pods:
        await delete_pod(deps.api, namespace, name)
    if result.status:
        await deps.patch_status(namespace, worker, result.status)
    for event in events:
        await deps.record(body, event.reason, event.message, warning=event.warning)
        logger.info("%s: %s", event.reason, event.message)


async def reconcile(
    runtime: Runtime,
    body: kopf.Body,
    indexes: Indexes,
    logger: Logger,
    *,
    deleting: bool = False,
    recorded: Mapping[str, Any] | None = None,
    first: Callable[[], Awaitable[None]] | None = None,
    delivered: bool = True,
) -> Plan:
    """Plan on the newest copy of ``body`` and execute the plan.

    ``recorded``: status fields a step has just learned (a merge patch). The
    plan sees them as already stored, and they go out in the same status
    write as the conditions they imply: one watch event per step, not two.
    ``first``: a step's own writes, made under the worker's lock before the
    plan, so that the watch events they cause reconcile after this one.
    ``delivered``: False when ``body`` is a copy a step already took from
    :attr:`Deps.latest` (see :meth:`LatestObjects.freshest`).
    """
    deps = runtime.deps
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    async with deps.locks[key]:
        if first is not None:
            await first()
        # After the lock: a reconcile that held it may have just written status.
        body = deps.fresh(body, delivered=delivered)
        if recorded:
            raw = dict(body)
            raw["status"] = apply_merge_patch(raw.get("status") or {}, recorded)
            body = kopf.Body(cast(kopf.RawBody, raw))
        try:
            observed = _observe(
                body,
                deps.worker_pods(indexes.pods, *key),
                indexes.usage(deps),
                control_key=deps.control_keys().current.public_key,
                deleting=deleting,
                chain_enabled=runtime.chain_enabled,
                images=deps.launcher_images,
                seal=deps.seal,
                priority_class=deps.launcher_priority_class,
            )
        except ValidationError as err:
            # The CRD schema should have refused this; name the fields, act on nothing.
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors())
            kopf.warn(body, reason="InvalidSpec", message=f"cannot parse fields: {fields}")
            raise kopf.PermanentError(f"invalid spec fields: {fields}") from None
        started = time.monotonic()
        read_lists = runtime.read_lists
        if read_lists is not None and not (
            observed.deleting or observed.paused or observed.spec_errors or observed.image_refused
        ):
            # The chain step's reading of the root's allow-lists (cached there):
            # taken before any VM is started for this revision. Instance usage
            # is counted again after this await: others may have reserved some.
            in_use, room, coming = indexes.usage(deps)
            observed = dataclasses.replace(
                await read_lists(observed),
                instances_in_use=in_use,
                instance_room=room,
                instance_coming=coming,
            )
        result = plan(with_models(observed, runtime.node_reports), now=deps.clock())
        if recorded:
            result = with_recorded(result, recorded)
        if result.delete_pods and runtime.drain is not None:
            stale = [p for p in observed.pods if p.name in result.delete_pods]
            waiting = await runtime.drain(body, stale, deps, logger)
            if waiting:
                result = held_for_drain(result, waiting)
        # Reserve the pod (and its instance) before the first await, so a concurrent
        # reconcile of another worker already counts it.
        for obj in result.apply:
            if obj["kind"] == "Pod":
                deps.reserve_pod(*key, obj)
        try:
            await _execute(deps, body, result, logger)
        except Exception as exc:
            deps.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            raise
        finally:
            deps.metrics.reconcile_seconds.observe(time.monotonic() - started)
        phase = result.status.get("phase", observed.status.phase)
        deps.metrics.set_phase(key[0], key[1], phase)
    return result


async def reconcile_body(
    runtime: Runtime,
    body: kopf.Body,
    indexes: Indexes,
    logger: Logger,
    *,
    recorded: Mapping[str, Any] | None = None,
    first: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Reconcile ``body`` now: for steps that learned facts its status derives from.

    ``recorded`` (a status merge patch) is written together with the
    conditions and phase the reconcile derives from it; ``first`` runs under
    the worker's lock before the plan (see :func:`reconcile`). ``body`` is
    the step's own copy, taken through :meth:`Deps.fresh`: it does not prove
    that the watch has caught up with this operator's writes.
    """
    await reconcile(runtime, body, indexes, logger, recorded=recorded, first=first, delivered=False)
