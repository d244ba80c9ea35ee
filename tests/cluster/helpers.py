"""What cluster tests share besides fixtures: the example worker and workers made from
it, probes on their status, Pods and Events, the simulated workers' harness, the local
chain's balances and the funding ledger, pools, seal servers and the chart's paths.

Test files import these from here, never from one another (a unit test,
tests/unit/test_test_imports.py, holds that): a test file is run, not a library, and
importing one runs its module-level fixtures and parametrizations in another's module.
Fixtures live in tests/cluster/conftest.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.labels import LABEL_INSTANCE, LABEL_WORKER
from cocoon_operator.desired.launcher import WorkerRef
from cocoon_operator.simulator.agent import harness_port
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.cocoonwallet import node_wallet_address_of_key
from cocoon_operator.ton.localchain import DEFAULT_GENESIS_SEED
from cocoon_operator.ton.wallet import WalletKey, WalletV4R2
from cocoon_operator.workerapi import StatusPage, parse_status_page
from tests.cluster.stack import REPO
from tests.cluster.wait import eventually

if TYPE_CHECKING:
    from tests.cluster.simulated import Chain, Env


async def seed_secret(
    api: client.ApiClient, namespace: str, seed_hex: str, name: str = "treasury"
) -> None:
    """The Secret a wallet's key is read from (``data.seed``: the hex seed, as the
    operator's ``--treasury-secret`` and ``--root-owner-secret`` expect it): the
    treasury by default. Every test makes its treasury here (or through the
    ``treasury`` fixture, which calls this)."""
    seed = base64.b64encode(seed_hex.encode()).decode()
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {"metadata": {"name": name}, "data": {"seed": seed}},  # type: ignore[arg-type]
    )


async def treasury_secret(api: client.ApiClient, namespace: str, chain: Chain) -> None:
    """Secret ``treasury`` in ``namespace``: ``chain``'s genesis wallet, funded at start."""
    await seed_secret(api, namespace, chain.genesis_seed_hex)


# --- The example worker, and workers made from it -------------------------------------------------


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cocoonworker.yaml"


def example_worker() -> dict[str, Any]:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    worker: dict[str, Any] = next(d for d in docs if d["kind"] == v1alpha1.KIND)
    return worker


API = (v1alpha1.GROUP, v1alpha1.VERSION)


def node_wallet_key(namespace: str, name: str) -> str:
    """A worker's own node_wallet_key (32 bytes, base64), fixed by its name: one key per
    worker, as in production (COCOON derives the wallet from key and owner, so
    workers sharing a key share a wallet)."""
    seed = hashlib.sha256(f"node-wallet/{namespace}/{name}".encode()).digest()
    return base64.b64encode(seed).decode()


async def create_worker(
    api: client.ApiClient, namespace: str, name: str, **spec_changes: Any
) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    secret = next(d for d in docs if d["kind"] == "Secret")
    secret["metadata"] = {"name": f"{name}-wallet"}
    secret["stringData"] = {"node-wallet-key": node_wallet_key(namespace, name)}
    try:
        await client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    except ApiException as err:
        if err.status != 409:
            raise
    body = example_worker()
    body["metadata"]["name"] = name
    body["spec"]["nodeWalletKeySecretRef"]["name"] = f"{name}-wallet"
    body["spec"].update(spec_changes)
    created: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        *API, namespace, v1alpha1.PLURAL, body
    )
    return created


async def create_worker_ref(api: client.ApiClient, namespace: str, name: str) -> WorkerRef:
    """The example worker as it is (its wallet Secret not made): its reference."""
    body = example_worker()
    body["metadata"]["name"] = name
    created = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, body
    )
    return WorkerRef(name, namespace, created["metadata"]["uid"])


async def get_worker(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        *API, namespace, v1alpha1.PLURAL, name
    )
    return got


def conditions(worker: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in worker.get("status", {}).get("conditions", [])}


async def worker_pods(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Pod]:
    pods = await client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"{LABEL_WORKER}={name}"
    )
    return list(pods.items)


def worker_deleted(
    api: client.ApiClient, namespace: str, name: str
) -> Callable[[], Awaitable[bool]]:
    """A probe for :func:`eventually`: the worker is gone (its finalizer released)."""

    async def gone() -> bool:
        try:
            await get_worker(api, namespace, name)
        except ApiException as err:
            return err.status == 404
        return False

    return gone


async def try_create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> str | None:
    """None when created, else the apiserver's message."""
    try:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            *API, namespace, v1alpha1.PLURAL, body
        )
    except ApiException as err:
        message: str = json.loads(err.body)["message"]
        return message
    return None


# --- Probes on a worker's status, Pods and Events (for :func:`eventually`) ------------------------


# Transient API errors while a component restarts: the probe says "not yet".
UNAVAILABLE = (ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def condition_is(
    api: client.ApiClient,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    reason: str | None = None,
    text: str = "",
) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """A probe: the worker once its ``kind`` condition has that status (reason, text)."""

    async def probe() -> dict[str, Any] | None:
        try:
            worker = await get_worker(api, namespace, name)
        except UNAVAILABLE:
            return None
        cond = conditions(worker).get(kind, {})
        if cond.get("status") != status or (reason is not None and cond.get("reason") != reason):
            return None
        return worker if text in cond.get("message", "") else None

    return probe


def ready(api: client.ApiClient, namespace: str, name: str) -> Any:
    async def probe() -> dict[str, Any] | None:
        worker = await get_worker(api, namespace, name)
        return worker if conditions(worker).get("Ready", {}).get("status") == "True" else None

    return probe


def attested_is(
    api: client.ApiClient, namespace: str, name: str, status: str, reason: str | None = None
) -> Callable[[], Any]:
    async def probe() -> dict[str, Any] | None:
        worker = await get_worker(api, namespace, name)
        cond = conditions(worker).get("Attested", {})
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return worker
        return None

    return probe


async def pod_conditions(
    api: client.ApiClient, namespace: str, worker: str
) -> tuple[client.V1Pod, dict[str, Any]]:
    (pod,) = await worker_pods(api, namespace, worker)
    return pod, {c.type: c for c in pod.status.conditions or []}


def pod_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def event_reasons(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=CocoonWorker"
    )
    return {e.reason: e.type for e in events.items}


async def has_event(
    api: client.ApiClient, namespace: str, name: str, reason: str, kind: str = "Normal"
) -> bool:
    return (await event_reasons(api, namespace, name)).get(reason) == kind


async def events(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    got = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [f"{e.reason}: {e.message}" for e in got.items]


# --- The simulated workers' harness (simulator/agent.py) ------------------------------------------


def simulator_harness(pod: client.V1Pod) -> str:
    """The base URL of the simulated worker's harness (admin, documents) for ``pod``:
    not a port the pod publishes (simulator/agent.py: harness_port)."""
    slot = InstanceSlot(int(pod.metadata.labels[LABEL_INSTANCE]))
    return f"http://{pod.status.host_ip}:{harness_port(slot)}"


async def simulator_admin(pod: client.V1Pod, path: str) -> None:
    url = simulator_harness(pod) + path
    async with aiohttp.ClientSession() as session, session.post(url) as resp:
        assert resp.status == 200, await resp.text()


async def simulator_stats(pod: client.V1Pod) -> dict[str, Any]:
    url = simulator_harness(pod) + "/simulator/jsonstats"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        doc: dict[str, Any] = await resp.json()
        return doc


def owed_by_every_proxy(pod: client.V1Pod) -> Callable[[], Awaitable[bool]]:
    """Each proxy of ``pod``'s worker owes tokens: committed to the blockchain beyond
    the expected cash-out (COCOON's to_payout(), WorkerProxyInfo.h:64-67)."""

    async def check() -> bool:
        proxies = (await simulator_stats(pod))["proxies"]
        return bool(proxies) and all(
            p["earned_tokens_committed_to_blockchain"] > p["expected_cached_out_tokens"]
            for p in proxies
        )

    return check


async def simulator_page(pod: client.V1Pod) -> StatusPage:
    url = simulator_harness(pod) + "/simulator/stats"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return parse_status_page(await resp.text())


# --- The local chain and the funding ledger -------------------------------------------------------


TON = 1_000_000_000


TARGET = 10 * TON


async def balances(env: Env, addresses: list[str]) -> list[int]:
    async with TonClient(env.chain.api_url, timeout=10) as ton:
        return [await ton.get_address_balance(a) for a in addresses]


async def treasury_seqno(env: Env) -> int:
    treasury = WalletV4R2(WalletKey(DEFAULT_GENESIS_SEED).public_key).address
    async with TonClient(env.chain.api_url, timeout=10) as ton:
        return (await ton.get_wallet_information(treasury)).seqno or 0


async def ledger(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("cocoon-funding-ledger", namespace)
    intents: list[dict[str, Any]] = json.loads(cm.data["ledger.json"])["intents"]
    return intents


def sent_to(intents: list[dict[str, Any]], address: str) -> list[int]:
    return [t["amount"] for i in intents for t in i["transfers"] if t["address"] == address]


def derived_wallet(namespace: str, name: str) -> str:
    owner = example_worker()["spec"]["ownerAddress"]
    return node_wallet_address_of_key(node_wallet_key(namespace, name), owner).to_raw()


async def killed_at_failpoint(
    proc: Any, what: str = "the operator killed at the failpoint", *, within: float = 90
) -> None:
    """Wait for the operator started with ``$COCOON_FAILPOINTS`` to die there (SIGKILL)."""

    async def killed() -> bool:
        return proc.poll() is not None

    await eventually(killed, within=within, what=what)
    assert proc.returncode == -9, proc.returncode


# --- Pools ----------------------------------------------------------------------------------------


REPLICAS, MAX_UNAVAILABLE = 10, 3


def pool_body() -> dict[str, Any]:
    spec = example_worker()["spec"]
    spec.pop("nodeWalletKeySecretRef")
    return {
        "apiVersion": "cocoon.network/v1alpha1",
        "kind": "CocoonWorkerPool",
        "metadata": {"name": "fleet"},
        "spec": {
            "replicas": REPLICAS,
            "strategy": {"maxUnavailable": MAX_UNAVAILABLE, "maxSurge": 0},
            "template": {"labels": {"team": "gpu"}, "spec": spec},
        },
    }


async def pool_workers(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        *API, namespace, "cocoonworkers", label_selector="cocoon.network/pool=fleet"
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


# --- Seal servers ---------------------------------------------------------------------------------


async def seal_pods(core: client.CoreV1Api, namespace: str, enclave: str) -> list[client.V1Pod]:
    pods = await core.list_namespaced_pod(
        namespace,
        label_selector=f"app.kubernetes.io/component=seal-server,cocoon.network/enclave={enclave[:16]}",
    )
    return list(pods.items)


# --- The Helm chart -------------------------------------------------------------------------------


CHART = REPO / "charts" / "cocoon-operator"


KUBE_VERSION = "1.34.4"  # the local stack's (hack/tools/kubernetes)


def release_for(namespace: str) -> str:
    """Cluster-scoped objects carry the release's name: unique per test namespace."""
    return f"co-{namespace[-6:]}"
