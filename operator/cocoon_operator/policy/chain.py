"""When the chain step writes what it read (pure)."""

from __future__ import annotations

import datetime as dt

from cocoon_operator.api.v1alpha1 import EarningsStatus

EARNINGS_WRITE_SECONDS = 300.0


def earnings_due(old: EarningsStatus | None, new: EarningsStatus, *, now: dt.datetime) -> bool:
    """Token counters rise all the time: write them at most every five minutes.

    The metrics carry the live figure; status is for people and GitOps, and a
    write per worker per check would make a fleet at rest cost API requests.
    """
    if old is None or old.checked_at is None:
        return True
    counters = ("earned_tokens", "paid_out_tokens", "payouts")
    if all(getattr(old, c) == getattr(new, c) for c in counters):
        return False
    last = dt.datetime.fromisoformat(old.checked_at.replace("Z", "+00:00"))
    return (now - last).total_seconds() >= EARNINGS_WRITE_SECONDS
