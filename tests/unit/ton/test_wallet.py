import pytest
from tonsdk.contract.wallet import WalletV4ContractR2
from tonsdk.crypto import mnemonic_new, mnemonic_to_wallet_key

from cocoon_operator.ton.address import Address
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.cells import boc_hash
from cocoon_operator.ton.errors import WalletError
from cocoon_operator.ton.wallet import (
    DEFAULT_WALLET_ID_BASE,
    MAX_MESSAGES_PER_EXTERNAL,
    Transfer,
    WalletKey,
    WalletV4R2,
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
