"""The fleet's balance book: which wallets one read covers (pure), and the book over a
TON client whose transport is a fake index (v3 ``accountStates``) and v2 node."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from cocoon_operator.funding import BalanceBook, BookReading, plan_reads
from cocoon_operator.funding._balances import SWEEP_SHARE
from cocoon_operator.ton.client import (
    HttpRequest,
    HttpResponse,
    RetryPolicy,
    TonClient,
)
from cocoon_operator.ton.errors import TonServerError
from tests.support.ton import MockTransport
from tests.unit.clocks import FakeClock

INTERVAL = 30.0


def addr(i: int) -> str:
    return f"0:{i:064x}"


def reading(i: int, at: float, balance: int = 5) -> BookReading:
    return BookReading(addr(i), balance, at)


# --------------------------------------------------------------------------- planner


def test_nothing_is_read_while_every_waiting_check_has_a_reading_at_most_one_interval_old() -> None:
    readings = {addr(1): reading(1, 100.0), addr(2): reading(2, 50.0)}
    asked = {addr(1): 129.0, addr(2): 129.0}
    assert plan_reads(readings, asked, [addr(1)], now=130.0, interval=INTERVAL) == ()
    assert plan_reads(readings, asked, [], now=500.0, interval=INTERVAL) == ()


def test_a_stale_reading_brings_every_wallet_due_within_half_an_interval_into_one_read() -> None:
    readings = {
        addr(1): reading(1, 100.0),  # 31 s old: stale, its check waits
        addr(2): reading(2, 110.0),  # 21 s: would expire before the next sweep
        addr(3): reading(3, 125.0),  # 6 s: fresh enough to wait for the next one
    }
    asked = {addr(i): 130.0 for i in (1, 2, 3, 4)}  # addr(4): asked, never read yet
    plan = plan_reads(readings, asked, [addr(1)], now=131.0, interval=INTERVAL)
    assert plan == (addr(1), addr(2), addr(4))


def test_a_new_wallet_is_read_at_once_and_with_it_the_wallets_that_fell_out_of_step() -> None:
    readings = {addr(1): reading(1, 100.0), addr(2): reading(2, 120.0)}
    asked = {addr(1): 120.0, addr(2): 120.0, addr(9): 121.0}
    assert plan_reads(readings, asked, [addr(9)], now=121.0, interval=INTERVAL) == (
        addr(1),
        addr(9),
    )


def test_a_wallet_no_check_asked_about_for_two_intervals_is_no_longer_swept() -> None:
    readings = {addr(1): reading(1, 0.0), addr(2): reading(2, 0.0)}
    asked = {addr(1): 100.0, addr(2): 100.0 - 2 * INTERVAL - 1}
    assert plan_reads(readings, asked, [addr(1)], now=100.0, interval=INTERVAL) == (addr(1),)


# --------------------------------------------------------------------------- the book


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


class Chain:
    """Balances, an index of some of them (v3) and a v2 node over all; counts requests."""

    def __init__(self, balances: dict[str, int], *, v3: bool = True) -> None:
        self.balances = balances
        self.unindexed: set[str] = set()
        self.v3 = v3
        self.fail_v3 = 0
        self.fail_v2: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.asked_v3: list[list[str]] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        method = request.url.rsplit("/", 1)[1]
        self.calls[method] += 1
        if method == "accountStates":
            if not self.v3:
                return HttpResponse.json(404, {"error": "Not Found"})
            if self.fail_v3:
                self.fail_v3 -= 1
                return HttpResponse.json(500, {"error": "index down"})
            asked = [a for k, a in request.query if k == "address"]
            self.asked_v3.append(asked)
            accounts = [
                {"address": a.upper(), "balance": str(self.balances[a]), "status": "active"}
                for a in asked
                if a in self.balances and a not in self.unindexed
            ]
            return HttpResponse.json(200, {"accounts": accounts, "address_book": {}})
        address = request.params["address"]
        if address in self.fail_v2:
            return HttpResponse.json(500, {"ok": False, "error": "liteserver down"})
        return HttpResponse.json(200, {"ok": True, "result": str(self.balances.get(address, 0))})


def client_over(handler: Any) -> TonClient:
    """A TON client whose every request ``handler`` answers (no retries, no URL cut)."""
    return TonClient(
        "http://ton.invalid/api/v2",
        transport=MockTransport(handler),
        retry=RetryPolicy(max_attempts=1),
        rng=random.Random(1),
        max_url_bytes=10**6,
    )


def book_over(chain: Chain, clock: FakeClock) -> BalanceBook:
    return BalanceBook(client_over(chain), interval=INTERVAL, clock=clock, sleep=no_wait)


async def test_a_fleets_checks_within_one_interval_cost_one_request() -> None:
    chain, clock = Chain({addr(i): 3_000_000_000 + i for i in range(500)}), FakeClock()
    book = book_over(chain, clock)
    # The checks spread over the interval, as the per-worker timers are.
    first = await asyncio.gather(*(book.balance(addr(i)) for i in range(500)))
    assert [s.balance for s in first] == [3_000_000_000 + i for i in range(500)]
    for step in range(1, 30):
        clock.t += 1.0
        for i in range(step, 500, 29):
            seen = await book.balance(addr(i))
            assert seen.age <= INTERVAL
    assert chain.calls == {"accountStates": 1}


async def test_a_reading_served_is_never_older_than_one_interval() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 20}), FakeClock()
    book = book_over(chain, clock)
    await asyncio.gather(book.balance(addr(1)), book.balance(addr(2)))
    chain.balances[addr(1)] = 1  # spent below its minimum
    clock.t += INTERVAL
    assert (await book.balance(addr(1))).balance == 10  # exactly one interval old: served
    clock.t += 0.001
    seen = await book.balance(addr(1))
    assert (seen.balance, seen.age) == (1, 0.0)  # older: read again before answering
    # ... together with the other wallet, due as well: one request, fleet in step.
    assert chain.asked_v3[-1] == [addr(1), addr(2)]
    assert (await book.balance(addr(2))).balance == 20
    assert chain.calls == {"accountStates": 2}


async def test_a_new_worker_waits_for_its_own_read_then_joins_the_fleets_sweep() -> None:
    chain, clock = Chain({addr(i): 7 for i in range(4)}), FakeClock()
    book = book_over(chain, clock)
    await asyncio.gather(*(book.balance(addr(i)) for i in range(3)))
    clock.t += 20.0
    assert (await book.balance(addr(3))).balance == 7  # new: read now, alone
    assert chain.asked_v3[-1] == [addr(0), addr(1), addr(2), addr(3)]  # the due joined it
    clock.t += 20.0
    await book.balance(addr(3))
    assert len(chain.asked_v3) == 2  # all read 20 s ago: in step, nothing to read


async def test_a_wallet_the_index_does_not_hold_is_read_from_the_v2_node() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 2_100_000_000}), FakeClock()
    chain.unindexed.add(addr(2))
    book = book_over(chain, clock)
    seen = await asyncio.gather(book.balance(addr(1)), book.balance(addr(2)))
    assert [s.balance for s in seen] == [10, 2_100_000_000]
    assert chain.calls == {"accountStates": 1, "getAddressBalance": 1}


async def test_a_server_without_v3_is_read_one_wallet_at_a_time_from_then_on() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 20}, v3=False), FakeClock()
    book = book_over(chain, clock)
    seen = await asyncio.gather(book.balance(addr(1)), book.balance(addr(2)))
    assert [s.balance for s in seen] == [10, 20]
    clock.t += INTERVAL + 1
    await book.balance(addr(1))
    assert chain.calls == {"accountStates": 1, "getAddressBalance": 3}


async def test_an_index_outage_leaves_the_waiting_checks_to_v2_reads() -> None:
    chain, clock = Chain({addr(1): 10}), FakeClock()
    chain.fail_v3 = 1
    book = book_over(chain, clock)
    assert (await book.balance(addr(1))).balance == 10
    assert chain.calls == {"accountStates": 1, "getAddressBalance": 1}
    clock.t += INTERVAL + 1
    await book.balance(addr(1))
    assert chain.calls["accountStates"] == 2  # the index is asked again next time


async def test_a_failed_read_reaches_only_the_checks_of_that_wallet() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 20}, v3=False), FakeClock()
    chain.fail_v2.add(addr(2))
    book = book_over(chain, clock)
    one, two = await asyncio.gather(
        book.balance(addr(1)), book.balance(addr(2)), return_exceptions=True
    )
    assert not isinstance(one, BaseException) and one.balance == 10
    assert isinstance(two, TonServerError)
    assert book.reading(addr(2)) is None  # nothing kept: the next check asks again
    chain.fail_v2.clear()
    assert (await book.balance(addr(2))).balance == 20


async def test_checks_asking_while_a_read_is_out_share_it() -> None:
    chain, clock = Chain({addr(1): 10}), FakeClock()
    out, gate = asyncio.Event(), asyncio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        out.set()
        await gate.wait()
        return chain(request)

    book = book_over(chain, clock)
    book.ton = TonClient("http://ton.invalid/api/v2", transport=MockTransport(slow))
    first = asyncio.create_task(book.balance(addr(1)))
    await out.wait()  # the read is out, its answer held back
    second = asyncio.create_task(book.balance(addr(1)))
    await asyncio.sleep(0)
    gate.set()
    assert (await first).balance == (await second).balance == 10
    assert chain.calls == {"accountStates": 1}


def test_the_book_refuses_an_interval_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        BalanceBook(TonClient("http://ton.invalid/api/v2"), interval=0)


async def test_a_check_that_waited_while_its_wallet_was_being_read_costs_no_other_read() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 20}), FakeClock()
    out, gate = asyncio.Event(), asyncio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        out.set()
        await gate.wait()
        return chain(request)

    book = book_over(chain, clock)
    book.ton = TonClient("http://ton.invalid/api/v2", transport=MockTransport(slow))
    book._asked[addr(2)] = clock.t  # in use (asked about before), so in the sweep
    first = asyncio.create_task(book.balance(addr(1)))
    await out.wait()
    # addr(2)'s own check comes while the sweep that covers it is out.
    second = asyncio.create_task(book.balance(addr(2)))
    await asyncio.sleep(0)
    gate.set()
    assert (await first).balance == 10
    assert (await second).balance == 20
    assert chain.calls == {"accountStates": 1}


async def test_with_its_sweep_the_book_reads_the_fleet_once_a_period_and_checks_read_nothing() -> (
    None
):
    chain, clock = Chain({addr(i): 5 for i in range(300)}), FakeClock()
    book = book_over(chain, clock)
    await asyncio.gather(*(book.balance(addr(i)) for i in range(300)))  # the fleet's first checks
    assert len(chain.asked_v3) == 1
    # Four periods: each sweep reads every wallet in use, in one batched read, and
    # the checks spread over the periods are all served from the sweeps.
    for _ in range(4):
        clock.t += INTERVAL * SWEEP_SHARE
        await book.sweep()
        for i in range(300):
            seen = await book.balance(addr(i))
            assert seen.age <= INTERVAL * SWEEP_SHARE
    assert len(chain.asked_v3) == 1 + 4
    assert all(len(asked) == 300 for asked in chain.asked_v3[1:])
    assert set(chain.calls) == {"accountStates"}


async def test_while_sweeps_keep_the_fleet_in_step_a_new_wallet_is_read_alone() -> None:
    chain, clock = Chain({addr(i): 5 for i in range(4)}), FakeClock()
    book = book_over(chain, clock)

    async def sleep(seconds: float) -> None:  # the sweeper's period never ends here
        await (asyncio.sleep(0) if seconds < 1 else asyncio.Event().wait())

    book.sleep = sleep
    sweeper = asyncio.create_task(book.sweep_forever())
    await asyncio.sleep(0)
    try:
        await asyncio.gather(*(book.balance(addr(i)) for i in range(3)))
        clock.t += INTERVAL / 2 + 1  # the fleet's readings are past half an interval
        await book.balance(addr(3))
        assert chain.asked_v3[-1] == [addr(3)]  # not the fleet again: its sweep will
    finally:
        sweeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeper


async def test_a_failed_sweep_leaves_each_check_to_read_on_demand_once_its_reading_ages() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 20}), FakeClock()
    book = book_over(chain, clock)
    await asyncio.gather(book.balance(addr(1)), book.balance(addr(2)))
    chain.fail_v3 = 1
    clock.t += INTERVAL * SWEEP_SHARE
    await book.sweep()  # the index is down: nothing renewed, one line said
    clock.t += INTERVAL * (1 - SWEEP_SHARE) + 0.001
    chain.balances[addr(1)] = 1
    assert (await book.balance(addr(1))).balance == 1  # past an interval: read on demand


async def test_a_check_whose_reading_aged_while_a_sweep_is_out_waits_for_that_sweep() -> None:
    chain, clock = Chain({addr(1): 10, addr(2): 20}), FakeClock()
    book = book_over(chain, clock)
    await asyncio.gather(book.balance(addr(1)), book.balance(addr(2)))
    release = asyncio.Event()
    answer = chain.__call__

    async def slow_index(request: HttpRequest) -> HttpResponse:
        await release.wait()  # the sweep's request is slow to come back
        return answer(request)

    book.ton = client_over(slow_index)
    clock.t += INTERVAL * SWEEP_SHARE
    sweep = asyncio.create_task(book.sweep())
    await asyncio.sleep(0)
    clock.t += INTERVAL  # the readings the sweep renews are now past an interval
    chain.balances[addr(1)] = 1
    check = asyncio.create_task(book.balance(addr(1)))
    await asyncio.sleep(0)
    assert not check.done()
    release.set()
    await sweep
    seen = await check
    assert seen.balance == 1
    assert chain.calls == {"accountStates": 2}  # the first checks' read and the sweep


async def test_a_wallet_whose_checks_are_stretched_stays_in_the_sweeps_between_them() -> None:
    """Under back-pressure a Ready worker is checked up to --max-recheck-stretch
    intervals apart: its wallet must not drop out of the sweeps between two checks,
    or each check reads it on its own (one request per check, at 1,000 workers)."""
    chain, clock = Chain({addr(i): 5 for i in range(50)}), FakeClock()
    book = book_over(chain, clock)
    book.stretch = 4.0
    await asyncio.gather(*(book.balance(addr(i)) for i in range(50)))
    for _ in range(6):  # three intervals between the checks, a sweep every period
        for _ in range(4):
            clock.t += INTERVAL * SWEEP_SHARE
            await book.sweep()
        for i in range(50):
            assert (await book.balance(addr(i))).age <= INTERVAL
    assert len(chain.asked_v3) == 1 + 6 * 4  # the first read and the sweeps, nothing else
    assert all(len(asked) == 50 for asked in chain.asked_v3)


async def test_a_sweep_that_raises_does_not_end_the_sweeps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain, clock = Chain({addr(1): 10}), FakeClock()
    book = book_over(chain, clock)
    await book.balance(addr(1))
    sweeps: list[int] = []

    async def sweep() -> None:
        sweeps.append(len(sweeps))
        if len(sweeps) == 1:
            raise RuntimeError("a bug in a sweep")
        if len(sweeps) == 3:
            raise asyncio.CancelledError

    book.sweep = sweep  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await book.sweep_forever()
    assert sweeps == [0, 1, 2]
    assert "balance sweep failed" in caplog.text
