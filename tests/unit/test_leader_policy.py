"""Who may take the operator's Lease, judged by the local clock as client-go does,
and a leader that stops acting at its renew deadline."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cocoon_operator.k8s.leader import LeaderElector
from cocoon_operator.k8s.rest import ApiError
from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.policy.leader import LeaseObserver, LeaseTimes, may_take
from tests.unit.clocks import FakeClock

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_a_held_lease_is_taken_only_a_lease_after_its_record_was_last_seen_changing() -> None:
    assert not may_take("a", 100.0, 15, identity="b", now=110.0)
    assert may_take("a", 100.0, 10, identity="b", now=110.0)  # expired exactly now
    assert may_take("b", 100.0, 15, identity="b", now=110.0)  # our own: renew


def test_an_empty_or_released_lease_is_free() -> None:
    assert may_take(None, 0.0, 15, identity="b", now=0.0)
    assert may_take("", 0.0, 15, identity="b", now=0.0)


def test_the_observer_restarts_the_wait_only_when_the_record_changes() -> None:
    seen = LeaseObserver()
    assert seen.observe(("a", "t1"), 5.0) == 5.0
    assert seen.observe(("a", "t1"), 9.0) == 5.0
    assert seen.observe(("a", "t2"), 12.0) == 12.0


@pytest.mark.parametrize(
    ("lease", "deadline", "retry"), [(15, 15, 2), (15, 20, 2), (15, 10, 10), (15, 10, 0)]
)
def test_lease_times_must_nest_lease_over_deadline_over_retry(
    lease: float, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="lease > renew deadline > retry period"):
        LeaseTimes(lease, deadline, retry)


def test_default_times_keep_client_gos_proportions() -> None:
    assert LeaseTimes.for_lease(15) == LeaseTimes(15, 10, 2)


class FakeLeases:
    """The Lease endpoints of an apiserver: GET, POST, PUT with resourceVersion CAS."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.hang_puts = False

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = kwargs.get("body")
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "Not Found", "")
            return copy.deepcopy(self.lease)
        if method == "PUT" and self.hang_puts:
            await asyncio.Event().wait()  # an apiserver that never answers
        assert body is not None
        if method == "POST" and self.lease is not None:
            raise ApiError(409, "Conflict", "")
        if method == "PUT":
            assert self.lease is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"]["holderIdentity"]


def elector(api: FakeLeases, identity: str, mono: FakeClock, wall: timedelta) -> LeaderElector:
    return LeaderElector(
        api,  # type: ignore[arg-type]
        "ns",
        "lease",
        identity,
        times=LeaseTimes(15, 10, 2),
        clock=lambda: NOW + wall + timedelta(seconds=mono.t),
        monotonic=mono,
    )


async def test_a_follower_whose_clock_runs_an_hour_ahead_does_not_take_a_renewed_lease() -> None:
    api = FakeLeases()
    leader_clock, follower_clock = FakeClock(), FakeClock()
    leader = elector(api, "a", leader_clock, timedelta(0))
    follower = elector(api, "b", follower_clock, timedelta(hours=1))
    assert await leader.try_acquire()
    # By wall clocks the holder's renewTime is an hour old; by what the follower saw, fresh.
    assert not await follower.try_acquire()
    for _ in range(10):  # the leader renews every 2 s for 20 s
        leader_clock.t += 2
        follower_clock.t += 2
        assert await leader.try_acquire()
        assert not await follower.try_acquire()
    assert api.holder() == "a"
    # The leader stops renewing: the follower takes over a whole lease after the last change.
    follower_clock.t += 14
    assert not await follower.try_acquire()
    follower_clock.t += 1
    assert await follower.try_acquire()
    assert api.holder() == "b"


async def test_a_follower_whose_clock_runs_behind_takes_over_a_lease_after_the_last_renewal() -> (
    None
):
    api = FakeLeases()
    leader_clock, follower_clock = FakeClock(), FakeClock()
    leader = elector(api, "a", leader_clock, timedelta(0))
    follower = elector(api, "b", follower_clock, -timedelta(hours=1))
    assert await leader.try_acquire()
    assert not await follower.try_acquire()
    follower_clock.t += 15
    assert await follower.try_acquire()


async def test_a_renewal_that_hangs_ends_leadership_at_the_renew_deadline() -> None:
    api = FakeLeases()
    leader = LeaderElector(
        api,  # type: ignore[arg-type]
        "ns",
        "lease",
        "a",
        times=LeaseTimes(lease=3.0, renew_deadline=0.5, retry=0.1),
    )
    assert await leader.try_acquire()
    api.hang_puts = True
    # Leadership must end by itself (the guard only keeps a failing test from hanging).
    await asyncio.wait_for(leader.hold(), timeout=30)


async def test_failed_renewals_end_leadership_at_the_renew_deadline_by_the_local_clock() -> None:
    api = FakeLeases()
    mono = FakeClock()
    leader = LeaderElector(
        api,  # type: ignore[arg-type]
        "ns",
        "lease",
        "a",
        times=LeaseTimes(lease=15, renew_deadline=10, retry=0.01),
        monotonic=mono,
    )
    assert await leader.try_acquire()
    attempts = 0

    async def failing(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        mono.t += 3  # each failed attempt costs 3 s of the leader's clock
        raise ApiError(500, "Internal Server Error", "")

    api.request = failing  # type: ignore[method-assign]
    await asyncio.wait_for(leader.hold(), timeout=30)
    # Tries at +0, +3, +6, +9 succeed in starting; at +12 the deadline (10 s) has passed.
    assert attempts == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A Lease's renewTime as the apiserver writes it (MicroTime).
        ("2026-12-06T04:40:00.123456Z", datetime(2026, 12, 6, 4, 40, 0, 123456, tzinfo=UTC)),
        ("2026-12-06T06:40:00+02:00", datetime(2026, 12, 6, 4, 40, tzinfo=UTC)),
        ("2026-12-06T04:40:00", datetime(2026, 12, 6, 4, 40, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1733460000, None),
    ],
)
def test_a_lease_time_reads_as_an_aware_utc_instant_or_none(
    text: object, expected: datetime | None
) -> None:
    assert parse_rfc3339(text) == expected
