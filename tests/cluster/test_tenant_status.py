"""A tenant who may patch ``cocoonworkers/status`` (and pod status) cannot steer money.

Status is the operator's output. Everything that decides a top-up or a
registration on the root (the verified evidence, the image hash it showed,
the root contract's reading, the node wallet's address) is what this operator
verified and read itself, kept in its memory and re-derived after a restart
(``handlers/trust.py``). Here the tenant forges each of them on the real
apiserver, through the status subresource, while the root contract cannot be
read (the TON API answers HTTP 500 to get-methods, so the operator has no
reading of its own that would overwrite the forgery), and the operator must
do nothing with them: no top-up, no registration of the forged hash, no gate
opened. Once the API answers again the operator reads the lists itself,
registers the image it attested (never the forged one) and funds the wallet
its launcher derived (never the forged address).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import READINESS_GATE
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.root import AllowList, RootContract, model_hash
from tests.cluster.chainproxy import ChainProxy, chain_proxy
from tests.cluster.helpers import (
    attested_is,
    create_worker,
    get_worker,
    pod_conditions,
    seed_secret,
    treasury_secret,
    worker_pods,
)
from tests.cluster.operator import StartOperator
from tests.cluster.simulated import (
    Agent,
    Chain,
    example_image_hash,
    example_model,
    running_agent,
    running_local_chain,
)
from tests.cluster.stack import Stack
from tests.cluster.wait import OperatorMetrics, eventually

API = (v1alpha1.GROUP, v1alpha1.VERSION)
FORGED_IMAGE = "ee" * 32
ATTACKER = "0:" + "a1" * 32  # the tenant's own address, forged as the node wallet
#: Eight ticks of each of the two workers' timers (--chain-check-seconds 2, the
#: shortest interval): a chain check in each, an attestation check in most.
CHECKS = 16


@dataclasses.dataclass(frozen=True)
class Env:
    agent: Agent
    chain: Chain  # the chain itself, for the test's own readings
    proxy: ChainProxy  # what the operator talks to
    namespace: str

    def operator_args(self) -> tuple[str, ...]:
        ns = self.namespace
        return (
            *self.agent.operator_args(),
            "--attestation-check-seconds",
            "3",
            "--ton-endpoint",
            self.proxy.url,
            "--chain-check-seconds",
            "2",
            "--treasury-secret",
            f"{ns}/treasury",
            "--funding-ledger",
            f"{ns}/cocoon-funding-ledger",
            "--root-owner-secret",
            f"{ns}/root-owner",
            "--registration-ledger",
            f"{ns}/cocoon-registration-ledger",
            # The operator's registration policy: this namespace, the example's image.
            "--registration-namespace",
            ns,
            "--registration-image-hash",
            example_image_hash(),
        )


@pytest.fixture
def listed_images(request: pytest.FixtureRequest) -> list[str]:
    """The image hashes the root lists at start (the example's model is always listed)."""
    images: list[str] = getattr(request, "param", [])
    return images


@pytest.fixture
async def env(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path, listed_images: list[str]
) -> AsyncIterator[Env]:
    models = [example_model()]
    with running_local_chain(tmp_path, models=models, image_hashes=listed_images) as chain:
        await treasury_secret(api, namespace, chain)
        await seed_secret(api, namespace, chain.root_owner_seed_hex, name="root-owner")
        async with chain_proxy(chain.api_url) as proxy:
            with running_agent(stack.kubeconfig, namespace, tmp_path) as agent:
                yield Env(agent, chain, proxy, namespace)


async def forge_status(
    api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """What anyone with ``cocoonworkers/status`` patch rights can do."""
    await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        *API,
        namespace,
        v1alpha1.PLURAL,
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
    )


async def forge_gate(api: client.ApiClient, namespace: str, name: str) -> None:
    """What anyone with ``pods/status`` patch rights can do: claim the gate open."""
    (pod,) = await worker_pods(api, namespace, name)
    condition = {"type": READINESS_GATE, "status": "True", "reason": "EvidenceVerified"}
    await client.CoreV1Api(api).patch_namespaced_pod_status(
        pod.metadata.name, namespace, {"status": {"conditions": [condition]}}
    )


async def intents(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    try:
        cm = await client.CoreV1Api(api).read_namespaced_config_map(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return []
        raise
    found: list[dict[str, Any]] = json.loads((cm.data or {}).get("ledger.json", "{}")).get(
        "intents", []
    )
    return found


async def root_lists_image(chain: Chain, image_hash: str) -> bool:
    async with TonClient(chain.api_url, timeout=10) as ton:
        return await RootContract(ton, chain.root_address).is_allowed(
            AllowList.WORKER, bytes.fromhex(image_hash)
        )


async def balance_of(chain: Chain, address: str) -> int:
    async with TonClient(chain.api_url, timeout=10) as ton:
        return await ton.get_address_balance(address)


def listed_reading(rev: str, image: str, *, image_listed: bool) -> dict[str, Any]:
    return {
        "revision": rev,
        "modelHash": model_hash(example_model()).hex(),
        "modelHashListed": True,
        "imageHash": image,
        "imageHashListed": image_listed,
        "source": "operator",
        "error": None,
    }


async def attested_workers(api: client.ApiClient, namespace: str, env: Env) -> None:
    """``t`` attested (no listing read: the VM starts all the same), ``bad`` refused."""
    await create_worker(api, namespace, "t", registerOnRoot=True)
    other = {"allowedImageHashes": ["00" * 32]}  # its evidence is refused
    await create_worker(api, namespace, "bad", attestation=other)
    await eventually(attested_is(api, namespace, "t", "True"), within=120, what="t attested")
    await eventually(
        attested_is(api, namespace, "bad", "False", "EvidenceRejected"),
        within=60,
        what="bad's evidence refused",
    )
    assert env.proxy.served[("error", "runGetMethod")] > 0


async def funded(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    worker = await get_worker(api, namespace, name)
    wallet = (worker.get("status") or {}).get("wallet") or {}
    return worker if wallet.get("balance", 0) >= v1alpha1.NANO_PER_TON else None


async def funded_workers(api: client.ApiClient, namespace: str) -> set[str]:
    found = await intents(api, namespace, "cocoon-funding-ledger")
    return {t["worker"] for i in found for t in i["transfers"]}


@pytest.mark.parametrize("listed_images", [[example_image_hash()]], indirect=True)
async def test_a_forged_listing_wallet_address_or_verdict_funds_nobody(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    image = example_image_hash()
    # The root contract cannot be read: the operator has no listing of its own.
    env.proxy.set_mode("error", failing=frozenset({"runGetMethod"}))
    metrics = OperatorMetrics.on_free_port()
    args = (*env.operator_args(), *metrics.args())
    proc = operator(*args, log=log)
    await attested_workers(api, namespace, env)
    good = await get_worker(api, namespace, "t")
    bad = await get_worker(api, namespace, "bad")

    # On t, the listing gate and the wallet address; on bad, verified evidence,
    # the listing, and the pod's gate held open by hand.
    await forge_status(
        api,
        namespace,
        "t",
        {
            "chain": listed_reading(good["status"]["targetRevision"], image, image_listed=True),
            "wallet": {"address": ATTACKER, "balance": 0},
        },
    )
    await forge_status(
        api,
        namespace,
        "bad",
        {
            "attestation": {
                "failure": None,
                "failedAt": None,
                "imageHash": image,
                "verifiedAt": "2099-01-01T00:00:00Z",
                "expiresAt": "2099-01-01T00:00:00Z",
                "pod": bad["status"]["pod"],
            },
            "chain": listed_reading(bad["status"]["targetRevision"], image, image_listed=True),
        },
    )
    await forge_gate(api, namespace, "bad")
    await metrics.checks_ran(CHECKS, what="eight more checks of each worker")
    assert await intents(api, namespace, "cocoon-funding-ledger") == []
    assert await balance_of(env.chain, ATTACKER) == 0
    _, gate = await pod_conditions(api, namespace, "bad")
    assert gate[READINESS_GATE].status == "False"  # verified again and closed

    # The API answers again: the operator reads the lists itself and funds the
    # wallet t's launcher derived; bad, never verified, gets nothing.
    env.proxy.set_mode("pass")
    worker = await eventually(lambda: funded(api, namespace, "t"), within=120, what="t funded")
    assert worker["status"]["wallet"]["address"] != ATTACKER
    assert await balance_of(env.chain, ATTACKER) == 0
    assert await funded_workers(api, namespace) == {f"{namespace}/t"}
    assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_forged_image_hash_is_never_registered_on_the_owned_root(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    image = example_image_hash()  # attested, and not listed by the root
    env.proxy.set_mode("error", failing=frozenset({"runGetMethod"}))
    metrics = OperatorMetrics.on_free_port()
    args = (*env.operator_args(), *metrics.args())
    proc = operator(*args, log=log)
    await attested_workers(api, namespace, env)
    rev = (await get_worker(api, namespace, "t"))["status"]["targetRevision"]

    # A forged image hash, as attested and as read unlisted, on a worker whose
    # hashes the operator registers on the root it owns.
    await forge_status(
        api,
        namespace,
        "t",
        {
            "attestation": {"imageHash": FORGED_IMAGE},
            "chain": listed_reading(rev, FORGED_IMAGE, image_listed=False),
        },
    )
    await metrics.checks_ran(CHECKS, what="eight more checks of each worker")
    assert await intents(api, namespace, "cocoon-registration-ledger") == []
    assert not await root_lists_image(env.chain, FORGED_IMAGE)

    # The API answers again: the operator reads the lists itself, registers
    # the image it attested (never the forged one), then funds t.
    env.proxy.set_mode("pass")
    await eventually(lambda: funded(api, namespace, "t"), within=150, what="t funded")
    assert await root_lists_image(env.chain, image)
    assert not await root_lists_image(env.chain, FORGED_IMAGE)
    [registration] = await intents(api, namespace, "cocoon-registration-ledger")
    purposes = [t["purpose"] for t in registration["transfers"]]
    assert any(image in p for p in purposes), purposes
    assert not any(FORGED_IMAGE in p for p in purposes), purposes
    assert await funded_workers(api, namespace) == {f"{namespace}/t"}
    assert proc.poll() is None, log.read_text()[-3000:]
