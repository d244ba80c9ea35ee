"""A reconcile counts launcher pods per instance index only when it reads the
counts (to start a VM): counting reads the whole index, and every reconcile of
every worker observes it, which made a tick of the fleet's checks O(N^2)."""

from __future__ import annotations

from cocoon_operator.handlers.runtime import InstanceCounts
from cocoon_operator.policy.instances import choose_instance


def test_counted_on_first_read_and_only_once() -> None:
    calls: list[int] = []

    def count() -> dict[int, int]:
        calls.append(1)
        return {0: 3, 1: 1, 2: 2}

    counts = InstanceCounts(count)
    assert calls == []  # observed, not read: nothing counted
    assert choose_instance(counts) == choose_instance({0: 3, 1: 1, 2: 2})
    assert dict(counts) == {0: 3, 1: 1, 2: 2} and len(counts) == 3 and counts[2] == 2
    assert calls == [1]
