"""Choosing a worker's instance index (pure).

The index fixes the worker's ports (12000+10*i, its control relay's 12002+10*i)
and guest vsock CID (6+10*i); the launcher Pod declares the relay's port as a
hostPort, so the scheduler
only places it on a node where that index is free. Spreading indexes evenly
over the fleet keeps every index usable on as many nodes as possible: with N
nodes of 8 GPUs, no index is ever needed on more than N nodes.

Spreading alone picks an index blind to where the free GPUs are. In a full
fleet (a pool's rotation, where old members' VMs stop one by one and new
members wait for their GPUs) the free GPUs are on nodes whose other indexes
are taken, and a pod given one of those waits until the operator moves it
(a Pod and an Event each: 348 moves for 1,000 new members in the rotation
benchmark). So an index with room goes first: free on some eligible node
with a GPU free, or held by a VM being stopped (its slot, node and index, is
about to be free), beyond the pods already waiting with that index.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from cocoon_operator.api.instance import MAX_INSTANCES

# kube-scheduler's NodePorts filter, as its Unschedulable message counts nodes.
PORTS_TAKEN = "didn't have free ports for the requested pod ports"


def choose_instance(
    in_use: Mapping[int, int],
    *,
    avoid: frozenset[int] = frozenset(),
    room: Mapping[int, int] | None = None,
) -> int:
    """The least used index (lowest on ties) among those with room, skipping ``avoid``
    when possible.

    ``in_use`` counts launcher pods per index across the fleet; ``avoid`` holds
    indexes that just failed to schedule for this worker; ``room`` is
    :func:`instance_room` (None, or no index with room: spreading alone).
    """
    candidates = [i for i in range(MAX_INSTANCES) if i not in avoid] or list(range(MAX_INSTANCES))
    if room is not None:
        roomy = [i for i in candidates if room.get(i, 0) > 0]
        candidates = roomy or candidates
    return min(candidates, key=lambda i: (in_use.get(i, 0), i))


def slots_coming(stopping: Mapping[int, int], waiting: Mapping[int, int]) -> dict[int, int]:
    """For each index: the launcher pods with it being stopped on eligible nodes, less
    those waiting with it for a node. At zero or above, every pod waiting with the
    index has a slot of its own coming free: this operator's VM leaving it.

    Unlike :func:`instance_room` this trusts no free port the scheduler has not
    confirmed: another workload's pod may hold an index's host port on every node
    (the operator sees only its own pods), and a pod waiting for that would wait
    for ever.
    """
    return {i: stopping.get(i, 0) - waiting.get(i, 0) for i in range(MAX_INSTANCES)}


def instance_room(
    free_gpus: Mapping[str, int],
    taken: Mapping[str, Collection[int]],
    waiting: Mapping[int, int],
    stopping: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """For each index: the eligible nodes with a GPU free on which it is free, and the
    scheduled launcher pods with that index being stopped, less the launcher pods
    with that index waiting for a node.

    ``free_gpus``: eligible nodes' passthrough GPUs not held by a launcher pod;
    ``taken``: the indexes of the launcher pods on each node; ``waiting``:
    unscheduled launcher pods per index; ``stopping``: scheduled ones being
    deleted or drained, per index. Each pod is taken to hold one GPU (workers
    of several GPUs make the room an overestimate: spreading decides more
    often, as it did before).
    """
    open_nodes = [node for node, free in free_gpus.items() if free > 0]
    soon = stopping or {}
    return {
        i: sum(1 for node in open_nodes if i not in taken.get(node, ()))
        + soon.get(i, 0)
        - waiting.get(i, 0)
        for i in range(MAX_INSTANCES)
    }


def ports_taken(reason: str | None, message: str | None) -> bool:
    """The scheduler could not place the pod because its host ports were taken."""
    return reason == "Unschedulable" and PORTS_TAKEN in (message or "")


def try_another(tried: Iterable[int], blocked: int) -> tuple[int, ...] | None:
    """The indexes tried once ``blocked`` is given up, or None when none is left to try.

    The scheduler names a node's first failing filter only, and NodePorts runs
    before the GPU fit: "ports taken" may hide "no GPU free". Trying each index
    once bounds the moves to nine per placement; after that the pod stays and
    says why (Scheduled=False with the scheduler's message).
    """
    out = tuple(sorted({*tried, blocked}))
    return out if len(out) < MAX_INSTANCES else None
