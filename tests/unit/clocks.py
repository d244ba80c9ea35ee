"""The unit tests' clocks: one that moves only when a test moves it, and the real
time set ahead or behind. Code under test takes its clock as a callable
(``clock=``, ``monotonic=``), so a test decides what time it is instead of
waiting for it."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class FakeClock:
    """Seconds since the epoch (``t``), moved by the test alone: ``clock.t += 5`` or
    :meth:`advance`. Starts at ``start`` (seconds, or a datetime)."""

    def __init__(self, start: float | datetime = 1000.0) -> None:
        self.t = start.timestamp() if isinstance(start, datetime) else float(start)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    @property
    def now(self) -> datetime:
        """The same instant as a UTC datetime."""
        return datetime.fromtimestamp(self.t, UTC)


class OffsetClock:
    """The real time plus ``offset`` seconds: a party whose clock runs ahead of (or
    behind) the others', or a test that moves one party a day on."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset

    def set(self, when: datetime) -> None:
        """Make the clock read ``when`` now."""
        self.offset = when.timestamp() - time.time()
