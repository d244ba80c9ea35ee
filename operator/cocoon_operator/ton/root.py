"""The COCOON root contract's allow-lists: queries, owner messages, deployment.

COCOON's root contract lists the worker image hashes, model hashes and proxy
hashes the network accepts; a worker whose image or model hash is not listed is
refused by proxies. This module talks to any contract with COCOON's interface
(the real root on mainnet/testnet, or the project's own contract in
``contracts/cocoon_root.fc``, compiled into :data:`ROOT_CODE_BOC`):

* :class:`RootContract` asks the get-methods ``worker_hash_is_valid``,
  ``model_hash_is_valid`` and ``proxy_hash_is_valid`` (COCOON's names, each
  taking the hash as a 256-bit unsigned integer and returning -1 or 0) through a
  :class:`~cocoon_operator.ton.client.TonClient`. ``owner()`` reads the owner
  from the account's data, as COCOON's runners do (:func:`parse_root_data`);
  ``version()`` and ``allowlists()`` use get-methods only the project's
  contract has.
* :func:`allowlist_body` and :func:`change_owner_body` build the owner's
  internal-message bodies with COCOON's opcodes and layout
  ``op:uint32 query_id:uint64 hash:bits256``. They are sent by the owner's
  wallet (:class:`~cocoon_operator.ton.wallet.Transfer` with ``body_boc``).
* :func:`initial_data_boc`, :func:`state_init`, :func:`root_address`,
  :func:`deploy_transfer` and :func:`deploy_local` deploy the project's contract.

:func:`model_hash` is COCOON's model hash: SHA-256 of the whole
``Name@commit:verity`` string. Image hashes come from attestation (see
``docs/ton.md`` and ``cocoon_operator.attestation``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .address import Address, to_address
from .amounts import Nanoton
from .cells import (
    begin_cell,
    cell_from_boc,
    cell_to_boc,
    contract_address,
    core,
    state_init_cell,
    to_core_address,
)
from .client import (
    GetMethodResult,
    StackCell,
    StackNull,
    StackNum,
    StackSlice,
    StackTuple,
    TonClient,
)
from .errors import RootContractError, TonResponseError
from .wallet import Transfer

HASH_BYTES = 32
_HASH_BITS = 8 * HASH_BYTES


class AllowList(StrEnum):
    """One of the root's three allow-lists."""

    WORKER = "worker"  # worker image hashes (TDX measurements, see docs/ton.md)
    MODEL = "model"  # SHA-256 of "Name@commit:verity"
    PROXY = "proxy"  # proxy image hashes


# Owner commands: COCOON's opcodes (add/del worker/model/proxy "type").
OP_ADD_WORKER_TYPE = 0xE34B1C60
OP_DEL_WORKER_TYPE = 0x8D94A79A
OP_ADD_MODEL_TYPE = 0xC146134D
OP_DEL_MODEL_TYPE = 0x92B11C18
OP_ADD_PROXY_TYPE = 0x71860E80
OP_DEL_PROXY_TYPE = 0x3C41D0B2
OP_CHANGE_OWNER = 0xC4A1AE54

#: TVM exit code of the project's contract when a non-owner sends a command.
EXIT_NOT_OWNER = 401
#: TVM exit code for an unknown opcode from the owner.
EXIT_UNKNOWN_OP = 0xFFFF

_ADD_OPS = {
    AllowList.WORKER: OP_ADD_WORKER_TYPE,
    AllowList.MODEL: OP_ADD_MODEL_TYPE,
    AllowList.PROXY: OP_ADD_PROXY_TYPE,
}
_DEL_OPS = {
    AllowList.WORKER: OP_DEL_WORKER_TYPE,
    AllowList.MODEL: OP_DEL_MODEL_TYPE,
    AllowList.PROXY: OP_DEL_PROXY_TYPE,
}
#: COCOON's get-method for each list.
GET_METHODS = {
    AllowList.WORKER: "worker_hash_is_valid",
    AllowList.MODEL: "model_hash_is_valid",
    AllowList.PROXY: "proxy_hash_is_valid",
}


def _load_code() -> bytes:
    resource = importlib.resources.files(__package__ or "cocoon_operator.ton").joinpath(
        "contracts/cocoon_root.code.boc"
    )
    return resource.read_bytes()


#: Code of ``contracts/cocoon_root.fc`` as compiled by ``hack/build-contracts``.
ROOT_CODE_BOC: bytes = _load_code()

# ------------------------------------------------------------------ hashes

_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_hash(text: str) -> bytes:
    """A 32-byte hash from 64 hex digits (``0x`` prefix and upper case accepted)."""
    value = text.strip().lower().removeprefix("0x")
    if not _HEX64.fullmatch(value):
        raise RootContractError(f"bad hash {text!r}: expected 64 hex digits")
    return bytes.fromhex(value)


def _check_hash(value: bytes) -> int:
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        raise RootContractError(f"a hash must be {HASH_BYTES} bytes")
    return int.from_bytes(value, "big")


def model_hash(model: str) -> bytes:
    """COCOON's model hash: SHA-256 of the full ``Name@commit:verity`` string.

    The string is hashed exactly as given (UTF-8); it must have the three
    non-empty parts and no whitespace, so a truncated id is refused rather than
    hashed into a value that is never listed.
    """
    name, at, rest = model.rpartition("@")
    commit, colon, verity = rest.partition(":")
    if not (name and at and commit and colon and verity) or any(c.isspace() for c in model):
        raise RootContractError(f"bad model id {model!r}: expected 'Name@commit:verity'")
    return hashlib.sha256(model.encode()).digest()


# ------------------------------------------------------------------ owner messages


def allowlist_body(kind: AllowList, hash_value: bytes, *, add: bool, query_id: int = 0) -> bytes:
    """Body BOC of the owner's add (``add=True``) or remove command for one hash."""
    key = _check_hash(hash_value)
    if not 0 <= query_id < 2**64:
        raise RootContractError(f"query_id {query_id} out of range")
    op = (_ADD_OPS if add else _DEL_OPS)[AllowList(kind)]
    cell = begin_cell().store_uint(op, 32).store_uint(query_id, 64).store_uint(key, _HASH_BITS)
    return cell_to_boc(cell.end_cell())


def change_owner_body(new_owner: Address | str, *, query_id: int = 0) -> bytes:
    """Body BOC of the owner's command handing the root to ``new_owner``."""
    if not 0 <= query_id < 2**64:
        raise RootContractError(f"query_id {query_id} out of range")
    cell = (
        begin_cell()
        .store_uint(OP_CHANGE_OWNER, 32)
        .store_uint(query_id, 64)
        .store_address(to_core_address(to_address(new_owner)))
    )
    return cell_to_boc(cell.end_cell())


# ------------------------------------------------------------------ COCOON's storage

#: COCOON's params struct version this project writes (``struct_version``; its
#: runners accept 0 to 3: runners/smartcontracts/RootContractConfig.cpp:88).
ROOT_PARAMS_STRUCT_VERSION = 3
_MULTIPLIER_DEFAULT = 10000  # RootContractConfig.cpp:117-140: 10000 when absent


def root_params_boc(
    *,
    params_version: int = 1,
    unique_id: int = 0,
    is_test: bool = True,
    price_per_token: int = 2,
    worker_fee_per_token: int = 1,
    proxy_delay_before_close: int = 3600,
    client_delay_before_close: int = 3600,
    min_proxy_stake: int = 1_000_000_000,
    min_client_stake: int = 1_000_000_000,
) -> bytes:
    """A root ``params`` cell in COCOON's layout, struct version 3.

    Field by field as COCOON's runners read it (RootContractConfig.cpp:83-185):
    ``struct_version:uint8 params_version:uint32 unique_id:uint32 is_test:Bool
    price_per_token:Coins worker_fee_per_token:Coins`` then (version 3) the
    prompt, cached, completion and reasoning token price multipliers
    (uint32 each, in the order lines 117-140 fetch them), then
    ``proxy_delay_before_close:uint32 client_delay_before_close:uint32
    min_proxy_stake:Coins min_client_stake:Coins`` and three ``Maybe ^Cell``
    codes (proxy, worker, client; absent here). The defaults are
    spec/fake-ton/fake-ton-config.json's prices; this project's contract only
    carries the cell.
    """
    cell = (
        begin_cell()
        .store_uint(ROOT_PARAMS_STRUCT_VERSION, 8)
        .store_uint(params_version, 32)
        .store_uint(unique_id, 32)
        .store_bool(is_test)
        .store_coins(price_per_token)
        .store_coins(worker_fee_per_token)
        .store_uint(_MULTIPLIER_DEFAULT, 32)  # prompt tokens (struct_version >= 3)
        .store_uint(_MULTIPLIER_DEFAULT, 32)  # cached tokens (>= 2)
        .store_uint(_MULTIPLIER_DEFAULT, 32)  # completion tokens (>= 3)
        .store_uint(_MULTIPLIER_DEFAULT, 32)  # reasoning tokens (>= 2)
        .store_uint(proxy_delay_before_close, 32)
        .store_uint(client_delay_before_close, 32)
        .store_coins(min_proxy_stake)
        .store_coins(min_client_stake)
        .store_bit(0)  # proxy_sc_code
        .store_bit(0)  # worker_sc_code
        .store_bit(0)  # client_sc_code
    )
    return cell_to_boc(cell.end_cell())


@dataclass(frozen=True, slots=True)
class RootState:
    """What the operator reads from a root's account data (no get-method needed)."""

    owner: Address
    version: int


_ADDR_STD_TAG = 0b100  # addr_std$10 anycast:(Maybe Anycast) with no anycast


def parse_root_data(data_boc: bytes) -> RootState:
    """The owner and version from a root contract's data (c4), in COCOON's layout.

    COCOON's own runners read the root this way, from the account state rather
    than a get-method (runners/BaseRunner.cpp:661-672, raw.getAccountState then
    RootContractConfig::load_from_state): the owner address first
    (RootContractConfig.cpp:67-69, an ``addr_std`` without anycast as
    cocoon-tl-utils/parsers.cpp:50-58 accepts it), the lists cell and the
    params cell as the first and second references (lines 74 and 80), the
    version as ``uint32`` after the owner (line 308), and nothing more (line
    313). COCOON's root has no ``get_owner`` get-method; this works on it and on
    the project's contract alike. Raises :class:`RootContractError` naming what
    does not fit.
    """
    try:
        data = cell_from_boc(data_boc).begin_parse()
    except Exception as exc:
        raise RootContractError(f"root data is not a cell: {exc}") from None
    if data.remaining_bits < 3 + 8 + 256 + 32 or data.remaining_refs < 2:
        raise RootContractError(
            "root data is too short for COCOON's layout (owner, version, ^lists, ^params)"
        )
    if int(data.load_uint(3)) != _ADDR_STD_TAG:
        raise RootContractError("root data: the owner is not a standard address (addr_std)")
    workchain = int(data.load_int(8))
    account = bytes(data.load_bytes(32))
    version = int(data.load_uint(32))
    if data.remaining_bits or data.remaining_refs != 2:
        raise RootContractError("root data: extra data after COCOON's layout")
    return RootState(Address(workchain, account), version)


# ------------------------------------------------------------------ deployment


def _hash_set(hashes: Iterable[bytes]) -> object:
    """HashmapE 256 with empty values (a set), as a cell or None when empty."""
    table = core().HashMap(_HASH_BITS, value_serializer=lambda _src, dest: dest)
    for value in hashes:
        table.set_int_key(_check_hash(value), None)
    return table.serialize()


def initial_data_boc(
    owner: Address | str,
    *,
    worker_hashes: Iterable[bytes] = (),
    model_hashes: Iterable[bytes] = (),
    proxy_hashes: Iterable[bytes] = (),
    params_boc: bytes | None = None,
) -> bytes:
    """Initial storage (c4) of the project's root, in COCOON's layout (see docs/ton.md
    and :func:`parse_root_data`).

    ``params_boc`` is carried untouched (COCOON keeps its pricing parameters
    there); the default is :func:`root_params_boc`, the layout COCOON's runners
    parse, so the local chain's root is one they could read.
    """
    lists = (
        begin_cell()
        .store_dict(_hash_set(proxy_hashes))
        .store_dict(None)  # registered_proxies: not kept by this contract
        .store_uint(0, 32)  # last_proxy_seqno
        .store_dict(_hash_set(worker_hashes))
        .store_dict(_hash_set(model_hashes))
        .end_cell()
    )
    params = cell_from_boc(params_boc if params_boc is not None else root_params_boc())
    data = (
        begin_cell()
        .store_address(to_core_address(to_address(owner)))
        .store_uint(0, 32)  # version
        .store_ref(lists)
        .store_ref(params)
        .end_cell()
    )
    return cell_to_boc(data)


@dataclass(frozen=True, slots=True)
class RootDeployment:
    """What deploying the project's root needs: its StateInit and address."""

    address: Address
    state_init_boc: bytes
    data_boc: bytes


def state_init(
    owner: Address | str,
    *,
    worker_hashes: Iterable[bytes] = (),
    model_hashes: Iterable[bytes] = (),
    proxy_hashes: Iterable[bytes] = (),
    params_boc: bytes | None = None,
    workchain: int = 0,
) -> RootDeployment:
    """StateInit (code + initial data) and address of a root owned by ``owner``.

    The address depends on the owner and the initial lists, so one owner can
    deploy several roots by starting them with different lists.
    """
    data_boc = initial_data_boc(
        owner,
        worker_hashes=worker_hashes,
        model_hashes=model_hashes,
        proxy_hashes=proxy_hashes,
        params_boc=params_boc,
    )
    code, data = cell_from_boc(ROOT_CODE_BOC), cell_from_boc(data_boc)
    return RootDeployment(
        address=contract_address(code, data, workchain),
        state_init_boc=cell_to_boc(state_init_cell(code, data)),
        data_boc=data_boc,
    )


def root_address(owner: Address | str, *, workchain: int = 0) -> Address:
    """Address of the project's root owned by ``owner`` with empty initial lists."""
    return state_init(owner, workchain=workchain).address


def deploy_transfer(deployment: RootDeployment, amount: Nanoton) -> Transfer:
    """A wallet transfer that deploys ``deployment`` (non-bounceable, StateInit attached)."""
    return Transfer(
        deployment.address, amount, bounce=False, state_init_boc=deployment.state_init_boc
    )


class _Mintable(Protocol):
    def mint(
        self, address: Address | str, amount: int, *, state_init_boc: bytes | None = None
    ) -> object: ...


def deploy_local(chain: _Mintable, deployment: RootDeployment, amount: Nanoton) -> Address:
    """Deploy on a :class:`~cocoon_operator.ton.localchain.LocalChain` with minted coins."""
    chain.mint(deployment.address, amount, state_init_boc=deployment.state_init_boc)
    return deployment.address


# ------------------------------------------------------------------ queries


@dataclass(frozen=True, slots=True)
class AllowLists:
    """The three lists as read from the project's root (``get_allowlists``)."""

    worker: frozenset[bytes]
    model: frozenset[bytes]
    proxy: frozenset[bytes]

    def of(self, kind: AllowList) -> frozenset[bytes]:
        return {
            AllowList.WORKER: self.worker,
            AllowList.MODEL: self.model,
            AllowList.PROXY: self.proxy,
        }[AllowList(kind)]


def _cell_boc(result: GetMethodResult, index: int, method: str) -> bytes | None:
    if index >= len(result.stack):
        raise TonResponseError(f"{method}: stack has no entry {index}")
    value = result.stack[index]
    if isinstance(value, StackNull) or (isinstance(value, StackTuple) and not value.items):
        return None
    if isinstance(value, (StackCell, StackSlice)):
        return value.boc or None
    raise TonResponseError(f"{method}: stack[{index}] is {type(value).__name__}, not a cell")


def _parse_set(boc: bytes | None) -> frozenset[bytes]:
    if boc is None:
        return frozenset()
    parsed = core().HashMap.parse(cell_from_boc(boc).begin_parse(), _HASH_BITS) or {}
    return frozenset(int(k).to_bytes(HASH_BYTES, "big") for k in parsed)


class RootContract:
    """Read-only view of a root contract through a :class:`TonClient`."""

    def __init__(self, client: TonClient, address: Address | str) -> None:
        self._client = client
        self.address: Address = to_address(address)

    def __repr__(self) -> str:
        return f"RootContract({self.address.to_raw()})"

    async def is_allowed(self, kind: AllowList, hash_value: bytes) -> bool:
        """Whether ``hash_value`` is on the ``kind`` list (COCOON's ``*_hash_is_valid``)."""
        key = _check_hash(hash_value)
        method = GET_METHODS[AllowList(kind)]
        result = await self._client.run_get_method(self.address, method, [StackNum(key)])
        return result.num(0) != 0

    async def is_worker_hash_allowed(self, hash_value: bytes) -> bool:
        return await self.is_allowed(AllowList.WORKER, hash_value)

    async def is_model_hash_allowed(self, hash_value: bytes) -> bool:
        return await self.is_allowed(AllowList.MODEL, hash_value)

    async def is_proxy_hash_allowed(self, hash_value: bytes) -> bool:
        return await self.is_allowed(AllowList.PROXY, hash_value)

    async def is_model_allowed(self, model: str) -> bool:
        """Whether the ``Name@commit:verity`` model's hash is listed."""
        return await self.is_model_hash_allowed(model_hash(model))

    async def state(self) -> RootState:
        """Owner and version from the account's data (:func:`parse_root_data`), as
        COCOON's runners read them: COCOON's root has no ``get_owner``."""
        info = await self._client.get_address_information(self.address)
        if info.state != "active" or info.data is None:
            raise RootContractError(f"root {self.address.to_raw()} is {info.state}, not active")
        return parse_root_data(info.data)

    async def owner(self) -> Address:
        """The owner, from the account's data (works on COCOON's root too)."""
        return (await self.state()).owner

    async def version(self) -> int:
        """How many list/owner changes were applied (``get_version``: project's contract)."""
        return (await self._client.run_get_method(self.address, "get_version")).num(0)

    async def allowlists(self) -> AllowLists:
        """Every listed hash (``get_allowlists``: the project's contract only)."""
        result = await self._client.run_get_method(self.address, "get_allowlists")
        worker, model, proxy = (_cell_boc(result, i, "get_allowlists") for i in range(3))
        return AllowLists(_parse_set(worker), _parse_set(model), _parse_set(proxy))
