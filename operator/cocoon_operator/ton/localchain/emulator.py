"""ctypes binding to TON's ``libemulator`` (the real TVM and transaction executor).

The shared library is the one shipped in the PyPI wheel ``pytvm`` (built from
the ``emulator`` target of the TON monorepo); only the binary is used, through
our own declarations of its C API (``emulator/emulator-extern.h``), with the
exact C integer widths (``uint64_t`` logical time and balances).

Strings returned by the library are ``strdup``-allocated; they are copied and
released with libc ``free``.

Two emulators are exposed:

* :class:`TransactionEmulator`: applies one inbound message (internal or
  external) to a ``ShardAccount`` under a blockchain config, returning the new
  ``ShardAccount`` and the ``Transaction`` (with its out-messages and fees)
  exactly as a validator would compute them.
* :func:`run_get_method`: runs a get-method on (code, data) with a c7 built
  from address, time, balance and config.

Everything crosses the boundary as base64 BOCs; no cell library is needed here.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon_operator.ton.errors import LocalChainError

_LIB_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_FREE: Any = None


def find_library() -> Path:
    """Path of ``libemulator`` from the installed ``pytvm`` wheel."""
    spec = importlib.util.find_spec("pytvm")
    if spec is None or not spec.submodule_search_locations:
        raise LocalChainError(
            "libemulator not found: install the 'pytvm' wheel (Linux x86_64, CPython 3.11)"
        )
    for location in spec.submodule_search_locations:
        engine = Path(location) / "engine"
        for candidate in sorted(engine.glob("libemulator*")):
            return candidate
    raise LocalChainError("the installed 'pytvm' package ships no libemulator binary")


def _declare(lib: ctypes.CDLL) -> None:
    vp, cp, b = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "transaction_emulator_create": (vp, [cp, ctypes.c_int]),
        "transaction_emulator_set_unixtime": (b, [vp, ctypes.c_uint32]),
        "transaction_emulator_set_lt": (b, [vp, ctypes.c_uint64]),
        "transaction_emulator_set_rand_seed": (b, [vp, cp]),
        "transaction_emulator_set_ignore_chksig": (b, [vp, b]),
        "transaction_emulator_set_config": (b, [vp, cp]),
        "transaction_emulator_set_libs": (b, [vp, cp]),
        "transaction_emulator_emulate_transaction": (vp, [vp, cp, cp]),
        "transaction_emulator_destroy": (None, [vp]),
        "emulator_set_verbosity_level": (b, [ctypes.c_int]),
        "tvm_emulator_create": (vp, [cp, cp, ctypes.c_int]),
        "tvm_emulator_set_c7": (b, [vp, cp, ctypes.c_uint32, ctypes.c_uint64, cp, cp]),
        "tvm_emulator_set_gas_limit": (b, [vp, ctypes.c_int64]),
        "tvm_emulator_run_get_method": (vp, [vp, ctypes.c_int, cp]),
        "tvm_emulator_destroy": (None, [vp]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def load_library() -> ctypes.CDLL:
    """Load (once) and declare the emulator library."""
    global _LIB, _FREE  # noqa: PLW0603 - process-wide handle of a shared library
    with _LIB_LOCK:
        if _LIB is None:
            lib = ctypes.CDLL(str(find_library()))
            _declare(lib)
            lib.emulator_set_verbosity_level(0)
            libc = ctypes.CDLL(ctypes.util.find_library("c"))
            free = libc.free
            free.restype = None
            free.argtypes = [ctypes.c_void_p]
            _FREE = free
            _LIB = lib
        return _LIB


def _take_json(ptr: int | None, what: str) -> dict[str, Any]:
    if not ptr:
        raise LocalChainError(f"{what}: emulator returned NULL")
    try:
        raw = ctypes.string_at(ptr)
    finally:
        _FREE(ptr)
    try:
        result = json.loads(raw)
    except ValueError as exc:
        raise LocalChainError(f"{what}: emulator returned invalid JSON") from exc
    if not isinstance(result, dict):
        raise LocalChainError(f"{what}: emulator returned {type(result).__name__}")
    return result


def _b64(boc: bytes) -> bytes:
    return base64.b64encode(boc)


@dataclass(frozen=True, slots=True)
class EmulatedTransaction:
    """Successful emulation: new ShardAccount and Transaction BOCs."""

    shard_account: bytes
    transaction: bytes
    vm_log: str


@dataclass(frozen=True, slots=True)
class EmulationFailure:
    """The message could not be applied (e.g. external message not accepted)."""

    error: str
    external_not_accepted: bool
    vm_exit_code: int | None


class TransactionEmulator:
    """One ``TransactionEmulator`` instance bound to a blockchain config."""

    def __init__(self, config_boc: bytes, *, vm_log_verbosity: int = 0) -> None:
        self._lib = load_library()
        handle = self._lib.transaction_emulator_create(_b64(config_boc), vm_log_verbosity)
        if not handle:
            raise LocalChainError("transaction_emulator_create failed (bad config BOC?)")
        self._handle: int | None = handle

    def close(self) -> None:
        if self._handle:
            self._lib.transaction_emulator_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()

    def emulate(
        self,
        shard_account_boc: bytes,
        message_boc: bytes,
        *,
        unixtime: int,
        lt: int,
        rand_seed: bytes = b"\x00" * 32,
    ) -> EmulatedTransaction | EmulationFailure:
        if not self._handle:
            raise LocalChainError("emulator is closed")
        lib, h = self._lib, self._handle
        ok = (
            lib.transaction_emulator_set_unixtime(h, unixtime)
            and lib.transaction_emulator_set_lt(h, lt)
            and lib.transaction_emulator_set_rand_seed(h, rand_seed.hex().encode())
        )
        if not ok:
            raise LocalChainError("failed to set emulation parameters")
        result = _take_json(
            lib.transaction_emulator_emulate_transaction(
                h, _b64(shard_account_boc), _b64(message_boc)
            ),
            "emulate_transaction",
        )
        if result.get("success"):
            return EmulatedTransaction(
                shard_account=base64.b64decode(result["shard_account"]),
                transaction=base64.b64decode(result["transaction"]),
                vm_log=str(result.get("vm_log", "")),
            )
        exit_code = result.get("vm_exit_code")
        return EmulationFailure(
            error=str(result.get("error", "unknown emulator error")),
            external_not_accepted=bool(result.get("external_not_accepted", False)),
            vm_exit_code=exit_code if isinstance(exit_code, int) else None,
        )


@dataclass(frozen=True, slots=True)
class GetMethodOutput:
    exit_code: int
    gas_used: int
    stack_boc: bytes  # VmStack BOC


def run_get_method(
    *,
    code_boc: bytes,
    data_boc: bytes,
    address: str,
    method_id: int,
    stack_boc: bytes,
    unixtime: int,
    balance: int,
    config_boc: bytes,
    gas_limit: int = 1_000_000,
) -> GetMethodOutput:
    """Run one get-method in the TVM. ``address`` is the raw ``wc:hex`` form."""
    lib = load_library()
    handle = lib.tvm_emulator_create(_b64(code_boc), _b64(data_boc), 0)
    if not handle:
        raise LocalChainError("tvm_emulator_create failed (bad code or data BOC?)")
    try:
        ok = lib.tvm_emulator_set_c7(
            handle,
            address.encode(),
            unixtime,
            balance,
            (b"\x00" * 32).hex().encode(),
            _b64(config_boc),
        ) and lib.tvm_emulator_set_gas_limit(handle, gas_limit)
        if not ok:
            raise LocalChainError("failed to set get-method context (c7)")
        result = _take_json(
            lib.tvm_emulator_run_get_method(handle, method_id, _b64(stack_boc)),
            "run_get_method",
        )
    finally:
        lib.tvm_emulator_destroy(handle)
    if not result.get("success"):
        raise LocalChainError(f"get-method failed to run: {result.get('error', 'unknown')}")
    return GetMethodOutput(
        exit_code=int(result.get("vm_exit_code", 0)),
        gas_used=int(result.get("gas_used", 0)),
        stack_boc=base64.b64decode(result.get("stack", "")),
    )
