"""How late the operator's event loop runs what is due: its own overload, measured.

A task sleeps a fixed period again and again and notes how much later than
asked it woke. In an idle loop that is well under a millisecond; when the
loop has more ready callbacks than it can run, it is about the time one pass
over them takes. The figure rises at once and falls off gradually (each sample
keeps a share of the last figure), so one quiet moment in a busy minute does
not read as recovery. Read by the back-pressure policy (policy/backpressure.py)
and exported as a metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

DEFAULT_PERIOD_SECONDS = 0.5
# The share of the last figure a new, lower sample keeps (about 2 s to halve
# at the default period).
DEFAULT_DECAY = 0.85


class LoopLag:
    """The event loop's recent lag in seconds (:attr:`seconds`), kept by :meth:`run`."""

    def __init__(
        self,
        period: float = DEFAULT_PERIOD_SECONDS,
        decay: float = DEFAULT_DECAY,
        *,
        on_change: Callable[[float], None] | None = None,
    ) -> None:
        if period <= 0 or not 0 <= decay < 1:
            raise ValueError(f"period must be > 0 and 0 <= decay < 1, got {period}, {decay}")
        self.period = period
        self.decay = decay
        self.seconds = 0.0
        self._on_change = on_change

    def sample(self, late: float) -> None:
        """Take one measurement: how many seconds late a wake-up came."""
        self.seconds = max(late, 0.0, self.seconds * self.decay)
        if self._on_change is not None:
            self._on_change(self.seconds)

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            self.sample(loop.time() - start - self.period)


class OverloadNotice:
    """One log line when the lag rises above ``above``, one when it is back under half
    of it: the moments an SRE wants to see, not every sample in between."""

    def __init__(self, above: float, logger: logging.Logger, consequence: str) -> None:
        self.above = above
        self.logger = logger
        self.consequence = consequence
        self.overloaded = False

    def __call__(self, seconds: float) -> None:
        if not self.overloaded and seconds > self.above:
            self.overloaded = True
            self.logger.warning(
                "Operator overloaded: its event loop runs %.2fs late; %s",
                seconds,
                self.consequence,
            )
        elif self.overloaded and seconds < self.above / 2:
            self.overloaded = False
            self.logger.info("Operator no longer overloaded (event loop %.2fs late)", seconds)


__all__ = ["LoopLag", "OverloadNotice"]
