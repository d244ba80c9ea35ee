"""When the chain step writes what it read, and when it asks for a payout (pure)."""

from __future__ import annotations

import datetime as dt

from cocoon_operator.api.v1alpha1 import EarningsStatus, PayoutPolicy
from cocoon_operator.policy.conditions import parse_rfc3339

# A fleet whose workers earn all the time writes N / (this / 60) status patches a
# minute for earnings alone: at 5 minutes that was 0.2 per worker per minute,
# the whole of the steady-state budget (3,000 workers, benchmark).
EARNINGS_WRITE_SECONDS = 900.0


def earnings_due(old: EarningsStatus | None, new: EarningsStatus, *, now: dt.datetime) -> bool:
    """Token counters rise all the time: write them at most every 15 minutes.

    The metrics carry the live figure; status is for people and GitOps, and a
    write per worker per check would make a fleet at rest cost API requests.
    """
    if old is None or old.checked_at is None or old.payouts != new.payouts:
        return True  # a completed payout is news: shown at once
    counters = ("earned_tokens", "paid_out_tokens", "payouts")
    if all(getattr(old, c) == getattr(new, c) for c in counters):
        return False
    last = parse_rfc3339(old.checked_at)
    return last is None or (now - last).total_seconds() >= EARNINGS_WRITE_SECONDS


def payout_due(
    policy: PayoutPolicy,
    *,
    unpaid_tokens: int,
    running: bool,
    requested: str | None = None,
    handled: str | None = None,
) -> str | None:
    """Why a payout is to be asked for now, or None.

    A person's request (the payout-request annotation, a value not acted upon
    yet) or the declared threshold. Never while one is running (COCOON's
    proxies refuse a second request, and a request costs the node wallet a
    fee); the threshold never when the policy is off (0).
    """
    if running:
        return None
    if requested and requested != handled:
        return f"requested ({requested})"
    threshold = policy.minimum_unpaid_tokens
    if threshold > 0 and unpaid_tokens >= threshold:
        return f"{unpaid_tokens} unpaid tokens >= spec.payout.minimumUnpaidTokens ({threshold})"
    return None
