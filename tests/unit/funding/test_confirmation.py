"""What counts as proof that a treasury message paid, on the local chain (real
wallet v4r2 and v5r1 code in the real TVM), for both wallet versions.

Issue 26, items 7-9: an applied message is not a paid one (send mode 3 skips an
unaffordable transfer and still uses the seqno); the message is found by what
its signature covers, however it was re-wrapped and however many transactions
came after it; an API state without ``sync_utime`` proves no expiry.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime

from cocoon_operator.funding import (
    Intent,
    IntentState,
    Ledger,
    MemoryLedgerStore,
    PlannedTransfer,
    TopUpRequest,
    Treasury,
)
from cocoon_operator.ton.address import Address
from cocoon_operator.ton.cells import cell_from_boc, cell_to_boc, core
from cocoon_operator.ton.client import AddressInformation
from cocoon_operator.ton.wallet import Transfer
from tests.unit.funding.helpers import TON, Env, requests_for, treasury_seqno


async def record_signed(
    env: Env, store: MemoryLedgerStore, transfers: list[PlannedTransfer], *, seqno: int
) -> Intent:
    """Sign ``transfers`` as the treasury would and record them as a pending intent
    (what a treasury killed right after recording leaves in its ledger)."""
    state = await env.ton.get_address_information(env.wallet.address)
    valid_until = int(env.clock()) + 60
    signed = env.wallet.create_transfer(
        env.treasury_key,
        [Transfer(t.address, t.amount, bounce=False) for t in transfers],
        seqno=seqno,
        valid_until=valid_until,
    )
    intent = Intent(
        id=f"intent-{seqno}",
        seqno=seqno,
        valid_until=valid_until,
        message_hash=signed.message_hash_hex,
        boc=base64.b64encode(signed.boc).decode(),
        transfers=transfers,
        created_at=datetime.fromtimestamp(env.clock(), UTC),
        after_lt=state.last_transaction_id.lt if state.last_transaction_id else 0,
    )
    ledger, version = await store.load()
    ledger = ledger or Ledger(treasury=env.wallet.address.to_raw())
    await store.save(ledger.model_copy(update={"intents": [*ledger.intents, intent]}), version)
    return intent


def without_state_init(boc: bytes) -> bytes:
    """The same signed external message, re-wrapped by anyone: StateInit dropped."""
    lib = core()
    msg = lib.MessageAny.deserialize(cell_from_boc(boc).begin_parse())
    assert msg.init is not None  # a seqno-0 message carries the wallet's StateInit
    return cell_to_boc(lib.MessageAny(info=msg.info, init=None, body=msg.body).serialize())


# ------------------------------------------------------------------ item 7


async def test_an_applied_message_whose_transfer_the_treasury_could_not_afford_is_not_confirmed(
    env: Env,
) -> None:
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 100_000 * TON)
    [node] = env.nodes(1)
    too_much = PlannedTransfer(worker="ns/w0", address=node, amount=20_000 * TON)
    intent = await record_signed(env, store, [too_much], seqno=0)
    await env.ton.send_boc(base64.b64decode(intent.boc))
    # Mode 3 = pay fees separately + ignore errors: the wallet accepted the
    # message and used its seqno, but the action phase sent nothing.
    assert await treasury_seqno(env) == 1
    assert await env.ton.get_address_balance(node) == 0

    report = await treasury.settle()
    assert not report.confirmed
    assert [t.address for t in report.failed] == [node]
    [stored] = (await treasury.ledger()).intents
    assert stored.state is IntentState.FAILED
    # Nothing was paid and that seqno can never apply again: the worker may be
    # funded by a new message, with the next seqno, within what is affordable.
    again = await treasury.fund([TopUpRequest("ns/w0", node, 0, 5 * TON, 10 * TON)])
    assert [t.amount for t in again.confirmed] == [10 * TON]
    assert await env.ton.get_address_balance(node) == 10 * TON
    assert await treasury_seqno(env) == 2


async def test_the_treasury_never_signs_more_than_its_balance_covers_with_fees(env: Env) -> None:
    # No operator reserve at all: what is left is the fee estimate alone.
    store = MemoryLedgerStore()
    treasury = Treasury(
        env.ton,
        env.treasury_key,
        store,
        global_daily_cap=100_000 * TON,
        wallet=env.wallet,
        reserve=0,
        clock=env.clock,
        confirm_timeout=2,
        poll_interval=0.05,
    )
    [node] = env.nodes(1)
    balance = await env.ton.get_address_balance(env.wallet.address)
    report = await treasury.fund([TopUpRequest("ns/w0", node, 0, 5 * TON, balance * 2)])
    [sent] = report.confirmed
    # The whole balance was never offered: fees need their share, so the
    # transfer left the wallet (and was not skipped by mode 3).
    assert 0 < sent.amount < balance
    assert await env.ton.get_address_balance(node) == sent.amount
    assert [i.state for i in (await treasury.ledger()).intents] == [IntentState.CONFIRMED]


async def test_owner_commands_beyond_the_balance_are_refused_unsigned(env: Env) -> None:
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 0)
    [node] = env.nodes(1)
    balance = await env.ton.get_address_balance(env.wallet.address)
    report = await treasury.send(
        [PlannedTransfer(worker="ns/w0", address=node, amount=balance, purpose="p")]
    )
    assert report.messages_sent == 0 and not report.confirmed
    assert [r.reason for r in report.refused] == ["the treasury cannot cover it with fees"]
    assert await treasury_seqno(env) == 0


# ------------------------------------------------------------------ item 8


async def test_a_message_re_wrapped_without_its_state_init_is_found_and_confirmed(
    env: Env,
) -> None:
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 100_000 * TON)
    [node] = env.nodes(1)
    intent = await record_signed(
        env, store, [PlannedTransfer(worker="ns/w0", address=node, amount=10 * TON)], seqno=0
    )
    # Anyone holding the signed BOC may send it in another envelope; the
    # signature covers the body only, so the wallet applies it all the same.
    await env.ton.send_boc(without_state_init(base64.b64decode(intent.boc)))
    assert await env.ton.get_address_balance(node) == 10 * TON

    report = await treasury.settle()
    assert [t.address for t in report.confirmed] == [node]
    assert [i.state for i in (await treasury.ledger()).intents] == [IntentState.CONFIRMED]
    # And the next cycle signs again (the fleet is not left unfunded).
    env.clock.offset += 120
    later = await treasury.fund(await requests_for(env, env.nodes(2)[1:]))
    assert len(later.confirmed) == 1


async def test_a_message_followed_by_65_dust_deposits_is_still_found(env: Env) -> None:
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 100_000 * TON)
    [node] = env.nodes(1)
    intent = await record_signed(
        env, store, [PlannedTransfer(worker="ns/w0", address=node, amount=10 * TON)], seqno=0
    )
    await env.ton.send_boc(base64.b64decode(intent.boc))
    for _ in range(65):  # anyone may send the treasury 1 nanoTON
        env.chain.chain.mint(env.wallet.address, 1)
    env.clock.offset += 120  # and past valid_until: only finding it resolves it
    report = await treasury.settle()
    assert [t.address for t in report.confirmed] == [node]
    assert not report.pending


async def test_a_pending_intent_reports_how_long_it_has_been_pending(env: Env) -> None:
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 100_000 * TON)
    [node] = env.nodes(1)
    await record_signed(
        env, store, [PlannedTransfer(worker="ns/w0", address=node, amount=10 * TON)], seqno=5
    )
    env.clock.offset += 30  # not yet past valid_until: re-sent, refused, pending
    report = await treasury.settle()
    assert report.pending and report.oldest_pending_seconds is not None
    assert 29 <= report.oldest_pending_seconds <= 40


# ------------------------------------------------------------------ item 9


class NoSyncUtime:
    """The TON API as one that omits ``sync_utime`` (it is optional in v2)."""

    def __init__(self, env: Env) -> None:
        self._ton = env.ton

    def __getattr__(self, name: str) -> object:
        return getattr(self._ton, name)

    async def get_address_information(self, address: str | Address) -> AddressInformation:
        info = await self._ton.get_address_information(address)
        return dataclasses.replace(info, sync_utime=None)


async def test_a_state_without_sync_utime_does_not_prove_a_message_expired(env: Env) -> None:
    store = MemoryLedgerStore()
    treasury = Treasury(
        NoSyncUtime(env),  # type: ignore[arg-type]
        env.treasury_key,
        store,
        global_daily_cap=100_000 * TON,
        wallet=env.wallet,
        clock=env.clock,
        confirm_timeout=2,
        poll_interval=0.05,
    )
    [node] = env.nodes(1)
    await record_signed(
        env, store, [PlannedTransfer(worker="ns/w0", address=node, amount=10 * TON)], seqno=0
    )
    env.clock.offset += 120  # past valid_until by our clock; the state says not when it is
    report = await treasury.settle()
    assert not report.expired
    assert [i.state for i in (await treasury.ledger()).intents] == [IntentState.PENDING]


async def test_a_message_paying_only_some_of_its_transfers_confirms_only_those(env: Env) -> None:
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 100_000 * TON)
    first, second = env.nodes(2)
    balance = await env.ton.get_address_balance(env.wallet.address)
    big = balance * 6 // 10  # each is affordable alone, not both
    transfers = [
        PlannedTransfer(worker="ns/w0", address=first, amount=big),
        PlannedTransfer(worker="ns/w1", address=second, amount=big),
    ]
    intent = await record_signed(env, store, transfers, seqno=0)
    await env.ton.send_boc(base64.b64decode(intent.boc))
    assert await env.ton.get_address_balance(first) == big
    assert await env.ton.get_address_balance(second) == 0

    report = await treasury.settle()
    assert [t.worker for t in report.confirmed] == ["ns/w0"]
    assert [t.worker for t in report.failed] == ["ns/w1"]
    [stored] = (await treasury.ledger()).intents
    assert stored.state is IntentState.CONFIRMED
    assert [t.worker for t in stored.transfers] == ["ns/w0"]
    assert [t.worker for t in stored.unsent] == ["ns/w1"]
    day = stored.day
    assert (await treasury.ledger()).spent("ns/w1", day) == 0  # nothing paid counts


async def test_a_wallet_moved_past_the_top_up_lt_without_its_credit_is_still_settling(
    env: Env,
) -> None:
    # Across shards, logical time orders a message before the transaction that
    # receives it, nothing more: the node wallet's shard may run at a later lt
    # while the credit is still on its way. Here the treasury's message was
    # applied but, as if still in flight, never reached the wallet, and the
    # wallet has a later transaction of its own (1 nanoTON from elsewhere).
    store = MemoryLedgerStore()
    treasury = env.treasury(store, 100_000 * TON)
    [node] = env.nodes(1)
    paid = await treasury.fund([TopUpRequest("ns/w0", node, 0, 5 * TON, 10 * TON)])
    assert len(paid.confirmed) == 1
    ledger, version = await store.load()
    assert ledger is not None
    [intent] = ledger.intents
    # The credit "has not landed": the same record, for a wallet whose only
    # transactions come later and are not from the treasury.
    [other] = [a for a in env.nodes(2) if a != node]
    moved = intent.model_copy(
        update={"transfers": [intent.transfers[0].model_copy(update={"address": other})]}
    )
    await store.save(ledger.model_copy(update={"intents": [moved]}), version)
    env.chain.chain.mint(other, 1)  # a later lt on the wallet, not the credit
    again = await treasury.fund([TopUpRequest("ns/w0", other, 1, 5 * TON, 10 * TON)])
    assert again.messages_sent == 0
    assert [r.reason for r in again.refused] == ["the last top-up is still settling"]
    assert await env.ton.get_address_balance(other) == 1
