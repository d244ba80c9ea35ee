"""Choosing a worker's instance index (pure).

The index fixes the worker's host port (12000+10*i) and guest vsock CID
(6+10*i); the launcher Pod declares the port as a hostPort, so the scheduler
only places it on a node where that index is free. Spreading indexes evenly
over the fleet keeps every index usable on as many nodes as possible: with N
nodes of 8 GPUs, no index is ever needed on more than N nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cocoon_operator.api.instance import MAX_INSTANCES

# kube-scheduler's NodePorts filter, as its Unschedulable message counts nodes.
PORTS_TAKEN = "didn't have free ports for the requested pod ports"


def choose_instance(in_use: Mapping[int, int], *, avoid: frozenset[int] = frozenset()) -> int:
    """The least used index (lowest on ties), skipping ``avoid`` when possible.

    ``in_use`` counts launcher pods per index across the fleet; ``avoid`` holds
    indexes that just failed to schedule for this worker.
    """
    candidates = [i for i in range(MAX_INSTANCES) if i not in avoid] or list(range(MAX_INSTANCES))
    return min(candidates, key=lambda i: (in_use.get(i, 0), i))


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
