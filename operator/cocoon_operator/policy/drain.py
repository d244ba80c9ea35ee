"""Stopping a worker without losing requests or earnings: the next step (pure).

Before its VM stops, a worker is disabled (proxies send it nothing new), its
in-flight requests finish, and a payout is requested from each proxy so
committed earnings reach the owner. Each step is bounded: a worker that does
not drain or pay out in time is stopped anyway, and the Event says so.

A worker that does not answer is asked again for a while before it is
stopped undrained: one failed read is as often the operator's own lag (a busy
event loop, a certificate the worker rotated a moment ago) as a dead VM, and
stopping on it drops the requests in flight. A dead VM costs the wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DrainStep(StrEnum):
    DISABLE = "Disable"
    WAIT_FOR_REQUESTS = "WaitForRequests"
    REQUEST_PAYOUT = "RequestPayout"
    WAIT_FOR_PAYOUT = "WaitForPayout"
    RETRY = "Retry"  # the worker did not answer: ask again shortly
    STOP = "Stop"


@dataclass(frozen=True)
class DrainFacts:
    enabled: bool
    active_requests: int | None  # None: the worker does not report it
    payout_running: bool
    payout_requested: bool
    elapsed_seconds: float  # since deletion began


@dataclass(frozen=True)
class DrainLimits:
    requests_seconds: float = 120.0
    payout_seconds: float = 60.0
    unreachable_seconds: float = 30.0


def next_step(facts: DrainFacts, limits: DrainLimits = DrainLimits()) -> tuple[DrainStep, str]:
    """What to do now, and why (for the Event when a bound is hit)."""
    if facts.enabled:
        return DrainStep.DISABLE, "disabling: no new requests"
    draining = facts.active_requests is None or facts.active_requests > 0
    if draining and facts.elapsed_seconds < limits.requests_seconds:
        return DrainStep.WAIT_FOR_REQUESTS, f"{facts.active_requests} requests in flight"
    if not facts.payout_requested:
        note = (
            ""
            if not draining
            else f" (stopped waiting for requests after {limits.requests_seconds:g} s)"
        )
        return DrainStep.REQUEST_PAYOUT, "requesting the final payout" + note
    if (
        facts.payout_running
        and facts.elapsed_seconds < limits.requests_seconds + limits.payout_seconds
    ):
        return DrainStep.WAIT_FOR_PAYOUT, "the payout is running"
    if facts.payout_running:
        return DrainStep.STOP, "stopping with the payout still running"
    return DrainStep.STOP, "drained and paid out"


def when_unreachable(
    unreachable_seconds: float, limits: DrainLimits = DrainLimits()
) -> tuple[DrainStep, str]:
    """The worker has not answered for ``unreachable_seconds`` (0 at the first failure):
    ask again, or stop it without a drain once the bound has passed."""
    if unreachable_seconds < limits.unreachable_seconds:
        return DrainStep.RETRY, "unreachable: asking again"
    return (
        DrainStep.STOP,
        f"unreachable for {unreachable_seconds:.0f} s (bound {limits.unreachable_seconds:g} s):"
        " stopping it undrained",
    )
