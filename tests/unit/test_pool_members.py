"""The pool's handler without a cluster: it plans on each member as new as the
operator knows it (not as its index last saw it), member events that wait share
one pass, and its writes go in growing batches that stop at the first failure."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, cast

import pytest

from cocoon_operator.api.labels import LABEL_POOL, LABEL_POOL_REVISION
from cocoon_operator.handlers.pool import _members
from cocoon_operator.handlers.runtime import Deps, Runtime
from cocoon_operator.policy.pool import PoolMember, plan_pool

KEY = ("fleet", "pool")


def worker(name: str, version: int, *, ready: bool, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "fleet",
        "name": name,
        "uid": "u-" + name,
        "resourceVersion": str(version),
        "labels": {LABEL_POOL: "pool", LABEL_POOL_REVISION: "r1"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-05T13:37:00Z"
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "status": status}


def deps() -> Deps:
    return Deps(api=cast(Any, None), clock=lambda: dt.datetime.now(dt.UTC))


def test_a_ready_status_written_after_the_index_saw_the_worker_counts() -> None:
    """The index saw ten workers before they were Ready; this operator has
    since written Ready on all of them. A rotation at maxUnavailable 3 may
    delete three, not the ten the index would have it delete."""
    d = deps()
    index: dict[tuple[str, str], list[tuple[PoolMember, int | None, int | None]]] = {KEY: []}
    for i in range(10):
        index[KEY].append((PoolMember(f"w{i}", "r1", ready=False), 1000, 10 + i))
        d.latest.wrote(worker(f"w{i}", 100 + i, ready=True))
    members = _members(d, "fleet", index[KEY])
    assert all(m.ready for m in members)
    plan = plan_pool(members, replicas=10, revision="r2", max_unavailable=3, max_surge=0)
    assert len(plan.delete) == 3
    # From the index alone: every old worker "not Ready", every one deleted.
    stale = [m for m, _, _ in index[KEY]]
    assert (
        len(plan_pool(stale, replicas=10, revision="r2", max_unavailable=3, max_surge=0).delete)
        == 10
    )


def test_what_the_index_saw_after_our_write_wins() -> None:
    """Our copy says Ready, but the index has since seen the worker deleting."""
    d = deps()
    d.latest.wrote(worker("w0", 100, ready=True))
    entries = [(PoolMember("w0", "r1", ready=True, deleting=True), 1000, 105)]
    (member,) = _members(d, "fleet", entries)
    assert member.deleting
    assert len(d.latest) == 1  # an index entry is not a delivered body: nothing is dropped


async def test_member_events_that_wait_for_one_pass_share_it(monkeypatch: Any) -> None:
    """Fifty member events while a pass runs: one more pass after it, not fifty;
    an event after that pass started gets a pass of its own."""
    from cocoon_operator.handlers import pool as handlers  # noqa: PLC0415

    d = deps()
    passes: list[int] = []
    running = asyncio.Event()
    release = asyncio.Event()

    async def reconcile(body: Any, deps: Deps, members: Any, logger: Any) -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            running.set()
            await release.wait()

    monkeypatch.setattr(handlers, "_reconcile_pool_held", reconcile)
    snapshot = {"metadata": {"namespace": "fleet", "name": "pool"}}

    async def event() -> None:
        await handlers.pool_worker_changed(
            Runtime(started=d),
            namespace="fleet",
            labels={LABEL_POOL: "pool"},
            logger=logging.getLogger("test"),
            pools={KEY: [snapshot]},
            pool_members={},
        )

    first = asyncio.create_task(event())
    await running.wait()
    waiting = [asyncio.create_task(event()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert len(passes) == 2
    await event()
    assert len(passes) == 3
    assert not d.pools_queued


async def test_a_failing_batch_is_the_last_and_its_error_is_raised() -> None:
    from cocoon_operator.handlers.pool import _in_batches  # noqa: PLC0415

    tried: list[str] = []

    async def write(worker: str) -> None:
        tried.append(worker)
        if worker == "w4":
            raise RuntimeError("quota exceeded")

    names = [f"w{i}" for i in range(20)]
    with pytest.raises(RuntimeError, match="quota"):
        await _in_batches(names, write)
    # Batches 1, 2, 4: w4 is in the third, which still runs to its end.
    assert tried == names[:7]

    tried.clear()

    async def refused(worker: str) -> None:
        tried.append(worker)
        raise RuntimeError("admission webhook denied the request")

    with pytest.raises(RuntimeError, match="denied"):
        await _in_batches(names, refused)
    assert tried == ["w0"]  # one request, not twenty
