"""The probe budget: a bound on worker probes at once, urgent ones first, no slot lost."""

from __future__ import annotations

import asyncio

import pytest

from cocoon_operator.handlers.probes import ProbeBudget
from cocoon_operator.metrics import Metrics


async def test_never_more_probes_at_once_than_the_limit() -> None:
    budget = ProbeBudget(3)
    running, most = 0, 0

    async def probe() -> None:
        nonlocal running, most
        async with budget.slot(urgent=False):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001)
            running -= 1

    await asyncio.gather(*(probe() for _ in range(50)))
    assert most == 3
    assert budget.running == 0 and budget.waiting == 0


async def test_urgent_probes_get_the_next_slot_before_routine_ones_queued_earlier() -> None:
    budget = ProbeBudget(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def probe(name: str, *, urgent: bool) -> None:
        async with budget.slot(urgent=urgent):
            order.append(name)
            if name == "first":
                await hold.wait()

    first = asyncio.create_task(probe("first", urgent=False))
    await asyncio.sleep(0)
    routine = [asyncio.create_task(probe(f"routine{i}", urgent=False)) for i in range(3)]
    await asyncio.sleep(0)
    urgent = [asyncio.create_task(probe(f"urgent{i}", urgent=True)) for i in range(2)]
    await asyncio.sleep(0)
    assert budget.waiting == 5
    hold.set()
    await asyncio.gather(first, *routine, *urgent)
    assert order == ["first", "urgent0", "urgent1", "routine0", "routine1", "routine2"]


async def test_a_newcomer_does_not_overtake_the_queue() -> None:
    budget = ProbeBudget(1)
    order: list[str] = []
    release = asyncio.Event()

    async def probe(name: str) -> None:
        async with budget.slot(urgent=False):
            order.append(name)
            if name == "a":
                await release.wait()

    a = asyncio.create_task(probe("a"))
    await asyncio.sleep(0)
    b = asyncio.create_task(probe("b"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.sleep(0)  # a finishes and hands its slot to b
    c = asyncio.create_task(probe("c"))
    await asyncio.gather(a, b, c)
    assert order == ["a", "b", "c"]


async def test_cancelled_waiters_lose_no_slot() -> None:
    budget = ProbeBudget(1)

    async def waiter() -> None:
        async with budget.slot(urgent=False):
            pass

    held = budget.slot(urgent=True)
    await held.__aenter__()
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    assert budget.waiting == 1
    waiting.cancel()  # cancelled while queued
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.waiting == 0 and budget.running == 1

    # Handed the slot by a finishing probe, then cancelled before it ran: the
    # slot passes on rather than staying taken forever.
    handed = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    await held.__aexit__(None, None, None)  # hands the slot over, without yielding
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert budget.running == 0 and budget.waiting == 0
    async with asyncio.timeout(1), budget.slot(urgent=False):
        assert budget.running == 1


async def test_the_metrics_show_running_and_waiting_probes() -> None:
    metrics = Metrics()
    budget = ProbeBudget(1, on_change=metrics.set_probes)
    hold = asyncio.Event()

    async def probe(*, urgent: bool) -> None:
        async with budget.slot(urgent=urgent):
            await hold.wait()

    tasks = [asyncio.create_task(probe(urgent=u)) for u in (False, True, False)]
    await asyncio.sleep(0)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("cocoon_probes_running") == 1
    assert value("cocoon_probes_waiting", urgency="urgent") == 1
    assert value("cocoon_probes_waiting", urgency="routine") == 1
    hold.set()
    await asyncio.gather(*tasks)
    assert value("cocoon_probes_running") == 0
    assert value("cocoon_probes_waiting", urgency="routine") == 0


def test_a_budget_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        ProbeBudget(0)
