"""Funding under a lagging chain API and a skewed operator clock, against the local
chain (real wallet v4r2 code in the real TVM), balances checked to the nanoTON.

A lagging API node answers from an older state: a node wallet's balance from
before its top-up landed, the treasury's seqno and transactions from before its
message was applied. A skewed clock moves the UTC day the daily caps count in,
and the time windows the treasury measures. Neither may make it pay twice, nor
record a message that paid as one that never will.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from cocoon_operator.funding import IntentState, MemoryLedgerStore, TopUpRequest, Treasury
from cocoon_operator.funding._treasury import LOOKUP_PAGE
from cocoon_operator.ton.client import AiohttpTransport, HttpRequest, HttpResponse, TonClient
from cocoon_operator.ton.localchain import LocalChain, RunningLocalChain, start_local_chain
from cocoon_operator.ton.wallet import WalletKey, WalletV4R2
from tests.unit.clocks import FakeClock, OffsetClock

TON = 1_000_000_000
TREASURY_SEED = bytes(range(32))
NODE = WalletV4R2(WalletKey(b"\x07" * 32).public_key).address.to_raw()


@dataclass
class LaggingTransport:
    """Forwards to the chain; while ``lagging``, the ``frozen`` methods answer what they
    first answered for the same request since the lag began (a stale API node)."""

    frozen: frozenset[str]
    lagging: bool = False
    inner: AiohttpTransport = field(default_factory=AiohttpTransport)
    seen: dict[str, HttpResponse] = field(default_factory=dict)

    def lag(self, on: bool) -> None:
        self.lagging = on
        self.seen.clear()

    async def send(self, request: HttpRequest, time_limit: float) -> HttpResponse:
        method = request.url.rsplit("/", 1)[1]
        key = json.dumps([method, sorted(request.params.items()), request.json_body])
        if self.lagging and method in self.frozen and key in self.seen:
            return self.seen[key]
        response = await self.inner.send(request, time_limit)
        if self.lagging and method in self.frozen:
            self.seen.setdefault(key, response)
        return response

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Env:
    chain: RunningLocalChain
    ton: TonClient  # the truth: straight to the chain
    key: WalletKey


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    chain = LocalChain()
    key = WalletKey(TREASURY_SEED)
    chain.deploy_wallet(key, 10_000 * TON)
    running = await start_local_chain(chain)
    ton = TonClient(running.api_url, timeout=10)
    try:
        yield Env(running, ton, key)
    finally:
        await ton.close()
        await running.close()


def treasury(env: Env, lagging: LaggingTransport, clock: OffsetClock) -> Treasury:
    ton = TonClient(env.chain.api_url, transport=lagging, timeout=10)
    # The wait for a confirmation runs on a stopwatch its own pauses move: the same
    # ten looks at the chain in 0.5 s, none of it slept (a message that cannot land
    # is not waited out in real time).
    stopwatch = FakeClock()

    async def pause(seconds: float) -> None:
        stopwatch.advance(seconds)
        await asyncio.sleep(0)  # the chain serves from this same loop

    return Treasury(
        ton,
        env.key,
        MemoryLedgerStore(),
        global_daily_cap=1000 * TON,
        clock=clock,
        confirm_timeout=0.5,
        poll_interval=0.05,
        sleep=pause,
        monotonic=stopwatch,
    )


async def request(t: Treasury) -> TopUpRequest:
    """What the chain step asks for: the node's balance as the (maybe lagging) API says."""
    balance = await t._ton.get_address_balance(NODE)
    return TopUpRequest("ns/w", NODE, balance, 5 * TON, 10 * TON, daily_cap=10 * TON)


async def seqno(env: Env) -> int:
    return (await env.ton.get_wallet_information(WalletV4R2(env.key.public_key).address)).seqno or 0


def next_midnight() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


async def test_a_clock_jump_over_midnight_with_a_lagging_balance_never_pays_twice(
    env: Env,
) -> None:
    # The operator's clock reads 23:59:50 (ahead of the chain's, so its messages
    # are valid there); the API's balance of the node lags behind its top-up.
    clock = OffsetClock()
    clock.set(next_midnight() - timedelta(seconds=10))
    lagging = LaggingTransport(frozenset({"getAddressBalance", "getAddressInformation"}))
    t = treasury(env, lagging, clock)
    lagging.lag(True)
    await t._ton.get_address_information(NODE)  # the view it will lag in
    first = await t.fund([await request(t)])
    assert [tr.amount for tr in first.confirmed] == [10 * TON]
    assert await env.ton.get_address_balance(NODE) == 10 * TON

    # Ten minutes later by the operator's clock (an NTP step, say): another UTC
    # day, with a fresh daily cap, and far past any settle window. The API
    # still reports the balance from before the top-up.
    clock.offset += 600
    assert (await request(t)).balance == 0
    again = await t.fund([await request(t)])
    assert again.messages_sent == 0 and not again.confirmed, again
    assert [r.reason for r in again.refused] == ["the last top-up is still settling"]
    assert await env.ton.get_address_balance(NODE) == 10 * TON
    assert await seqno(env) == 1

    # Once the API catches up the balance is at target: nothing to do, still once.
    lagging.lag(False)
    later = await t.fund([await request(t)])
    assert later.messages_sent == 0 and not later.refused
    assert await env.ton.get_address_balance(NODE) == 10 * TON
    assert await seqno(env) == 1


async def test_an_applied_message_seen_through_a_lagging_api_is_never_marked_expired(
    env: Env,
) -> None:
    # The API's treasury state (seqno, transactions) and node balance lag from
    # before the message: it is sent and applied, but cannot be seen yet.
    clock = OffsetClock()
    lagging = LaggingTransport(
        frozenset(
            {
                "getAddressBalance",
                "getWalletInformation",
                "getAddressInformation",
                "getTransactions",
            }
        )
    )
    t = treasury(env, lagging, clock)
    lagging.lag(True)
    await t._ton.get_transactions(t.address, limit=LOOKUP_PAGE)  # the views it will lag in
    await t._ton.get_address_information(t.address)
    first = await t.fund([await request(t)])
    assert first.messages_sent == 1 and [tr.worker for tr in first.pending] == ["ns/w"]
    assert await env.ton.get_address_balance(NODE) == 10 * TON  # it did pay

    # Past the message's valid_until, the lagging view still shows the old
    # seqno and no such transaction. That proves nothing about a state the view
    # predates: the intent stays pending and nothing new is signed.
    clock.offset += 120
    second = await t.fund([await request(t)])
    assert second.messages_sent == 0 and not second.expired, second
    ledger = await t.ledger()
    assert [i.state for i in ledger.intents] == [IntentState.PENDING]

    # The API catches up: the intent is found on chain, confirmed; paid once.
    lagging.lag(False)
    third = await t.fund([await request(t)])
    assert [tr.worker for tr in third.confirmed] == ["ns/w"] and third.messages_sent == 0
    ledger = await t.ledger()
    assert [i.state for i in ledger.intents] == [IntentState.CONFIRMED]
    assert await env.ton.get_address_balance(NODE) == 10 * TON
    assert await seqno(env) == 1


async def test_a_clock_far_behind_the_chain_pays_nothing_and_expires_its_messages(
    env: Env,
) -> None:
    # An operator clock a day behind signs messages the wallet already deems
    # expired: nothing is paid, nothing crashes, each message is recorded as
    # expired once the chain's own state shows it can no longer apply.
    clock = OffsetClock(offset=-86_400)
    t = treasury(env, LaggingTransport(frozenset()), clock)
    first = await t.fund([await request(t)])
    assert first.messages_sent == 1 and not first.confirmed
    clock.offset += 61  # past valid_until by the operator's own clock
    second = await t.fund([await request(t)])
    assert [tr.worker for tr in second.expired] == ["ns/w"]
    assert await env.ton.get_address_balance(NODE) == 0
    assert await seqno(env) == 0
    ledger = await t.ledger()
    assert ledger.intents[0].state is IntentState.EXPIRED


async def test_a_worker_whose_node_wallet_changed_is_funded_at_its_new_address(
    env: Env,
) -> None:
    # A worker was topped up at one node wallet; its new VM (a rotation, a new
    # node wallet key) reports another, empty one. The old top-up says nothing
    # about the new wallet's balance: it must not wait for it to "settle" there.
    clock = OffsetClock()
    t = treasury(env, LaggingTransport(frozenset()), clock)
    first = await t.fund([await request(t)])
    assert [tr.address for tr in first.confirmed] == [NODE]

    moved = WalletV4R2(WalletKey(b"\x08" * 32).public_key).address.to_raw()
    balance = await t._ton.get_address_balance(moved)
    assert balance == 0
    second = await t.fund(
        [TopUpRequest("ns/w", moved, balance, 5 * TON, 10 * TON, daily_cap=20 * TON)]
    )
    assert not second.refused, second.refused
    assert [(tr.address, tr.amount) for tr in second.confirmed] == [(moved, 10 * TON)]
    assert await env.ton.get_address_balance(moved) == 10 * TON
    assert await env.ton.get_address_balance(NODE) == 10 * TON
    assert await seqno(env) == 2
