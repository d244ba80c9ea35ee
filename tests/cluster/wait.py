"""Waiting helpers for cluster tests: wait for a condition with a bounded timeout, or
for the operator to have done something a number of times (its Prometheus counters).

A test that shows "nothing happens" (no second top-up, the gate stays closed) must
show that the operator looked again meanwhile: a fixed sleep proves nothing on a
loaded machine, where the checks it was meant to cover may not have run. So such
tests wait until the operator's own counters say the checks ran, and then assert.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, within: float, what: str, interval: float = 0.2
) -> T:
    """Return the first truthy result of ``probe``; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A loopback port free right now (for the operator's metrics, webhook, probes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Attestation checks of workers whose VM runs (their host vouching for it), with a
#: quote or without (handlers/attestation.py); one every --attestation-check-seconds.
ATTESTATION_CHECKS = "cocoon_attestation_checks_total"
#: Worker reconciles (a histogram's count), whichever event or step asked for them.
RECONCILES = "cocoon_reconcile_duration_seconds_count"


@dataclass(frozen=True)
class OperatorMetrics:
    """The /metrics of one operator process, started with :meth:`args`."""

    port: int

    @classmethod
    def on_free_port(cls) -> OperatorMetrics:
        return cls(free_port())

    def args(self) -> tuple[str, str]:
        """The operator's flags serving them."""
        return ("--metrics-port", str(self.port))

    async def _samples(self) -> list[Sample]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics") as resp,
        ):
            text = await resp.text()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    async def series(self) -> dict[str, float]:
        """Every sample as {``name{label="value",...}``: value}, labels sorted by name."""
        out = {}
        for sample in await self._samples():
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    async def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
        return sum(
            sample.value
            for sample in await self._samples()
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def _total_when_up(self, name: str, labels: dict[str, str]) -> float:
        async def read() -> tuple[float] | None:
            try:
                return (await self.total(name, **labels),)
            except aiohttp.ClientError:
                return None  # not serving yet: the process is still starting

        (value,) = await eventually(read, within=30, what=f"the operator's {name}")
        return value

    async def advanced(
        self, name: str, by: float, *, within: float, what: str, **labels: str
    ) -> float:
        """Wait until ``name`` (summed as :meth:`total`) has grown by ``by`` from now;
        its value then."""
        start = await self._total_when_up(name, labels)

        async def grown() -> tuple[float] | None:
            value = await self.total(name, **labels)
            return (value,) if value >= start + by else None

        (value,) = await eventually(
            grown, within=within, what=f"{what} ({name} {labels or ''} +{by} from {start})"
        )
        return value

    async def reconciled_after(
        self, change: Callable[[], Awaitable[object]], *, what: str, within: float = 30
    ) -> None:
        """Make ``change`` (one the operator reconciles a worker for, such as a pod
        event), then wait until one more reconcile has finished."""
        start = await self._total_when_up(RECONCILES, {})
        await change()

        async def reconciled() -> bool:
            return await self.total(RECONCILES) > start

        await eventually(reconciled, within=within, what=what)

    async def checks_ran(self, count: int, *, what: str, within: float | None = None) -> None:
        """Wait until ``count`` more attestation checks have run, all workers together.

        A worker's timer runs, in each tick where they are due, its chain check, then
        its attestation check, then its coefficient check (cli.py's order; with equal
        intervals all three every tick). So ``count`` attestation checks mean at least
        ``count`` chain checks started and ``count - 1`` coefficient checks done.
        Workers' timers tick at the same pace, so N workers share a count about evenly.
        """
        await self.advanced(ATTESTATION_CHECKS, count, within=within or 30 + 5 * count, what=what)
