"""The operator's clock far ahead of or behind the truth (pure policies; the clock is
injected as ``now``). Each case ends in a definite outcome, never an exception.

Elsewhere: real evidence verified at a skewed instant in
tests/unit/evidence/test_evidence_faults.py; funding across a UTC day boundary
moved by skew, and a clock behind the chain, in tests/unit/funding/test_stale_and_skew.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cocoon_operator.api.v1alpha1 import AttestationSummary, ConditionStatus
from cocoon_operator.funding import Intent, Ledger, PlannedTransfer, TopUpRequest, plan_topups
from cocoon_operator.policy.attestation import (
    NO_QUOTE,
    GateReason,
    LastVerification,
    Rejected,
    TrustMode,
    decide,
    needs_verification,
)
from cocoon_operator.policy.conditions import rfc3339
from tests.unit.helpers import GOOD, LAST, NOW, QUOTE, verified_summary

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE
YEARS = timedelta(days=3650)
DOWN = Rejected(NO_QUOTE, "the launcher on n1 has relayed no quote for instance 0 yet")


def unreported(
    summary: AttestationSummary, last: LastVerification, now: datetime
) -> tuple[ConditionStatus, str]:
    d = decide(
        DOWN,
        previous=summary,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=now,
        valid_until=last.valid_until,
    )
    return d.gate, d.reason.value


def due(last: LastVerification, now: datetime, quote: str = QUOTE) -> bool:
    return needs_verification(
        last, pod_uid="u1", gate=T, quote_sha256=quote, reattest_seconds=900, now=now
    )


def test_a_clock_far_ahead_expires_the_verdict_and_demands_verification() -> None:
    summary = verified_summary(NOW)
    ahead = NOW + YEARS
    assert due(LAST, ahead)
    # No quote now: the last verdict is long expired by this clock; the gate closes.
    assert unreported(summary, LAST, ahead) == (F, GateReason.EXPIRED.value)


def test_a_clock_far_behind_keeps_the_verdict_until_a_new_quote() -> None:
    summary = verified_summary(NOW)
    behind = NOW - YEARS
    # Elapsed time is negative: the same quote is not re-verified on schedule,
    # and a quote missing for a moment keeps the verdict (fail-static) ...
    assert not due(LAST, behind)
    assert unreported(summary, LAST, behind) == (T, GateReason.VERIFIED.value)
    # ... but any new quote (COCOON refreshes hourly) is verified in full,
    # at this clock: see the evidence test, where that fails a date step.
    assert due(LAST, behind, quote="bb" * 32)


def test_a_verdict_made_by_a_clock_ahead_is_judged_by_its_own_expiry() -> None:
    # Verified while the clock ran a year ahead; the clock is then corrected.
    ahead = NOW + YEARS / 10
    summary = verified_summary(ahead)
    last = replace(LAST, verified_at=ahead, valid_until=GOOD.valid_until)
    assert not due(last, NOW)  # verified "in the future": not due until then
    # Its expiry is capped by the collateral's end, so it still lapses on time.
    assert summary.expires_at == "2026-11-26T12:00:00Z" == rfc3339(GOOD.valid_until)
    assert unreported(summary, last, NOW) == (T, GateReason.VERIFIED.value)
    assert unreported(summary, last, GOOD.valid_until) == (F, GateReason.EXPIRED.value)


def intent(created: datetime, amount: int) -> Intent:
    return Intent(
        id="i1",
        seqno=0,
        valid_until=int(created.timestamp()) + 60,
        message_hash="00" * 32,
        boc="",
        transfers=[PlannedTransfer(worker="ns/w", address="0:" + "11" * 32, amount=amount)],
        created_at=created,
        state="confirmed",
        resolved_at=created,
        sent_lt=1000,
    )


def test_daily_caps_count_the_day_the_clock_says() -> None:
    """The caps follow the operator's clock: moved a day ahead, a new day's allowance
    opens (the treasury's logical-time check, not the cap, prevents paying twice;
    see test_stale_and_skew); moved back, spending "from the future" counts nowhere
    but is still in the ledger. Either way the plan is a definite answer."""
    funded = datetime(2026, 11, 25, 23, 59, 50, tzinfo=UTC)
    ledger = Ledger(treasury="0:" + "22" * 32, intents=[intent(funded, 5_000_000_000)])
    low = TopUpRequest("ns/w", "0:" + "11" * 32, 0, 5_000_000_000, 10_000_000_000, 5_000_000_000)
    for clock in (funded, funded - timedelta(hours=1)):
        _, refused = plan_topups(
            [low], ledger, day=clock.date().isoformat(), global_daily_cap=10**12, available=10**12
        )
        assert [r.reason for r in refused] == ["the worker's daily cap is used up"]
    for clock in (funded + timedelta(seconds=15), funded - timedelta(days=1)):
        transfers, refused = plan_topups(
            [low], ledger, day=clock.date().isoformat(), global_daily_cap=10**12, available=10**12
        )
        assert [t.amount for t in transfers] == [5_000_000_000] and not refused
