"""Rolling a pool: the bounds hold at every step, and every roll converges."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon_operator.api.labels import LABEL_POOL
from cocoon_operator.api.pool import WorkerTemplate
from cocoon_operator.desired.pool import PoolRef, pool_worker, template_revision, wallet_secret
from cocoon_operator.policy.pool import (
    Expectations,
    PoolMember,
    next_names,
    plan_pool,
    slow_start,
)


def simulate(
    replicas: int, start: int, max_unavailable: int, max_surge: int, *, steps: int = 200
) -> tuple[int, int, int]:
    """Roll ``start`` Ready old workers to revision "new"; workers become Ready one
    step after creation, deleted ones vanish. Returns (steps, min ready, max live)."""
    members = [PoolMember(f"old-{i}", "old", ready=True) for i in range(start)]
    fresh: set[str] = set()
    min_ready, max_live = start, start
    for step in range(steps):
        plan = plan_pool(
            members,
            replicas=replicas,
            revision="new",
            max_unavailable=max_unavailable,
            max_surge=max_surge,
        )
        # The world moves: deletions happen, creations appear not Ready, last step's become Ready.
        members = [m for m in members if m.name not in plan.delete]
        members = [
            PoolMember(m.name, m.revision, ready=m.ready or m.name in fresh) for m in members
        ]
        fresh = set(next_names("p", "new", {m.name for m in members}, plan.create))
        members += [PoolMember(n, "new", ready=False) for n in fresh]
        ready = sum(m.ready for m in members)
        min_ready = min(min_ready, ready)
        max_live = max(max_live, len(members))
        if len(members) == replicas and all(m.revision == "new" and m.ready for m in members):
            return step, min_ready, max_live
    raise AssertionError("the roll did not converge")


def test_ten_workers_roll_three_at_a_time() -> None:
    steps, min_ready, max_live = simulate(10, 10, max_unavailable=3, max_surge=0)
    assert min_ready >= 7 and max_live <= 10
    assert steps <= 10


def test_with_surge_a_ready_worker_goes_only_after_its_replacement_is_ready() -> None:
    _, min_ready, max_live = simulate(2, 2, max_unavailable=0, max_surge=1)
    assert min_ready == 2 and max_live == 3


@settings(max_examples=200, deadline=None)
@given(
    replicas=st.integers(0, 30),
    start=st.integers(0, 30),
    max_unavailable=st.integers(0, 10),
    max_surge=st.integers(0, 10),
)
def test_bounds_hold_for_any_roll_or_scale(
    replicas: int, start: int, max_unavailable: int, max_surge: int
) -> None:
    if max_unavailable == 0 and max_surge == 0:
        max_unavailable = 1  # refused by the CRD's CEL rule
    _, min_ready, max_live = simulate(replicas, start, max_unavailable, max_surge)
    # Our deletions never take Ready workers below replicas - maxUnavailable (or
    # what there was to begin with), and live workers never exceed the surge.
    assert min_ready >= min(start, replicas - max_unavailable)
    assert max_live <= max(start, replicas + max_surge)


def test_scale_down_removes_not_ready_workers_first() -> None:
    members = [
        PoolMember("a", "r", ready=True),
        PoolMember("b", "r", ready=False),
        PoolMember("c", "r", ready=True),
    ]
    plan = plan_pool(members, replicas=2, revision="r", max_unavailable=1, max_surge=0)
    assert plan.delete == ("b",) and plan.create == 0


def test_names_are_deterministic_and_skip_taken_ones() -> None:
    assert next_names("p", "abcdef0123", {"p-abcdef01-0"}, 2) == ["p-abcdef01-1", "p-abcdef01-2"]


TEMPLATE = WorkerTemplate.model_validate(
    {
        "labels": {"team": "a"},
        "spec": {
            "network": "local",
            "release": {
                "version": "1",
                "image": "r/l@sha256:" + "a" * 64,
                "files": {
                    "ovmf": "1" * 64,
                    "image": "4" * 64,
                    "kernel": "2" * 64,
                    "initrd": "3" * 64,
                    "cmdline": "5" * 64,
                },
            },
            "model": {"name": "M/m", "commit": "4" * 40, "verityHash": "5" * 64},
            "ownerAddress": "0:" + "6" * 64,
            "rootContractAddress": "0:" + "7" * 64,
        },
    }
)
POOL = PoolRef("p", "ns", "uid-1")


def test_a_pool_worker_gets_its_own_key_and_is_owned_by_the_pool() -> None:
    worker = pool_worker(POOL, TEMPLATE, "rev", "p-rev-0")
    assert worker["spec"]["nodeWalletKeySecretRef"] == {
        "name": "p-rev-0-wallet",
        "key": "node-wallet-key",
    }
    assert worker["metadata"]["labels"] == {
        "team": "a",
        LABEL_POOL: "p",
        "cocoon.network/pool-revision": "rev",
    }
    (owner,) = worker["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-1" and owner["controller"] is True
    # The operator's own finalizer from the start: no patch of kopf's to add it.
    assert worker["metadata"]["finalizers"] == ["cocoon.network/finalizer"]
    secret = wallet_secret(POOL, "p-rev-0", bytes(range(32)))
    assert "ownerReferences" not in secret["metadata"]  # keys outlive pools and workers
    stored = base64.b64decode(secret["data"]["node-wallet-key"])
    assert base64.b64decode(stored) == bytes(range(32))


def test_the_coefficient_does_not_change_the_revision_but_the_model_does() -> None:
    base = template_revision(TEMPLATE)
    cheaper = TEMPLATE.model_copy(
        update={"spec": TEMPLATE.spec.model_copy(update={"coefficient": 1500})}
    )
    assert template_revision(cheaper) == base
    model = TEMPLATE.spec.model.model_copy(update={"commit": "8" * 40})
    other = TEMPLATE.model_copy(update={"spec": TEMPLATE.spec.model_copy(update={"model": model})})
    assert template_revision(other) != base


def test_a_lagging_index_does_not_make_the_pool_delete_past_max_unavailable() -> None:
    """The pool deleted three old workers a moment ago; its members' index still
    shows them Ready and not deleting. Without what the pool expects, the plan
    counts ten Ready and deletes again."""
    old = [PoolMember(f"old-{i}", "r1", ready=True) for i in range(10)]
    expected = Expectations()
    first = plan_pool(old, replicas=10, revision="r2", max_unavailable=3, max_surge=0)
    assert len(first.delete) == 3
    expected.deleted.update(first.delete)
    for i in range(first.create):
        expected.created[f"new-{i}"] = ("r2", 0.0)

    # The index has not caught up; another member's event plans again.
    seen = expected.apply(old, now=1.0)
    again = plan_pool(seen, replicas=10, revision="r2", max_unavailable=3, max_surge=0)
    assert again.delete == () and again.create == 0
    assert again.ready == 7  # what really is Ready

    # The index catches up: the deletions show, the creations appear; nothing is held.
    caught_up = [
        PoolMember(m.name, m.revision, m.ready, deleting=m.name in first.delete) for m in old
    ] + [PoolMember(f"new-{i}", "r2", ready=False) for i in range(3)]
    assert expected.apply(caught_up, now=2.0) == caught_up
    assert not expected.deleted and not expected.created


def test_a_creation_lapses_when_nothing_confirms_it() -> None:
    expected = Expectations(ttl=60.0)
    expected.created["new-0"] = ("r2", 0.0)
    assert [m.name for m in expected.apply([], now=10.0)] == ["new-0"]
    assert expected.apply([], now=61.0) == []


def test_a_deletion_is_held_for_as_long_as_the_index_lags() -> None:
    """At 1,000 workers the index ran minutes behind the pool's deletions; a
    deletion that lapsed after a minute let each batch be deleted again."""
    old = [PoolMember(f"old-{i}", "r1", ready=True) for i in range(10)]
    expected = Expectations(ttl=60.0)
    first = plan_pool(old, replicas=10, revision="r2", max_unavailable=3, max_surge=0)
    expected.deleted.update(first.delete)
    for minute in range(1, 11):
        seen = expected.apply(old, now=60.0 * minute)
        again = plan_pool(seen, replicas=10, revision="r2", max_unavailable=3, max_surge=0)
        assert again.delete == (), minute
    # Gone from the index: nothing left to hold.
    rest = [m for m in old if m.name not in first.delete]
    assert expected.apply(rest, now=900.0) == rest
    assert not expected.deleted


def test_writes_go_in_batches_that_double_up_to_a_cap() -> None:
    assert slow_start(0) == []
    assert slow_start(1) == [1]
    assert slow_start(10) == [1, 2, 4, 3]
    sizes = slow_start(1000, most=16)
    assert sizes[:6] == [1, 2, 4, 8, 16, 16]
    assert sum(sizes) == 1000 and max(sizes) == 16
