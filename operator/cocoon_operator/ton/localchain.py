"""A local TON chain for tests and demos: real TVM, toncenter-compatible v2 API.

What is real
    Every transaction is computed by TON's own transaction executor
    (``libemulator``, see :mod:`.emulator`): storage, credit, compute (TVM),
    action and bounce phases, fees under the blockchain config, signature
    checks, ``accept_message`` semantics for external messages, bounces of
    bounceable messages to uninitialised accounts. Contracts run their real code
    (wallets v4r2 and v5r1 as published, the project's own root contract, ...).
    Get-methods run in the same TVM.

What is simplified
    One workchain-agnostic account map, no shards, no validators, no blocks
    other than a counter: each ``sendBoc`` is processed synchronously before the
    HTTP response is returned ("one block per external message"), breadth-first
    over the messages it causes, in creation order. Logical time is a global
    counter advanced by 1000 per transaction. Time comes from an injectable
    clock (unix seconds). The blockchain config is the compact test config that
    ships with ``pytvm`` (it has real gas/forwarding price parameters). Storage
    fees are charged by the executor for the time elapsed on the injected clock.

Genesis / faucet
    :meth:`LocalChain.mint` delivers an internal message carrying new coins from
    the masterchain zero address; with a StateInit it deploys the contract. The
    HTTP API adds ``POST /local/mint`` for the same purpose (not part of v2).

Run it: ``python -m cocoon_operator.ton.localchain --port 8081`` then point a
:class:`~cocoon_operator.ton.client.TonClient` at ``http://127.0.0.1:8081/api/v2``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cocoon_operator import jsondoc

from .address import Address, crc16_xmodem, to_address
from .amounts import Nanoton, format_ton, nanoton, parse_nanoton, parse_ton
from .cells import (
    begin_cell,
    cell_from_boc,
    cell_hash,
    cell_to_boc,
    core,
    from_core_address,
    to_core_address,
)
from .emulator import EmulatedTransaction, TransactionEmulator, run_get_method
from .errors import AddressError, AmountError, LocalChainError
from .root import AllowList, allowlist_body, model_hash, parse_hash
from .root import deploy_local as deploy_root
from .root import state_init as root_state_init
from .wallet import (
    WALLET_V4R2_CODE_HASH,
    WALLET_V5R1_CODE_HASH,
    Transfer,
    Wallet,
    WalletKey,
    WalletV4R2,
    WalletV5R1,
    WalletVersion,
    make_wallet,
)

log = logging.getLogger(__name__)

#: Source of minted coins: the masterchain zero account.
MINT_SOURCE = Address(-1, bytes(32))
#: Well-known dev seed of the default genesis wallet (test chains only!).
DEFAULT_GENESIS_SEED = hashlib.sha256(b"cocoon-operator localchain genesis v1").digest()
#: Well-known dev seed of the wallet owning the root ``--root`` deploys (test chains only!).
DEFAULT_ROOT_OWNER_SEED = hashlib.sha256(b"cocoon-operator localchain root owner v1").digest()
ROOT_OWNER_BALANCE = Nanoton(100 * 1_000_000_000)
DEFAULT_GENESIS_BALANCE = parse_ton("1000000")
_LT_STEP = 1000
#: Wallet codes the API reports as wallets (toncenter's ``wallet_type`` names).
_WALLET_TYPES: dict[bytes, tuple[str, type[Wallet]]] = {
    bytes.fromhex(WALLET_V4R2_CODE_HASH): ("wallet v4 r2", WalletV4R2),
    bytes.fromhex(WALLET_V5R1_CODE_HASH): ("wallet v5 r1", WalletV5R1),
}


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


# --------------------------------------------------------------------------- v2 JSON


def _b64(data: bytes | None) -> str:
    return base64.b64encode(data).decode() if data else ""


def _friendly(address: Address | None) -> str:
    return address.to_friendly(bounceable=True) if address is not None else ""


def _msg_json(msg: MessageRecord) -> dict[str, Any]:
    body_hash = cell_hash(cell_from_boc(msg.body_boc))
    return {
        "@type": "raw.message",
        "hash": _b64(msg.hash),
        "source": _friendly(msg.source),
        "destination": _friendly(msg.destination),
        "value": str(msg.value),
        "fwd_fee": str(msg.fwd_fee),
        "ihr_fee": str(msg.ihr_fee),
        "created_lt": str(msg.created_lt),
        "body_hash": _b64(body_hash),
        "msg_data": {
            "@type": "msg.dataRaw",
            "body": _b64(msg.body_boc),
            "init_state": _b64(msg.init_boc),
        },
        "message": "",
    }


def _tx_json(tx: TransactionRecord) -> dict[str, Any]:
    return {
        "@type": "raw.transaction",
        "address": {"@type": "accountAddress", "account_address": _friendly(tx.account)},
        "utime": tx.utime,
        "data": _b64(tx.boc),
        "transaction_id": {
            "@type": "internal.transactionId",
            "lt": str(tx.lt),
            "hash": _b64(tx.hash),
        },
        "fee": str(tx.total_fees),
        "storage_fee": str(tx.storage_fee),
        "other_fee": str(tx.total_fees - tx.storage_fee),
        "in_msg": _msg_json(tx.in_msg) if tx.in_msg is not None else None,
        "out_msgs": [_msg_json(m) for m in tx.out_msgs],
    }


def _tx_id_json(view: AccountView) -> dict[str, Any]:
    return {
        "@type": "internal.transactionId",
        "lt": str(view.last_lt),
        "hash": _b64(view.last_hash) or _b64(bytes(32)),
    }


def _stack_value_json(value: Any, *, nested: bool) -> Any:  # noqa: PLR0911 - type switch
    lib = core()
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if nested:
            return {
                "@type": "tvm.stackEntryNumber",
                "number": {"@type": "tvm.numberDecimal", "number": str(value)},
            }
        return ["num", hex(value)]
    if isinstance(value, lib.Cell):
        payload = {"bytes": _b64(cell_to_boc(value))}
        return {"@type": "tvm.stackEntryCell", "cell": payload} if nested else ["cell", payload]
    if isinstance(value, lib.Slice):
        payload = {"bytes": _b64(cell_to_boc(value.to_cell()))}
        return {"@type": "tvm.stackEntrySlice", "slice": payload} if nested else ["slice", payload]
    if isinstance(value, list):
        elements = [_stack_value_json(v, nested=True) for v in value]
        if nested:
            return {
                "@type": "tvm.stackEntryTuple",
                "tuple": {"@type": "tvm.tuple", "elements": elements},
            }
        return ["tuple", {"@type": "tvm.tuple", "elements": elements}]
    if value is None:
        return {"@type": "tvm.stackEntryNull"} if nested else ["null", None]
    raise LocalChainError(f"unsupported stack value {type(value).__name__}")


def _stack_arg(entry: Any) -> Any:
    lib = core()
    if not isinstance(entry, list) or len(entry) != 2:
        raise LocalChainError(f"bad stack argument {entry!r}")
    kind, value = entry
    if kind in ("num", "number", "int"):
        return int(value, 0) if isinstance(value, str) else int(value)
    if kind in ("tvm.Cell", "cell"):
        return lib.Cell.one_from_boc(base64.b64decode(value))
    if kind in ("tvm.Slice", "slice"):
        return lib.Cell.one_from_boc(base64.b64decode(value)).begin_parse()
    raise LocalChainError(f"unsupported stack argument type {kind!r}")


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LocalChainApi:
    """The v2 method handlers over a :class:`LocalChain` (JSON in, JSON out)."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain
        self._lock = asyncio.Lock()
        # Answered calls by method, served at /local/calls: what a client (the
        # operator, in the fleet benchmark) asked of the chain.
        self.calls: Counter[str] = Counter()

    def _address(self, params: dict[str, Any]) -> Address:
        try:
            return to_address(str(params.get("address", "")))
        except AddressError as exc:
            raise _ApiError(416, f"Incorrect address: {exc}") from None

    def _boc(self, params: dict[str, Any]) -> bytes:
        try:
            return base64.b64decode(str(params.get("boc", "")), validate=True)
        except ValueError:
            raise _ApiError(416, "boc is not valid base64") from None

    def _wallet_fields(self, view: AccountView) -> dict[str, Any]:
        if view.status != "active" or view.code_boc is None:
            return {"wallet": False}
        known = _WALLET_TYPES.get(cell_hash(cell_from_boc(view.code_boc)))
        if known is None:
            return {"wallet": False}
        wallet_type, kind = known
        # The seqno as toncenter gets it: the contract's own get-method.
        exit_code, _gas, stack = self.chain.run_get_method(view.address, "seqno")
        seqno = int(stack[0]) if exit_code == 0 and stack else 0
        wallet_id = kind.wallet_id_of(view.data_boc or b"")
        return {
            "wallet": True,
            "wallet_type": wallet_type,
            "seqno": seqno,
            "wallet_id": wallet_id,
        }

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getAddressInformation": self._address_information,
            "getAddressBalance": lambda p: str(self.chain.account(self._address(p)).balance),
            "getAddressState": lambda p: self.chain.account(self._address(p)).status,
            "getWalletInformation": self._wallet_information,
            "runGetMethod": self._run_get_method,
            "sendBoc": lambda p: self._send_boc(p, return_hash=False),
            "sendBocReturnHash": lambda p: self._send_boc(p, return_hash=True),
            "getTransactions": self._get_transactions,
            "getMasterchainInfo": lambda _p: {
                "@type": "blocks.masterchainInfo",
                "last": {"workchain": -1, "seqno": self.chain.block_seqno},
            },
        }
        handler = handlers.get(method)
        if handler is None:
            raise _ApiError(404, f"unknown method {method}")
        self.calls[method] += 1
        async with self._lock:
            return handler(params)

    def _address_information(self, params: dict[str, Any]) -> Any:
        view = self.chain.account(self._address(params))
        return {
            "@type": "raw.fullAccountState",
            "balance": str(view.balance),
            "code": _b64(view.code_boc),
            "data": _b64(view.data_boc),
            "last_transaction_id": _tx_id_json(view),
            "frozen_hash": "",
            "sync_utime": self.chain.now(),
            "state": view.status,
        }

    def _wallet_information(self, params: dict[str, Any]) -> Any:
        view = self.chain.account(self._address(params))
        info: dict[str, Any] = {
            "balance": str(view.balance),
            "account_state": view.status,
            "last_transaction_id": _tx_id_json(view),
        }
        info.update(self._wallet_fields(view))
        return info

    def _run_get_method(self, params: dict[str, Any]) -> Any:
        address = self._address(params)
        name = params.get("method")
        if not isinstance(name, (str, int)):
            raise _ApiError(416, "method must be a name or an id")
        raw_stack = params.get("stack", [])
        try:
            if isinstance(raw_stack, str):
                raw_stack = json.loads(raw_stack or "[]")
            args = [_stack_arg(e) for e in raw_stack]
            exit_code, gas, stack = self.chain.run_get_method(address, name, args)
        except (LocalChainError, ValueError) as exc:
            raise _ApiError(416, str(exc)) from None
        return {
            "@type": "smc.runResult",
            "gas_used": gas,
            "stack": [_stack_value_json(v, nested=False) for v in stack],
            "exit_code": exit_code,
        }

    def _send_boc(self, params: dict[str, Any], *, return_hash: bool) -> Any:
        boc = self._boc(params)
        try:
            result = self.chain.send_external(boc)
        except MessageRejected as exc:
            raise _ApiError(500, f"LITE_SERVER_UNKNOWN: {exc}") from None
        except LocalChainError as exc:
            raise _ApiError(416, str(exc)) from None
        if not return_hash:
            return {"@type": "ok"}
        return {"@type": "raw.extMessageInfo", "hash": _b64(result.message_hash)}

    def _get_transactions(self, params: dict[str, Any]) -> Any:
        address = self._address(params)
        try:
            limit = int(params.get("limit", 10))
            lt = int(params["lt"]) if params.get("lt") not in (None, "") else None
            to_lt = int(params["to_lt"]) if params.get("to_lt") not in (None, "") else None
            raw_hash = str(params.get("hash") or "")
            tx_hash: bytes | None = None
            if raw_hash:
                tx_hash = (
                    bytes.fromhex(raw_hash) if len(raw_hash) == 64 else base64.b64decode(raw_hash)
                )
        except ValueError:
            raise _ApiError(416, "limit, lt, to_lt must be integers and hash base64/hex") from None
        txs = self.chain.transactions(address, limit=limit, lt=lt, tx_hash=tx_hash, to_lt=to_lt)
        return [_tx_json(t) for t in txs]

    async def mint(self, params: dict[str, Any]) -> Any:
        async with self._lock:
            address = self._address(params)
            try:
                amount = parse_nanoton(params.get("amount", ""))
            except AmountError as exc:
                raise _ApiError(416, str(exc)) from None
            init = params.get("state_init")
            result = self.chain.mint(
                address, amount, state_init_boc=base64.b64decode(init) if init else None
            )
            return {"transactions": [_tx_json(t) for t in result.transactions]}


# --------------------------------------------------------------------------- v3 accountStates

#: toncenter v3 answers at most this many accounts per request (docs: "Maximum 1000
#: addresses allowed"; the index's query ends in ``limit 1000``). toncenter cuts
#: silently; the local chain refuses, so that a client asking more fails in tests.
V3_MAX_ADDRESSES = 1000
#: v3's account status names (toncenter/ton-indexer, the ``account_status`` enum).
_V3_STATUS = {"active": "active", "uninitialized": "uninit", "frozen": "frozen"}


def v3_account_states(
    chain: LocalChain, addresses: Sequence[str], *, include_boc: bool = True
) -> dict[str, Any]:
    """toncenter v3's ``GET /api/v3/accountStates`` answer over ``chain``: the same
    shape (https://docs.ton.org/ecosystem/api/toncenter/v3/accounts/get-account-states).

    As the index, it lists only accounts that exist on chain (an address never
    touched has no row there: left out here too), addresses in raw upper-case hex
    (``0:ABC...``, the index's form), hashes in base64, and an ``address_book``
    mapping each to its user-friendly form. Raises :class:`_ApiError` 422, the
    index's status for a request it cannot parse."""
    if not addresses:
        raise _ApiError(422, "address of account is required")
    if len(addresses) > V3_MAX_ADDRESSES:
        raise _ApiError(422, f"at most {V3_MAX_ADDRESSES} addresses, got {len(addresses)}")
    try:
        parsed = list(dict.fromkeys(to_address(a) for a in addresses))
    except AddressError as exc:
        raise _ApiError(422, f"bad address: {exc}") from None
    accounts: list[dict[str, Any]] = []
    book: dict[str, Any] = {}
    for address in parsed:
        view = chain.account(address)
        if view.status == "uninitialized" and view.last_lt == 0 and view.balance == 0:
            continue  # never touched: the index holds no state for it
        raw = f"{address.workchain}:{address.account_id.hex().upper()}"
        entry: dict[str, Any] = {
            "address": raw,
            "balance": str(view.balance),
            "status": _V3_STATUS[view.status],
            "last_transaction_hash": _b64(view.last_hash) or None,
            "last_transaction_lt": str(view.last_lt),
            "code_hash": _b64(cell_hash(cell_from_boc(view.code_boc))) if view.code_boc else None,
            "data_hash": _b64(cell_hash(cell_from_boc(view.data_boc))) if view.data_boc else None,
            "extra_currencies": {},
        }
        if include_boc:
            entry["code_boc"] = _b64(view.code_boc) or None
            entry["data_boc"] = _b64(view.data_boc) or None
        accounts.append(entry)
        book[raw] = {"user_friendly": _friendly(address), "domain": None}
    return {"accounts": accounts, "address_book": book}


def v3_account_states_route(api: LocalChainApi, api_key: str | None) -> Any:
    """The aiohttp handler of ``GET /api/v3/accountStates`` (v3's bare JSON, not v2's
    envelope; errors as ``{"error": ...}``), counted in ``api.calls`` as
    ``accountStates``."""

    async def handle(request: web.Request) -> web.Response:
        if api_key is not None and request.headers.get("X-API-Key") != api_key:
            return web.json_response({"error": "API key required"}, status=401)
        include_boc = request.query.get("include_boc", "true").lower() not in ("false", "0")
        api.calls["accountStates"] += 1
        try:
            # No lock: the reading is synchronous, so no transaction interleaves it.
            answer = v3_account_states(
                api.chain, request.query.getall("address", []), include_boc=include_boc
            )
        except _ApiError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        return web.json_response(answer)

    return handle


def build_app(chain: LocalChain, *, api_key: str | None = None) -> web.Application:
    """aiohttp application serving ``/api/v2/<method>`` (GET query or POST JSON)."""
    api = LocalChainApi(chain)

    def reply(status: int, payload: dict[str, Any]) -> web.Response:
        return web.json_response(payload, status=status)

    async def params_of(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json(loads=jsondoc.loads)
            except ValueError:
                raise _ApiError(400, "body is not JSON") from None
            if not isinstance(body, dict):
                raise _ApiError(400, "body must be a JSON object")
            params.update(body)
        return params

    def authorised(request: web.Request) -> bool:
        return api_key is None or request.headers.get("X-API-Key") == api_key

    async def handle(request: web.Request) -> web.Response:
        if not authorised(request):
            return reply(401, {"ok": False, "error": "API key required", "code": 401})
        try:
            result = await api.call(request.match_info["method"], await params_of(request))
        except _ApiError as exc:
            return reply(exc.status, {"ok": False, "error": exc.message, "code": exc.status})
        return reply(200, {"ok": True, "result": result})

    async def handle_mint(request: web.Request) -> web.Response:
        if not authorised(request):
            return reply(401, {"ok": False, "error": "API key required", "code": 401})
        try:
            result = await api.mint(await params_of(request))
        except _ApiError as exc:
            return reply(exc.status, {"ok": False, "error": exc.message, "code": exc.status})
        return reply(200, {"ok": True, "result": result})

    async def handle_calls(_request: web.Request) -> web.Response:
        return reply(200, {"ok": True, "result": dict(api.calls)})

    app = web.Application()
    app.router.add_route("GET", "/api/v2/{method}", handle)
    app.router.add_route("POST", "/api/v2/{method}", handle)
    app.router.add_route("POST", "/local/mint", handle_mint)
    app.router.add_route("GET", "/local/calls", handle_calls)
    app.router.add_route("GET", "/api/v3/accountStates", v3_account_states_route(api, api_key))
    return app


@dataclass
class RunningLocalChain:
    """A started server. ``api_url`` is what a TonClient takes as ``base_url``."""

    chain: LocalChain
    runner: web.AppRunner
    host: str
    port: int

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v2"

    @property
    def calls_url(self) -> str:
        """Where the API calls answered so far are counted, by method (not TON's API)."""
        return f"http://{self.host}:{self.port}/local/calls"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_local_chain(
    chain: LocalChain | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
) -> RunningLocalChain:
    """Serve ``chain`` (a fresh one by default) on loopback; ``port=0`` picks a free port."""
    chain = chain or LocalChain()
    runner = web.AppRunner(build_app(chain, api_key=api_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return RunningLocalChain(chain, runner, host, bound)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cocoon_operator.ton.localchain",
        description="Local TON chain (real TVM via libemulator) with a toncenter v2 API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--genesis-seed-hex",
        default=DEFAULT_GENESIS_SEED.hex(),
        help="32-byte hex Ed25519 seed of the pre-funded genesis wallet (dev only)",
    )
    parser.add_argument(
        "--genesis-balance", default=format_ton(DEFAULT_GENESIS_BALANCE), help="TON"
    )
    parser.add_argument("--api-key", default=None, help="require this X-API-Key header")
    parser.add_argument(
        "--root",
        action="store_true",
        help="deploy the project's COCOON root contract, owned by a wallet of its own",
    )
    parser.add_argument(
        "--root-owner-seed-hex",
        default=DEFAULT_ROOT_OWNER_SEED.hex(),
        help="32-byte hex Ed25519 seed of the root owner's wallet (funded with 100 TON; dev only)",
    )
    parser.add_argument(
        "--root-model",
        action="append",
        default=[],
        metavar="NAME@COMMIT:VERITY",
        help="a model the root lists from the start (repeatable)",
    )
    parser.add_argument(
        "--root-image-hash",
        action="append",
        default=[],
        metavar="HEX",
        help="a worker image hash the root lists from the start (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def serve() -> None:
        chain = LocalChain()
        key = WalletKey(bytes.fromhex(args.genesis_seed_hex))
        wallet = chain.deploy_wallet(key, parse_ton(args.genesis_balance))
        # The same key's v5r1 wallet too, equally funded: a treasury may be either.
        wallet_v5 = chain.deploy_wallet(
            key, parse_ton(args.genesis_balance), version=WalletVersion.V5R1
        )
        root: dict[str, str] = {}
        if args.root:
            owner_key = WalletKey(bytes.fromhex(args.root_owner_seed_hex))
            owner = chain.deploy_wallet(owner_key, ROOT_OWNER_BALANCE)
            # Empty lists and COCOON's default params (ton/root.py: root_params_boc) at
            # deployment, so the address depends on the owner only
            # (examples/ name it); then listed by the owner, as on a real chain.
            address = deploy_root(chain, root_state_init(owner.address), Nanoton(1_000_000_000))
            bodies = [
                allowlist_body(AllowList.MODEL, model_hash(m), add=True) for m in args.root_model
            ]
            bodies += [
                allowlist_body(AllowList.WORKER, parse_hash(h), add=True)
                for h in args.root_image_hash
            ]
            for seqno, start in enumerate(range(0, len(bodies), 4)):
                signed = owner.create_transfer(
                    owner_key,
                    [
                        Transfer(address, Nanoton(50_000_000), bounce=True, body_boc=body)
                        for body in bodies[start : start + 4]
                    ],
                    seqno=seqno,
                    valid_until=chain.now() + 60,
                )
                chain.send_external(signed.boc)
            root = {
                "root_address": address.to_friendly(bounceable=True),
                "root_address_raw": address.to_raw(),
                "root_owner_wallet_raw": owner.address.to_raw(),
            }
        running = await start_local_chain(
            chain, host=args.host, port=args.port, api_key=args.api_key
        )
        print(
            json.dumps(
                {
                    **root,
                    "api_url": running.api_url,
                    "calls_url": running.calls_url,
                    "genesis_wallet": wallet.address.to_friendly(bounceable=False),
                    "genesis_wallet_raw": wallet.address.to_raw(),
                    "genesis_wallet_v5r1_raw": wallet_v5.address.to_raw(),
                    "genesis_public_key": key.public_key.hex(),
                    "genesis_balance_nanoton": str(chain.balance(wallet.address)),
                }
            ),
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await running.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
