"""Workers leave a cordoned node: their launcher pods are stopped there and started
again by their reconcile, which the scheduler places elsewhere."""

from __future__ import annotations

import functools
from typing import Any

import kopf

from cocoon_operator.handlers.retry import quiet_outages
from cocoon_operator.handlers.runtime import Logger, PodIndex, Runtime, WorkerIndex
from cocoon_operator.k8s.objects import delete_pod
from cocoon_operator.policy import nodes as policy_nodes


def being_drained(*, spec: kopf.Spec, **_: Any) -> bool:
    """kopf's filter for :func:`node_changed`: checked in line for every node event,
    so the node heartbeats of a large cluster cost no handler run (and no log line)."""
    return policy_nodes.cordoned(spec)


async def node_changed(
    rt: Runtime, *, name: str, spec: kopf.Spec, logger: Logger, **kwargs: Any
) -> None:
    """Move workers off a cordoned (or draining) node.

    The launcher pod is deleted with its grace period, in which the launcher
    disables the worker and drains in-flight requests; the worker's reconcile
    then creates a pod at the same revision, which the scheduler places on
    another node. Nodes are never modified: whoever cordoned one uncordons it.
    """
    deps = rt.deps
    placed: kopf.Index[str, tuple[str, str, str]] = kwargs["launcher_pods_by_node"]
    snapshots: WorkerIndex = kwargs["workers"]
    pods: PodIndex = kwargs["launcher_pods"]
    for namespace, worker, pod in list(placed.get(name, [])):
        facts = [p for p in pods.get((namespace, worker), []) if p.name == pod]
        if not facts or facts[0].deleting:
            continue
        if await delete_pod(deps.api, namespace, pod):
            for snapshot in snapshots.get((namespace, worker), []):
                await deps.record(
                    snapshot,
                    "NodeCordoned",
                    f"node {name} is cordoned: stopping pod {pod} to move the worker",
                )
            logger.info("node %s cordoned: moving %s/%s off it", name, namespace, worker)


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Add the cordoned-node handler to ``registry``."""
    kopf.on.event("nodes", when=being_drained, id="node_changed", registry=registry)(
        quiet_outages(functools.partial(node_changed, runtime))
    )
