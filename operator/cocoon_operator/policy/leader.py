"""Who may hold the operator's Lease (pure): the holder, or anyone once it expired.

Only the leader runs handlers: two replicas acting at once would race on
launcher pods and on the treasury (the funding ledger's compare-and-swap
would refuse one of them, but only after it had planned).

Expiry is judged as client-go's leaderelection does (``observedTime`` in
k8s.io/client-go/tools/leaderelection/leaderelection.go): by this replica's own
monotonic clock, from the moment it last saw the Lease record *change*, never
by comparing its wall clock with the holder's ``renewTime``. A follower whose
clock runs ahead of the leader's would otherwise take a Lease that is being
renewed; one whose clock runs behind would wait too long.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class LeaseTimes:
    """The timing of one election, validated once (client-go's rules, leaderelection.go
    NewLeaderElector): lease > renew deadline > retry period.

    A leader that has not renewed within ``renew_deadline`` stops acting; a
    follower takes over only ``lease`` after it last saw the record change, so
    the old leader has stopped at least ``lease - renew_deadline`` earlier.
    """

    lease: float
    renew_deadline: float
    retry: float

    def __post_init__(self) -> None:
        if not self.lease > self.renew_deadline > self.retry > 0:
            raise ValueError(
                "leader election needs lease > renew deadline > retry period > 0, got "
                f"{self.lease}s > {self.renew_deadline}s > {self.retry}s"
            )

    @classmethod
    def for_lease(cls, lease: float) -> LeaseTimes:
        """client-go's proportions (15 s lease, 10 s deadline, 2 s retry) for ``lease``."""
        return cls(lease=lease, renew_deadline=lease * 2 / 3, retry=lease * 2 / 15)


@dataclass
class LeaseObserver:
    """When this replica last saw the Lease record change, by its own monotonic clock."""

    record: Hashable | None = None
    observed_at: float | None = None

    def observe(self, record: Hashable, now: float) -> float:
        """Note ``record`` as read at ``now``; the local time it was first seen as it is."""
        if self.observed_at is None or record != self.record:
            self.record, self.observed_at = record, now
        return self.observed_at if self.observed_at is not None else now


def may_take(
    holder: str | None,
    observed_at: float,
    duration_seconds: float,
    *,
    identity: str,
    now: float,
) -> bool:
    """True when ``identity`` may write itself into the Lease now.

    ``observed_at`` and ``now`` are this replica's monotonic clock: when it
    first saw the current record, and the present.
    """
    if not holder or holder == identity:
        return True
    return now >= observed_at + duration_seconds


def renew_timeout(last_renewal: float, renew_deadline: float, *, now: float) -> float:
    """How long one renewal attempt may take: what is left before the renew deadline
    (counted from when the last successful renewal was *sent*); zero or less: stop."""
    return last_renewal + renew_deadline - now
