"""The treasury against the local chain (real wallet v4r2 code in the real TVM):
batching, caps, and kill -9 at each point between recording, sending and
confirming a transfer, with balances checked to the nanoTON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoon_operator.funding import (
    FileLedgerStore,
    IntentState,
    MemoryLedgerStore,
    TopUpRequest,
    Treasury,
)
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.localchain import LocalChain, RunningLocalChain, start_local_chain
from cocoon_operator.ton.wallet import WalletKey, WalletV4R2

TON = 1_000_000_000
REPO = Path(__file__).resolve().parents[3]
TREASURY_SEED = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Env:
    chain: RunningLocalChain
    ton: TonClient
    clock: Clock
    treasury_key: WalletKey
    nodes: list[str]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = Clock()
    chain = LocalChain(clock=clock)
    key = WalletKey(TREASURY_SEED)
    chain.deploy_wallet(key, 10_000 * TON)
    running = await start_local_chain(chain)
    nodes = [
        WalletV4R2(WalletKey(bytes([i + 1]) * 32).public_key).address.to_raw() for i in range(20)
    ]
    ton = TonClient(running.api_url, timeout=10)
    try:
        yield Env(running, ton, clock, key, nodes)
    finally:
        await ton.close()
        await running.close()


async def requests_for(env: Env, addresses: list[str]) -> list[TopUpRequest]:
    return [
        TopUpRequest(f"ns/w{i}", a, await env.ton.get_address_balance(a), 5 * TON, 10 * TON)
        for i, a in enumerate(addresses)
    ]


async def treasury_seqno(env: Env) -> int:
    info = await env.ton.get_wallet_information(WalletV4R2(env.treasury_key.public_key).address)
    return info.seqno or 0


async def test_twenty_wallets_are_funded_in_batches_of_four_exactly_once(env: Env) -> None:
    treasury = Treasury(
        env.ton, env.treasury_key, MemoryLedgerStore(), global_daily_cap=1000 * TON, clock=env.clock
    )
    before = await env.ton.get_address_balance(treasury.address)
    report = await treasury.fund(await requests_for(env, env.nodes))
    assert report.messages_sent == 5
    assert len(report.confirmed) == 20 and not report.pending and not report.refused
    for address in env.nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 5
    spent = before - await env.ton.get_address_balance(treasury.address)
    # 200 TON delivered; the rest is the five messages' real fees.
    txs = await env.ton.get_transactions(treasury.address, limit=10)
    fees = sum(tx.fee for tx in txs[:5]) + sum(m.fwd_fee for tx in txs[:5] for m in tx.out_msgs)
    assert spent == 200 * TON + fees

    again = await treasury.fund(await requests_for(env, env.nodes))
    assert again.messages_sent == 0 and not again.confirmed
    assert await treasury_seqno(env) == 5
    # The stored ledger keeps what the caps need, not the signed messages.
    stored = await treasury.ledger()
    assert len(stored.intents) == 5 and all(
        i.state is IntentState.CONFIRMED for i in stored.intents
    )
    assert all(i.boc == "" and len(i.transfers) == 4 for i in stored.intents)


async def test_the_global_daily_cap_holds_across_cycles(env: Env) -> None:
    store = MemoryLedgerStore()
    treasury = Treasury(
        env.ton, env.treasury_key, store, global_daily_cap=45 * TON, clock=env.clock
    )
    report = await treasury.fund(await requests_for(env, env.nodes))
    assert sum(t.amount for t in report.confirmed) == 45 * TON
    assert len(report.refused) == 15
    later = await treasury.fund(await requests_for(env, env.nodes))
    assert later.messages_sent == 0
    assert {r.reason for r in later.refused} == {"the global daily cap is used up"}
    total = sum([await env.ton.get_address_balance(a) for a in env.nodes])
    assert total == 45 * TON


@dataclass(frozen=True)
class Cycle:
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> dict[str, object]:
        assert self.returncode == 0, self.stderr[-2000:]
        return json.loads(self.stdout)  # type: ignore[no-any-return]


async def run_cycle(env: Env, ledger: Path, addresses: list[str], failpoint: str = "") -> Cycle:
    """A funding cycle in its own process; the chain keeps serving from this event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.unit.funding.fund_once",
        env.chain.api_url,
        str(ledger),
        TREASURY_SEED.hex(),
        str(env.clock.offset),
        *addresses,
        env={**os.environ, "COCOON_FAILPOINTS": failpoint},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return Cycle(proc.returncode, out.decode(), err.decode())


async def ledger_states(path: Path) -> list[IntentState]:
    ledger, _ = await FileLedgerStore(path).load()
    assert ledger is not None
    return [i.state for i in ledger.intents]


async def test_kill_9_between_send_and_confirm_never_pays_twice(env: Env, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.json"
    nodes = env.nodes[:8]
    crashed = await run_cycle(env, ledger, nodes, "funding.after-send")
    assert crashed.returncode == -9  # SIGKILL, right after the first message went out
    assert await ledger_states(ledger) == [IntentState.PENDING]

    resumed = (await run_cycle(env, ledger, nodes)).report()
    # The first batch is recognised on chain, not re-sent; the second is sent once.
    assert resumed["confirmed"] == sorted(f"ns/w{i}" for i in range(8))
    assert resumed["messages_sent"] == 1
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 2
    assert await ledger_states(ledger) == [IntentState.CONFIRMED, IntentState.CONFIRMED]


async def test_kill_9_after_recording_resends_the_same_message(env: Env, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.json"
    nodes = env.nodes[:4]
    crashed = await run_cycle(env, ledger, nodes, "funding.after-record")
    assert crashed.returncode == -9
    assert await treasury_seqno(env) == 0  # recorded, never sent
    resumed = (await run_cycle(env, ledger, nodes)).report()
    assert resumed["confirmed"] == sorted(f"ns/w{i}" for i in range(4))
    assert resumed["messages_sent"] == 0  # the recorded BOC was sent, nothing new signed
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 1


async def test_a_recorded_message_that_expired_unsent_is_replaced_once(
    env: Env, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.json"
    nodes = env.nodes[:4]
    assert (await run_cycle(env, ledger, nodes, "funding.after-record")).returncode == -9
    env.clock.offset = 120  # past valid_until (60 s): that message can never apply
    resumed = (await run_cycle(env, ledger, nodes)).report()
    assert resumed["expired"] == sorted(f"ns/w{i}" for i in range(4))
    assert resumed["messages_sent"] == 1
    assert await ledger_states(ledger) == [IntentState.EXPIRED, IntentState.CONFIRMED]
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 1
