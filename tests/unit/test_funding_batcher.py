"""The fleet's FundingBatcher answers every request, including those that arrive
while a treasury cycle is running (found at 1,000 workers: they waited forever)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

from cocoon_operator.funding import FundingReport, PlannedTransfer, TopUpRequest, Treasury
from cocoon_operator.handlers.chain import FundingBatcher


class SlowTreasury:
    """fund() blocks until released and tops up everyone it is asked for."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cycles: list[list[str]] = []
        self.started = asyncio.Event()

    async def fund(
        self,
        requests: Sequence[TopUpRequest],
        on_confirmed: Callable[[Sequence[PlannedTransfer]], None] | None = None,
    ) -> FundingReport:
        self.cycles.append([r.worker for r in requests])
        self.started.set()
        await self.release.wait()
        done = [PlannedTransfer(worker=r.worker, address=r.address, amount=1) for r in requests]
        return FundingReport(confirmed=done)


def request(worker: str) -> TopUpRequest:
    return TopUpRequest(
        worker=worker,
        address="0:" + "11" * 32,
        balance=0,
        minimum=5,
        target=10,
        daily_cap=100,
    )


async def test_requests_during_a_cycle_are_answered_by_the_next_one() -> None:
    treasury = SlowTreasury()
    batcher = FundingBatcher(cast(Treasury, treasury), window_seconds=0.01)
    first = asyncio.create_task(batcher.request(request("ns/a")))
    await asyncio.wait_for(treasury.started.wait(), 5)
    # The cycle for "a" is running; these arrive now, and nobody asks after them.
    late: list[asyncio.Task[Any]] = [
        asyncio.create_task(batcher.request(request(f"ns/{n}"))) for n in ("b", "c")
    ]
    await asyncio.sleep(0.05)
    treasury.release.set()
    answers = await asyncio.wait_for(asyncio.gather(first, *late), 5)
    assert answers == ["topped up 0.000000001 TON"] * 3
    assert treasury.cycles == [["ns/a"], ["ns/b", "ns/c"]]


class OneByOneTreasury:
    """Confirms one message per request, then waits before the next: a long cycle."""

    def __init__(self) -> None:
        self.next_message = asyncio.Event()

    async def fund(
        self,
        requests: Sequence[TopUpRequest],
        on_confirmed: Callable[[Sequence[PlannedTransfer]], None] | None = None,
    ) -> FundingReport:
        report = FundingReport()
        for r in requests:
            batch = [PlannedTransfer(worker=r.worker, address=r.address, amount=2)]
            report.confirmed.extend(batch)
            if on_confirmed is not None:
                on_confirmed(batch)
            await self.next_message.wait()
            self.next_message.clear()
        return report


async def test_a_worker_is_answered_when_its_message_confirms_not_when_the_cycle_ends() -> None:
    treasury = OneByOneTreasury()
    batcher = FundingBatcher(cast(Treasury, treasury), window_seconds=0.01)
    first, second = (asyncio.create_task(batcher.request(request(f"ns/{n}"))) for n in "ab")
    assert await asyncio.wait_for(first, 5) == "topped up 0.000000002 TON"
    assert not second.done()  # its message has not been sent yet
    treasury.next_message.set()
    assert await asyncio.wait_for(second, 5) == "topped up 0.000000002 TON"
    treasury.next_message.set()  # the cycle ends


class StalledTreasury:
    """Every cycle finds an old intent still pending and another applied unpaid."""

    async def fund(
        self,
        requests: Sequence[TopUpRequest],
        on_confirmed: Callable[[Sequence[PlannedTransfer]], None] | None = None,
    ) -> FundingReport:
        failed = [PlannedTransfer(worker=r.worker, address=r.address, amount=3) for r in requests]
        return FundingReport(failed=failed, oldest_pending_seconds=1200.0)


async def test_a_stalled_intent_and_an_unpaid_transfer_show_in_metrics_and_the_answer() -> None:
    batcher = FundingBatcher(cast(Treasury, StalledTreasury()), window_seconds=0.01)
    answer = await asyncio.wait_for(batcher.request(request("ns/a")), 5)
    assert answer == "not topped up: the treasury's balance did not cover it (nothing was paid)"
    registry = batcher.metrics.registry
    assert registry.get_sample_value("cocoon_funding_oldest_pending_intent_seconds") == 1200.0
    failed = registry.get_sample_value("cocoon_funding_transfers_total", {"outcome": "failed"})
    assert failed == 1.0
