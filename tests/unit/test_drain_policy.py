"""The order and bounds of stopping a worker: disable, drain, pay out, stop.

The facts are what a COCOON worker shows: its enabled state and requests in
flight on ``/stats`` (WorkerRunner.cpp:583-589, :628), its payouts running in
``/jsonstats`` (WorkerProxyInfo.cpp:84).
"""

from __future__ import annotations

from cocoon_operator.policy.drain import (
    DrainFacts,
    DrainLimits,
    DrainStep,
    next_step,
    resend_disable,
    when_not_initialised,
    when_unreachable,
)


def facts(**changes: object) -> DrainFacts:
    base: dict[str, object] = {
        "enabled": False,
        "active_requests": 0,
        "payout_running": False,
        "payout_requested": False,
        "elapsed_seconds": 1.0,
    }
    base.update(changes)
    return DrainFacts(**base)  # type: ignore[arg-type]


def test_the_steps_come_in_order() -> None:
    assert next_step(facts(enabled=True))[0] is DrainStep.DISABLE
    assert next_step(facts(active_requests=3))[0] is DrainStep.WAIT_FOR_REQUESTS
    assert next_step(facts())[0] is DrainStep.REQUEST_PAYOUT
    assert (
        next_step(facts(payout_requested=True, payout_running=True))[0] is DrainStep.WAIT_FOR_PAYOUT
    )
    step, why = next_step(facts(payout_requested=True))
    assert (step, why) == (DrainStep.STOP, "drained and paid out")


def test_the_drain_ends_when_the_worker_shows_no_request_in_flight() -> None:
    step, why = next_step(facts(active_requests=2, elapsed_seconds=5))
    assert (step, why) == (DrainStep.WAIT_FOR_REQUESTS, "2 requests in flight")
    assert next_step(facts(active_requests=0, elapsed_seconds=5))[0] is DrainStep.REQUEST_PAYOUT


def test_every_wait_is_bounded_and_says_so() -> None:
    limits = DrainLimits(requests_seconds=10, payout_seconds=5)
    step, why = next_step(facts(active_requests=3, elapsed_seconds=10), limits)
    assert step is DrainStep.REQUEST_PAYOUT and "stopped waiting" in why
    step, why = next_step(
        facts(payout_requested=True, payout_running=True, elapsed_seconds=15), limits
    )
    assert step is DrainStep.STOP and "still running" in why


def test_a_worker_that_keeps_showing_enabled_is_not_disabled_forever() -> None:
    limits = DrainLimits(requests_seconds=10)
    assert next_step(facts(enabled=True, elapsed_seconds=9), limits)[0] is DrainStep.DISABLE
    step, why = next_step(facts(enabled=True, elapsed_seconds=10), limits)
    assert step is DrainStep.REQUEST_PAYOUT and "stopped waiting" not in why


def test_a_page_without_the_rows_gets_the_disable_again_and_the_whole_bound() -> None:
    limits = DrainLimits(requests_seconds=10)
    unknown = facts(enabled=None, active_requests=None, elapsed_seconds=9)
    assert resend_disable(unknown)  # nothing confirms the first one took
    step, why = next_step(unknown, limits)
    assert step is DrainStep.WAIT_FOR_REQUESTS and "not shown" in why
    later = facts(enabled=None, active_requests=None, elapsed_seconds=10)
    assert next_step(later, limits)[0] is DrainStep.REQUEST_PAYOUT
    assert not resend_disable(facts(enabled=False))
    assert not resend_disable(facts(enabled=True))  # next_step's own DISABLE sends it


def test_a_worker_that_never_initialised_is_stopped_at_once() -> None:
    step, why = when_not_initialised()
    assert step is DrainStep.STOP and "not initialised" in why


def test_a_worker_that_does_not_answer_is_asked_again_until_the_bound() -> None:
    limits = DrainLimits(unreachable_seconds=30)
    assert when_unreachable(0, limits)[0] is DrainStep.RETRY  # the first failure
    assert when_unreachable(29.9, limits)[0] is DrainStep.RETRY
    step, why = when_unreachable(30, limits)
    assert step is DrainStep.STOP
    assert "unreachable for 30 s" in why and "undrained" in why
