"""The order and bounds of stopping a worker: disable, drain, pay out, stop."""

from __future__ import annotations

from cocoon_operator.policy.drain import (
    DrainFacts,
    DrainLimits,
    DrainStep,
    next_step,
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


def test_every_wait_is_bounded_and_says_so() -> None:
    limits = DrainLimits(requests_seconds=10, payout_seconds=5)
    step, why = next_step(facts(active_requests=3, elapsed_seconds=10), limits)
    assert step is DrainStep.REQUEST_PAYOUT and "stopped waiting" in why
    step, why = next_step(
        facts(payout_requested=True, payout_running=True, elapsed_seconds=15), limits
    )
    assert step is DrainStep.STOP and "still running" in why


def test_a_worker_that_does_not_report_its_requests_is_given_the_whole_bound() -> None:
    limits = DrainLimits(requests_seconds=10)
    assert (
        next_step(facts(active_requests=None, elapsed_seconds=9), limits)[0]
        is DrainStep.WAIT_FOR_REQUESTS
    )
    assert (
        next_step(facts(active_requests=None, elapsed_seconds=10), limits)[0]
        is DrainStep.REQUEST_PAYOUT
    )


def test_a_worker_that_does_not_answer_is_asked_again_until_the_bound() -> None:
    limits = DrainLimits(unreachable_seconds=30)
    assert when_unreachable(0, limits)[0] is DrainStep.RETRY  # the first failure
    assert when_unreachable(29.9, limits)[0] is DrainStep.RETRY
    step, why = when_unreachable(30, limits)
    assert step is DrainStep.STOP
    assert "unreachable for 30 s" in why and "undrained" in why
