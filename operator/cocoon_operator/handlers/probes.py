"""A process-wide budget for the periodic probes of workers.

Why: every worker's timer (handlers/checks.py) runs its attestation and chain
checks every few seconds, and each probes the worker (a TLS handshake, a
verification, an HTTP read). Left alone,
a fleet whose probes need more CPU than the operator has fills the event loop's
ready queue with them: at 1,000 workers on the benchmark's machine a single
loop turn took 2-5 seconds. Everything else waits as long: the apiserver closed
the operator's watch streams as unresponsive, kopf took minutes to re-list and
watch again, and new workers sat without a status for ten minutes while Ready
ones were re-checked every few seconds.

A budget of ``limit`` probes at once keeps the ready queue short, so watches,
handlers and the webhook stay responsive, and probes slow down instead (their
own timeouts start once a probe has its slot, so waiting is not mistaken for
an unreachable worker). Probes that decide whether a worker becomes Ready
(``urgent``) get free slots before routine re-checks of Ready workers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable

DEFAULT_LIMIT = 64


class ProbeBudget:
    """At most ``limit`` probes at once; waiting urgent probes go before routine ones.

    ``on_change(running, waiting_urgent, waiting_routine)`` hears every change
    (the metrics). Slots are handed from a finishing probe straight to the next
    waiter, so a newcomer cannot overtake the queue.
    """

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        *,
        on_change: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"a probe budget needs at least one slot, got {limit}")
        self.limit = limit
        self.running = 0
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._routine: deque[asyncio.Future[None]] = deque()
        self._on_change = on_change

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._routine)

    @contextlib.asynccontextmanager
    async def slot(self, *, urgent: bool) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if self.running < self.limit and not self.waiting:
            self.running += 1
            self._changed()
            return
        queue = self._urgent if urgent else self._routine
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(ticket)
        self._changed()
        try:
            await ticket  # resolved by _release, which hands its slot over
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(ticket)
                self._changed()
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._routine):
            while queue:
                ticket = queue.popleft()
                if not ticket.done():
                    ticket.set_result(None)  # the slot moves on; running stays
                    self._changed()
                    return
        self.running -= 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.running, len(self._urgent), len(self._routine))


__all__ = ["DEFAULT_LIMIT", "ProbeBudget"]
