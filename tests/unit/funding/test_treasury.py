"""The treasury against the local chain (real wallet v4r2 and v5r1 code in the
real TVM): batching, caps, and kill -9 at each point between recording, sending
and confirming a transfer, with balances checked to the nanoTON. Every test runs
for both wallet versions: 4 and 255 transfers per message."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cocoon_operator.api.v1alpha1 import Funding
from cocoon_operator.funding import (
    FileLedgerStore,
    IntentState,
    Ledger,
    MemoryLedgerStore,
)
from cocoon_operator.policy.treasury import FundingLimits, start_funding_bounds
from tests.unit.funding import fund_once
from tests.unit.funding.helpers import TON, TREASURY_SEED, Env, requests_for, treasury_seqno

REPO = Path(__file__).resolve().parents[3]


class Stopwatch:
    """The treasury's monotonic clock: real time until :meth:`give_up`, then each
    reading a minute later (a confirmation that cannot come is not waited out)."""

    def __init__(self) -> None:
        self.skipped = 0.0
        self.skipping = False

    def give_up(self) -> None:
        self.skipping = True

    def __call__(self) -> float:
        if self.skipping:
            self.skipped += 60
        return time.monotonic() + self.skipped


async def test_wallets_are_funded_in_full_messages_exactly_once(env: Env) -> None:
    # Two full messages and a third of one transfer: 9 wallets for v4r2, 511 for v5r1.
    size = env.wallet.max_messages
    nodes = env.nodes(2 * size + 1)
    treasury = env.treasury(MemoryLedgerStore(), 10_000 * TON)
    before = await env.ton.get_address_balance(treasury.address)
    report = await treasury.fund(await requests_for(env, nodes))
    assert report.messages_sent == 3
    assert len(report.confirmed) == len(nodes) and not report.pending and not report.refused
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 3
    spent = before - await env.ton.get_address_balance(treasury.address)
    # 10 TON per wallet delivered; the rest is the three messages' real fees.
    txs = await env.ton.get_transactions(treasury.address, limit=3)
    assert sorted(len(tx.out_msgs) for tx in txs) == [1, size, size]
    fees = sum(tx.fee for tx in txs) + sum(m.fwd_fee for tx in txs for m in tx.out_msgs)
    assert spent == len(nodes) * 10 * TON + fees

    again = await treasury.fund(await requests_for(env, nodes))
    assert again.messages_sent == 0 and not again.confirmed
    assert await treasury_seqno(env) == 3
    # The stored ledger keeps what the caps need, not the signed messages.
    stored = await treasury.ledger()
    assert [len(i.transfers) for i in stored.intents] == [size, size, 1]
    assert all(i.state is IntentState.CONFIRMED and i.boc == "" for i in stored.intents)


async def test_the_global_daily_cap_holds_across_cycles(env: Env) -> None:
    nodes = env.nodes(20)
    treasury = env.treasury(MemoryLedgerStore(), 45 * TON)
    report = await treasury.fund(await requests_for(env, nodes))
    assert sum(t.amount for t in report.confirmed) == 45 * TON
    assert len(report.refused) == 15
    later = await treasury.fund(await requests_for(env, nodes))
    assert later.messages_sent == 0
    assert {r.reason for r in later.refused} == {"the global daily cap is used up"}
    total = sum([await env.ton.get_address_balance(a) for a in nodes])
    assert total == 45 * TON


async def test_a_seqno_our_own_confirmed_message_used_is_never_signed_again(env: Env) -> None:
    # An API that lags behind the treasury's own last message shows its old
    # seqno; signing with it would make a message that can only be refused.
    store = MemoryLedgerStore()
    stopwatch = Stopwatch()
    treasury = env.treasury(store, 1000 * TON, monotonic=stopwatch)
    nodes = env.nodes(2)
    first = await treasury.fund(await requests_for(env, nodes[:1]))
    assert len(first.confirmed) == 1
    stopwatch.give_up()  # the next message is refused by the wallet: it never lands
    stale = await env.ton.get_address_information(env.wallet.address)  # seqno 1 now
    ledger = await treasury.ledger()
    ledger.intents[0] = ledger.intents[0].model_copy(update={"seqno": 5})  # as if 5 was used
    await store.save(ledger, (await store.load())[1])
    assert env.wallet.seqno_of(stale.data or b"") == 1
    second = await treasury.fund(await requests_for(env, nodes[1:]))
    [intent] = [i for i in (await treasury.ledger()).intents if i.seqno != 5]
    assert intent.seqno == 6 and second.pending and not second.confirmed
    # Past its valid_until, a state showing seqno 1 proves seqno 6 dead: expired,
    # never held forever, and nothing was paid for it.
    env.clock.offset += 120
    settled = await treasury.settle()
    assert [t.address for t in settled.expired] == nodes[1:]
    assert await env.ton.get_address_balance(nodes[1]) == 0


class CountedStore(MemoryLedgerStore):
    """A store in memory that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    async def load(self) -> tuple[Ledger | None, str | None]:
        self.loads += 1
        return await super().load()


async def test_a_settle_pass_reads_no_ledger_it_knows_is_clean_until_the_trust_runs_out(
    env: Env,
) -> None:
    store, now = CountedStore(), [0.0]
    treasury = env.treasury(store, 1000 * TON, monotonic=lambda: now[0])
    assert not (await treasury.settle()).confirmed and store.loads == 1  # at start: read
    [node] = env.nodes(1)
    assert len((await treasury.fund(await requests_for(env, [node]))).confirmed) == 1
    read = store.loads
    now[0] += 299  # 299 s after its own write left nothing pending: within the trust
    report = await treasury.settle()
    assert store.loads == read and not report.pending and report.oldest_pending_seconds is None
    now[0] += 2
    await treasury.settle()
    assert store.loads == read + 1
    # Funding itself always reads it.
    await treasury.fund(await requests_for(env, [node]))
    assert store.loads == read + 2


async def test_an_intent_of_its_own_left_pending_is_read_again_at_the_next_settle_pass(
    env: Env,
) -> None:
    store, ticks = CountedStore(), [0.0]

    def ticking() -> float:  # a second a reading: a confirmation is given up on quickly
        ticks[0] += 1
        return ticks[0]

    treasury = env.treasury(store, 1000 * TON, monotonic=ticking)
    first, second = env.nodes(2)
    assert len((await treasury.fund(await requests_for(env, [first]))).confirmed) == 1
    # As in the seqno test above: the next message (seqno 6) can never land.
    ledger = await treasury.ledger()
    ledger.intents[0] = ledger.intents[0].model_copy(update={"seqno": 5})
    await store.save(ledger, (await store.load())[1])
    assert (await treasury.fund(await requests_for(env, [second]))).pending
    read = store.loads
    settled = await treasury.settle()  # a few seconds later, well within the trust
    assert store.loads == read + 1
    assert [t.address for t in settled.pending] == [second]


@dataclass(frozen=True)
class Cycle:
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> dict[str, object]:
        assert self.returncode == 0, self.stderr[-2000:]
        return json.loads(self.stdout)  # type: ignore[no-any-return]


#: Funding cycles are forked from a server that imported fund_once (and with it the
#: operator's funding code) and pytest's entry point once: a fresh interpreter per
#: cycle spent most of each cycle importing. Each cycle is still a process of its
#: own, killed by its failpoint.
_CYCLES = multiprocessing.get_context("forkserver")
_CYCLES.set_forkserver_preload(["__main__", "tests.unit.funding.fund_once"])


async def run_cycle(
    env: Env,
    ledger: Path,
    addresses: list[str],
    failpoint: str = "",
    bounds: dict[str, str] | None = None,
) -> Cycle:
    """A funding cycle in its own process; the chain keeps serving from this event loop.
    ``bounds``: the requests' FUND_ONCE_* variables (see fund_once.py)."""
    argv = [
        env.chain.api_url,
        str(ledger),
        TREASURY_SEED.hex(),
        env.wallet.version,
        str(env.clock.offset),
        *addresses,
    ]
    out, err = ledger.with_suffix(".out"), ledger.with_suffix(".err")
    variables = {**os.environ, **(bounds or {}), "COCOON_FAILPOINTS": failpoint}
    proc = _CYCLES.Process(
        target=fund_once.run_captured, args=(argv, variables, str(out), str(err))
    )
    proc.start()
    await asyncio.to_thread(proc.join, 120)
    assert proc.exitcode is not None, "the funding cycle did not end within 120 s"
    return Cycle(proc.exitcode, out.read_text(), err.read_text())


async def ledger_states(path: Path) -> list[IntentState]:
    ledger, _ = await FileLedgerStore(path).load()
    assert ledger is not None
    return [i.state for i in ledger.intents]


async def test_kill_9_between_send_and_confirm_never_pays_twice(env: Env, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.json"
    nodes = env.nodes(env.wallet.max_messages + 4)  # two messages
    crashed = await run_cycle(env, ledger, nodes, "funding.after-send")
    assert crashed.returncode == -9  # SIGKILL, right after the first message went out
    assert await ledger_states(ledger) == [IntentState.PENDING]

    resumed = (await run_cycle(env, ledger, nodes)).report()
    # The first batch is recognised on chain, not re-sent; the second is sent once.
    assert resumed["confirmed"] == sorted(f"ns/w{i}" for i in range(len(nodes)))
    assert resumed["messages_sent"] == 1
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 2
    assert await ledger_states(ledger) == [IntentState.CONFIRMED, IntentState.CONFIRMED]


async def test_kill_9_in_a_start_floor_top_up_never_pays_twice_and_the_cap_spans_both(
    env: Env, tmp_path: Path
) -> None:
    # Funding before start pays the start floor alone (policy.treasury
    # start_funding_bounds) through this same path; the top-up to the target after
    # attestation, the same day, counts against the same worker's daily cap.
    floor = start_funding_bounds(Funding(), "ns", FundingLimits()).target
    cap = 5 * TON
    start = {"FUND_ONCE_MINIMUM": str(floor), "FUND_ONCE_TARGET": str(floor)}
    start["FUND_ONCE_DAILY_CAP"] = str(cap)
    ledger = tmp_path / "ledger.json"
    [node] = env.nodes(1)
    crashed = await run_cycle(env, ledger, [node], "funding.after-send", start)
    assert crashed.returncode == -9
    assert await ledger_states(ledger) == [IntentState.PENDING]
    resumed = (await run_cycle(env, ledger, [node], bounds=start)).report()
    assert resumed["confirmed"] == ["ns/w0"] and resumed["messages_sent"] == 0
    assert await env.ton.get_address_balance(node) == floor == 2_101_000_000
    again = (await run_cycle(env, ledger, [node], bounds=start)).report()
    assert again["confirmed"] == [] and again["messages_sent"] == 0  # at the floor
    after = {"FUND_ONCE_DAILY_CAP": str(cap)}  # to the 10 TON target, the same day
    attested = (await run_cycle(env, ledger, [node], bounds=after)).report()
    assert attested["confirmed"] == ["ns/w0"] and attested["messages_sent"] == 1
    # 2.101 + 2.899: the cap holds both (the account's storage fee may take a nanoTON).
    book, _ = await FileLedgerStore(ledger).load()
    assert book is not None
    assert [t.amount for i in book.intents for t in i.transfers] == [floor, cap - floor]
    assert cap - 10 <= await env.ton.get_address_balance(node) <= cap
    assert await treasury_seqno(env) == 2


async def test_kill_9_after_recording_resends_the_same_message(env: Env, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.json"
    nodes = env.nodes(env.wallet.max_messages)  # one full message
    crashed = await run_cycle(env, ledger, nodes, "funding.after-record")
    assert crashed.returncode == -9
    assert await treasury_seqno(env) == 0  # recorded, never sent
    resumed = (await run_cycle(env, ledger, nodes)).report()
    assert resumed["confirmed"] == sorted(f"ns/w{i}" for i in range(len(nodes)))
    assert resumed["messages_sent"] == 0  # the recorded BOC was sent, nothing new signed
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 1


async def test_a_recorded_message_that_expired_unsent_is_replaced_once(
    env: Env, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.json"
    nodes = env.nodes(env.wallet.max_messages)
    assert (await run_cycle(env, ledger, nodes, "funding.after-record")).returncode == -9
    env.clock.offset = 120  # past valid_until (60 s): that message can never apply
    resumed = (await run_cycle(env, ledger, nodes)).report()
    assert resumed["expired"] == sorted(f"ns/w{i}" for i in range(len(nodes)))
    assert resumed["messages_sent"] == 1
    assert await ledger_states(ledger) == [IntentState.EXPIRED, IntentState.CONFIRMED]
    for address in nodes:
        assert await env.ton.get_address_balance(address) == 10 * TON
    assert await treasury_seqno(env) == 1
