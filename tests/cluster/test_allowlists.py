"""The root contract's allow-lists on the local stack (real TVM, the project's root).

The operator reads the lists itself: an unlisted model never gets a VM, an
attested image the root does not list loses its VM (the GPU is released) and
gets no money until the root's owner lists it; and on a root the operator
owns, workers that opt in get their attested hashes registered exactly once,
even when the operator is killed right after the owner's message went out.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.root import AllowList, RootContract, allowlist_body, model_hash
from cocoon_operator.ton.wallet import Transfer, WalletKey, WalletV4R2
from tests.cluster.helpers import (
    TARGET,
    balances,
    conditions,
    create_worker,
    get_worker,
    killed_at_failpoint,
    ready,
    seed_secret,
    treasury_seqno,
    worker_pods,
)
from tests.cluster.operator import StartOperator, running_operator
from tests.cluster.simulated import (
    Agent,
    Chain,
    example_image_hash,
    example_model,
    running_agent,
    running_local_chain,
)
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

Doc = dict[str, Any]


@dataclass(frozen=True)
class Env:
    agent: Agent
    chain: Chain
    namespace: str

    def operator_args(
        self,
        *,
        treasury: bool = True,
        owner: bool = False,
        allow_namespace: str | None = None,
        allow_images: tuple[str, ...] | None = None,
    ) -> tuple[str, ...]:
        """The operator's flags; with ``owner``, registration is allowed for this test's
        namespace and the example's image unless ``allow_*`` say otherwise."""
        args = [*self.agent.operator_args(), "--ton-endpoint", self.chain.api_url]
        args += ["--chain-check-seconds", "2"]
        if treasury:
            args += ["--treasury-secret", f"{self.namespace}/treasury"]
            args += ["--funding-ledger", f"{self.namespace}/cocoon-funding-ledger"]
        if owner:
            args += ["--root-owner-secret", f"{self.namespace}/root-owner"]
            args += ["--registration-ledger", f"{self.namespace}/cocoon-registration-ledger"]
            args += ["--registration-namespace", allow_namespace or self.namespace]
            images = (example_image_hash(),) if allow_images is None else allow_images
            for image in images:
                args += ["--registration-image-hash", image]
        return tuple(args)


@pytest.fixture
def lists(request: pytest.FixtureRequest) -> tuple[list[str], list[str]]:
    """(models, image hashes) the root lists at start: the example's model only,
    unless a test parametrizes it (indirectly)."""
    default: tuple[list[str], list[str]] = ([example_model()], [])
    return getattr(request, "param", default)


@pytest.fixture
def local_chain(tmp_path: Path, lists: tuple[list[str], list[str]]) -> Iterator[Chain]:
    models, images = lists
    with running_local_chain(tmp_path, models=models, image_hashes=images) as chain:
        yield chain


@pytest.fixture
async def env(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    local_chain: Chain,
    treasury: str,
) -> AsyncIterator[Env]:
    await seed_secret(api, namespace, local_chain.root_owner_seed_hex, name="root-owner")
    with running_agent(stack.kubeconfig, namespace, tmp_path) as agent:
        yield Env(agent, local_chain, namespace)


def condition_is(api: client.ApiClient, namespace: str, name: str, kind: str, reason: str) -> Any:
    async def probe() -> Doc | None:
        worker = await get_worker(api, namespace, name)
        return worker if conditions(worker).get(kind, {}).get("reason") == reason else None

    return probe


async def events_of(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    got = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [e.reason for e in got.items]


async def owner_lists_image(chain: Chain, image_hash: str, *, add: bool = True) -> None:
    """The root's owner adds (or removes) ``image_hash`` with its own wallet, as a
    person would."""
    key = WalletKey(bytes.fromhex(chain.root_owner_seed_hex))
    wallet = WalletV4R2(key.public_key)
    body = allowlist_body(AllowList.WORKER, bytes.fromhex(image_hash), add=add)
    async with TonClient(chain.api_url, timeout=10) as ton:
        seqno = (await ton.get_wallet_information(wallet.address)).seqno or 0
        signed = wallet.create_transfer(
            key,
            [Transfer(chain.root_address, parse_ton("0.05"), bounce=True, body_boc=body)],
            seqno=seqno,
            valid_until=2**32 - 1,
        )
        await ton.send_boc(signed.boc)
        assert add == await RootContract(ton, chain.root_address).is_allowed(
            AllowList.WORKER, bytes.fromhex(image_hash)
        )


async def root_version(chain: Chain) -> int:
    async with TonClient(chain.api_url, timeout=10) as ton:
        return await RootContract(ton, chain.root_address).version()


async def registration_intents(api: client.ApiClient, namespace: str) -> list[Doc]:
    cm = await client.CoreV1Api(api).read_namespaced_config_map(
        "cocoon-registration-ledger", namespace
    )
    intents: list[Doc] = json.loads(cm.data["ledger.json"])["intents"]
    return intents


async def test_unlisted_hashes_hold_no_gpu_and_get_no_money_until_listed(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    image = example_image_hash()
    unlisted_model = {"commit": "4" * 40}
    proc = operator(*env.operator_args(), log=log)
    await create_worker(api, namespace, "listed-model")
    full = {**(await get_worker(api, namespace, "listed-model"))["spec"]["model"]}
    await create_worker(api, namespace, "unlisted-model", model=full | unlisted_model)

    # The attested image is not listed: OnChainAllowed names it, the VM is stopped.
    worker = await eventually(
        condition_is(api, namespace, "listed-model", "Scheduled", "NotListed"),
        within=120,
        what="the unlisted image's VM stopped",
    )
    allowed = conditions(worker)["OnChainAllowed"]
    assert (allowed["status"], allowed["reason"]) == ("False", "NotListed")
    assert f"image hash {image}" in allowed["message"]
    assert worker["status"]["chain"]["imageHash"] == image
    assert worker["status"]["attestation"]["imageHash"] == image  # it was attested
    assert await eventually(
        lambda: _no_pods(api, namespace, "listed-model"), within=60, what="GPU released"
    )

    async def stop_announced() -> bool:
        return "StoppingUnlisted" in await events_of(api, namespace, "listed-model")

    await eventually(stop_announced, within=30, what="the stop announced")

    # The unlisted model never got a VM at all.
    held = await get_worker(api, namespace, "unlisted-model")
    scheduled = conditions(held)["Scheduled"]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "NotListed")
    missing = model_hash(example_model(**unlisted_model)).hex()
    assert f"model hash {missing}" in scheduled["message"]
    assert await worker_pods(api, namespace, "unlisted-model") == []
    assert "LauncherCreated" not in await events_of(api, namespace, "unlisted-model")
    assert await treasury_seqno(env) == 0  # nobody was paid

    # The owner lists the image: the worker starts again and is funded.
    await owner_lists_image(env.chain, image)
    worker = await eventually(
        ready(api, namespace, "listed-model"), within=120, what="Ready once listed"
    )
    assert conditions(worker)["OnChainAllowed"]["reason"] == "Listed"
    assert worker["status"]["chain"]["source"] == "operator"
    assert await balances(env, [worker["status"]["wallet"]["address"]]) == [TARGET]
    assert await worker_pods(api, namespace, "unlisted-model") == []
    assert proc.poll() is None, log.read_text()[-3000:]


async def _no_pods(api: client.ApiClient, namespace: str, name: str) -> bool:
    return await worker_pods(api, namespace, name) == []


@pytest.mark.parametrize("lists", [([], [])], indirect=True)
async def test_owned_root_gets_attested_hashes_registered_once(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    args = env.operator_args(owner=True)
    proc = operator(*args, log=log)
    for name in ("r0", "r1"):
        await create_worker(api, namespace, name, registerOnRoot=True)
    workers = [
        await eventually(ready(api, namespace, n), within=150, what=f"{n} Ready")
        for n in ("r0", "r1")
    ]
    for w in workers:
        assert conditions(w)["OnChainAllowed"]["reason"] == "Listed"
    # One model command and one image command: the root applied exactly two.
    assert await root_version(env.chain) == 2
    [intent] = await registration_intents(api, namespace)
    assert intent["state"] == "confirmed"
    assert sorted(t["purpose"].split(":")[-2] for t in intent["transfers"]) == [
        "model",
        "worker",
    ]
    reasons = await events_of(api, namespace, "r0") + await events_of(api, namespace, "r1")
    assert reasons.count("Registered") == 1
    assert proc.poll() is None, log.read_text()[-3000:]


@pytest.mark.parametrize("lists", [([], [])], indirect=True)
async def test_kill_9_after_a_registration_went_out_never_registers_twice(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    args = env.operator_args(owner=True, treasury=False)
    crash = {"COCOON_FAILPOINTS": "funding.after-send"}
    with running_operator(stack.kubeconfig, namespace, log, *args, env_extra=crash) as proc:
        await create_worker(api, namespace, "r0", registerOnRoot=True)
        await killed_at_failpoint(proc, within=120)
    [sent] = await registration_intents(api, namespace)
    assert sent["state"] == "pending"  # recorded, sent, never confirmed

    proc = operator(*args, log=log)
    await eventually(
        condition_is(api, namespace, "r0", "OnChainAllowed", "Listed"),
        within=120,
        what="listed after the restart",
    )
    [intent] = await registration_intents(api, namespace)
    assert intent["id"] == sent["id"]
    assert intent["state"] == "confirmed"  # found on chain, not re-sent
    assert await root_version(env.chain) == 2
    assert proc.poll() is None, log.read_text()[-3000:]


async def _event_messages(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    got = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [f"{e.reason}: {e.message}" for e in got.items]


@pytest.mark.parametrize("lists", [([], [])], indirect=True)
async def test_registration_is_refused_for_a_namespace_the_operator_does_not_allow(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    args = env.operator_args(owner=True, allow_namespace="somewhere-else")
    proc = operator(*args, log=log)
    await create_worker(api, namespace, "r0", registerOnRoot=True)
    worker = await eventually(
        condition_is(api, namespace, "r0", "Scheduled", "NotListed"),
        within=120,
        what="held: its namespace may not register",
    )
    message = conditions(worker)["Scheduled"]["message"]
    assert f"namespace {namespace} may not register" in message
    assert "--registration-namespace" in message
    allowed = conditions(worker)["OnChainAllowed"]
    assert allowed["reason"] == "NotListed" and "--registration-namespace" in allowed["message"]

    async def announced() -> bool:  # recorded after the status write
        return any(
            m.startswith("NotListed:") and "--registration-namespace" in m
            for m in await _event_messages(api, namespace, "r0")
        )

    await eventually(announced, within=30, what="a NotListed Event naming the flag")
    assert await worker_pods(api, namespace, "r0") == []  # no VM, no GPU
    assert await root_version(env.chain) == 0  # the owner's key did nothing
    assert proc.poll() is None, log.read_text()[-3000:]


@pytest.mark.parametrize("lists", [([], [])], indirect=True)
async def test_an_attested_image_the_operator_does_not_allow_is_not_registered(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    args = env.operator_args(owner=True, allow_images=("ab" * 32,))
    image = example_image_hash()
    proc = operator(*args, log=log)
    await create_worker(api, namespace, "r0", registerOnRoot=True)
    # The VM runs and is attested (its namespace may register); its image is not
    # one the operator may register: nothing is registered (model and image go
    # together), the VM is stopped.
    worker = await eventually(
        condition_is(api, namespace, "r0", "Scheduled", "NotListed"),
        within=150,
        what="held: its image may not be registered",
    )
    message = conditions(worker)["Scheduled"]["message"]
    assert f"image hash {image}" in message and "--registration-image-hash" in message
    assert worker["status"]["attestation"]["imageHash"] == image  # it was attested
    assert await root_version(env.chain) == 0  # the owner's key did nothing
    assert await eventually(lambda: _no_pods(api, namespace, "r0"), within=60, what="GPU released")
    assert proc.poll() is None, log.read_text()[-3000:]


@pytest.mark.parametrize("lists", [([], [])], indirect=True)
async def test_a_hash_the_roots_owner_removed_is_not_registered_again(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    image = example_image_hash()
    proc = operator(*env.operator_args(owner=True), log=log)
    await create_worker(api, namespace, "r0", registerOnRoot=True)
    await eventually(ready(api, namespace, "r0"), within=150, what="registered and Ready")
    assert await root_version(env.chain) == 2
    await owner_lists_image(env.chain, image, add=False)  # the owner takes it off
    assert await root_version(env.chain) == 3
    # After the grace for a landing registration, the operator says why and
    # holds the worker; it never sends the image again.
    worker = await eventually(
        condition_is(api, namespace, "r0", "Scheduled", "NotListed"),
        within=150,
        what="held: the owner removed the image",
    )
    assert "its owner removed it" in conditions(worker)["OnChainAllowed"]["message"]

    async def removal_announced() -> bool:  # recorded after the status write
        messages = await _event_messages(api, namespace, "r0")
        return any("its owner removed it" in m for m in messages)

    await eventually(removal_announced, within=30, what="an Event: the owner removed it")
    intents = await registration_intents(api, namespace)
    assert len(intents) == 1  # the first registration only
    assert await root_version(env.chain) == 3
    async with TonClient(env.chain.api_url, timeout=10) as ton:
        root = RootContract(ton, env.chain.root_address)
        assert not await root.is_allowed(AllowList.WORKER, bytes.fromhex(image))
    assert proc.poll() is None, log.read_text()[-3000:]
