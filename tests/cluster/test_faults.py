"""Bounded fault tests on the local stack: the control plane restarted mid-rollout,
the chain's API failing, hanging and serving stale data, workers whose relayed
quote is missing from their node's report, stale or garbage, or that do not
answer as their deletion begins.

Each ends with a clear condition on the CocoonWorker and with recovery, the
operator process alive with no traceback in its log, and Ready never claimed
while another condition is not True (sampled all along by :class:`ReadyWatch`).
Flipped quote bytes are covered by test_attestation; kill -9 of the operator by
test_chaos and test_operator_restart; clock skew, and stale data over longer spans, by
tests/unit/test_clock_skew.py and tests/unit/funding/test_stale_and_skew.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import LABEL_INSTANCE, LABEL_REVISION, LABEL_WORKER
from tests.cluster.chainproxy import ChainProxy, chain_proxy
from tests.cluster.helpers import (
    TARGET,
    UNAVAILABLE,
    balances,
    condition_is,
    conditions,
    create_worker,
    event_reasons,
    get_worker,
    has_event,
    ledger,
    simulator_admin,
    treasury_secret,
    treasury_seqno,
    worker_deleted,
    worker_pods,
)
from tests.cluster.operator import running_operator
from tests.cluster.simulated import Chain, Env, running_agent, running_local_chain
from tests.cluster.stack import CLUSTER, Stack
from tests.cluster.wait import eventually

API = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
GATES = ("Scheduled", "VMRunning", "Attested", "OnChainAllowed", "WalletFunded")


# --------------------------------------------------------------------------- helpers


def operator_healthy(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Alive (no crash loop: it never exited) and no unhandled exception in its log."""
    text = log.read_text(errors="replace")
    assert proc.poll() is None, f"the operator exited ({proc.returncode}):\n{text[-3000:]}"
    at = text.find("Traceback (most recent call last)")
    assert at < 0, f"a traceback in the operator's log:\n{text[at : at + 3000]}"


@dataclass
class ReadyWatch:
    """Samples every worker in the namespace; Ready=True with another condition not
    True is recorded as a violation (a wrong Ready)."""

    api: client.ApiClient
    namespace: str
    samples: int = 0
    violations: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            try:
                listed = await client.CustomObjectsApi(self.api).list_namespaced_custom_object(
                    API[0], API[1], self.namespace, API[2]
                )
            except UNAVAILABLE:
                await asyncio.sleep(0.5)
                continue
            for worker in listed["items"]:
                conds = conditions(worker)
                if conds.get("Ready", {}).get("status") != "True":
                    continue
                bad = {t: conds.get(t, {}).get("reason") for t in GATES}
                bad = {t: r for t, r in bad.items() if conds.get(t, {}).get("status") != "True"}
                if bad or worker["status"].get("phase") != "Ready":
                    self.violations.append(f"{worker['metadata']['name']}: Ready with {bad}")
            self.samples += 1
            await asyncio.sleep(0.3)


@pytest.fixture
async def ready_watch(api: client.ApiClient, namespace: str) -> AsyncIterator[ReadyWatch]:
    watch = ReadyWatch(api, namespace)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert watch.samples > 0
    assert not watch.violations, watch.violations[:5]


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    with running_local_chain(tmp_path) as running:
        yield running


async def setup_chain(api: client.ApiClient, namespace: str, chain: Chain) -> None:
    await treasury_secret(api, namespace, chain)


def ready(api: client.ApiClient, namespace: str, name: str) -> Any:
    return condition_is(api, namespace, name, "Ready", "True")


async def launcher_pods(api: client.ApiClient, namespace: str) -> list[client.V1Pod]:
    pods = await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=LABEL_WORKER)
    return list(pods.items)


async def assert_one_pod_per_worker(
    api: client.ApiClient, namespace: str, names: list[str]
) -> None:
    """Exactly one live launcher pod per worker, at its revision and owned by it; no pod
    of anything else; no (node, instance) handed out twice."""
    workers = {
        w["metadata"]["name"]: w
        for w in (
            await client.CustomObjectsApi(api).list_namespaced_custom_object(
                API[0], API[1], namespace, API[2]
            )
        )["items"]
    }
    assert sorted(workers) == sorted(names)
    pods = await launcher_pods(api, namespace)
    assert all(p.metadata.deletion_timestamp is None for p in pods), "a pod still terminating"
    by_worker = Counter(p.metadata.labels[LABEL_WORKER] for p in pods)
    assert by_worker == Counter(names), by_worker  # one each, no orphan
    for pod in pods:
        worker = workers[pod.metadata.labels[LABEL_WORKER]]
        assert pod.metadata.labels[LABEL_REVISION] == worker["status"]["targetRevision"]
        assert worker["status"]["pod"] == pod.metadata.name
        owners = [o.uid for o in pod.metadata.owner_references or []]
        assert owners == [worker["metadata"]["uid"]]
    slots = Counter((p.spec.node_name, p.metadata.labels[LABEL_INSTANCE]) for p in pods)
    assert max(slots.values()) == 1, slots


async def assert_funded_once(env: Env, api: client.ApiClient, addresses: list[str]) -> None:
    """Each node wallet holds exactly what the ledger says the treasury sent it, which is
    the target; one confirmed transfer each, one treasury seqno per intent."""
    intents = await ledger(api, env.namespace)
    assert all(i["state"] == "confirmed" for i in intents), intents
    sent = Counter[str]()
    transfers = Counter[str]()
    for intent in intents:
        for t in intent["transfers"]:
            sent[t["address"]] += t["amount"]
            transfers[t["address"]] += 1
    held = dict(zip(addresses, await balances(env, addresses), strict=True))
    for address in addresses:
        assert transfers[address] == 1, transfers
        assert held[address] == sent[address] == TARGET
    assert await treasury_seqno(env) == len(intents)


async def simulator_fault(api: client.ApiClient, namespace: str, name: str, on: bool) -> None:
    """Switch a fault of worker ``w``'s simulated VM (its admin endpoint, on the HTTP port)."""
    (pod,) = await worker_pods(api, namespace, "w")
    await simulator_admin(pod, f"/simulator/fault?name={name}&enabled={str(on).lower()}")


# --------------------------------------------------------------------------- a, b


WORKERS = ["r0", "r1", "r2", "r3"]  # four on three CC nodes: one node runs two instances


@pytest.mark.parametrize("component", ["apiserver", "etcd"])
async def test_control_plane_restart_mid_rollout_converges(
    component: str,
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    chain: Chain,
    tmp_path: Path,
    ready_watch: ReadyWatch,
) -> None:
    await setup_chain(api, namespace, chain)
    log = tmp_path / "operator.log"
    with running_agent(stack.kubeconfig, namespace, tmp_path) as agent:
        env = Env(agent, chain, namespace)
        with running_operator(stack.kubeconfig, namespace, log, *env.operator_args()) as proc:
            await restart_mid_rollout(api, namespace, env, stack, component)
            operator_healthy(proc, log)


async def restart_mid_rollout(
    api: client.ApiClient, namespace: str, env: Env, stack: Stack, component: str
) -> None:
    for name in WORKERS:
        await create_worker(api, namespace, name)

    async def rollout_started() -> bool:
        pods = await launcher_pods(api, namespace)
        return bool(pods)

    await eventually(rollout_started, within=30, what="the first launcher pod")
    ready_now = [n for n in WORKERS if (await condition_is(api, namespace, n, "Ready", "True")())]
    assert len(ready_now) < len(WORKERS), "the rollout finished before the fault"
    restart = await asyncio.to_thread(
        subprocess.run,
        [str(CLUSTER), "restart", component],
        env={**os.environ, "COCOON_STACK_DIR": str(stack.dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert restart.returncode == 0, restart.stderr

    # Promptly: a timer that gave up on the apiserver for kopf's default 60 s would miss this.
    workers = [
        await eventually(ready(api, namespace, n), within=45, what=f"{n} Ready") for n in WORKERS
    ]
    await assert_one_pod_per_worker(api, namespace, WORKERS)
    await assert_funded_once(env, api, [w["status"]["wallet"]["address"] for w in workers])


# --------------------------------------------------------------------------- c


async def test_chain_api_errors_timeouts_and_stale_data_never_fund_twice(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    chain: Chain,
    tmp_path: Path,
    ready_watch: ReadyWatch,
) -> None:
    await setup_chain(api, namespace, chain)
    log = tmp_path / "operator.log"
    async with chain_proxy(chain.api_url) as proxy:
        with running_agent(stack.kubeconfig, namespace, tmp_path) as agent:
            env = Env(agent, chain, namespace)  # the tests' own view: the chain itself
            proxied = Env(agent, dataclasses.replace(chain, api_url=proxy.url), namespace)
            with running_operator(
                stack.kubeconfig, namespace, log, *proxied.operator_args()
            ) as proc:
                await chain_faults(api, namespace, env, proxy)
                operator_healthy(proc, log)


async def chain_faults(api: client.ApiClient, namespace: str, env: Env, proxy: ChainProxy) -> None:
    def on_chain(text: str) -> Any:
        return condition_is(api, namespace, "w", "OnChainAllowed", "Unknown", "ChainError", text)

    # 1. HTTP 500s from the start: the root contract cannot be read. The VM
    # still starts and is attested (a failed read holds nothing), but the
    # worker is not Ready, and no money moves.
    proxy.set_mode("error")
    await create_worker(api, namespace, "w")
    worker = await eventually(on_chain("HTTP 500"), within=60, what="ChainError (HTTP 500)")
    assert "HTTP 500" in worker["status"]["chain"]["error"]
    await eventually(
        condition_is(api, namespace, "w", "Attested", "True"), within=60, what="attested anyway"
    )
    assert proxy.served[("error", "runGetMethod")] > 0

    # 2. Then the API hangs: the client's timeout ends each call, and says so.
    proxy.set_mode("hang")
    await eventually(on_chain("no response within"), within=90, what="ChainError (timeout)")
    worker = await get_worker(api, namespace, "w")
    assert worker["status"]["phase"] != "Ready"
    assert await ledger_or_empty(api, namespace) == []
    assert await treasury_seqno(env) == 0

    # 3. The API answers again, but its balance and wallet readings lag: the
    # node wallet reads 0 and the treasury's seqno stays where it was, after
    # the top-up landed. One top-up only, while the stale readings last.
    stale = frozenset(
        {"getAddressBalance", "getWalletInformation", "getAddressInformation", "accountStates"}
    )
    proxy.set_mode("stale", frozen=stale)

    async def funded_once() -> list[dict[str, Any]] | None:
        intents = await ledger_or_empty(api, namespace)
        return intents if any(i["state"] == "confirmed" for i in intents) else None

    await eventually(funded_once, within=60, what="the top-up confirmed")

    def balance_reads() -> int:  # the fleet's batched read (v3), and v2's for one wallet
        return sum(proxy.served[("stale", m)] for m in ("getAddressBalance", "accountStates"))

    reads = balance_reads()

    async def more_checks() -> bool:
        return balance_reads() >= reads + 6

    # Six more balance readings, every one stale (0): at least three more chain checks.
    await eventually(more_checks, within=60, what="chain checks on stale data")
    assert proxy.served[("stale", "accountStates")] > 0  # the fleet's batched read lagged too
    intents = await ledger_or_empty(api, namespace)
    assert len(intents) == 1 and intents[0]["state"] == "confirmed", intents
    assert await treasury_seqno(env) == 1
    address = intents[0]["transfers"][0]["address"]
    assert await balances(env, [address]) == [TARGET]
    worker = await get_worker(api, namespace, "w")
    assert worker["status"]["wallet"]["balance"] == 0  # what it was told; not Ready on it
    assert conditions(worker)["WalletFunded"]["reason"] == "InsufficientBalance"
    assert conditions(worker)["Ready"]["status"] == "False"

    # 4. Fresh answers again: Ready, with exactly the one top-up.
    proxy.set_mode("pass")
    worker = await eventually(ready(api, namespace, "w"), within=60, what="Ready after recovery")
    assert conditions(worker)["OnChainAllowed"]["reason"] == "Listed"
    assert "error" not in worker["status"]["chain"]
    assert worker["status"]["wallet"]["balance"] == TARGET
    await assert_funded_once(env, api, [worker["status"]["wallet"]["address"]])


async def ledger_or_empty(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    try:
        return await ledger(api, namespace)
    except ApiException as err:
        if err.status == 404:
            return []
        raise


# --------------------------------------------------------------------------- d, e


async def test_worker_quotes_missing_stale_or_garbage(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    chain: Chain,
    tmp_path: Path,
    ready_watch: ReadyWatch,
) -> None:
    await setup_chain(api, namespace, chain)
    log = tmp_path / "operator.log"
    # Every VM the agent starts comes up with its quote filed under another pod's uid.
    with running_agent(stack.kubeconfig, namespace, tmp_path, "--fault", "misfiled-quote") as agent:
        args = (
            *Env(agent, chain, namespace).operator_args(),
            "--attestation-boot-grace-seconds",
            "3",
        )
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await evidence_faults(api, namespace, log)
            operator_healthy(proc, log)


async def evidence_faults(api: client.ApiClient, namespace: str, log: Path) -> None:
    def attested(status: str, reason: str, text: str = "") -> Any:
        return condition_is(api, namespace, "w", "Attested", status, reason, text)

    # d. A new VM with no quote reported for its pod: once past its boot grace
    # it is held, naming why; never Ready.
    await create_worker(api, namespace, "w")
    worker = await eventually(
        attested("False", "QuoteNotReported", "relayed no quote"), within=60, what="no quote"
    )
    assert conditions(worker)["Ready"]["status"] == "False"

    # It behaves: verified, funded, Ready.
    await simulator_fault(api, namespace, "misfiled_quote", False)
    await eventually(ready(api, namespace, "w"), within=60, what="Ready once its quote is seen")

    # A verified worker whose quote is missing from the report for a moment keeps
    # its verdict until it expires (no fleet flapping on a blip), says so, and warns.
    await simulator_fault(api, namespace, "misfiled_quote", True)
    await eventually(
        attested("True", "EvidenceVerified", "no quote reported"), within=30, what="a blip noted"
    )
    await eventually(
        lambda: has_event(api, namespace, "w", "QuoteNotReported", "Warning"),
        within=10,
        what="a QuoteNotReported Warning",
    )
    await simulator_fault(api, namespace, "misfiled_quote", False)
    await eventually(
        attested("True", "EvidenceVerified", "TDX evidence verified"), within=30, what="reported"
    )

    # e. Garbage where the quote belongs, then a quote older than quoteMaxAgeSeconds:
    # the gate closes at once, naming the step; Ready again once fixed.
    for fault, reason, step in (
        ("garbage_evidence", "EvidenceRejected", "quote_format"),
        ("stale_quote", "EvidenceExpired", "quote-expired"),
    ):
        await simulator_fault(api, namespace, fault, True)
        bad = await eventually(
            attested("False", reason, step), within=30, what=f"{fault}: Attested=False"
        )
        assert conditions(bad)["Ready"]["status"] == "False"
        assert bad["status"]["attestation"]["failure"].startswith(step)
        await simulator_fault(api, namespace, fault, False)
        await eventually(ready(api, namespace, "w"), within=30, what=f"Ready after {fault}")

    # Broken JSON from the worker's stats endpoint: the chain check says why
    # in the log and skips; evidence is unaffected, the worker stays Ready.
    await simulator_fault(api, namespace, "garbage_json", True)

    async def logged() -> bool:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        return "jsonstats is not JSON" in text

    await eventually(logged, within=30, what="the bad stats reported")
    assert await ready(api, namespace, "w")()
    await simulator_fault(api, namespace, "garbage_json", False)

    # f. A worker that does not answer when its deletion begins is asked
    # again, not stopped undrained: once it answers it is disabled, drained
    # and paid out. (It is stopped without a drain only after 30 s of no
    # answer: DrainSkipped, which this never reaches.)
    await simulator_fault(api, namespace, "garbage_json", True)
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        API[0], API[1], namespace, API[2], "w"
    )

    async def asked_again() -> bool:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        return "unreachable: asking again" in text

    await eventually(asked_again, within=30, what="the drain asking again")
    await simulator_fault(api, namespace, "garbage_json", False)

    await eventually(
        worker_deleted(api, namespace, "w"), within=90, what="worker drained and deleted"
    )
    reasons = await event_reasons(api, namespace, "w")
    assert {"Draining", "PayoutRequested"} <= reasons.keys(), reasons
    assert "DrainSkipped" not in reasons, reasons
