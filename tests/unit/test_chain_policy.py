"""Earnings are written when first seen, then at most every 15 minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cocoon_operator.api.v1alpha1 import EarningsStatus, PayoutPolicy
from cocoon_operator.policy.chain import EARNINGS_WRITE_SECONDS, earnings_due, payout_due

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def earned(tokens: int, at: datetime = NOW) -> EarningsStatus:
    return EarningsStatus(earned_tokens=tokens, checked_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_first_figures_are_written_then_changes_wait_their_turn() -> None:
    assert earnings_due(None, earned(5), now=NOW)
    assert not earnings_due(earned(5), earned(9), now=NOW + timedelta(seconds=60))
    # Rising counters cost a fleet at rest at most one write per worker per 15 min.
    assert not earnings_due(earned(5), earned(9), now=NOW + timedelta(seconds=899))
    later = NOW + timedelta(seconds=EARNINGS_WRITE_SECONDS)
    assert earnings_due(earned(5), earned(9), now=later)
    assert not earnings_due(earned(5), earned(5), now=later + timedelta(days=1))


def test_an_unreadable_last_write_time_means_the_figures_are_written() -> None:
    # The CRD's date-time format keeps most garbage out; what still gets in (a
    # copy restored from elsewhere, a schema change) must not stop the chain
    # step with a ValueError, as it did before policy.conditions.parse_rfc3339.
    garbled = EarningsStatus(earned_tokens=5, checked_at="yesterday-ish")
    assert earnings_due(garbled, earned(9), now=NOW)


def test_a_completed_payout_is_written_at_once() -> None:
    old = EarningsStatus(
        earned_tokens=10, paid_out_tokens=0, payouts=0, checked_at="2026-01-01T00:00:00Z"
    )
    paid = EarningsStatus(earned_tokens=10, paid_out_tokens=10, payouts=1)
    moments_later = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert earnings_due(old, paid, now=moments_later)
    more_tokens = EarningsStatus(earned_tokens=20, paid_out_tokens=0, payouts=0)
    assert not earnings_due(old, more_tokens, now=moments_later)


def test_payout_policy_asks_only_above_its_threshold_and_never_twice_at_once() -> None:
    off = PayoutPolicy()
    assert not payout_due(off, unpaid_tokens=10**12, running=False)
    policy = PayoutPolicy(minimum_unpaid_tokens=1000)
    assert not payout_due(policy, unpaid_tokens=999, running=False)
    assert payout_due(policy, unpaid_tokens=1000, running=False)
    assert not payout_due(policy, unpaid_tokens=5000, running=True)


def test_a_persons_payout_request_is_acted_upon_once_per_value() -> None:
    off = PayoutPolicy()
    asked = payout_due(off, unpaid_tokens=0, running=False, requested="t1", handled=None)
    assert asked == "requested (t1)"
    assert payout_due(off, unpaid_tokens=0, running=False, requested="t1", handled="t1") is None
    assert payout_due(off, unpaid_tokens=0, running=False, requested="t2", handled="t1")
    assert payout_due(off, unpaid_tokens=0, running=True, requested="t2", handled="t1") is None
    policy = PayoutPolicy(minimum_unpaid_tokens=10)
    why = payout_due(policy, unpaid_tokens=12, running=False, requested="t1", handled="t1")
    assert why == "12 unpaid tokens >= spec.payout.minimumUnpaidTokens (10)"
