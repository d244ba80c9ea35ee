"""The node report's compare-then-write (nodeagent/_publish.py)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any, cast

import pytest

from cocoon_operator.api.nodereport import REPORT_KEY, GuestHealthReport, NodeReport
from cocoon_operator.argparsing import positive_seconds
from cocoon_operator.k8s.rest import ApiError, Kube
from cocoon_operator.nodeagent._publish import Publisher
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
    # Phase 0: the first heartbeat a whole heartbeat after the first write.
    publisher = Publisher(cast(Kube, api), "ops", dt.timedelta(minutes=5), phase=lambda: 0.0)
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


async def test_the_first_heartbeat_comes_at_the_phase_and_each_later_one_a_heartbeat_on() -> None:
    beat = dt.timedelta(minutes=4)
    publisher = Publisher(cast(Kube, OneConfigMap()), "ops", beat, phase=lambda: 0.25)
    assert await publisher.publish(report(0), NOW)  # the first write: at once

    first = NOW + dt.timedelta(minutes=3)  # three quarters of a heartbeat: phase 0.25
    assert not await publisher.publish(report(0), first - dt.timedelta(seconds=1))
    assert await publisher.publish(report(0), first)
    assert not await publisher.publish(report(0), first + beat - dt.timedelta(seconds=1))
    assert await publisher.publish(report(0), first + beat)


async def test_a_change_written_between_heartbeats_does_not_move_the_next_one() -> None:
    beat = dt.timedelta(minutes=4)
    publisher = Publisher(cast(Kube, OneConfigMap()), "ops", beat, phase=lambda: 0.5)
    assert await publisher.publish(report(0), NOW)
    assert await publisher.publish(report(0, 1), NOW + dt.timedelta(minutes=1))  # a change

    assert await publisher.publish(report(0, 1), NOW + dt.timedelta(minutes=2))  # the phase's beat
    assert not await publisher.publish(report(0, 1), NOW + dt.timedelta(minutes=5))
    assert await publisher.publish(report(0, 1), NOW + dt.timedelta(minutes=6))


async def test_a_late_probe_writes_one_heartbeat_and_keeps_the_phase() -> None:
    beat = dt.timedelta(minutes=4)
    publisher = Publisher(cast(Kube, OneConfigMap()), "ops", beat, phase=lambda: 0.5)
    assert await publisher.publish(report(0), NOW)

    # The agent was held up past three beats (at 2, 6 and 10 minutes): one write.
    assert await publisher.publish(report(0), NOW + dt.timedelta(minutes=11))
    assert not await publisher.publish(report(0), NOW + dt.timedelta(minutes=13, seconds=59))
    assert await publisher.publish(report(0), NOW + dt.timedelta(minutes=14))


def test_a_heartbeat_of_no_time_is_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat must be positive"):
        Publisher(cast(Kube, OneConfigMap()), "ops", dt.timedelta(0))
    with pytest.raises(argparse.ArgumentTypeError, match="more than 0 seconds, got 0"):
        positive_seconds("0")
    assert positive_seconds("1.5") == 1.5
