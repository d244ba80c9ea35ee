"""Stopping a worker without losing requests or earnings: the next step (pure).

Before its VM stops, a worker is disabled (proxies send it nothing new), its
in-flight requests finish, and a payout is requested from each proxy so
committed earnings reach the owner. Each step is bounded: a worker that does
not drain or pay out in time is stopped anyway, and the Event says so.

What a COCOON worker tells about it (see ``workerapi``): its real enabled
state and its requests in flight are rows of the ``/stats`` page
(WorkerRunner.cpp:583-589 and :628); ``/jsonstats`` says ``enabled: true``
whatever the state (WorkerRunner.cpp:688) and has no request count, so it is
never asked. Where the page does not show a row, the drain does without it:
an unknown state has the disable sent again at every pass (COCOON ignores a
disable of a disabled worker, WorkerRunner.cpp:460-462), an unknown count
waits the whole bound. A payout runs while its proxy's ``running_request``
is true (WorkerProxyInfo.cpp:84, cleared when the worker contract's
transaction comes back, WorkerProxyInfo.h:121-128).

A worker whose runner has not initialised answers every path 400 "not
found" (WorkerRunner.cpp:381-386): it has read no root contract yet, so no
proxy sent it a request or owes it a payout; it is stopped at once.

A worker that does not answer is asked again for a while before it is
stopped undrained: one failed read is as often the operator's own lag (a busy
event loop) as a dead VM, and stopping on it drops the requests in flight. A
dead VM costs the wait.
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
    enabled: bool | None  # the /stats page's enabled row; None: not shown
    active_requests: int | None  # the /stats page's active_requests row; None: not shown
    payout_running: bool
    payout_requested: bool
    elapsed_seconds: float  # since deletion began


@dataclass(frozen=True)
class DrainLimits:
    requests_seconds: float = 120.0
    payout_seconds: float = 60.0
    unreachable_seconds: float = 30.0


def next_step(facts: DrainFacts, limits: DrainLimits = DrainLimits()) -> tuple[DrainStep, str]:
    """What to do now, and why (for the Event when a bound is hit).

    With ``facts.enabled`` None the caller has sent the disable again this pass
    (see :func:`resend_disable`) and the drain goes on as if it had been taken.
    """
    if facts.enabled is True and facts.elapsed_seconds < limits.requests_seconds:
        return DrainStep.DISABLE, "disabling: no new requests"
    draining = facts.active_requests is None or facts.active_requests > 0
    if draining and facts.elapsed_seconds < limits.requests_seconds:
        why = (
            "requests in flight not shown: waiting the bound"
            if facts.active_requests is None
            else f"{facts.active_requests} requests in flight"
        )
        return DrainStep.WAIT_FOR_REQUESTS, why
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


def resend_disable(facts: DrainFacts) -> bool:
    """Whether to send the disable again before acting on ``next_step``: when the
    worker's page did not show its state, nothing confirms an earlier one took."""
    return facts.enabled is None


def when_not_initialised() -> tuple[DrainStep, str]:
    """The worker answered 400 "not found": its runner has not initialised."""
    return (
        DrainStep.STOP,
        "not initialised (it answers 400 not found): no requests or payouts to wait for",
    )


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
