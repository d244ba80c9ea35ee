"""Before the node-report sweep calls a VM an orphan, the apiserver gets a word:
kopf's queue of launcher pod events may run behind the reports (handlers/nodes.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cocoon_operator.api.nodereport import VmRecord
from cocoon_operator.handlers.nodes import confirmed
from cocoon_operator.handlers.nodetracker import NodeReportOptions, NodeReports
from cocoon_operator.k8s.rest import ApiError
from cocoon_operator.policy.nodereports import Orphan

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
EARLIER = NOW - dt.timedelta(seconds=90)


def orphan(uid: str = "u-1", node: str = "n1") -> Orphan:
    vm = VmRecord(
        instance=0,
        namespace="ns",
        worker="w",
        pod=f"w-{uid}",
        pod_uid=uid,
        pci="0000:17:00.0",
        pid=42,
        running=True,
    )
    return Orphan(node, vm)


def tracker_with(*found: Orphan) -> NodeReports:
    tracker = NodeReports(NodeReportOptions(namespace="agents"))
    tracker.first_seen = {o.key: EARLIER for o in found}
    return tracker


def pod(uid: str, node: str | None) -> dict[str, Any]:
    return {"metadata": {"uid": uid}, "spec": {"nodeName": node} if node else {}}


class Reads:
    """A stand-in for ``GET pods/NAME``: the pods by name; records what was asked."""

    def __init__(self, pods: dict[str, dict[str, Any]], error: Exception | None = None) -> None:
        self.pods, self.error, self.asked = pods, error, list[tuple[str, str]]()

    async def __call__(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked.append((namespace, name))
        if self.error is not None:
            raise self.error
        return self.pods.get(name)


async def test_a_vm_whose_pod_the_apiserver_still_has_is_no_orphan_and_waits_a_grace_again() -> (
    None
):
    vm = orphan()
    tracker = tracker_with(vm)
    reads = Reads({"w-u-1": pod("u-1", "n1")})
    assert await confirmed([vm], tracker, now=NOW, read_pod=reads) == []
    assert reads.asked == [("ns", "w-u-1")]
    assert tracker.first_seen[vm.key] == NOW


async def test_a_vm_whose_pod_is_gone_or_another_or_elsewhere_is_an_orphan() -> None:
    gone, replaced, moved = orphan("u-1"), orphan("u-2"), orphan("u-3")
    tracker = tracker_with(gone, replaced, moved)
    reads = Reads({"w-u-2": pod("u-9", "n1"), "w-u-3": pod("u-3", "n2")})
    found = await confirmed([gone, replaced, moved], tracker, now=NOW, read_pod=reads)
    assert found == [gone, replaced, moved]
    assert all(tracker.first_seen[o.key] == EARLIER for o in found)


async def test_a_pod_not_bound_yet_still_owns_its_vm() -> None:
    vm = orphan()
    reads = Reads({"w-u-1": pod("u-1", None)})
    assert await confirmed([vm], tracker_with(vm), now=NOW, read_pod=reads) == []


async def test_an_orphan_already_announced_costs_no_read() -> None:
    vm = orphan()
    tracker = tracker_with(vm)
    tracker.announced[vm.key] = vm
    reads = Reads({})
    assert await confirmed([vm], tracker, now=NOW, read_pod=reads) == [vm]
    assert reads.asked == []


async def test_a_failed_read_announces_the_orphan_as_before() -> None:
    vm = orphan()
    for error in (OSError("connection refused"), ApiError(403, "Forbidden")):
        reads = Reads({}, error=error)
        assert await confirmed([vm], tracker_with(vm), now=NOW, read_pod=reads) == [vm]
