"""A payout asked for at most once per purpose across crashes: the intent's rules.

The trace a payout request leaves is what COCOON writes: ``running_request``
(WorkerProxyInfo.cpp:84) and ``expected_cached_out_tokens`` (:83), which
``run_payout`` raises to the tokens committed (WorkerProxyInfo.h:84-86).
"""

from __future__ import annotations

import pytest

from cocoon_operator.policy.payouts import (
    FINAL,
    UNREADABLE,
    PayoutIntent,
    ProxyNow,
    parse_intent,
    plan_payout,
)

A, B, C, D = ("0:" + c * 64 for c in "abcd")


def owed(expected: int, committed: int, *, running: bool = False) -> ProxyNow:
    """A proxy as the worker reports it: committed tokens and the expected cash-out."""
    return ProxyNow(expected=expected, owed=max(0, committed - expected), running=running)


def test_an_intent_reads_back_as_written() -> None:
    intent = PayoutIntent(FINAL, {A: 2000, B: 0})
    assert parse_intent(intent.to_annotation()) == intent
    assert parse_intent(None) is None  # nothing recorded: a request is still to be made


@pytest.mark.parametrize(
    "raw",
    [
        "2026-12-06T10:00:00Z",  # not JSON
        "[]",
        '{"expected": {}}',  # no purpose
        '{"for": "final", "expected": []}',
        '{"for": "final", "expected": {"0:aa": "2"}}',
        '{"for": "final", "expected": {"0:aa": true}}',
        # Earlier versions counted payouts, which COCOON never reported: unreadable.
        '{"for": "final", "before": {"0:aa": 1}}',
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser recurses
    ],
)
def test_an_intent_that_cannot_be_read_stands_for_any_purpose(raw: str) -> None:
    intent = parse_intent(raw)
    assert intent is UNREADABLE
    assert intent.is_for(FINAL) and intent.is_for("2026-12-06T10:00:00Z")


def test_a_first_request_asks_only_the_proxies_owed_something_and_records_them() -> None:
    proxies = {
        A: owed(1000, 3000),
        B: owed(2000, 2000),  # nothing owed: a payout would only cost the fee
        C: owed(0, 5000, running=True),  # one is running already
    }
    plan = plan_payout(None, FINAL, proxies)
    assert plan.ask == [A]
    assert plan.record == PayoutIntent(FINAL, {A: 1000})
    assert plan.not_asked == {
        B: "not asked: nothing to pay out",
        C: "not asked: a payout is running",
    }


def test_nobody_owed_anything_means_no_intent_and_no_request() -> None:
    plan = plan_payout(None, FINAL, {A: owed(3000, 3000)})
    assert (plan.record, plan.ask) == (None, [])


def test_after_a_restart_only_proxies_without_a_trace_are_asked_again() -> None:
    recorded = PayoutIntent(FINAL, {A: 1000, B: 1000, C: 1000})
    proxies = {
        A: owed(1000, 3000),  # no trace: the request never left
        B: owed(3000, 3000),  # expected jumped to the committed tokens: it was sent
        C: owed(1000, 3000, running=True),  # sent, still running
        D: owed(0, 4000),  # not listed when the payout was asked for
    }
    plan = plan_payout(recorded, FINAL, proxies)
    assert plan.record is None  # the recorded intent stands
    assert plan.ask == [A]
    assert plan.not_asked == {
        B: "asked before the operator restarted (payout sent since)",
        C: "asked before the operator restarted (payout running)",
        D: "not asked: not asked when this payout was asked for",
    }


def test_a_proxy_paid_by_the_worker_itself_since_is_not_asked_again() -> None:
    # The worker pays out on its own thresholds (WorkerProxyInfo.cpp:125-136):
    # its cash-out then moves past the intent's figure just the same.
    recorded = PayoutIntent(FINAL, {A: 1000})
    assert plan_payout(recorded, FINAL, {A: owed(2500, 2600)}).ask == []


def test_a_proxy_gone_from_the_worker_is_not_asked() -> None:
    recorded = PayoutIntent(FINAL, {A: 1000, B: 1000})
    assert plan_payout(recorded, FINAL, {B: owed(1000, 2000)}).ask == [B]


def test_an_intent_for_another_purpose_is_replaced() -> None:
    earlier = PayoutIntent("2026-12-06T10:00:00Z", {A: 1000})
    plan = plan_payout(earlier, FINAL, {A: owed(3000, 4000)})
    assert plan.record == PayoutIntent(FINAL, {A: 3000})
    assert plan.ask == [A]


def test_an_unreadable_intent_asks_nobody_and_is_replaced_for_this_purpose_only() -> None:
    proxies = {A: owed(0, 1000), B: owed(0, 1000)}
    plan = plan_payout(UNREADABLE, FINAL, proxies)
    assert plan.ask == []
    assert plan.record == PayoutIntent(FINAL)
    assert set(plan.not_asked) == {A, B}
    assert all("could not be read" in why for why in plan.not_asked.values())
    # The replacement asks nobody for the same purpose, and does not stand in
    # the way of the next one.
    assert plan_payout(plan.record, FINAL, proxies).ask == []
    assert plan_payout(plan.record, "2026-12-07T08:00:00Z", proxies).ask == [A, B]
