import importlib

import pytest
from tonsdk.contract.wallet import WalletV4ContractR2
from tonsdk.crypto import mnemonic_new, mnemonic_to_wallet_key

from cocoon_operator.ton.address import Address
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.cells import boc_hash, cell_hash, cell_to_boc
from cocoon_operator.ton.errors import WalletError
from cocoon_operator.ton.wallet import (
    DEFAULT_WALLET_ID_BASE,
    MAINNET_GLOBAL_ID,
    MAX_MESSAGES_PER_EXTERNAL,
    MAX_MESSAGES_PER_EXTERNAL_V5,
    TESTNET_GLOBAL_ID,
    WALLET_V4R2_CODE_BOC,
    WALLET_V4R2_CODE_HASH,
    WALLET_V5R1_CODE_HASH,
    Transfer,
    WalletKey,
    WalletV4R2,
    WalletV5R1,
    WalletVersion,
    make_wallet,
    v5r1_wallet_id,
    wallet_v5r1_code_boc,
)

SEED = bytes(range(32))


def test_address_matches_independent_implementation() -> None:
    key = WalletKey(SEED)
    ours = WalletV4R2(key.public_key)
    theirs = WalletV4ContractR2(public_key=key.public_key, private_key=SEED + key.public_key)
    assert ours.address.to_friendly() == theirs.address.to_string(True, True, True)
    assert ours.wallet_id == DEFAULT_WALLET_ID_BASE
    assert WalletV4R2(key.public_key, workchain=-1).wallet_id == DEFAULT_WALLET_ID_BASE - 1


def test_mnemonic_key_matches_tonsdk() -> None:
    words = mnemonic_new()
    public, _private = mnemonic_to_wallet_key(words)
    key = WalletKey.from_mnemonic(words)
    assert key.public_key == public
    with pytest.raises(WalletError, match="mnemonic"):
        WalletKey.from_mnemonic(["abandon"] * 24)


def test_key_never_in_repr() -> None:
    key = WalletKey(SEED)
    assert SEED.hex() not in repr(key)
    assert key.public_key.hex() in repr(key)
    with pytest.raises(WalletError):
        WalletKey(b"short")


def test_create_transfer_limits_and_hash() -> None:
    key = WalletKey(SEED)
    wallet = WalletV4R2(key.public_key)
    dest = Address(0, b"\x01" * 32)
    transfers = [Transfer(dest, parse_ton("0.1"), bounce=False)] * MAX_MESSAGES_PER_EXTERNAL
    signed = wallet.create_transfer(key, transfers, seqno=3, valid_until=1_700_000_100)
    assert signed.message_hash == boc_hash(signed.boc)
    assert signed.seqno == 3
    assert signed.wallet == wallet.address
    assert len(signed.message_hash_b64) == 44
    with pytest.raises(WalletError, match="at most 4"):
        wallet.create_transfer(key, [*transfers, transfers[0]], seqno=3, valid_until=1)
    with pytest.raises(WalletError, match="does not belong"):
        wallet.create_transfer(WalletKey(bytes(32)), transfers, seqno=3, valid_until=1)
    with pytest.raises(WalletError, match="seqno"):
        wallet.create_transfer(key, transfers, seqno=-1, valid_until=1)
    with pytest.raises(WalletError, match="either a comment or a body"):
        wallet.create_transfer(
            key,
            [Transfer(dest, 1, comment="x", body_boc=signed.boc)],  # type: ignore[arg-type]
            seqno=1,
            valid_until=1,
        )


def test_state_init_included_only_for_first_message() -> None:
    key = WalletKey(SEED)
    wallet = WalletV4R2(key.public_key)
    first = wallet.create_transfer(key, [], seqno=0, valid_until=10)
    later = wallet.create_transfer(key, [], seqno=1, valid_until=10)
    assert len(first.boc) > len(later.boc)
    forced = wallet.create_transfer(key, [], seqno=1, valid_until=10, include_state_init=True)
    assert len(forced.boc) > len(later.boc)


def test_bounce_flag_resolution() -> None:
    addr = Address(0, b"\x02" * 32)
    amount = parse_ton("1")
    assert Transfer(addr, amount).resolved_bounce() is True
    assert Transfer(addr.to_friendly(bounceable=False), amount).resolved_bounce() is False
    assert Transfer(addr.to_friendly(bounceable=True), amount).resolved_bounce() is True
    assert Transfer(addr.to_raw(), amount).resolved_bounce() is True
    assert Transfer(addr, amount, bounce=False).resolved_bounce() is False


def test_both_codes_are_the_published_ones() -> None:
    # The hashes by which explorers and toncenter recognise these wallets.
    assert boc_hash(WALLET_V4R2_CODE_BOC).hex() == WALLET_V4R2_CODE_HASH
    assert boc_hash(wallet_v5r1_code_boc()).hex() == WALLET_V5R1_CODE_HASH
    assert (
        WALLET_V5R1_CODE_HASH == "20834b7b72b112147e1b2fb457b84e74d1a30f04f737d4f62a668e9552d2b72f"
    )


def test_the_embedded_v5r1_code_is_pytoniqs() -> None:
    # The operator holds the code as a constant so that it never imports pytoniq
    # (see test_kube_client: the operator process's modules); pytoniq ships it.
    import importlib  # noqa: PLC0415

    module = importlib.import_module("pytoniq.contract.wallets.wallet_v5")
    assert wallet_v5r1_code_boc() == cell_to_boc(module.WALLET_V5_R1_CODE)


def test_v5r1_wallet_ids_are_the_ones_wallet_apps_use() -> None:
    # Published figures: 2147483409 on mainnet, 2147483645 on testnet (workchain 0).
    assert v5r1_wallet_id(MAINNET_GLOBAL_ID) == 2147483409
    assert v5r1_wallet_id(TESTNET_GLOBAL_ID) == 2147483645
    assert v5r1_wallet_id(MAINNET_GLOBAL_ID, workchain=-1) != v5r1_wallet_id(MAINNET_GLOBAL_ID)
    with pytest.raises(WalletError, match="subwallet"):
        v5r1_wallet_id(subwallet=2**15)


def test_v5r1_address_matches_independent_implementation() -> None:
    key = WalletKey(SEED)
    theirs = importlib.import_module("pytoniq.contract.wallets.wallet_v5").WalletV5R1
    core = importlib.import_module("pytoniq_core")
    for network in (MAINNET_GLOBAL_ID, TESTNET_GLOBAL_ID):
        data = theirs.create_data_cell(key.public_key, wc=0, network_global_id=network)
        code = core.Cell.one_from_boc(wallet_v5r1_code_boc())
        expected = cell_hash(core.StateInit(code=code, data=data).serialize())
        ours = WalletV5R1(key.public_key, network_global_id=network)
        assert ours.address == Address(0, expected)
        assert WalletV5R1.seqno_of(cell_to_boc(data)) == 0
    assert WalletV5R1(key.public_key).address != WalletV4R2(key.public_key).address


def test_v5r1_carries_255_transfers_and_says_so_beyond() -> None:
    key = WalletKey(SEED)
    wallet = WalletV5R1(key.public_key)
    dest = Address(0, b"\x01" * 32)
    transfers = [Transfer(dest, parse_ton("0.1"), bounce=False)] * MAX_MESSAGES_PER_EXTERNAL_V5
    signed = wallet.create_transfer(key, transfers, seqno=7, valid_until=1_700_000_100)
    assert signed.message_hash == boc_hash(signed.boc)
    assert signed.wallet == wallet.address and signed.seqno == 7
    with pytest.raises(WalletError, match="wallet v5r1 sends at most 255"):
        wallet.create_transfer(key, [*transfers, transfers[0]], seqno=7, valid_until=1)
    with pytest.raises(WalletError, match="does not belong"):
        wallet.create_transfer(WalletKey(bytes(32)), transfers[:1], seqno=7, valid_until=1)
    with pytest.raises(WalletError, match="send mode"):
        wallet.create_transfer(
            key, [Transfer(dest, parse_ton("1"), mode=256)], seqno=7, valid_until=1
        )


def test_make_wallet_picks_the_version() -> None:
    key = WalletKey(SEED)
    assert isinstance(make_wallet("v4r2", key.public_key), WalletV4R2)
    v5 = make_wallet(WalletVersion.V5R1, key.public_key, network_global_id=TESTNET_GLOBAL_ID)
    assert isinstance(v5, WalletV5R1) and v5.wallet_id == 2147483645
    with pytest.raises(ValueError, match="v3r2"):
        make_wallet("v3r2", key.public_key)
