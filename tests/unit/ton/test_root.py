"""The project's COCOON root contract, run in the real TVM on the local chain.

The owner's commands travel as real internal messages from a wallet v4r2, and
every answer comes from the contract's get-methods through the v2 HTTP API.
"""

import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.unit.clocks import FakeClock

from cocoon_operator.ton import root as root_mod
from cocoon_operator.ton.address import Address, normalize_address
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.cells import begin_cell, boc_hash, cell_from_boc, cell_to_boc
from cocoon_operator.ton.client import StackNum, TonClient
from cocoon_operator.ton.errors import RootContractError
from cocoon_operator.ton.localchain import (
    DEFAULT_ROOT_OWNER_SEED,
    LocalChain,
    RunningLocalChain,
    start_local_chain,
)
from cocoon_operator.ton.root import (
    EXIT_NOT_OWNER,
    EXIT_UNKNOWN_OP,
    ROOT_CODE_BOC,
    AllowList,
    RootContract,
    allowlist_body,
    change_owner_body,
    deploy_local,
    deploy_transfer,
    model_hash,
    parse_hash,
    state_init,
)
from cocoon_operator.ton.wallet import Transfer, WalletKey, WalletV4R2

NOW = 1_700_000_000
REPO = Path(__file__).resolve().parents[3]
MODEL = "Qwen/Qwen3-32B@" + "ab" * 20 + ":" + "cd" * 32
IMAGE = hashlib.sha256(b"image").digest()
PROXY = hashlib.sha256(b"proxy").digest()
OTHER = hashlib.sha256(b"never listed").digest()


@dataclass
class Actor:
    key: WalletKey
    wallet: WalletV4R2
    seqno: int = 0


@dataclass
class Env:
    chain: LocalChain
    running: RunningLocalChain
    client: TonClient
    owner: Actor
    stranger: Actor
    root: RootContract

    async def send(self, actor: Actor, body: bytes, *, to: Address | None = None) -> int | None:
        """The actor's wallet sends ``body`` to the root; returns the root's compute exit code."""
        dest = to or self.root.address
        signed = actor.wallet.create_transfer(
            actor.key,
            [Transfer(dest, parse_ton("0.05"), bounce=True, body_boc=body)],
            seqno=actor.seqno,
            valid_until=NOW + 600,
        )
        actor.seqno += 1
        await self.client.send_boc(signed.boc)
        [tx] = self.chain.transactions(dest, limit=1)
        assert tx.in_msg is not None and tx.in_msg.source == actor.wallet.address
        return tx.compute_exit_code


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    chain = LocalChain(clock=FakeClock(NOW))
    actors = []
    for seed in (b"\x01" * 32, b"\x02" * 32):
        key = WalletKey(seed)
        actors.append(Actor(key, chain.deploy_wallet(key, parse_ton("100"))))
    owner, stranger = actors
    deployment = state_init(owner.wallet.address)
    deploy_local(chain, deployment, parse_ton("1"))
    running = await start_local_chain(chain)
    client = TonClient(running.api_url, timeout=10)
    try:
        yield Env(chain, running, client, owner, stranger, RootContract(client, deployment.address))
    finally:
        await client.close()
        await running.close()


async def _state(root: RootContract) -> tuple[bool, bool, bool, int]:
    return (
        await root.is_worker_hash_allowed(IMAGE),
        await root.is_model_hash_allowed(model_hash(MODEL)),
        await root.is_proxy_hash_allowed(PROXY),
        await root.version(),
    )


async def test_owner_adds_and_get_methods_answer(env: Env) -> None:
    root = env.root
    assert await env.client.get_address_state(root.address) == "active"
    assert await root.owner() == env.owner.wallet.address
    assert await _state(root) == (False, False, False, 0)

    assert await env.send(env.owner, allowlist_body(AllowList.WORKER, IMAGE, add=True)) == 0
    assert (
        await env.send(env.owner, allowlist_body(AllowList.MODEL, model_hash(MODEL), add=True)) == 0
    )
    assert (
        await env.send(env.owner, allowlist_body(AllowList.PROXY, PROXY, add=True, query_id=7)) == 0
    )

    assert await _state(root) == (True, True, True, 3)
    assert await root.is_model_allowed(MODEL)
    # misses: other hashes, and the right hash on the wrong list
    assert not await root.is_worker_hash_allowed(OTHER)
    assert not await root.is_model_hash_allowed(IMAGE)
    assert not await root.is_proxy_hash_allowed(IMAGE)
    assert not await root.is_model_allowed(MODEL.replace("Qwen3", "Qwen2"))

    lists = await root.allowlists()
    assert lists.worker == {IMAGE}
    assert lists.model == {model_hash(MODEL)}
    assert lists.proxy == {PROXY}
    assert lists.of(AllowList.PROXY) == {PROXY}

    # the raw get-method answers -1 / 0, as COCOON's does
    hit = await env.client.run_get_method(root.address, "worker_hash_is_valid", [_num(IMAGE)])
    miss = await env.client.run_get_method(root.address, "worker_hash_is_valid", [_num(OTHER)])
    assert (hit.num(0), miss.num(0)) == (-1, 0)
    seqno = await env.client.run_get_method(root.address, "last_proxy_seqno")
    assert seqno.num(0) == 0


def _num(value: bytes) -> StackNum:
    return StackNum(int.from_bytes(value, "big"))


async def test_non_owner_is_refused_and_changes_nothing(env: Env) -> None:
    root = env.root
    await env.send(env.owner, allowlist_body(AllowList.WORKER, IMAGE, add=True))
    before = await root.allowlists()
    data_before = env.chain.account(root.address).data_boc
    stranger_before = env.chain.balance(env.stranger.wallet.address)

    for body in (
        allowlist_body(AllowList.WORKER, OTHER, add=True),
        allowlist_body(AllowList.WORKER, IMAGE, add=False),
        allowlist_body(AllowList.MODEL, model_hash(MODEL), add=True),
        allowlist_body(AllowList.PROXY, PROXY, add=True),
        change_owner_body(env.stranger.wallet.address),
    ):
        assert await env.send(env.stranger, body) == EXIT_NOT_OWNER
        [tx] = env.chain.transactions(root.address, limit=1)
        assert tx.aborted
        # the bounceable command's value comes back to the stranger as a bounce
        [bounce] = tx.out_msgs
        assert bounce.bounced and bounce.destination == env.stranger.wallet.address
        assert bounce.value > parse_ton("0.03")

    assert env.chain.account(root.address).data_boc == data_before
    assert await root.allowlists() == before
    assert not await root.is_worker_hash_allowed(OTHER)
    assert await root.is_worker_hash_allowed(IMAGE)
    assert await root.owner() == env.owner.wallet.address
    assert await root.version() == 1
    # the stranger paid fees only: the bounces refunded most of the 5 x 0.05 TON
    spent = stranger_before - env.chain.balance(env.stranger.wallet.address)
    assert 0 < spent < parse_ton("0.1")


async def test_remove_and_idempotent_commands(env: Env) -> None:
    root = env.root
    add = allowlist_body(AllowList.WORKER, IMAGE, add=True)
    remove = allowlist_body(AllowList.WORKER, IMAGE, add=False)
    assert await env.send(env.owner, add) == 0
    assert await env.send(env.owner, add) == 0  # already listed: accepted, no change
    assert (await root.allowlists()).worker == {IMAGE}
    assert await env.send(env.owner, allowlist_body(AllowList.WORKER, OTHER, add=True)) == 0
    assert await env.send(env.owner, remove) == 0
    assert not await root.is_worker_hash_allowed(IMAGE)
    assert await root.is_worker_hash_allowed(OTHER)
    assert await env.send(env.owner, remove) == 0  # not listed: accepted, no change
    assert (await root.allowlists()).worker == {OTHER}

    await env.send(env.owner, allowlist_body(AllowList.MODEL, model_hash(MODEL), add=True))
    await env.send(env.owner, allowlist_body(AllowList.PROXY, PROXY, add=True))
    await env.send(env.owner, allowlist_body(AllowList.MODEL, model_hash(MODEL), add=False))
    await env.send(env.owner, allowlist_body(AllowList.PROXY, PROXY, add=False))
    lists = await root.allowlists()
    assert (lists.model, lists.proxy) == (frozenset(), frozenset())
    assert await root.version() == 9


async def test_unknown_op_and_plain_top_up(env: Env) -> None:
    unknown = cell_to_boc(begin_cell().store_uint(0x12345678, 32).store_uint(0, 64).end_cell())
    assert await env.send(env.owner, unknown) == EXIT_UNKNOWN_OP
    empty = cell_to_boc(begin_cell().end_cell())
    before = env.chain.balance(env.root.address)
    assert await env.send(env.stranger, empty) == 0  # anyone may top the root up
    assert env.chain.balance(env.root.address) > before
    assert await env.root.version() == 0


async def test_change_owner(env: Env) -> None:
    new = env.stranger.wallet.address
    assert await env.send(env.owner, change_owner_body(new)) == 0
    assert await env.root.owner() == new
    body = allowlist_body(AllowList.WORKER, IMAGE, add=True)
    assert await env.send(env.owner, body) == EXIT_NOT_OWNER
    assert await env.send(env.stranger, body) == 0
    assert await env.root.is_worker_hash_allowed(IMAGE)


async def test_initial_lists_and_deploy_by_wallet(env: Env) -> None:
    """A root deployed by a wallet transfer, its lists given at deployment (serialised in
    Python, looked up by the contract's DICTUGET)."""
    extra = [os.urandom(32) for _ in range(5)]
    deployment = state_init(
        env.owner.wallet.address,
        worker_hashes=[IMAGE, *extra],
        model_hashes=[model_hash(MODEL)],
        proxy_hashes=[PROXY],
    )
    assert deployment.address != env.root.address
    signed = env.owner.wallet.create_transfer(
        env.owner.key,
        [deploy_transfer(deployment, parse_ton("0.5"))],
        seqno=env.owner.seqno,
        valid_until=NOW + 600,
    )
    await env.client.send_boc(signed.boc)
    assert await env.client.get_address_state(deployment.address) == "active"
    root = RootContract(env.client, deployment.address.to_friendly())
    assert await _state(root) == (True, True, True, 0)
    for value in extra:
        assert await root.is_worker_hash_allowed(value)
    assert (await root.allowlists()).worker == {IMAGE, *extra}
    assert not await root.is_worker_hash_allowed(OTHER)


def test_root_address_depends_on_owner_only_for_empty_lists() -> None:
    a, b = Address(0, b"\x01" * 32), Address(0, b"\x02" * 32)
    assert root_mod.root_address(a) == state_init(a).address
    assert root_mod.root_address(a) != root_mod.root_address(b)
    assert root_mod.root_address(a, workchain=-1).workchain == -1


def test_model_hash_is_sha256_of_the_full_string() -> None:
    assert model_hash(MODEL) == hashlib.sha256(MODEL.encode()).digest()
    # name with '@'-free slashes and dots is fine; the split is at the last '@'
    odd = "org/model-v1.5@1234:abcd"
    assert model_hash(odd) == hashlib.sha256(odd.encode()).digest()
    for bad in ("", "name", "name@commit", "@commit:verity", "name@:verity", "name@c:", " a@b:c"):
        with pytest.raises(RootContractError):
            model_hash(bad)


def test_parse_hash() -> None:
    assert parse_hash("0x" + IMAGE.hex().upper()) == IMAGE
    for bad in ("", "ab", IMAGE.hex() + "00", "zz" * 32):
        with pytest.raises(RootContractError):
            parse_hash(bad)


def test_message_bodies_follow_cocoon_layout() -> None:
    expected_ops = {
        (AllowList.WORKER, True): 0xE34B1C60,
        (AllowList.WORKER, False): 0x8D94A79A,
        (AllowList.MODEL, True): 0xC146134D,
        (AllowList.MODEL, False): 0x92B11C18,
        (AllowList.PROXY, True): 0x71860E80,
        (AllowList.PROXY, False): 0x3C41D0B2,
    }
    for (kind, add), op in expected_ops.items():
        body = cell_from_boc(allowlist_body(kind, IMAGE, add=add, query_id=42)).begin_parse()
        assert body.load_uint(32) == op
        assert body.load_uint(64) == 42
        assert body.load_bytes(32) == IMAGE
        assert body.remaining_bits == 0 and body.remaining_refs == 0
    owner = Address(0, b"\x05" * 32)
    body = cell_from_boc(change_owner_body(owner)).begin_parse()
    assert body.load_uint(32) == 0xC4A1AE54
    assert body.load_uint(64) == 0
    loaded = body.load_address()
    assert (loaded.wc, bytes(loaded.hash_part)) == (0, owner.account_id)
    with pytest.raises(RootContractError):
        allowlist_body(AllowList.MODEL, b"short", add=True)
    with pytest.raises(RootContractError):
        allowlist_body(AllowList.MODEL, IMAGE, add=True, query_id=-1)


def test_committed_code_matches_the_source() -> None:
    """The BOC in the package was compiled from contracts/cocoon_root.fc as it is now
    (hack/build-contracts records the source's SHA-256; --check recompiles)."""
    record_path = REPO / "operator/cocoon_operator/ton/contracts/cocoon_root.code.json"
    record = json.loads(record_path.read_text())
    source = (REPO / record["source"]).read_bytes()
    assert hashlib.sha256(source).hexdigest() == record["source_sha256"], (
        "contracts/cocoon_root.fc changed: run hack/build-contracts"
    )
    assert len(boc_hash(ROOT_CODE_BOC)) == 32


def test_examples_name_the_root_the_local_chain_deploys() -> None:
    """examples/ point at the root ``localchain --root`` deploys (empty at deployment,
    owned by the dev root-owner wallet), so the demo needs no edits to reach it."""
    owner = WalletV4R2(WalletKey(DEFAULT_ROOT_OWNER_SEED).public_key).address
    expected = root_mod.root_address(owner).to_raw()
    repo = Path(__file__).resolve().parents[3]
    for name in ("cocoonworker.yaml", "cocoonworkerpool.yaml"):
        for doc in yaml.safe_load_all((repo / "examples" / name).read_text()):
            spec = doc.get("spec", {})
            spec = spec.get("template", {}).get("spec", spec)
            if "rootContractAddress" in spec:
                assert normalize_address(spec["rootContractAddress"]) == expected, name
