"""Wallets v4r2 and v5r1: addresses, signed external messages, message hashes.

The contract codes are the standard BOCs as shipped by ``tonsdk`` (v4r2) and
``pytoniq`` (v5r1, held here as a constant): published facts, whose code hashes
identify such wallets on chain (tests pin both hashes).

Why two: a v4r2 message carries at most 4 transfers, and each message must
wait for the previous one's seqno, so a treasury topping up 1,000 node wallets
needs 250 messages one after another. A v5r1 message carries up to 255, with
the same seqno rule (so the same proof that re-sending is harmless).

Layout facts used here, v4r2:

* data (c4): ``seqno:uint32 wallet_id:uint32 public_key:bits256 plugins:(Maybe ^Cell)``,
  with ``wallet_id = 698983191 + workchain`` by convention;
* signed body: ``signature:bits512`` then the signed part
  ``wallet_id:uint32 valid_until:uint32 seqno:uint32 op:uint8(0 = send)`` followed by
  up to 4 ``(mode:uint8, ^Message)`` pairs; the signature is Ed25519 over the
  representation hash of the signed part's cell;
* the wallet rejects the message (without accepting it, so nobody pays) unless
  ``seqno`` equals the stored seqno, ``wallet_id`` matches, ``valid_until`` is in
  the future and the signature verifies. After acceptance seqno is incremented.
  That is what makes re-sending the *same* signed BOC harmless.

The message hash (:attr:`SignedExternal.message_hash`) is the representation
hash of the whole external message cell: the hash toncenter's
``sendBocReturnHash`` returns and ``getTransactions`` reports as ``in_msg.hash``,
so a transfer can be looked up later.

Layout facts used here, v5r1 (:class:`WalletV5R1`):

* data (c4): ``is_signature_allowed:bit seqno:uint32 wallet_id:uint32
  public_key:bits256 extensions:(HashmapE 256 int1)``;
* ``wallet_id`` is ``network_global_id XOR context``, the client context being
  ``1:bit workchain:int8 version:uint8(0) subwallet:uint15``: on mainnet
  (global id -239), workchain 0, subwallet 0 that is 2147483409;
* signed body: ``0x7369676e ("sign") wallet_id:uint32 valid_until:uint32
  seqno:uint32 actions:(Maybe ^OutList) has_other_actions:bit(0)`` and then
  ``signature:bits512`` at the *end*; the signature is over the representation
  hash of the cell without it;
* ``OutList`` is a chain of cells, each ``^prev action_send_msg#0ec3c86d
  mode:uint8 ^Message``, at most 255 long; an external request's send modes
  must include +2 (ignore errors), which :data:`SEND_MODE_DEFAULT` does;
* rejection before acceptance, seqno increment and ``valid_until`` as for v4r2.
"""

from __future__ import annotations

import abc
import base64
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tonsdk.contract.wallet import WalletV4ContractR2
from tonsdk.crypto import mnemonic_is_valid, mnemonic_to_wallet_key

from .address import Address, parse_address, to_address
from .amounts import Nanoton, nanoton
from .cells import (
    Cell,
    begin_cell,
    cell_from_boc,
    cell_hash,
    cell_to_boc,
    contract_address,
    core,
    empty_cell,
    state_init_cell,
    to_core_address,
)
from .errors import WalletError

#: Standard subwallet id base; the v4r2 convention is ``698983191 + workchain``.
DEFAULT_WALLET_ID_BASE = 698983191
#: A v4r2 external message carries at most this many outgoing messages.
MAX_MESSAGES_PER_EXTERNAL = 4
#: A v5r1 external message carries at most this many (the TVM's action limit).
MAX_MESSAGES_PER_EXTERNAL_V5 = 255
#: ``global_id`` of TON's networks (config param 19); v5r1 wallet ids depend on it.
MAINNET_GLOBAL_ID = -239
TESTNET_GLOBAL_ID = -3
#: Published code hashes (hex) of the standard wallets.
WALLET_V4R2_CODE_HASH = "feb5ff6820e2ff0d9483e7e0d62c817d846789fb4ae580c878866d959dabd5c0"
WALLET_V5R1_CODE_HASH = "20834b7b72b112147e1b2fb457b84e74d1a30f04f737d4f62a668e9552d2b72f"

_V5_SIGNED_EXTERNAL_OP = 0x7369676E  # "sign"
_V5_ACTION_SEND_MSG = 0x0EC3C86D

#: Send modes (flags of the ``mode`` byte of an outgoing message).
SEND_MODE_PAY_FEES_SEPARATELY = 1
SEND_MODE_IGNORE_ERRORS = 2
SEND_MODE_DEFAULT = SEND_MODE_PAY_FEES_SEPARATELY | SEND_MODE_IGNORE_ERRORS


def _v4r2_code_boc() -> bytes:
    # tonsdk keeps the code hex on the instance; build a throwaway instance with
    # a dummy key to read it (no signing happens).
    dummy = WalletV4ContractR2(public_key=bytes(32), private_key=bytes(64))
    code = dummy.code
    if not isinstance(code, str):  # pragma: no cover - tonsdk API drift guard
        raise WalletError("tonsdk no longer exposes the wallet v4r2 code as hex")
    return bytes.fromhex(code)


WALLET_V4R2_CODE_BOC: bytes = _v4r2_code_boc()


#: The wallet v5r1 code BOC (published; the same as ``pytoniq``'s, a unit test compares
#: them). Held here because importing ``pytoniq`` to read it loaded 155 modules and
#: 9.6 MB into the operator process (``requests``, ``urllib3``, its lite client).
_WALLET_V5R1_CODE_HEX = (
    "b5ee9c7241021401000281000114ff00f4a413f4bcf2c80b01020120020d020148030402dcd020d749c12091"
    "5b8f6320d70b1f2082106578746ebd21821073696e74bdb0925f03e082106578746eba8eb48020d72101d074"
    "d721fa4030fa44f828fa443058bd915be0ed44d0810141d721f4058307f40e6fa1319130e18040d721707fdb"
    "3ce03120d749810280b99130e070e2100f020120050c020120060902016e07080019adce76a2684020eb90eb"
    "85ffc00019af1df6a2684010eb90eb858fc00201480a0b0017b325fb51341c75c875c2c7e00011b262fb5134"
    "35c280200019be5f0f6a2684080a0eb90fa02c0102f20e011e20d70b1f82107369676ebaf2e08a7f0f01e68e"
    "f0eda2edfb218308d722028308d723208020d721d31fd31fd31fed44d0d200d31f20d31fd3ffd70a000af901"
    "40ccf9109a28945f0adb31e1f2c087df02b35007b0f2d0845125baf2e0855036baf2e086f823bbf2d0882292"
    "f800de01a47fc8ca00cb1f01cf16c9ed542092f80fde70db3cd81003f6eda2edfb02f404216e926c218e4c02"
    "21d73930709421c700b38e2d01d72820761e436c20d749c008f2e09320d74ac002f2e09320d71d06c712c200"
    "5230b0f2d089d74cd7393001a4e86c128407bbf2e093d74ac000f2e093ed55e2d20001c000915be0ebd72c08"
    "142091709601d72c081c12e25210b1e30f20d74a111213009601fa4001fa44f828fa443058baf2e091ed44d0"
    "810141d718f405049d7fc8ca0040048307f453f2e08b8e14038307f45bf2e08c22d70a00216e01b3b0f2d090"
    "e2c85003cf1612f400c9ed54007230d72c08248e2d21f2e092d200ed44d0d2005113baf2d08f54503091319c"
    "01810140d721d70a00f2e08ee2c8ca0058cf16c9ed5493f2c08de20010935bdb31e1d74cd0b4d6c35e"
)


@functools.cache
def wallet_v5r1_code_boc() -> bytes:
    """The v5r1 code BOC, checked against its published code hash on first use."""
    boc = bytes.fromhex(_WALLET_V5R1_CODE_HEX)
    if cell_hash(cell_from_boc(boc)).hex() != WALLET_V5R1_CODE_HASH:
        raise WalletError("the embedded wallet v5r1 code is not the published one")
    return boc


class WalletVersion(StrEnum):
    """The treasury wallet contracts this package can sign for."""

    V4R2 = "v4r2"
    V5R1 = "v5r1"


class WalletKey:
    """An Ed25519 signing key (32-byte seed). Never shown in ``repr``."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise WalletError("wallet private key seed must be 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_mnemonic(cls, words: Sequence[str], password: str | None = None) -> WalletKey:
        """Key from a TON 24-word mnemonic (TON's own derivation, via tonsdk)."""
        word_list = list(words)
        if not mnemonic_is_valid(word_list):
            raise WalletError("invalid TON mnemonic")
        _public, private = mnemonic_to_wallet_key(word_list, password)
        return cls(bytes(private[:32]))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"WalletKey(public_key={self.public_key.hex()})"


@dataclass(frozen=True, slots=True)
class Transfer:
    """One outgoing internal message.

    ``bounce=None`` takes the flag from a user-friendly destination string and
    defaults to bounceable otherwise. Send to a not-yet-deployed wallet with
    ``bounce=False`` (or a non-bounceable ``UQ..`` address), or the value comes back.
    """

    destination: Address | str
    amount: Nanoton
    bounce: bool | None = None
    comment: str | None = None
    body_boc: bytes | None = None
    state_init_boc: bytes | None = None
    mode: int = SEND_MODE_DEFAULT

    def resolved_bounce(self) -> bool:
        if self.bounce is not None:
            return self.bounce
        if isinstance(self.destination, str):
            parsed = parse_address(self.destination)
            if parsed.bounceable is not None:
                return parsed.bounceable
        return True


@dataclass(frozen=True, slots=True)
class SignedExternal:
    """A ready-to-send external message."""

    boc: bytes = field(repr=False)
    message_hash: bytes
    wallet: Address
    seqno: int
    valid_until: int

    @property
    def message_hash_b64(self) -> str:
        return base64.b64encode(self.message_hash).decode()

    @property
    def message_hash_hex(self) -> str:
        return self.message_hash.hex()


def _body_cell(transfer: Transfer) -> Cell:
    if transfer.body_boc is not None and transfer.comment is not None:
        raise WalletError("a transfer has either a comment or a body, not both")
    if transfer.body_boc is not None:
        return cell_from_boc(transfer.body_boc)
    if transfer.comment is not None:
        return begin_cell().store_uint(0, 32).store_snake_string(transfer.comment).end_cell()
    return empty_cell()


def internal_message_cell(transfer: Transfer) -> Cell:
    """The ``Message`` cell a wallet sends for ``transfer`` (src = addr_none)."""
    lib = core()
    amount = nanoton(transfer.amount)
    info = lib.InternalMsgInfo(
        ihr_disabled=True,
        bounce=transfer.resolved_bounce(),
        bounced=False,
        src=None,
        dest=to_core_address(to_address(transfer.destination)),
        value=lib.CurrencyCollection(amount),
        ihr_fee=0,
        fwd_fee=0,
        created_lt=0,
        created_at=0,
    )
    init = None
    if transfer.state_init_boc is not None:
        init = lib.StateInit.deserialize(cell_from_boc(transfer.state_init_boc).begin_parse())
    return lib.MessageAny(info=info, init=init, body=_body_cell(transfer)).serialize()


class Wallet(abc.ABC):
    """A standard wallet contract of one key: its address, the seqno and id in its
    data, and the signed external messages it accepts.

    Subclasses say how their data is laid out and how a request is signed;
    the checks, the StateInit of the first message and the message envelope
    are the same for every version.
    """

    version: ClassVar[WalletVersion]
    max_messages: ClassVar[int]
    #: Bits of the data before the seqno (the wallet id follows the seqno).
    _SEQNO_OFFSET: ClassVar[int]

    def __init__(self, public_key: bytes, *, workchain: int, wallet_id: int, code_boc: bytes):
        if len(public_key) != 32:
            raise WalletError("public key must be 32 bytes")
        self.public_key = public_key
        self.workchain = workchain
        self.wallet_id = wallet_id
        self._code = cell_from_boc(code_boc)
        self._data = self._initial_data()
        self.address: Address = contract_address(self._code, self._data, workchain)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self.address.to_raw()}, wallet_id={self.wallet_id})"

    @classmethod
    def seqno_of(cls, data_boc: bytes) -> int:
        """The seqno stored in such a wallet's data."""
        return cls._data_uint(data_boc, cls._SEQNO_OFFSET)

    @classmethod
    def wallet_id_of(cls, data_boc: bytes) -> int:
        """The wallet id stored in such a wallet's data."""
        return cls._data_uint(data_boc, cls._SEQNO_OFFSET + 32)

    @staticmethod
    def _data_uint(data_boc: bytes, offset: int) -> int:
        data = cell_from_boc(data_boc).begin_parse()
        data.skip_bits(offset)
        return int(data.load_uint(32))

    @property
    def state_init_boc(self) -> bytes:
        return cell_to_boc(state_init_cell(self._code, self._data))

    @abc.abstractmethod
    def _initial_data(self) -> Cell:
        """The data (c4) of the freshly deployed wallet."""

    @abc.abstractmethod
    def _signed_body(
        self, key: WalletKey, transfers: Sequence[Transfer], seqno: int, valid_until: int
    ) -> Cell:
        """The external message's body: the request and its signature."""

    def create_transfer(
        self,
        key: WalletKey,
        transfers: Sequence[Transfer],
        *,
        seqno: int,
        valid_until: int,
        include_state_init: bool | None = None,
    ) -> SignedExternal:
        """Sign an external message carrying up to :attr:`max_messages` transfers.

        ``include_state_init`` defaults to ``seqno == 0`` (the first message deploys
        the wallet). ``valid_until`` is a unix time; the caller's clock decides it.
        """
        if key.public_key != self.public_key:
            raise WalletError("signing key does not belong to this wallet")
        if len(transfers) > self.max_messages:
            raise WalletError(
                f"wallet {self.version} sends at most {self.max_messages} messages per"
                f" external message, got {len(transfers)}"
            )
        if not 0 <= seqno < 2**32:
            raise WalletError(f"seqno {seqno} out of range")
        if not 0 <= valid_until < 2**32:
            raise WalletError(f"valid_until {valid_until} out of range")
        for transfer in transfers:
            if not 0 <= transfer.mode < 256:
                raise WalletError(f"send mode {transfer.mode} out of range")
        body = self._signed_body(key, transfers, seqno, valid_until)
        with_init = seqno == 0 if include_state_init is None else include_state_init
        lib = core()
        init = lib.StateInit(code=self._code, data=self._data) if with_init else None
        info = lib.ExternalMsgInfo(src=None, dest=to_core_address(self.address), import_fee=0)
        message = lib.MessageAny(info=info, init=init, body=body).serialize()
        return SignedExternal(
            boc=cell_to_boc(message),
            message_hash=cell_hash(message),
            wallet=self.address,
            seqno=seqno,
            valid_until=valid_until,
        )


class WalletV4R2(Wallet):
    """A wallet v4r2 identified by its public key, workchain and subwallet id."""

    version = WalletVersion.V4R2
    max_messages = MAX_MESSAGES_PER_EXTERNAL
    _SEQNO_OFFSET = 0

    def __init__(
        self, public_key: bytes, *, workchain: int = 0, wallet_id: int | None = None
    ) -> None:
        super().__init__(
            public_key,
            workchain=workchain,
            wallet_id=wallet_id if wallet_id is not None else DEFAULT_WALLET_ID_BASE + workchain,
            code_boc=WALLET_V4R2_CODE_BOC,
        )

    def _initial_data(self) -> Cell:
        return (
            begin_cell()
            .store_uint(0, 32)
            .store_uint(self.wallet_id, 32)
            .store_bytes(self.public_key)
            .store_bit(0)
            .end_cell()
        )

    def _signed_body(
        self, key: WalletKey, transfers: Sequence[Transfer], seqno: int, valid_until: int
    ) -> Cell:
        signed = (
            begin_cell()
            .store_uint(self.wallet_id, 32)
            .store_uint(valid_until, 32)
            .store_uint(seqno, 32)
            .store_uint(0, 8)
        )
        for transfer in transfers:
            signed = signed.store_uint(transfer.mode, 8).store_ref(internal_message_cell(transfer))
        signed_cell = signed.end_cell()
        signature = key.sign(cell_hash(signed_cell))
        return begin_cell().store_bytes(signature).store_cell(signed_cell).end_cell()


def v5r1_wallet_id(
    network_global_id: int = MAINNET_GLOBAL_ID, *, workchain: int = 0, subwallet: int = 0
) -> int:
    """The default (client context) v5r1 wallet id, as wallet apps compute it."""
    if not 0 <= subwallet < 2**15:
        raise WalletError(f"v5r1 subwallet number {subwallet} out of range (15 bits)")
    context = (1 << 31) | ((workchain & 0xFF) << 23) | subwallet  # version 0
    return (context ^ network_global_id) & 0xFFFFFFFF


class WalletV5R1(Wallet):
    """A wallet v5r1 identified by its public key, workchain and wallet id."""

    version = WalletVersion.V5R1
    max_messages = MAX_MESSAGES_PER_EXTERNAL_V5
    _SEQNO_OFFSET = 1  # after the signature-allowed bit

    def __init__(
        self,
        public_key: bytes,
        *,
        workchain: int = 0,
        network_global_id: int = MAINNET_GLOBAL_ID,
        wallet_id: int | None = None,
    ) -> None:
        super().__init__(
            public_key,
            workchain=workchain,
            wallet_id=(
                wallet_id
                if wallet_id is not None
                else v5r1_wallet_id(network_global_id, workchain=workchain)
            ),
            code_boc=wallet_v5r1_code_boc(),
        )

    def _initial_data(self) -> Cell:
        return (
            begin_cell()
            .store_bit(1)  # signatures allowed
            .store_uint(0, 32)
            .store_uint(self.wallet_id, 32)
            .store_bytes(self.public_key)
            .store_bit(0)  # no extensions
            .end_cell()
        )

    def _signed_body(
        self, key: WalletKey, transfers: Sequence[Transfer], seqno: int, valid_until: int
    ) -> Cell:
        actions = empty_cell()
        for transfer in transfers:  # the head of the list is the last action
            actions = (
                begin_cell()
                .store_ref(actions)
                .store_uint(_V5_ACTION_SEND_MSG, 32)
                .store_uint(transfer.mode, 8)
                .store_ref(internal_message_cell(transfer))
                .end_cell()
            )
        signed = (
            begin_cell()
            .store_uint(_V5_SIGNED_EXTERNAL_OP, 32)
            .store_uint(self.wallet_id, 32)
            .store_uint(valid_until, 32)
            .store_uint(seqno, 32)
        )
        signed = signed.store_maybe_ref(actions if transfers else None).store_bit(0)
        signed_cell = signed.end_cell()
        signature = key.sign(cell_hash(signed_cell))
        return begin_cell().store_cell(signed_cell).store_bytes(signature).end_cell()


def make_wallet(
    version: WalletVersion | str,
    public_key: bytes,
    *,
    workchain: int = 0,
    network_global_id: int = MAINNET_GLOBAL_ID,
) -> WalletV4R2 | WalletV5R1:
    """The standard wallet of ``version`` for ``public_key`` (default wallet id)."""
    match WalletVersion(version):
        case WalletVersion.V4R2:
            return WalletV4R2(public_key, workchain=workchain)
        case WalletVersion.V5R1:
            return WalletV5R1(public_key, workchain=workchain, network_global_id=network_global_id)
