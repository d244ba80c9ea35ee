"""kopf's in-memory indexes of launcher pods, nodes and workers.

Every reconcile gathers from these instead of listing: a fleet at rest costs no
API requests beyond the watches. kopf hands each index to every handler as a
keyword argument named after its function; :class:`~.runtime.Indexes` is the
typed view of them.
"""

from __future__ import annotations

from typing import Any

import kopf

from cocoon_operator.api.labels import LABEL_INSTANCE, LABEL_WORKER, LAUNCHER_SELECTOR
from cocoon_operator.handlers.runtime import WORKERS
from cocoon_operator.k8s.compact import intern_strings
from cocoon_operator.policy import nodes as policy_nodes
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.gather import pod_facts

# The index functions and event handlers below do no I/O, yet are async: kopf
# runs a sync handler in a thread pool (a thread hop, a context copy and a
# shielding task per call), and the three pod indexes alone are called for
# every launcher pod event.


async def launcher_pods(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], PodFacts]:
    """Launcher pods by (namespace, worker)."""
    return {(namespace or "", labels.get(LABEL_WORKER, "")): pod_facts(body)}


async def launcher_instances(*, labels: kopf.Labels, name: str, **_: Any) -> dict[int, str] | None:
    """Launcher pods by instance index, to spread indexes over the fleet."""
    value = labels.get(LABEL_INSTANCE, "")
    return {int(value): name} if value.isdigit() else None


async def launcher_pods_by_node(
    *, namespace: str | None, labels: kopf.Labels, name: str, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[str, str, str]] | None:
    """Launcher pods by node: (namespace, worker, pod)."""
    node = spec.get("nodeName")
    if not node:
        return None
    return {node: (namespace or "", labels.get(LABEL_WORKER, ""), name)}


async def cc_nodes(
    *, name: str, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, int] | None:
    """Nodes that may host a worker VM, with their passthrough GPUs: where an instance
    index has room (see policy/instances.py). A node the node controller marked
    unreachable or not ready is left out: no VM goes there, and a pod stuck
    terminating on it frees no slot. Called for every node event (a heartbeat
    too): a label and a resource lookup, no I/O."""
    if policy_nodes.out_of_service(spec):
        return None
    verdict = policy_nodes.eligibility(
        policy_nodes.NodeFacts(
            name=name,
            labels=dict(labels),
            allocatable=status.get("allocatable") or {},
            unschedulable=bool(spec.get("unschedulable")),
        )
    )
    return {name: verdict.passthrough_gpus} if verdict.eligible else None


async def workers(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """A snapshot of each worker, for reconciles triggered by its pods.

    It also drops ``metadata.managedFields`` from the snapshot (the checks'
    scheduler ticks each worker from it, handlers/checks.py): they are over half
    of a worker's decoded body (docs/bench.md), and neither kopf nor the
    operator reads them. The apiserver offers no watch
    that leaves them out. What remains shares its keys and short values with
    every other worker's (k8s/compact.py: 17 KB a worker down to 8).
    """
    body["metadata"].pop("managedFields", None)
    for value in body.values():  # kopf's Body is a view: its stanzas are the raw dicts
        intern_strings(value)
    return {(namespace or "", name): dict(body)}


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the indexes to ``registry`` (their ids are the names handlers read them by)."""
    for fn in (launcher_pods, launcher_instances, launcher_pods_by_node):
        kopf.index("pods", labels=LAUNCHER_SELECTOR, id=fn.__name__, registry=registry)(fn)
    kopf.index("nodes", id="cc_nodes", registry=registry)(cc_nodes)
    kopf.index(*WORKERS, id="workers", registry=registry)(workers)
