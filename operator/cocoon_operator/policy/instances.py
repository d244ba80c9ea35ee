"""Choosing a worker's instance index (pure).

The index fixes the worker's host port (12000+10*i) and guest vsock CID
(6+10*i); the launcher Pod declares the port as a hostPort, so the scheduler
only places it on a node where that index is free. Spreading indexes evenly
over the fleet keeps every index usable on as many nodes as possible: with N
nodes of 8 GPUs, no index is ever needed on more than N nodes.
"""

from __future__ import annotations

from collections.abc import Mapping

from cocoon_operator.api.instance import MAX_INSTANCES


def choose_instance(in_use: Mapping[int, int], *, avoid: frozenset[int] = frozenset()) -> int:
    """The least used index (lowest on ties), skipping ``avoid`` when possible.

    ``in_use`` counts launcher pods per index across the fleet; ``avoid`` holds
    indexes that just failed to schedule for this worker.
    """
    candidates = [i for i in range(MAX_INSTANCES) if i not in avoid] or list(range(MAX_INSTANCES))
    return min(candidates, key=lambda i: (in_use.get(i, 0), i))
