"""A new launcher pod's instance index goes where a GPU is free (policy/instances.py:
instance_room, and its gathering from the indexes in handlers/runtime.py).

Found by the rotation benchmark: in a full fleet the free GPUs are on nodes
whose other indexes are taken, and spreading alone gave 348 of 1,000 new pool
members an index no such node had free (a move each: a Pod and an Event)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from cocoon_operator.api import labels
from cocoon_operator.api.labels import LABEL_INSTANCE
from cocoon_operator.desired.launcher import revision
from cocoon_operator.handlers.indexes import cc_nodes
from cocoon_operator.handlers.runtime import Deps, Indexes
from cocoon_operator.policy.instances import choose_instance, instance_room, slots_coming
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.worker import plan
from tests.unit.helpers import T0, blocked_pod, observed, spec


def test_room_is_the_open_nodes_where_the_index_is_free_less_the_pods_waiting() -> None:
    room = instance_room(
        {"a": 1, "b": 0, "c": 2},  # b is full
        {"a": {0, 1}, "b": {2, 3}, "c": {0}},
        {1: 1, 4: 3},
    )
    assert room[0] == 0  # taken on a and c
    assert room[1] == 1 - 1  # free on c only, and one pod already waits with it
    assert room[2] == 2  # free on a and c (b has no GPU free)
    assert room[4] == 2 - 3
    assert room[9] == 2
    assert set(room) == set(range(10))


def test_a_slot_being_stopped_counts_as_room_for_its_index() -> None:
    """A full fleet's rotation: no GPU free anywhere, but the VMs being stopped free
    their node's GPU and index; a pod given one of those indexes takes the slot."""
    full = {"a": 0, "b": 0}
    taken = {"a": {0, 1}, "b": {0, 2}}
    room = instance_room(full, taken, {2: 1}, {1: 1, 2: 1})
    assert room[1] == 1 and room[2] == 0 and room[0] == 0 and room[3] == 0


def test_an_index_with_room_goes_before_a_less_used_one() -> None:
    in_use = {0: 1, 1: 5, 2: 1}
    room = {0: 0, 1: 2, 2: 0}
    assert choose_instance(in_use, room=room) == 1
    # No index with room anywhere (a full fleet): spreading alone, as before.
    assert choose_instance(in_use, room=dict.fromkeys(range(10), 0)) == 3
    # An index given up for this worker stays given up, room or not.
    assert choose_instance(in_use, avoid=frozenset({1}), room=room) == 3
    # Several with room: the least used of them.
    assert choose_instance(in_use, room={1: 1, 2: 1}) == 2


def pod(name: str, instance: int, node: str | None, *, deleting: bool = False) -> PodFacts:
    return PodFacts(name=name, node=node, phase=None, instance=instance, deleting=deleting)


def deps() -> Deps:
    return Deps(api=cast(Any, None), clock=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def test_room_is_gathered_from_the_pods_and_nodes_indexes_and_unindexed_pods() -> None:
    d = deps()
    pods = {
        ("ns", "w1"): [pod("w1-a", 0, "n1")],
        ("ns", "w2"): [pod("w2-a", 1, "n1", deleting=True)],  # still holds its GPU
        ("ns", "w3"): [pod("w3-a", 2, None)],  # waits for a node
        ("ns", "w4"): [pod("w4-a", 3, None, deleting=True)],  # waits for nothing
        ("ns", "w5"): [pod("w5-a", 0, "cpu-node")],  # on a node not indexed
    }
    nodes = {"n1": [3], "n2": [1]}
    created = {"metadata": {"name": "w6-a", "labels": {LABEL_INSTANCE: "5"}}, "spec": {}}
    d.reserve_pod("ns", "w6", created)
    room = d.slot_usage(cast(Any, pods), cast(Any, nodes)).room()
    # n1: 3 GPUs, 2 held (indexes 0 and 1); n2: 1 GPU, none held.
    assert room[0] == 1  # n2 only (w5's pod is on a node that takes no VM: no room there)
    assert room[1] == 1 + 1  # n2, and n1's slot once w2's pod is gone
    assert room[2] == 2 - 1  # n1 and n2, less w3's pod waiting
    assert room[3] == 2  # a deleting unscheduled pod waits for no node
    assert room[5] == 2 - 1  # the pod being created counts before the watch shows it
    n1_full = {**pods, ("ns", "w7"): [pod("w7-a", 2, "n1")]}
    room = d.slot_usage(cast(Any, n1_full), cast(Any, nodes)).room()
    assert room[2] == 1 - 1 and room[4] == 1  # n1 has no GPU left: n2 alone
    # A pod whose worker is being drained (annotated, not yet deleted) is stopping too.
    drained = dataclasses.replace(pod("w7-a", 2, "n1"), drain_started="2026-01-01T00:00:00Z")
    room = d.slot_usage(cast(Any, {**pods, ("ns", "w7"): [drained]}), cast(Any, nodes)).room()
    assert room[2] == 1 + 1 - 1


def test_a_new_worker_is_started_on_an_index_with_room() -> None:
    rooms = {i: 0 for i in range(10)} | {6: 1}
    p = plan(observed(instances_in_use={0: 5}, instance_room=rooms), now=T0)
    pod_obj = next(o for o in p.apply if o["kind"] == "Pod")
    assert pod_obj["metadata"]["labels"]["cocoon.network/instance"] == "6"
    # Unknown room (no nodes index): spreading, as before.
    p = plan(observed(instances_in_use={0: 5}), now=T0)
    pod_obj = next(o for o in p.apply if o["kind"] == "Pod")
    assert pod_obj["metadata"]["labels"]["cocoon.network/instance"] == "1"


def node_labels() -> dict[str, str]:
    return {
        labels.TDX_ENABLED: "true",
        labels.CC_MODE_STATE: "on",
        labels.GPU_WORKLOAD_CONFIG: "vm-passthrough",
        labels.GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3",
    }


async def test_the_nodes_index_keeps_eligible_nodes_and_their_gpus() -> None:
    status: Any = {"allocatable": {labels.PASSTHROUGH_GPU_RESOURCE: "8"}}
    schedulable: Any = {}
    assert await cc_nodes(name="n1", labels=node_labels(), spec=schedulable, status=status) == {
        "n1": 8
    }
    cordoned: Any = {"unschedulable": True}
    assert await cc_nodes(name="n2", labels=node_labels(), spec=cordoned, status=status) is None
    lost: Any = {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}
    assert await cc_nodes(name="n4", labels=node_labels(), spec=lost, status=status) is None
    tainted: Any = {"taints": [{"key": "example.com/maintenance", "effect": "NoSchedule"}]}
    assert await cc_nodes(name="n5", labels=node_labels(), spec=tainted, status=status) == {"n5": 8}
    no_gpu: Any = {"allocatable": {}}
    assert await cc_nodes(name="n3", labels=node_labels(), spec=schedulable, status=no_gpu) is None


def test_indexes_take_the_nodes_index_kopf_passes() -> None:
    kwargs: dict[str, Any] = {"launcher_pods": {}, "launcher_instances": {}, "cc_nodes": {"n": [1]}}
    assert Indexes.of(kwargs).nodes == {"n": [1]}


def test_a_pod_whose_index_has_a_slot_coming_waits_instead_of_moving() -> None:
    """The scheduler says "ports taken" whenever some node with a GPU free has the
    index taken, even for a moment; a pod for which one of the operator's VMs with its
    index is being stopped stays, one without moves (as before when unknown)."""
    rev = revision(spec())
    waiting = blocked_pod(rev, instance=3)
    coming = dict.fromkeys(range(10), 0)  # itself counted among those waiting
    stays = plan(observed((waiting,), instance_coming=coming), now=T0)
    assert stays.delete_pods == [] and "InstanceMoved" not in [e.reason for e in stays.events]
    crowded = coming | {3: -1}
    moved = plan(observed((waiting,), instance_coming=crowded), now=T0)
    assert moved.delete_pods == [waiting.name]
    assert [e.reason for e in moved.events][:1] == ["InstanceMoved"]
    unknown = plan(observed((waiting,)), now=T0)
    assert unknown.delete_pods == [waiting.name]
    # Room on nodes that look free is no reason to wait: another workload may hold
    # the port there (the cluster test with squatter pods on every node).
    looks_free = plan(
        observed((waiting,), instance_room=dict.fromkeys(range(10), 3), instance_coming=crowded),
        now=T0,
    )
    assert looks_free.delete_pods == [waiting.name]


def test_slots_coming_are_the_stopping_vms_less_the_pods_waiting() -> None:
    coming = slots_coming({1: 2, 2: 1}, {1: 1, 2: 1, 3: 1})
    assert coming[1] == 1 and coming[2] == 0 and coming[3] == -1 and coming[0] == 0
    d = deps()
    pods = {
        ("ns", "a"): [pod("a-1", 1, "n1", deleting=True)],
        ("ns", "b"): [pod("b-1", 1, None)],
        ("ns", "c"): [pod("c-1", 2, "cordoned", deleting=True)],  # its slot takes no VM
        ("ns", "d"): [pod("d-1", 2, None)],
    }
    usage = d.slot_usage(cast(Any, pods), cast(Any, {"n1": [8]}))
    assert usage.coming()[1] == 0 and usage.coming()[2] == -1
