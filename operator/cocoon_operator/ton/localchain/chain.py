"""The local chain's state and execution: accounts, messages, transactions, get-methods.

:class:`LocalChain` keeps every account's ``ShardAccount`` in memory and applies
messages with TON's own transaction executor (:mod:`.emulator`); what it makes
real and what it simplifies is in the package's docstring. No HTTP here: the v2
API over it is :mod:`.v2`, served by :mod:`.server`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cocoon_operator.ton.address import Address, crc16_xmodem, to_address
from cocoon_operator.ton.amounts import Nanoton, nanoton
from cocoon_operator.ton.cells import (
    begin_cell,
    cell_from_boc,
    cell_hash,
    cell_to_boc,
    core,
    from_core_address,
    to_core_address,
)
from cocoon_operator.ton.errors import LocalChainError
from cocoon_operator.ton.wallet import (
    WalletKey,
    WalletV4R2,
    WalletV5R1,
    WalletVersion,
    make_wallet,
)

from .emulator import EmulatedTransaction, TransactionEmulator, run_get_method

log = logging.getLogger(__name__)

#: Source of minted coins: the masterchain zero account.
MINT_SOURCE = Address(-1, bytes(32))
_LT_STEP = 1000


def default_config_boc() -> bytes:
    """The compact blockchain config shipped with ``pytvm`` (base64 in its ``utils``)."""
    try:
        utils: Any = importlib.import_module("pytvm.utils")
    except ImportError as exc:  # pragma: no cover - depends on the platform wheel
        raise LocalChainError("the 'pytvm' package is required for the local chain") from exc
    return base64.b64decode(utils.DEFAULT_CONFIG_BOC)


def method_id(name: str) -> int:
    """TVM get-method id: ``(crc16_xmodem(name) & 0xffff) | 0x10000``."""
    return (crc16_xmodem(name.encode()) & 0xFFFF) | 0x10000


def _empty_shard_account() -> bytes:
    none_account = begin_cell().store_bit(0).end_cell()
    root = begin_cell().store_ref(none_account).store_bytes(bytes(32)).store_uint(0, 64)
    return cell_to_boc(root.end_cell())


_EMPTY_SHARD_ACCOUNT = _empty_shard_account()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class MessageRecord:
    source: Address | None  # None: external-in
    destination: Address | None  # None: external-out
    value: Nanoton
    fwd_fee: Nanoton
    ihr_fee: Nanoton
    created_lt: int
    bounce: bool
    bounced: bool
    hash: bytes  # representation hash of the Message cell
    body_boc: bytes
    init_boc: bytes | None
    boc: bytes  # the whole Message cell

    @property
    def is_internal(self) -> bool:
        return self.source is not None and self.destination is not None


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    account: Address
    lt: int
    hash: bytes
    utime: int
    total_fees: Nanoton
    storage_fee: Nanoton
    in_msg: MessageRecord | None
    out_msgs: tuple[MessageRecord, ...]
    aborted: bool
    compute_exit_code: int | None
    boc: bytes


@dataclass(frozen=True, slots=True)
class AccountView:
    address: Address
    balance: Nanoton
    status: str  # "active" | "uninitialized" | "frozen"
    code_boc: bytes | None
    data_boc: bytes | None
    last_lt: int
    last_hash: bytes


@dataclass(frozen=True, slots=True)
class ExternalResult:
    message_hash: bytes
    transactions: tuple[TransactionRecord, ...]


class MessageRejected(LocalChainError):
    """An external message was not accepted by its destination contract."""

    def __init__(self, reason: str, exit_code: int | None) -> None:
        super().__init__(f"cannot apply external message to current state: {reason}")
        self.exit_code = exit_code


@dataclass
class _Account:
    shard_account: bytes
    transactions: list[TransactionRecord] = field(default_factory=list)


def _message_record(msg: Any) -> MessageRecord:
    lib = core()
    cell = msg.serialize()
    info = msg.info
    src = from_core_address(getattr(info, "src", None))
    dest = from_core_address(getattr(info, "dest", None))
    is_internal = isinstance(info, lib.InternalMsgInfo)
    init_boc = cell_to_boc(msg.init.serialize()) if msg.init is not None else None
    return MessageRecord(
        source=src if is_internal else None,
        destination=dest,
        value=nanoton(int(info.value.grams)) if is_internal else Nanoton(0),
        fwd_fee=nanoton(int(info.fwd_fee)) if is_internal else Nanoton(0),
        ihr_fee=nanoton(int(info.ihr_fee)) if is_internal else Nanoton(0),
        created_lt=int(getattr(info, "created_lt", 0)),
        bounce=bool(getattr(info, "bounce", False)),
        bounced=bool(getattr(info, "bounced", False)),
        hash=cell_hash(cell),
        body_boc=cell_to_boc(msg.body),
        init_boc=init_boc,
        boc=cell_to_boc(cell),
    )


def _transaction_record(account: Address, tx_boc: bytes) -> TransactionRecord:
    lib = core()
    tx = lib.Transaction.deserialize(lib.Slice.one_from_boc(tx_boc))
    descr = tx.description
    storage_ph = getattr(descr, "storage_ph", None)
    storage_fee = int(storage_ph.storage_fees_collected) if storage_ph is not None else 0
    compute = getattr(descr, "compute_ph", None)
    exit_code = getattr(compute, "exit_code", None)
    return TransactionRecord(
        account=account,
        lt=int(tx.lt),
        hash=cell_hash(cell_from_boc(tx_boc)),
        utime=int(tx.now),
        total_fees=nanoton(int(tx.total_fees.grams)),
        storage_fee=nanoton(storage_fee),
        in_msg=_message_record(tx.in_msg) if tx.in_msg is not None else None,
        out_msgs=tuple(_message_record(m) for m in tx.out_msgs),
        aborted=bool(getattr(descr, "aborted", False)),
        compute_exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        boc=tx_boc,
    )


# --------------------------------------------------------------------------- chain


class LocalChain:
    """In-memory accounts + the real transaction executor. Not thread-safe."""

    def __init__(
        self,
        *,
        config_boc: bytes | None = None,
        clock: Callable[[], float] = time.time,
        start_lt: int = 1_000_000,
        max_messages_per_external: int = 1000,
    ) -> None:
        self._config = config_boc if config_boc is not None else default_config_boc()
        self._emulator = TransactionEmulator(self._config)
        self._clock = clock
        self._lt = start_lt
        self._accounts: dict[Address, _Account] = {}
        self._max_messages = max_messages_per_external
        self.block_seqno = 0

    # ------------------------------------------------------------------ state

    def now(self) -> int:
        return int(self._clock())

    def _shard_account(self, address: Address) -> bytes:
        acc = self._accounts.get(address)
        return acc.shard_account if acc is not None else _EMPTY_SHARD_ACCOUNT

    def account(self, address: Address | str) -> AccountView:
        addr = to_address(address)
        lib = core()
        sa = lib.ShardAccount.deserialize(lib.Slice.one_from_boc(self._shard_account(addr)))
        last_lt = int(sa.last_trans_lt)
        last_hash = bytes(sa.last_trans_hash)
        if sa.account is None:
            return AccountView(addr, Nanoton(0), "uninitialized", None, None, last_lt, last_hash)
        storage = sa.account.storage
        state = storage.state
        balance = nanoton(int(storage.balance.grams))
        if state.type_ == "account_active":
            init = state.state_init
            code = cell_to_boc(init.code) if init.code is not None else None
            data = cell_to_boc(init.data) if init.data is not None else None
            return AccountView(addr, balance, "active", code, data, last_lt, last_hash)
        status = "frozen" if state.type_ == "account_frozen" else "uninitialized"
        return AccountView(addr, balance, status, None, None, last_lt, last_hash)

    def balance(self, address: Address | str) -> Nanoton:
        return self.account(address).balance

    def transactions(
        self,
        address: Address | str,
        *,
        limit: int = 10,
        lt: int | None = None,
        tx_hash: bytes | None = None,
        to_lt: int | None = None,
    ) -> list[TransactionRecord]:
        """Newest first, starting at (lt, hash) inclusive when given, stopping above ``to_lt``."""
        acc = self._accounts.get(to_address(address))
        if acc is None:
            return []
        result: list[TransactionRecord] = []
        started = lt is None
        for tx in reversed(acc.transactions):
            if not started:
                if tx.lt == lt and (tx_hash is None or tx.hash == tx_hash):
                    started = True
                elif lt is not None and tx.lt < lt:
                    break
                else:
                    continue
            if to_lt is not None and tx.lt <= to_lt:
                break
            result.append(tx)
            if len(result) >= limit:
                break
        return result

    def find_transaction_by_in_msg(self, message_hash: bytes) -> TransactionRecord | None:
        for acc in self._accounts.values():
            for tx in acc.transactions:
                if tx.in_msg is not None and tx.in_msg.hash == message_hash:
                    return tx
        return None

    # ------------------------------------------------------------------ execution

    def _apply(self, dest: Address, message_boc: bytes) -> EmulatedTransaction | MessageRejected:
        sa = self._shard_account(dest)
        lib = core()
        last_lt = int(lib.ShardAccount.deserialize(lib.Slice.one_from_boc(sa)).last_trans_lt)
        self._lt = max(self._lt, last_lt + 1)
        seed = hashlib.sha256(self._lt.to_bytes(8, "big") + dest.account_id).digest()
        result = self._emulator.emulate(
            sa, message_boc, unixtime=self.now(), lt=self._lt, rand_seed=seed
        )
        if isinstance(result, EmulatedTransaction):
            self._lt += _LT_STEP
            return result
        return MessageRejected(result.error, result.vm_exit_code)

    def _record(self, dest: Address, result: EmulatedTransaction) -> TransactionRecord:
        record = _transaction_record(dest, result.transaction)
        acc = self._accounts.setdefault(dest, _Account(result.shard_account))
        acc.shard_account = result.shard_account
        acc.transactions.append(record)
        return record

    def _process(self, first_dest: Address, first_boc: bytes, external: bool) -> ExternalResult:
        first_hash = cell_hash(cell_from_boc(first_boc))
        queue: deque[tuple[Address, bytes]] = deque([(first_dest, first_boc)])
        records: list[TransactionRecord] = []
        processed = 0
        self.block_seqno += 1
        while queue:
            dest, boc = queue.popleft()
            processed += 1
            if processed > self._max_messages:
                raise LocalChainError("message cascade exceeded the per-block limit")
            result = self._apply(dest, boc)
            if isinstance(result, MessageRejected):
                if external and processed == 1:
                    raise result
                log.warning("internal message to %s failed in emulator: %s", dest, result)
                continue
            record = self._record(dest, result)
            records.append(record)
            for out in record.out_msgs:
                if out.is_internal and out.destination is not None:
                    queue.append((out.destination, out.boc))
        return ExternalResult(first_hash, tuple(records))

    def send_external(self, boc: bytes) -> ExternalResult:
        """Apply an external-in message and everything it causes.

        Raises :class:`MessageRejected` when the destination does not accept it
        (bad signature, wrong seqno, expired): nothing changes and nobody pays.
        """
        lib = core()
        try:
            msg = lib.MessageAny.deserialize(lib.Slice.one_from_boc(boc))
        except Exception as exc:
            raise LocalChainError(f"cannot parse message BOC: {exc}") from exc
        if not msg.is_external:
            raise LocalChainError("sendBoc expects an external-in message")
        dest = from_core_address(msg.info.dest)
        if dest is None:
            raise LocalChainError("external message without an internal destination")
        return self._process(dest, cell_to_boc(msg.serialize()), external=True)

    def mint(
        self,
        address: Address | str,
        amount: int,
        *,
        state_init_boc: bytes | None = None,
        bounce: bool = False,
        body_boc: bytes | None = None,
    ) -> ExternalResult:
        """Genesis/faucet: deliver ``amount`` new nanoTON from :data:`MINT_SOURCE`."""
        lib = core()
        dest = to_address(address)
        info = lib.InternalMsgInfo(
            ihr_disabled=True,
            bounce=bounce,
            bounced=False,
            src=to_core_address(MINT_SOURCE),
            dest=to_core_address(dest),
            value=lib.CurrencyCollection(nanoton(amount)),
            ihr_fee=0,
            fwd_fee=0,
            created_lt=self._lt,
            created_at=self.now(),
        )
        init = None
        if state_init_boc is not None:
            init = lib.StateInit.deserialize(lib.Slice.one_from_boc(state_init_boc))
        body = cell_from_boc(body_boc) if body_boc is not None else lib.Cell.empty()
        msg = lib.MessageAny(info=info, init=init, body=body).serialize()
        return self._process(dest, cell_to_boc(msg), external=False)

    def deploy_wallet(
        self,
        key: WalletKey,
        amount: int,
        *,
        workchain: int = 0,
        version: WalletVersion = WalletVersion.V4R2,
    ) -> WalletV4R2 | WalletV5R1:
        """Mint ``amount`` to a wallet of ``key`` (v4r2 unless told; mainnet wallet
        id for v5r1) and deploy it in the same message."""
        wallet = make_wallet(version, key.public_key, workchain=workchain)
        self.mint(wallet.address, amount, state_init_boc=wallet.state_init_boc)
        return wallet

    # ------------------------------------------------------------------ get-methods

    def run_get_method(
        self, address: Address | str, method: str | int, stack: Sequence[Any] = ()
    ) -> tuple[int, int, list[Any]]:
        """Run a get-method; returns (exit_code, gas_used, stack as pytoniq values)."""
        view = self.account(address)
        if view.status != "active" or view.code_boc is None:
            raise LocalChainError(f"account {view.address} is not active")
        lib = core()
        mid = method if isinstance(method, int) else method_id(method)
        stack_cell = lib.VmStack.serialize(list(stack))
        out = run_get_method(
            code_boc=view.code_boc,
            data_boc=view.data_boc or cell_to_boc(lib.Cell.empty()),
            address=view.address.to_raw(),
            method_id=mid,
            stack_boc=cell_to_boc(stack_cell),
            unixtime=self.now(),
            balance=view.balance,
            config_boc=self._config,
        )
        result_stack: list[Any] = []
        if out.stack_boc:
            result_stack = list(lib.VmStack.deserialize(lib.Slice.one_from_boc(out.stack_boc)))
        return out.exit_code, out.gas_used, result_stack
