"""Earnings are written when first seen, then at most every five minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cocoon_operator.api.v1alpha1 import EarningsStatus
from cocoon_operator.policy.chain import EARNINGS_WRITE_SECONDS, earnings_due

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def earned(tokens: int, at: datetime = NOW) -> EarningsStatus:
    return EarningsStatus(earned_tokens=tokens, checked_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_first_figures_are_written_then_changes_wait_their_turn() -> None:
    assert earnings_due(None, earned(5), now=NOW)
    assert not earnings_due(earned(5), earned(9), now=NOW + timedelta(seconds=60))
    later = NOW + timedelta(seconds=EARNINGS_WRITE_SECONDS)
    assert earnings_due(earned(5), earned(9), now=later)
    assert not earnings_due(earned(5), earned(5), now=later + timedelta(days=1))
