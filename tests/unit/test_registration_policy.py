"""The registrar against the local chain (the project's root and a real v4r2 owner
wallet in the real TVM): the operator's registration policy, the owner's daily
cap, and a hash the root's owner removed, which is never registered again, even
after the ledger pruned the message that first registered it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cocoon_operator.funding import MemoryLedgerStore, Treasury
from cocoon_operator.handlers.registration import COMMAND_NANOTON, Registrar
from cocoon_operator.policy.treasury import RegistrationPolicy
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.localchain import LocalChain, start_local_chain
from cocoon_operator.ton.root import (
    AllowList,
    RootContract,
    allowlist_body,
    deploy_local,
    state_init,
)
from cocoon_operator.ton.wallet import Transfer, WalletKey, WalletV4R2
from tests.unit.clocks import OffsetClock

OWNER_SEED = b"\x07" * 32
IMAGE = hashlib.sha256(b"attested image").hexdigest()
MODEL = hashlib.sha256(b"a model").hexdigest()
OTHER_MODEL = hashlib.sha256(b"another model").hexdigest()
DAY = 86_400


@dataclass
class Env:
    ton: TonClient
    clock: OffsetClock
    key: WalletKey
    wallet: WalletV4R2
    root: RootContract
    root_address: str

    def registrar(self, policy: RegistrationPolicy) -> Registrar:
        owner = Treasury(
            self.ton,
            self.key,
            MemoryLedgerStore(),
            global_daily_cap=0,
            clock=self.clock,
            confirm_timeout=2,
            poll_interval=0.05,
        )
        return Registrar(self.ton, owner, policy=policy, clock=self.clock)

    async def listed(self, kind: AllowList, value: str) -> bool:
        return await self.root.is_allowed(kind, bytes.fromhex(value))

    async def owner_removes(self, kind: AllowList, value: str) -> None:
        """The root's owner takes a hash off with its own wallet, as a person would."""
        seqno = (await self.ton.get_wallet_information(self.wallet.address)).seqno or 0
        signed = self.wallet.create_transfer(
            self.key,
            [
                Transfer(
                    self.root_address,
                    parse_ton("0.05"),
                    bounce=True,
                    body_boc=allowlist_body(kind, bytes.fromhex(value), add=False),
                )
            ],
            seqno=seqno,
            valid_until=int(self.clock()) + 60,
        )
        await self.ton.send_boc(signed.boc)
        assert not await self.listed(kind, value)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = OffsetClock()
    chain = LocalChain(clock=clock)
    key = WalletKey(OWNER_SEED)
    wallet = chain.deploy_wallet(key, parse_ton("100"))
    address = deploy_local(chain, state_init(wallet.address), parse_ton("1"))
    running = await start_local_chain(chain)
    ton = TonClient(running.api_url, timeout=10)
    try:
        root = RootContract(ton, address)
        yield Env(ton, clock, key, wallet, root, address.to_raw())
    finally:
        await ton.close()
        await running.close()


ALLOWED = RegistrationPolicy(namespaces=frozenset({"team"}), image_hashes=frozenset({IMAGE}))


async def test_a_hash_the_owner_removed_is_never_registered_again(env: Env) -> None:
    registrar = env.registrar(ALLOWED)
    note = await registrar.register("team/w", env.root_address, [(AllowList.WORKER, IMAGE)])
    assert note == "registered"
    assert await env.listed(AllowList.WORKER, IMAGE)
    await env.owner_removes(AllowList.WORKER, IMAGE)
    version = await env.root.version()

    # Three days on, another registration rewrites (and prunes) the ledger; the
    # removed hash is asked for again by a worker that still runs that image.
    env.clock.offset = 3 * DAY
    note = await registrar.register("team/w", env.root_address, [(AllowList.MODEL, MODEL)])
    assert note == "registered"
    assert (await registrar.owner.ledger()).intents[0].transfers[0].purpose.endswith(MODEL)
    note = await registrar.register("team/w", env.root_address, [(AllowList.WORKER, IMAGE)])
    assert note.startswith("not registered") and "its owner removed it" in note
    assert not await env.listed(AllowList.WORKER, IMAGE)
    assert await env.root.version() == version + 1  # the model only
    # The reconcile hears the same from the registrar's memory of the ledger.
    why = registrar.refusal("team/w", env.root_address, [(AllowList.WORKER, IMAGE)])
    assert why is not None and "never registered again" in why


async def test_a_registration_just_confirmed_is_not_taken_for_a_removal(env: Env) -> None:
    registrar = env.registrar(ALLOWED)
    await registrar.register("team/w", env.root_address, [(AllowList.WORKER, IMAGE)])
    assert registrar.refusal("team/w", env.root_address, [(AllowList.WORKER, IMAGE)]) is None
    env.clock.offset = registrar.removal_grace.total_seconds() + 1
    assert registrar.refusal("team/w", env.root_address, [(AllowList.WORKER, IMAGE)])


async def test_only_allowed_namespaces_and_images_spend_the_owners_key(env: Env) -> None:
    registrar = env.registrar(ALLOWED)
    other = await registrar.register("other/w", env.root_address, [(AllowList.MODEL, MODEL)])
    assert other.startswith("not registered: namespace other")
    strange = hashlib.sha256(b"some genuine image nobody allowed").hexdigest()
    image = await registrar.register("team/w", env.root_address, [(AllowList.WORKER, strange)])
    assert image.startswith("not registered: image hash " + strange)
    assert (await env.ton.get_wallet_information(env.wallet.address)).seqno == 0  # nothing sent
    assert await env.root.version() == 0


async def test_the_owner_wallet_spends_at_most_its_daily_cap(env: Env) -> None:
    registrar = env.registrar(
        RegistrationPolicy(frozenset({"team"}), frozenset({IMAGE}), daily_cap=2 * COMMAND_NANOTON)
    )
    assert (
        await registrar.register(
            "team/w", env.root_address, [(AllowList.MODEL, MODEL), (AllowList.WORKER, IMAGE)]
        )
        == "registered"
    )
    over = await registrar.register("team/w", env.root_address, [(AllowList.MODEL, OTHER_MODEL)])
    assert over.startswith("not registered: the root owner's daily cap")
    assert not await env.listed(AllowList.MODEL, OTHER_MODEL)
    env.clock.offset = DAY  # a new UTC day
    note = await registrar.register("team/w", env.root_address, [(AllowList.MODEL, OTHER_MODEL)])
    assert note == "registered"
    assert await env.root.version() == 3
