"""End-to-end: the real TVM emulator behind a loopback toncenter-v2 API, driven by TonClient."""

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from tests.unit.clocks import FakeClock

# No skip: the local chain needs libemulator from the pytvm wheel, which the
# project installs on the supported platform (CPython 3.11, x86_64); a missing
# wheel must fail here, not pass silently.
from cocoon_operator.ton.address import Address
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.client import RetryPolicy, TonClient, TransactionInfo
from cocoon_operator.ton.errors import (
    TonAuthError,
    TonGetMethodError,
    TonMessageRejectedError,
    TonTransportError,
)
from cocoon_operator.ton.localchain import (
    LocalChain,
    RunningLocalChain,
    method_id,
    start_local_chain,
)
from cocoon_operator.ton.wallet import Transfer, WalletKey, WalletV4R2, WalletV5R1, WalletVersion

NOW = 1_700_000_000


@pytest.fixture
async def env() -> AsyncIterator[
    tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2]
]:
    clock = FakeClock(NOW)
    chain = LocalChain(clock=clock)
    genesis_key = WalletKey(b"\x07" * 32)
    genesis = chain.deploy_wallet(genesis_key, parse_ton("1000"))
    running = await start_local_chain(chain)
    client = TonClient(running.api_url, timeout=10)
    try:
        yield running, client, clock, genesis_key, genesis
    finally:
        await client.close()
        await running.close()


def test_method_id_known_values() -> None:
    # well-known ids: seqno = 85143, get_public_key = 78748
    assert method_id("seqno") == 85143
    assert method_id("get_public_key") == 78748


async def test_a_v5r1_wallet_sends_255_transfers_in_one_message_once(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    running, client, clock, _genesis_key, _genesis = env
    key = WalletKey(b"\x09" * 32)
    wallet = running.chain.deploy_wallet(key, parse_ton("1000"), version=WalletVersion.V5R1)
    assert isinstance(wallet, WalletV5R1)
    info = await client.get_wallet_information(wallet.address)
    assert info.wallet and info.wallet_type == "wallet v5 r1"
    assert info.seqno == 0 and info.wallet_id == 2147483409

    receivers = [Address(0, os.urandom(32)) for _ in range(255)]
    amounts = [parse_ton("1") + i for i in range(255)]  # each one told apart
    batch = wallet.create_transfer(
        key,
        [Transfer(r, a, bounce=False) for r, a in zip(receivers, amounts, strict=True)],
        seqno=0,
        valid_until=NOW + 60,
    )
    before = await client.get_address_balance(wallet.address)
    await client.send_boc(batch.boc)
    [tx] = await client.get_transactions(wallet.address, limit=1)
    assert tx.in_msg is not None and tx.in_msg.hash == batch.message_hash_b64
    assert sorted(m.value for m in tx.out_msgs) == amounts
    spent = sum(m.value + m.fwd_fee for m in tx.out_msgs) + tx.fee
    after = await client.get_address_balance(wallet.address)
    assert after == before - spent
    for receiver, amount in zip(receivers, amounts, strict=True):
        assert running.chain.balance(receiver) == amount  # uninitialised: no fee yet
    assert (await client.run_get_method(wallet.address, "seqno")).num(0) == 1
    assert WalletV5R1.seqno_of(running.chain.account(wallet.address).data_boc or b"") == 1

    # The same BOC again, and a message past its valid_until: refused, nobody pays.
    with pytest.raises(TonMessageRejectedError):
        await client.send_boc(batch.boc)
    clock.t = NOW + 1000
    late = wallet.create_transfer(
        key, [Transfer(receivers[0], parse_ton("1"), bounce=False)], seqno=1, valid_until=NOW + 500
    )
    with pytest.raises(TonMessageRejectedError):
        await client.send_boc(late.boc)
    assert await client.get_address_balance(wallet.address) == after
    assert running.chain.balance(receivers[0]) == amounts[0]


async def _only_tx(client: TonClient, address: Address) -> TransactionInfo:
    [tx] = await client.get_transactions(address, limit=5)
    return tx


async def test_fund_deploy_batch_and_replay(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    running, client, clock, genesis_key, genesis = env
    assert (await client.get_address_state(genesis.address)) == "active"
    ginfo = await client.get_wallet_information(genesis.address)
    assert ginfo.wallet and ginfo.wallet_type == "wallet v4 r2" and ginfo.seqno == 0

    # 1. genesis funds a brand-new node wallet, non-bounceable (it is not deployed yet)
    node_key = WalletKey(os.urandom(32))
    node = WalletV4R2(node_key.public_key)
    g_before = await client.get_address_balance(genesis.address)
    fund = genesis.create_transfer(
        genesis_key,
        [Transfer(node.address.to_friendly(bounceable=False), parse_ton("5"))],
        seqno=0,
        valid_until=NOW + 60,
    )
    sent = await client.send_boc_return_hash(fund.boc)
    assert sent.hash == fund.message_hash_b64
    assert await client.get_address_state(node.address) == "uninitialized"
    assert await client.get_address_balance(node.address) == parse_ton("5")
    gtx = (await client.get_transactions(genesis.address, limit=1))[0]
    assert gtx.in_msg is not None and gtx.in_msg.hash == fund.message_hash_b64
    [out] = gtx.out_msgs
    assert out.value == parse_ton("5")
    assert await client.get_address_balance(genesis.address) == (
        g_before - out.value - out.fwd_fee - gtx.fee
    )

    # 2. the node wallet deploys itself and sends 4 transfers in ONE external message
    clock.t += 10
    receivers = [Address(0, os.urandom(32)) for _ in range(4)]
    amounts = [parse_ton(a) for a in ("0.1", "0.2", "0.3", "0.000000001")]
    n_before = await client.get_address_balance(node.address)
    batch = node.create_transfer(
        node_key,
        [Transfer(r, a, bounce=False) for r, a in zip(receivers, amounts, strict=True)],
        seqno=0,
        valid_until=NOW + 120,
    )
    await client.send_boc(batch.boc)
    assert await client.get_address_state(node.address) == "active"
    ntx = (await client.get_transactions(node.address, limit=1))[0]
    assert ntx.in_msg is not None and ntx.in_msg.hash == batch.message_hash_b64
    assert [m.value for m in ntx.out_msgs] == amounts
    spent = sum(m.value + m.fwd_fee for m in ntx.out_msgs) + ntx.fee
    n_after = await client.get_address_balance(node.address)
    assert n_after == n_before - spent
    for receiver, amount in zip(receivers, amounts, strict=True):
        rtx = await _only_tx(client, receiver)
        assert rtx.in_msg is not None and rtx.in_msg.value == amount
        assert await client.get_address_balance(receiver) == amount - rtx.fee

    # seqno incremented exactly once, via a real get-method run in the TVM
    seqno = await client.run_get_method(node.address, "seqno")
    assert seqno.num(0) == 1
    pub = await client.run_get_method(node.address, "get_public_key")
    assert pub.num(0) == int.from_bytes(node_key.public_key, "big")
    assert (await client.get_wallet_information(node.address)).seqno == 1

    # 3. re-sending the very same BOC is rejected and pays nothing
    tx_count = len(await client.get_transactions(node.address, limit=100))
    with pytest.raises(TonMessageRejectedError):
        await client.send_boc(batch.boc)
    assert await client.get_address_balance(node.address) == n_after
    assert len(await client.get_transactions(node.address, limit=100)) == tx_count
    for receiver, amount in zip(receivers, amounts, strict=True):
        rtx = await _only_tx(client, receiver)
        assert await client.get_address_balance(receiver) == amount - rtx.fee

    # 4. an expired message is rejected as well
    clock.t = NOW + 1000
    late = node.create_transfer(
        node_key, [Transfer(receivers[0], parse_ton("0.1"))], seqno=1, valid_until=NOW + 500
    )
    with pytest.raises(TonMessageRejectedError):
        await client.send_boc(late.boc)
    assert running.chain.balance(node.address) == n_after


async def test_bounceable_to_uninit_bounces_back(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    running, client, _clock, genesis_key, genesis = env
    target = Address(0, os.urandom(32))
    before = await client.get_address_balance(genesis.address)
    msg = genesis.create_transfer(
        genesis_key, [Transfer(target, parse_ton("2"), bounce=True)], seqno=0, valid_until=NOW + 60
    )
    await client.send_boc(msg.boc)
    # newest first: the bounce arrives after the sending transaction
    bounce_tx, send_tx = await client.get_transactions(genesis.address, limit=2)
    assert bounce_tx.in_msg is not None
    assert bounce_tx.in_msg.source == target.to_friendly()
    returned = bounce_tx.in_msg.value
    assert 0 < returned < parse_ton("2")
    target_txs = await client.get_transactions(target, limit=5)
    assert len(target_txs) == 1
    assert target_txs[0].out_msgs[0].value == returned
    after = await client.get_address_balance(genesis.address)
    [out] = send_tx.out_msgs
    assert after == before - out.value - out.fwd_fee - send_tx.fee + returned - bounce_tx.fee
    # the target keeps nothing
    assert running.chain.balance(target) == 0


async def test_get_method_errors_and_pagination(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    _running, client, _clock, _key, genesis = env
    with pytest.raises(TonGetMethodError) as info:
        await client.run_get_method(genesis.address, "no_such_method")
    assert info.value.exit_code == 11
    [deploy_tx] = await client.get_transactions(genesis.address, limit=10)
    again = await client.get_transactions(
        genesis.address, lt=deploy_tx.transaction_id.lt, tx_hash=deploy_tx.transaction_id.hash
    )
    assert again == [deploy_tx]
    assert await client.get_transactions(genesis.address, to_lt=deploy_tx.transaction_id.lt) == []


async def test_answered_calls_are_counted_by_method(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    running, client, _clock, _key, genesis = env
    before = await _calls(running)
    await client.get_address_balance(genesis.address)
    await client.get_address_balance(genesis.address)
    await client.get_wallet_information(genesis.address)
    after = await _calls(running)
    assert after.get("getAddressBalance", 0) - before.get("getAddressBalance", 0) == 2
    assert after.get("getWalletInformation", 0) - before.get("getWalletInformation", 0) == 1
    assert sum(after.values()) - sum(before.values()) == 3


async def _calls(running: RunningLocalChain) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(running.calls_url) as resp:
        doc = await resp.json()
    calls: dict[str, int] = doc["result"]
    return calls


async def test_api_key_enforced() -> None:
    running = await start_local_chain(LocalChain(), api_key="k-123")
    try:
        async with TonClient(running.api_url, api_key="k-123") as good:
            assert await good.get_address_state(Address(0, bytes(32))) == "uninitialized"
        async with TonClient(running.api_url) as bad:
            with pytest.raises(TonAuthError):
                await bad.get_address_state(Address(0, bytes(32)))
    finally:
        await running.close()


async def test_connection_refused_is_transport_error() -> None:
    running = await start_local_chain(LocalChain())
    url = running.api_url
    await running.close()
    async with TonClient(url, timeout=2, retry=RetryPolicy(max_attempts=2, base_delay=0)) as ton:
        with pytest.raises(TonTransportError):
            await ton.get_address_state(Address(0, bytes(32)))


async def test_v3_account_states_answer_in_toncenters_shape_over_real_http(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    running, _client, _clock, _key, genesis = env
    chain = running.chain
    funded = [Address(0, bytes([i]) * 32) for i in range(1, 4)]
    for i, address in enumerate(funded):
        chain.mint(address, parse_ton("2") + i)
    untouched = Address(0, b"\xee" * 32)
    url = running.api_url.replace("/api/v2", "/api/v3") + "/accountStates"
    query = [("address", a.to_friendly()) for a in [genesis.address, *funded, untouched]]
    async with aiohttp.ClientSession() as http, http.get(url, params=query) as resp:
        assert resp.status == 200
        doc = await resp.json()
    by_address = {a["address"]: a for a in doc["accounts"]}
    # The index's forms: raw upper-case hex, v3 status names, numbers as text; an
    # account never touched is left out, as the index holds no row for it.
    wallet_raw = f"0:{genesis.address.account_id.hex().upper()}"
    assert set(by_address) == {wallet_raw, *(f"0:{a.account_id.hex().upper()}" for a in funded)}
    assert by_address[wallet_raw]["status"] == "active"
    assert by_address[wallet_raw]["balance"] == str(chain.balance(genesis.address))
    assert by_address[wallet_raw]["code_boc"]  # include_boc defaults to true
    first = by_address[f"0:{funded[0].account_id.hex().upper()}"]
    assert (first["status"], first["balance"]) == ("uninit", str(chain.balance(funded[0])))
    assert int(first["last_transaction_lt"]) > 0
    assert doc["address_book"][wallet_raw]["user_friendly"] == genesis.address.to_friendly()


async def test_the_clients_batched_read_matches_the_chain_and_fits_the_servers_url_limit(
    env: tuple[RunningLocalChain, TonClient, FakeClock, WalletKey, WalletV4R2],
) -> None:
    running, client, _clock, _key, _genesis = env
    chain = running.chain
    wallets = [Address(0, i.to_bytes(32, "big")) for i in range(1, 301)]
    for i, address in enumerate(wallets[:250]):
        chain.mint(address, parse_ton("1") + i)
    before = await _calls(running)
    states = await client.get_account_states(wallets)
    after = await _calls(running)
    # 300 addresses in three requests, each within aiohttp's default 8190-byte
    # request line (the server refuses longer ones); the 50 never touched are absent.
    assert after["accountStates"] - before.get("accountStates", 0) == 3
    assert {a: s.balance for a, s in states.items()} == {
        a.to_raw(): chain.balance(a) for a in wallets[:250]
    }


async def test_v3_account_states_refuse_what_toncenter_refuses() -> None:
    running = await start_local_chain(LocalChain(), api_key="k-123")
    url = running.api_url.replace("/api/v2", "/api/v3") + "/accountStates"
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": "k-123"}) as http:
            async with http.get(url) as resp:
                assert resp.status == 422
                assert "address" in (await resp.json())["error"]
            async with http.get(url, params=[("address", "not-an-address")]) as resp:
                assert resp.status == 422
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 401
    finally:
        await running.close()
