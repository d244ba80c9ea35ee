"""list_and_watch keeps a copy of objects kopf does not watch: list, watch from the
list's version, and start over (after a pause) when the watch fails; a list
replaces the copy object by object, never emptying it."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import pytest

from cocoon_operator.k8s.reflect import list_and_watch
from cocoon_operator.k8s.rest import Gone


def obj(name: str) -> dict[str, Any]:
    """An object named ``name``; ``name:uid`` gives it that uid."""
    name, _, uid = name.partition(":")
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}"}, "x": 1}


class FakeKube:
    """Lists answer from ``lists`` in turn; each watch yields its events, then raises
    its error (if any) or ends as a server's timeout does."""

    def __init__(
        self, lists: list[list[str]], watches: list[tuple[list[str], Exception | None]]
    ) -> None:
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []

    async def request(self, method: str, url: str, *, query: Mapping[str, str]) -> dict[str, Any]:
        assert method == "GET" and query == {"labelSelector": "a=b"}
        names = self.lists.pop(0)
        version = str(10 * (len(self.watched_from) + 1))
        return {"items": [obj(n) for n in names], "metadata": {"resourceVersion": version}}

    async def watch(self, url: str, *, query: Mapping[str, str]) -> AsyncGenerator[dict[str, Any]]:
        self.watched_from.append(query["resourceVersion"])
        events, error = self.watches.pop(0)
        for name in events:
            yield {"type": "MODIFIED", "object": obj(name)}
        if error is not None:
            raise error
        if not self.watches:
            await asyncio.Event().wait()  # the last watch stays open


def follow(api: FakeKube, observe: Any) -> asyncio.Task[None]:
    return asyncio.create_task(
        list_and_watch(
            cast(Any, api),
            "/api/v1/configmaps",
            query={"labelSelector": "a=b"},
            observe=observe,
            what="the test's objects",
            retry_seconds=0,
        )
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_copy_is_listed_then_follows_the_watch_and_relists_after_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeKube(
        lists=[["a", "b"], ["c"]],
        watches=[(["b"], Gone(410, "Gone", "too old resource version")), (["c"], None)],
    )
    seen: list[tuple[str, str]] = []

    def observe(kind: str, o: dict[str, Any]) -> None:
        seen.append((kind, o["metadata"]["name"]))

    task = follow(api, observe)
    for _ in range(50):
        await asyncio.sleep(0)
        if ("MODIFIED", "c") in seen:
            break
    await stop(task)
    assert seen == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "b"),
        ("DELETED", "a"),  # the relist: what is gone goes first
        ("DELETED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "c"),
    ]
    assert api.watched_from == ["10", "20"]  # each watch from its own list's version
    assert "watching the test's objects:" in caplog.text


async def test_a_relist_never_leaves_an_object_that_stays_missing_from_the_copy() -> None:
    api = FakeKube(
        lists=[["a", "b", "c"], ["a", "b", "c", "d"]],
        watches=[([], Gone(410, "Gone", "too old")), ([], None)],
    )
    copy: dict[str, dict[str, Any]] = {}
    missing: list[set[str]] = []

    def observe(kind: str, o: dict[str, Any]) -> None:
        name = o["metadata"]["name"]
        if kind == "DELETED":
            copy.pop(name, None)
        else:
            copy[name] = o

    async def reader() -> None:  # a check reading the copy between objects
        filled = False  # until the first list has been read whole
        while True:
            await asyncio.sleep(0)
            filled = filled or {"a", "b", "c"} <= copy.keys()
            if filled and {"a", "b", "c"} - copy.keys():
                missing.append({"a", "b", "c"} - copy.keys())

    reading = asyncio.create_task(reader())
    task = follow(api, observe)
    for _ in range(50):
        await asyncio.sleep(0)
        if "d" in copy:
            break
    await stop(task)
    reading.cancel()
    assert copy.keys() == {"a", "b", "c", "d"}
    assert missing == []


async def test_a_recreated_object_is_deleted_as_its_old_self_then_added_as_its_new() -> None:
    api = FakeKube(
        lists=[["a:1", "b"], ["a:2", "b"]], watches=[([], Gone(410, "Gone", "")), ([], None)]
    )
    seen: list[tuple[str, dict[str, Any]]] = []
    task = follow(api, lambda kind, o: seen.append((kind, o)))
    for _ in range(50):
        await asyncio.sleep(0)
        if len(seen) == 5:
            break
    await stop(task)
    assert [(kind, o["metadata"]["name"], o["metadata"]["uid"]) for kind, o in seen] == [
        ("ADDED", "a", "1"),
        ("ADDED", "b", "uid-b"),
        ("DELETED", "a", "1"),
        ("ADDED", "a", "2"),
        ("ADDED", "b", "uid-b"),
    ]
    # A synthesized delete carries the object's identity, nothing of its content.
    assert seen[2][1] == {"metadata": {"name": "a", "namespace": "ns", "uid": "1"}}


async def test_other_tasks_run_between_the_objects_of_a_list_and_of_a_watch() -> None:
    # The fake's list and watch hand over every object without suspending, as a
    # stream's buffered events do: only list_and_watch's own yield lets others in.
    api = FakeKube(lists=[["a", "b", "c"]], watches=[(["d", "e", "f"], None)])
    ticks = 0
    ticks_at: list[int] = []

    async def other_work() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    def observe(kind: str, o: dict[str, Any]) -> None:
        ticks_at.append(ticks)

    other = asyncio.create_task(other_work())
    task = follow(api, observe)
    for _ in range(50):
        await asyncio.sleep(0)
        if len(ticks_at) == 6:
            break
    task.cancel()
    other.cancel()
    await asyncio.gather(task, other, return_exceptions=True)
    assert len(ticks_at) == 6
    assert all(later > earlier for earlier, later in itertools.pairwise(ticks_at)), ticks_at


class Marker:
    """Something a listed object carries that a weak reference can watch."""


async def test_the_list_is_freed_while_the_watch_runs() -> None:
    # The node reports' list held every report's text for the watch's five minutes
    # beside the newer ones the watch brought (docs/bench.md).
    markers: list[weakref.ref[Marker]] = []

    class Listing(FakeKube):
        async def request(
            self, method: str, url: str, *, query: Mapping[str, str]
        ) -> dict[str, Any]:
            listed = await super().request(method, url, query=query)
            for item in listed["items"]:
                item["big"] = marker = Marker()
                markers.append(weakref.ref(marker))
            return listed

    api = Listing(lists=[["a", "b"]], watches=[(["c"], None)])
    seen: list[str] = []
    task = follow(api, lambda kind, o: seen.append(o["metadata"]["name"]))
    for _ in range(50):
        await asyncio.sleep(0)
        if "c" in seen:
            break
    assert seen == ["a", "b", "c"]  # the watch is open, and stays open
    assert len(markers) == 2
    assert [m() for m in markers] == [None, None]  # freed by reference counting
    await stop(task)
