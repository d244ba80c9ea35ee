"""Who may hold the operator's Lease (pure): the holder, or anyone once it expired.

Only the leader runs handlers: two replicas acting at once would race on
launcher pods and on the treasury (the funding ledger's compare-and-swap
would refuse one of them, but only after it had planned).
"""

from __future__ import annotations

from datetime import datetime, timedelta


def may_take(
    holder: str | None,
    renewed: datetime | None,
    duration_seconds: int,
    *,
    identity: str,
    now: datetime,
) -> bool:
    """True when ``identity`` may write itself into the Lease now."""
    if not holder or holder == identity or renewed is None:
        return True
    return now >= renewed + timedelta(seconds=duration_seconds)
