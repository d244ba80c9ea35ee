"""Registration on a root the operator owns, on the local chain (real TVM): the
owner is read from the root's account data in COCOON's layout, as COCOON's
runners read it (runners/BaseRunner.cpp:661-672), never from a ``get_owner``
get-method COCOON's root does not have; the owner's wallet may be v4r2 or v5r1,
and any other owner is refused in words that say which (issue 26, item 10)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from cocoon_operator.funding import MemoryLedgerStore, Treasury
from cocoon_operator.handlers.registration import Registrar
from cocoon_operator.policy.treasury import RegistrationPolicy
from cocoon_operator.ton.address import Address
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.cells import begin_cell, cell_from_boc, cell_to_boc
from cocoon_operator.ton.client import GetMethodResult, StackValue, TonClient
from cocoon_operator.ton.errors import RootContractError, TonGetMethodError
from cocoon_operator.ton.localchain import LocalChain, RunningLocalChain, start_local_chain
from cocoon_operator.ton.root import (
    AllowList,
    RootContract,
    RootState,
    deploy_local,
    initial_data_boc,
    parse_root_data,
    state_init,
)
from cocoon_operator.ton.wallet import WalletKey, WalletVersion, make_wallet

OWNER_SEED = b"\x0b" * 32
IMAGE = hashlib.sha256(b"attested image").digest().hex()
TVM_METHOD_NOT_FOUND = 11  # what a TVM answers for a get-method id it does not have


class WithoutGetOwner(TonClient):
    """A client of a chain whose root, like COCOON's, has no ``get_owner``."""

    async def run_get_method(
        self,
        address: str | Address,
        method: str,
        stack: Sequence[StackValue] = (),
        *,
        check: bool = True,
    ) -> GetMethodResult:
        if method == "get_owner":
            raise TonGetMethodError(method, TVM_METHOD_NOT_FOUND)
        return await super().run_get_method(address, method, stack, check=check)


@dataclass
class Env:
    chain: LocalChain
    running: RunningLocalChain
    ton: TonClient
    key: WalletKey

    def root_owned_by(self, owner: Address) -> str:
        deployment = state_init(owner)
        deploy_local(self.chain, deployment, parse_ton("1"))
        return deployment.address.to_raw()

    def registrar(self, version: WalletVersion) -> Registrar:
        wallet = make_wallet(version, self.key.public_key)
        owner = Treasury(
            self.ton,
            self.key,
            MemoryLedgerStore(),
            global_daily_cap=0,
            wallet=wallet,
            confirm_timeout=2,
            poll_interval=0.05,
        )
        return Registrar(
            self.ton,
            owner,
            # The operator's registration policy allows this namespace and image
            # (test_registration_policy.py tests the refusals).
            policy=RegistrationPolicy(
                namespaces=frozenset({"ns"}), image_hashes=frozenset({IMAGE})
            ),
            key_wallets={
                v: make_wallet(v, self.key.public_key).address.to_raw() for v in WalletVersion
            },
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    chain = LocalChain()
    key = WalletKey(OWNER_SEED)
    for version in WalletVersion:
        chain.deploy_wallet(key, parse_ton("100"), version=version)
    running = await start_local_chain(chain)
    ton = WithoutGetOwner(running.api_url, timeout=10)
    try:
        yield Env(chain, running, ton, key)
    finally:
        await ton.close()
        await running.close()


@pytest.mark.parametrize("version", list(WalletVersion))
async def test_a_root_without_get_owner_is_registered_on_by_its_owners_wallet(
    env: Env, version: WalletVersion
) -> None:
    owner = make_wallet(version, env.key.public_key).address
    root = env.root_owned_by(owner)
    registrar = env.registrar(version)
    note = await registrar.register("ns/w", root, [(AllowList.WORKER, IMAGE)])
    assert note == "registered"
    assert await RootContract(env.ton, root).is_worker_hash_allowed(bytes.fromhex(IMAGE))


async def test_a_root_owned_by_the_keys_other_wallet_version_is_refused_saying_so(
    env: Env,
) -> None:
    v5 = make_wallet(WalletVersion.V5R1, env.key.public_key).address
    root = env.root_owned_by(v5)
    note = await env.registrar(WalletVersion.V4R2).register(
        "ns/w", root, [(AllowList.WORKER, IMAGE)]
    )
    assert note == (
        f"not registered: root {root} is owned by {v5.to_raw()}, this key's v5r1 wallet;"
        " the operator signs as v4r2 (set --root-owner-wallet v5r1)"
    )
    assert not await RootContract(env.ton, root).is_worker_hash_allowed(bytes.fromhex(IMAGE))


async def test_a_root_owned_by_someone_else_is_refused_naming_the_owner(env: Env) -> None:
    stranger = Address(0, hashlib.sha256(b"someone else").digest())
    root = env.root_owned_by(stranger)
    note = await env.registrar(WalletVersion.V4R2).register(
        "ns/w", root, [(AllowList.WORKER, IMAGE)]
    )
    mine = make_wallet(WalletVersion.V4R2, env.key.public_key).address.to_raw()
    assert note == (
        f"not registered: root {root} is owned by {stranger.to_raw()}, not by this"
        f" operator's owner wallet {mine} (v4r2)"
    )


def cocoon_load_from_state(data_boc: bytes) -> dict[str, object]:
    """COCOON's RootContractConfig::load_from_state, line by line
    (runners/smartcontracts/RootContractConfig.cpp:63-330), written here apart
    from the operator's parser: what a COCOON runner would make of the data."""
    cs = cell_from_boc(data_boc).begin_parse()
    assert cs.load_uint(3) == 4  # fetch_address: addr_std, no anycast (parsers.cpp:52)
    owner = (int(cs.load_int(8)), bytes(cs.load_bytes(32)))
    data_cell = cs.load_ref()  # line 74
    params = cs.load_ref().begin_parse()  # line 80
    struct_version = int(params.load_uint(8))
    assert struct_version <= 3  # line 88
    out: dict[str, object] = {"owner": owner, "struct_version": struct_version}
    out["params_version"] = int(params.load_uint(32))
    out["unique_id"] = int(params.load_uint(32))
    out["is_test"] = bool(params.load_bit())
    out["price_per_token"] = int(params.load_coins())
    out["worker_fee_per_token"] = int(params.load_coins())
    if struct_version >= 3:
        params.load_uint(32)  # prompt multiplier
    if struct_version >= 2:
        params.load_uint(32)  # cached
    if struct_version >= 3:
        params.load_uint(32)  # completion
    if struct_version >= 2:
        params.load_uint(32)  # reasoning
    params.load_uint(32)  # proxy_delay_before_close
    params.load_uint(32)  # client_delay_before_close
    if struct_version >= 1:
        params.load_coins()  # min_proxy_stake
        params.load_coins()  # min_client_stake
    for _ in range(3):  # proxy, worker, client sc code: Maybe ^Cell
        if params.load_bit():
            params.load_ref()
    assert params.remaining_bits == 0 and params.remaining_refs == 0  # line 188
    data = data_cell.begin_parse()
    for _ in range(2):  # accepted proxy hashes, registered proxies (lines 193-265)
        if data.load_bit():
            data.load_ref()
    out["last_proxy_seqno"] = int(data.load_uint(32))  # line 267
    for _ in range(2):  # worker hashes, model hashes (lines 271-305)
        if data.load_bit():
            data.load_ref()
    assert data.remaining_bits == 0 and data.remaining_refs == 0  # line 301
    out["version"] = int(cs.load_uint(32))  # line 308
    assert cs.remaining_bits == 0 and cs.remaining_refs == 0  # line 313
    return out


async def test_the_local_chain_root_holds_data_a_cocoon_runner_can_parse(env: Env) -> None:
    owner = make_wallet(WalletVersion.V4R2, env.key.public_key).address
    root = env.root_owned_by(owner)
    info = await env.ton.get_address_information(root)
    assert info.data is not None
    parsed = cocoon_load_from_state(info.data)
    assert parsed["owner"] == (0, owner.account_id)
    assert parsed["struct_version"] == 3 and parsed["is_test"] is True
    assert parsed["version"] == 0
    assert (await RootContract(env.ton, root).state()).owner == owner


def test_root_data_not_in_cocoons_layout_is_refused_saying_what_does_not_fit() -> None:
    owner = Address(0, b"\x05" * 32)
    good = parse_root_data(initial_data_boc(owner))
    assert good == RootState(owner, 0)
    empty = begin_cell().end_cell()
    # addr_std with an anycast (tag 0b101): COCOON's fetch_address refuses it too.
    no_owner = begin_cell().store_uint(0b101, 3).store_uint(0, 8 + 256 + 32)
    no_owner = no_owner.store_ref(empty).store_ref(empty)
    with pytest.raises(RootContractError, match="not a standard address"):
        parse_root_data(cell_to_boc(no_owner.end_cell()))
    with pytest.raises(RootContractError, match="too short"):
        parse_root_data(cell_to_boc(begin_cell().store_uint(1, 32).end_cell()))
    data = cell_from_boc(initial_data_boc(owner)).begin_parse()
    longer = begin_cell().store_slice(data).store_uint(7, 8)
    with pytest.raises(RootContractError, match="extra data"):
        parse_root_data(cell_to_boc(longer.end_cell()))
