"""How long a Ready worker's routine re-checks wait while the operator is overloaded (pure).

Why: each worker's periodic checks probe it (a TLS handshake, a quote
verification, an HTTP read, a chain query). A fleet that is Ready costs that
CPU for as long as it runs, and at 3,000 workers with 5-second intervals it
asked for more than the benchmark's two cores: the event loop fell minutes
behind its watches, and new workers waited that long for their first status.
The probe budget (handlers/probes.py) lets a worker on its way to Ready go
first among the probes, but not before the watches and handlers that are not
probes.

So the operator measures how late its event loop runs what is due (its lag)
and, beyond a tolerated lag, waits longer before re-checking a Ready worker:
the interval times the lag over the tolerance, at most :data:`MAX_STRETCH`
times. A worker not yet Ready is never slowed: its checks decide whether it
starts earning. Neither is anything that moves money on request (a drain's
payout runs in the deletion handler, not in a check).
"""

from __future__ import annotations

# Lag below this is the loop's ordinary jitter under load: intervals as configured.
TOLERATED_LAG_SECONDS = 0.1
# A Ready worker is re-checked at least every MAX_STRETCH intervals: a changed
# certificate or an empty wallet is noticed that much later at worst.
MAX_STRETCH = 4.0


def stretch(
    lag_seconds: float,
    *,
    tolerated: float = TOLERATED_LAG_SECONDS,
    ceiling: float = MAX_STRETCH,
) -> float:
    """How many intervals a Ready worker's next routine check waits, given the lag.

    1 up to ``tolerated``; then in proportion to the lag, up to ``ceiling``.
    """
    if tolerated <= 0 or ceiling < 1:
        raise ValueError(f"tolerated must be > 0 and ceiling >= 1, got {tolerated}, {ceiling}")
    if lag_seconds <= tolerated:
        return 1.0
    return min(ceiling, lag_seconds / tolerated)


__all__ = ["MAX_STRETCH", "TOLERATED_LAG_SECONDS", "stretch"]
