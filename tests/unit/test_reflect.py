"""list_and_watch keeps a copy of objects kopf does not watch: list, watch from the
list's version, and start over (after a pause) when the watch fails."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import pytest

from cocoon_operator.k8s.reflect import list_and_watch
from cocoon_operator.k8s.rest import Gone


class FakeKube:
    """Lists answer from ``lists`` in turn; each watch yields its events, then raises
    its error (if any) or ends as a server's timeout does."""

    def __init__(self, lists: list[list[str]], watches: list[tuple[list[str], Exception | None]]):
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []

    async def request(self, method: str, url: str, *, query: Mapping[str, str]) -> dict[str, Any]:
        assert method == "GET" and query == {"labelSelector": "a=b"}
        names = self.lists.pop(0)
        version = str(10 * (len(self.watched_from) + 1))
        return {"items": [{"name": n} for n in names], "metadata": {"resourceVersion": version}}

    async def watch(self, url: str, *, query: Mapping[str, str]) -> AsyncGenerator[dict[str, Any]]:
        self.watched_from.append(query["resourceVersion"])
        events, error = self.watches.pop(0)
        for name in events:
            yield {"type": "MODIFIED", "object": {"name": name}}
        if error is not None:
            raise error
        if not self.watches:
            await asyncio.Event().wait()  # the last watch stays open


async def test_the_copy_is_reset_then_listed_then_follows_the_watch_and_relists_after_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeKube(
        lists=[["a", "b"], ["c"]],
        watches=[(["b"], Gone(410, "Gone", "too old resource version")), (["c"], None)],
    )
    seen: list[tuple[str, str]] = []

    def observe(kind: str, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["name"]))

    task = asyncio.create_task(
        list_and_watch(
            cast(Any, api),
            "/api/v1/configmaps",
            query={"labelSelector": "a=b"},
            reset=lambda: seen.append(("RESET", "")),
            observe=observe,
            what="the test's objects",
            retry_seconds=0,
        )
    )
    for _ in range(50):
        await asyncio.sleep(0)
        if ("MODIFIED", "c") in seen:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [
        ("RESET", ""),
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "b"),
        ("RESET", ""),
        ("ADDED", "c"),
        ("MODIFIED", "c"),
    ]
    assert api.watched_from == ["10", "20"]  # each watch from its own list's version
    assert "watching the test's objects:" in caplog.text


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

    def observe(kind: str, obj: dict[str, Any]) -> None:
        ticks_at.append(ticks)

    other = asyncio.create_task(other_work())
    task = asyncio.create_task(
        list_and_watch(
            cast(Any, api),
            "/api/v1/configmaps",
            query={"labelSelector": "a=b"},
            reset=lambda: None,
            observe=observe,
            what="the test's objects",
        )
    )
    for _ in range(50):
        await asyncio.sleep(0)
        if len(ticks_at) == 6:
            break
    task.cancel()
    other.cancel()
    await asyncio.gather(task, other, return_exceptions=True)
    assert len(ticks_at) == 6
    assert all(later > earlier for earlier, later in itertools.pairwise(ticks_at)), ticks_at
