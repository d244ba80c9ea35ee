"""The node report's compare-then-write (nodeagent/_publish.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

from cocoon_operator.api.nodereport import REPORT_KEY, GuestHealthReport, NodeReport
from cocoon_operator.k8s.rest import ApiError, Kube
from cocoon_operator.nodeagent._publish import HEARTBEAT_JITTER, Publisher
from tests.unit.helpers import node_report as report

NOW = dt.datetime(2026, 12, 6, 20, 0, tzinfo=dt.UTC)


class OneConfigMap:
    """The apiserver's answers for one namespace's ConfigMaps, slow enough that two
    writers overlap: each call yields to the event loop before it answers."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(method)
        await asyncio.sleep(0.01)
        body = kwargs["body"]
        name = body["metadata"]["name"]
        if method == "PATCH":
            if name not in self.objects:
                raise ApiError(404, "Not Found")
        elif name in self.objects:
            raise ApiError(409, "Conflict")
        self.objects[name] = body
        return body


async def test_reports_published_at_once_for_a_new_node_create_its_config_map_once() -> None:
    api = OneConfigMap()
    publisher = Publisher(cast(Kube, api), "ops", dt.timedelta(minutes=1))

    results = await asyncio.gather(*(publisher.publish(report(i), NOW) for i in range(4)))

    assert api.calls.count("POST") == 1
    assert all(results)  # each report differed from the one before it: each was written
    assert len(api.objects) == 1


def reading(at: str, image_hash: str = "a" * 64) -> GuestHealthReport:
    return GuestHealthReport(checked_at=at, image_hash=image_hash)


def written(api: OneConfigMap) -> NodeReport:
    (cm,) = api.objects.values()
    return NodeReport.model_validate_json(cm["data"][REPORT_KEY])


async def test_a_new_health_reading_that_says_the_same_waits_for_the_heartbeat() -> None:
    api = OneConfigMap()
    publisher = Publisher(cast(Kube, api), "ops", dt.timedelta(minutes=5))
    await publisher.publish(report(0, 1, health=reading("2026-12-06T20:00:00Z")), NOW)

    again = report(0, 1, health=reading("2026-12-06T20:01:00Z"))
    assert not await publisher.publish(again, NOW + dt.timedelta(minutes=1))
    assert written(api).vms[0].health == reading("2026-12-06T20:00:00Z")

    latest = report(0, 1, health=reading("2026-12-06T20:05:00Z"))
    assert await publisher.publish(latest, NOW + dt.timedelta(minutes=5))
    assert written(api).vms[0].health == reading("2026-12-06T20:05:00Z")


async def test_a_health_reading_that_says_something_new_is_written_at_once() -> None:
    api = OneConfigMap()
    publisher = Publisher(cast(Kube, api), "ops", dt.timedelta(minutes=5))
    await publisher.publish(report(0, health=reading("2026-12-06T20:00:00Z")), NOW)

    other = report(0, health=reading("2026-12-06T20:01:00Z", image_hash="b" * 64))
    assert await publisher.publish(other, NOW + dt.timedelta(minutes=1))
    assert written(api).vms[0].health == reading("2026-12-06T20:01:00Z", image_hash="b" * 64)


async def test_a_heartbeat_comes_between_half_a_heartbeat_and_a_whole_one() -> None:
    beat = dt.timedelta(minutes=4)
    late = Publisher(cast(Kube, OneConfigMap()), "ops", beat, jitter=lambda: 0.0)
    early = Publisher(cast(Kube, OneConfigMap()), "ops", beat, jitter=lambda: 0.5)
    for publisher in (late, early):
        assert await publisher.publish(report(0), NOW)  # the first write: at once

    assert HEARTBEAT_JITTER == 0.5  # so jitter 0.5 beats at three quarters
    three_quarters = NOW + dt.timedelta(minutes=3)
    assert not await early.publish(report(0), three_quarters - dt.timedelta(seconds=1))
    assert await early.publish(report(0), three_quarters)
    assert not await late.publish(report(0), three_quarters)
    assert not await late.publish(report(0), NOW + beat - dt.timedelta(seconds=1))
    assert await late.publish(report(0), NOW + beat)
