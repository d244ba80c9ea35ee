"""toncenter's v2 API over a :class:`~.chain.LocalChain`: method handlers, JSON in and out.

:class:`LocalChainApi` answers the v2 methods the operator and its tools call
(``getAddressInformation``, ``runGetMethod``, ``sendBoc``, ``getTransactions``,
...) in toncenter's JSON shapes, plus the local faucet (``mint``). Which URL
reaches which handler is :mod:`.server`'s route table.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from cocoon_operator.ton.address import Address, to_address
from cocoon_operator.ton.amounts import parse_nanoton
from cocoon_operator.ton.cells import cell_from_boc, cell_hash, cell_to_boc, core
from cocoon_operator.ton.errors import AddressError, AmountError, LocalChainError
from cocoon_operator.ton.wallet import (
    WALLET_V4R2_CODE_HASH,
    WALLET_V5R1_CODE_HASH,
    Wallet,
    WalletV4R2,
    WalletV5R1,
)

from .chain import AccountView, LocalChain, MessageRecord, MessageRejected, TransactionRecord

#: Wallet codes the API reports as wallets (toncenter's ``wallet_type`` names).
_WALLET_TYPES: dict[bytes, tuple[str, type[Wallet]]] = {
    bytes.fromhex(WALLET_V4R2_CODE_HASH): ("wallet v4 r2", WalletV4R2),
    bytes.fromhex(WALLET_V5R1_CODE_HASH): ("wallet v5 r1", WalletV5R1),
}


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
