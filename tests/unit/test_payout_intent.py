"""A payout asked for at most once per purpose across crashes: the intent's rules."""

from __future__ import annotations

import pytest

from cocoon_operator.policy.payouts import (
    FINAL,
    UNREADABLE,
    PayoutIntent,
    parse_intent,
    plan_payout,
    still_to_ask,
)

A, B, C, D = ("0:" + c * 64 for c in "abcd")


def test_an_intent_reads_back_as_written() -> None:
    intent = PayoutIntent(FINAL, {A: 2, B: 0})
    assert parse_intent(intent.to_annotation()) == intent
    assert parse_intent(None) is None  # nothing recorded: a request is still to be made


@pytest.mark.parametrize(
    "raw",
    [
        "2026-12-06T10:00:00Z",  # not JSON
        "[]",
        '{"before": {}}',  # no purpose
        '{"for": "final", "before": []}',
        '{"for": "final", "before": {"0:aa": "2"}}',
        '{"for": "final", "before": {"0:aa": true}}',
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser recurses
    ],
)
def test_an_intent_that_cannot_be_read_stands_for_any_purpose(raw: str) -> None:
    intent = parse_intent(raw)
    assert intent is UNREADABLE
    assert intent.is_for(FINAL) and intent.is_for("2026-12-06T10:00:00Z")
    # ... and asks nobody again: a fee paid twice cannot be taken back.
    assert still_to_ask(intent, {A: 0, B: 0}, set()) == []


def test_an_intent_serves_its_own_purpose_only() -> None:
    person = PayoutIntent("2026-12-06T10:00:00Z", {A: 0})
    assert person.is_for("2026-12-06T10:00:00Z")
    assert not person.is_for(FINAL)
    assert not person.is_for("2026-12-06T11:00:00Z")  # another request of a person's


def test_only_proxies_with_no_trace_of_the_request_are_asked_again() -> None:
    intent = PayoutIntent(FINAL, {A: 2, B: 0, C: 5})
    payouts = {A: 2, B: 1, C: 5}  # B paid out since the intent was written
    running = {C}  # C's payout is under way
    assert still_to_ask(intent, payouts, running) == [A]


def test_a_proxy_the_worker_no_longer_lists_or_did_not_list_is_not_asked() -> None:
    intent = PayoutIntent(FINAL, {A: 0})
    assert still_to_ask(intent, {B: 0}, set()) == []  # A is gone; B was never asked for


def test_a_first_request_records_every_proxy_then_asks_them_all() -> None:
    plan = plan_payout(None, FINAL, {A: 2, B: 0}, running={B})
    assert plan.record == PayoutIntent(FINAL, {A: 2, B: 0})
    assert plan.ask == [A, B]  # a running one too: the final payout covers what came since
    assert plan.not_asked == {}


def test_an_intent_for_another_purpose_is_replaced() -> None:
    earlier = PayoutIntent("2026-12-06T10:00:00Z", {A: 0})
    plan = plan_payout(earlier, FINAL, {A: 1}, running=set())
    assert plan.record == PayoutIntent(FINAL, {A: 1})
    assert plan.ask == [A]


def test_after_a_restart_only_the_proxies_with_no_trace_are_asked_and_the_rest_say_why() -> None:
    recorded = PayoutIntent(FINAL, {A: 2, B: 0, C: 5})
    plan = plan_payout(recorded, FINAL, {A: 2, B: 1, C: 5, D: 0}, running={C})
    assert plan.record is None  # the intent on the pod stands
    assert plan.ask == [A]
    assert plan.not_asked == {
        B: "asked before the operator restarted (paid out since)",
        C: "asked before the operator restarted (payout running)",
        D: "not asked: not listed when this payout was asked for",
    }


def test_an_unreadable_intent_asks_nobody_once_and_is_replaced_by_a_readable_one() -> None:
    plan = plan_payout(UNREADABLE, FINAL, {A: 0, B: 0}, running=set())
    assert plan.ask == []
    assert set(plan.not_asked) == {A, B}
    assert all("could not be read" in why for why in plan.not_asked.values())
    assert plan.record == PayoutIntent(FINAL)
    # Written back, it asks nobody for this purpose again, and the next payout as usual.
    assert plan_payout(plan.record, FINAL, {A: 0, B: 0}, running=set()).ask == []
    assert plan_payout(plan.record, "2026-12-07T08:00:00Z", {A: 0}, running=set()).ask == [A]
