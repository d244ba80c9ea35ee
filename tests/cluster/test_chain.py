"""The chain step on the local stack: attested workers' node wallets, read over the
attested channel, are funded from a treasury on the local chain (real TVM) up to
their target, the workers become Ready, and a kill -9 of the operator right
after a treasury message went out never pays anyone twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch

from cocoon_operator.api import v1alpha1
from cocoon_operator.kubectl_plugin.cli import main as plugin_main
from tests.cluster.helpers import (
    TARGET,
    balances,
    conditions,
    create_worker,
    derived_wallet,
    get_worker,
    has_event,
    killed_at_failpoint,
    ledger,
    owed_by_every_proxy,
    pod_conditions,
    ready,
    simulator_admin,
    simulator_stats,
    treasury_seqno,
)
from tests.cluster.operator import StartOperator, running_operator
from tests.cluster.simulated import Chain, Env, reporting_env
from tests.cluster.stack import Stack
from tests.cluster.wait import OperatorMetrics, eventually

WORKERS = ("w0", "w1", "w2")
STATS_READS = "cocoon_worker_stats_reads_total"


async def test_attested_workers_are_funded_once_and_become_ready(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    metrics = OperatorMetrics.on_free_port()
    args = (*env.operator_args(), *metrics.args())
    proc = operator(*args, log=log)
    for name in WORKERS:
        await create_worker(api, namespace, name)
    workers = [
        await eventually(ready(api, namespace, n), within=90, what=f"{n} Ready") for n in WORKERS
    ]
    addresses = [w["status"]["wallet"]["address"] for w in workers]
    assert len(set(addresses)) == len(WORKERS)  # one node wallet per worker
    assert await balances(env, addresses) == [TARGET] * len(WORKERS)
    for w in workers:
        conds = conditions(w)
        assert conds["OnChainAllowed"]["reason"] == "Listed"
        assert conds["WalletFunded"]["reason"] == "Funded"
        assert w["status"]["phase"] == "Ready"
        assert w["status"]["wallet"]["balance"] == TARGET
        assert "earnedTokens" in w["status"]["earnings"]
    intents = await ledger(api, namespace)
    assert all(i["state"] == "confirmed" for i in intents)
    assert sum(t["amount"] for i in intents for t in i["transfers"]) == TARGET * len(WORKERS)
    assert await treasury_seqno(env) == len(intents)
    # Later checks (three per worker) find balances at target and send nothing more.
    await metrics.checks_ran(3 * len(WORKERS), what="three more checks of each worker")
    assert await treasury_seqno(env) == len(intents)

    series = await metrics.series()
    assert series['cocoon_workers{phase="Ready"}'] == len(WORKERS)
    assert series["cocoon_funding_nanoton_total"] == TARGET * len(WORKERS)
    assert series['cocoon_funding_transfers_total{outcome="confirmed"}'] == len(WORKERS)
    assert series['cocoon_attestation_verifications_total{reason="",result="verified"}'] >= 3
    for name in WORKERS:
        wallet = f'cocoon_wallet_balance_nanoton{{namespace="{namespace}",worker="{name}"}}'
        assert series[wallet] == TARGET
    assert proc.poll() is None, log.read_text()[-3000:]


class StatusHistory:
    """Every status version of a namespace's workers, in order, from a watch opened
    before they exist: one entry per status write the apiserver stored."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.opened = asyncio.Event()

    async def run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        api = (v1alpha1.GROUP, v1alpha1.VERSION, self.namespace, v1alpha1.PLURAL)
        listed = await custom.list_namespaced_custom_object(*api)
        assert not listed["items"], "the history must begin before the workers"
        w = watch.Watch()
        self.opened.set()
        async for event in w.stream(
            custom.list_namespaced_custom_object,
            *api,
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=300,
        ):
            obj = event["object"]
            seen = self.versions.setdefault(obj["metadata"]["name"], [])
            status = obj.get("status") or {}
            if status and (not seen or seen[-1] != status):
                seen.append(status)


def _without_model_progress(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The status versions less those written by the node-report steps alone: the
    model's preparation (ModelReady's progress, one write per phase of the node's
    cache) and the GPU the node's report names (``status.gpu``), each its own step
    whose timing against the worker's steps depends on when the report lands."""

    def rest(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [c for c in status.get("conditions", []) if c["type"] != "ModelReady"]
        return {**{k: v for k, v in status.items() if k != "gpu"}, "conditions": conditions}

    out: list[dict[str, Any]] = []
    for version in versions:
        if out and rest(out[-1]) == rest(version):
            out[-1] = version
        else:
            out.append(version)
    return out


def _changes(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each status version changed from the one before (for a failure's message:
    which fields a second write of a phase carried)."""
    out = []
    for before, after in itertools.pairwise(versions):
        conditions = {c["type"]: c for c in before.get("conditions", [])}
        out.append(
            {
                "phase": after.get("phase"),
                "fields": sorted(
                    k
                    for k in set(before) | set(after)
                    if k != "conditions" and before.get(k) != after.get(k)
                ),
                "conditions": {
                    c["type"]: (c.get("reason"), c.get("message"))
                    for c in after.get("conditions", [])
                    if conditions.get(c["type"]) != c
                },
            }
        )
    return out


def _turned(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The conditions whose status a write turned (new ones included)."""
    old = {c["type"]: c["status"] for c in before.get("conditions", [])}
    return [c["type"] for c in after.get("conditions", []) if old.get(c["type"]) != c["status"]]


def _evidence_renewed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether a write changed only the attestation summary (and perhaps the words of
    a condition) of a worker already Attested."""
    rest = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    renewed = "attestation" in rest and rest <= {"attestation", "conditions"}
    return renewed and _condition(before, "Attested").get("status") == "True"


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


async def test_each_step_writes_its_facts_and_the_conditions_they_imply_at_once(
    stack: Stack, api: client.ApiClient, namespace: str, env: Env, tmp_path: Path
) -> None:
    """Every status write is a watch event for every watcher, so a step that learns
    something (the attestation summary, the wallet) writes it in the same patch
    as the conditions it implies, and the pod the reconcile creates is recorded
    with it: from creation to Ready, one write per step."""
    history = StatusHistory(api, namespace)
    watcher = asyncio.create_task(history.run())
    await history.opened.wait()
    with running_operator(stack.kubeconfig, namespace, tmp_path / "op.log", *env.operator_args()):
        await create_worker(api, namespace, "w0")
        await eventually(ready(api, namespace, "w0"), within=90, what="w0 Ready")
    await asyncio.sleep(1)  # the watch's last events
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher

    versions = _without_model_progress(history.versions["w0"])
    phases = [v.get("phase") for v in versions]
    versions = versions[: phases.index("Ready") + 1]
    phases = phases[: len(versions)]
    explained = json.dumps({"phases": phases, "changes": _changes(versions)}, indent=1)
    # Pending with its pod, Starting (scheduled), Attesting (the VM runs),
    # Registering (attested), Ready (funded), in order, never back.
    order = ["Pending", "Starting", "Attesting", "Registering", "Ready"]
    assert phases == sorted(phases, key=order.index), explained
    # One write per step: every write after the first turns a condition (a gate, or
    # Ready itself). A write of a fact alone (the summary, the wallet, the pod) ahead
    # of the condition it implies, or a write that only rewords, fails here. A phase
    # may be written twice when two steps fall in it: kwok reports a pod Running at
    # once while the simulated `model ensure` still builds (docs/models.md, "The
    # local stack"), so the VM may run before ModelReady while the phase is Starting.
    # The one fact that may come alone is a newer quote verified for a VM already
    # attested (the guest's next key): it implies no condition that is not so already.
    for before, after in itertools.pairwise(versions):
        assert _turned(before, after) or _evidence_renewed(before, after), explained
    assert {"Pending", "Registering", "Ready"} <= set(phases), phases
    assert versions[0]["pod"] and "instance" in versions[0]
    summary_first = next(v for v in versions if "attestation" in v)
    assert _condition(summary_first, "Attested")["status"] == "True"
    wallet_first = next(v for v in versions if "wallet" in v)
    assert _condition(wallet_first, "WalletFunded")["reason"] == "Funded"
    assert wallet_first["phase"] == "Ready"


async def test_kill_9_after_a_treasury_message_went_out_never_pays_twice(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    crash = {"COCOON_FAILPOINTS": "funding.after-send"}
    with running_operator(
        stack.kubeconfig, namespace, log, *env.operator_args(), env_extra=crash
    ) as proc:
        for name in WORKERS:
            await create_worker(api, namespace, name)
        await killed_at_failpoint(proc)
    sent = await ledger(api, namespace)
    assert [i["state"] for i in sent] == ["pending"]  # recorded, sent, never confirmed

    proc = operator(*env.operator_args(), log=log)
    workers = [
        await eventually(ready(api, namespace, n), within=90, what=f"{n} Ready") for n in WORKERS
    ]
    addresses = [w["status"]["wallet"]["address"] for w in workers]
    assert await balances(env, addresses) == [TARGET] * len(WORKERS)
    intents = await ledger(api, namespace)
    assert intents[0]["id"] == sent[0]["id"]
    assert intents[0]["state"] == "confirmed"  # found on chain, not re-sent
    assert all(i["state"] == "confirmed" for i in intents)
    assert await treasury_seqno(env) == len(intents)
    assert proc.poll() is None, log.read_text()[-3000:]


async def test_payout_policy_asks_proxies_to_pay_out_and_status_shows_it(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    metrics = OperatorMetrics.on_free_port()
    args = (*env.operator_args(), *metrics.args())
    proc = operator(*args, log=log)
    # The simulated worker earns 120 tokens a second, committed 1000 at a time.
    await create_worker(api, namespace, "p0", payout={"minimumUnpaidTokens": 1000})
    await create_worker(api, namespace, "p1")  # no policy: never paid out while serving

    async def paid_out() -> dict[str, Any] | None:
        # Cashed-out tokens: COCOON reports no count of payouts.
        worker = await get_worker(api, namespace, "p0")
        earnings = worker.get("status", {}).get("earnings", {})
        return worker if earnings.get("paidOutTokens", 0) >= 1000 else None

    worker = await eventually(paid_out, within=120, what="a payout shown in status")
    assert worker["status"]["earnings"]["paidOutTokens"] >= 1000
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=p0,reason=PayoutRequested"
    )
    assert events.items
    assert "spec.payout.minimumUnpaidTokens (1000)" in events.items[0].message
    other = await eventually(ready(api, namespace, "p1"), within=60, what="p1 Ready")
    assert other["status"]["earnings"].get("paidOutTokens", 0) == 0
    quiet = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=p1,reason=PayoutRequested"
    )
    assert quiet.items == []

    # A person asks: `kubectl cocoon payout p1`, acted upon once.
    argv = ["--kubeconfig", str(stack.kubeconfig), "-n", namespace, "payout", "p1"]
    assert await asyncio.to_thread(plugin_main, argv) == 0
    annotations = (await get_worker(api, namespace, "p1"))["metadata"]["annotations"]
    asked = annotations["cocoon.network/payout-request"]

    async def handled() -> dict[str, Any] | None:
        worker = await get_worker(api, namespace, "p1")
        return worker if worker["status"].get("payoutRequestHandled") == asked else None

    await eventually(handled, within=60, what="the payout request acted upon")
    # Later checks (three of each worker) do not ask again.
    await metrics.checks_ran(6, what="three more checks of p0 and p1")
    asks = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=p1,reason=PayoutRequested"
    )
    assert [e.count or 1 for e in asks.items] == [1]
    assert f"requested ({asked})" in asks.items[0].message
    assert proc.poll() is None, log.read_text()[-3000:]


async def _more(probe: Callable[[], Awaitable[float | None]], than: float) -> bool:
    return (await probe() or 0) > than


async def test_kill_9_around_a_payout_request_never_pays_twice_nor_drops_it(
    stack: Stack, api: client.ApiClient, namespace: str, env: Env, tmp_path: Path
) -> None:
    """A person's payout request, then the final payout of a deletion, each with the
    operator killed right after the requests went out (and the final one also
    between the written intent and the requests): every proxy is asked exactly
    once for each, and both are seen through."""
    log = tmp_path / "operator.log"

    def operator(failpoint: str | None = None) -> Any:
        crash = {"COCOON_FAILPOINTS": failpoint} if failpoint else {}
        return running_operator(
            stack.kubeconfig, namespace, log, *env.operator_args(), env_extra=crash
        )

    with operator("payout.after-send") as proc:
        await create_worker(api, namespace, "k0")
        worker = await eventually(ready(api, namespace, "k0"), within=90, what="k0 Ready")
        pod = await client.CoreV1Api(api).read_namespaced_pod(worker["status"]["pod"], namespace)
        # Proxies owed nothing are not asked (the fee would buy nothing): wait
        # until each proxy has tokens committed and not paid out.
        await eventually(owed_by_every_proxy(pod), within=60, what="tokens owed by each proxy")
        argv = ["--kubeconfig", str(stack.kubeconfig), "-n", namespace, "payout", "k0"]
        assert await asyncio.to_thread(plugin_main, argv) == 0
        await killed_at_failpoint(proc, "the operator killed after asking for the payout")
    asked = (await get_worker(api, namespace, "k0"))["metadata"]["annotations"][
        v1alpha1.PAYOUT_REQUEST_ANNOTATION
    ]
    key = f"{namespace}/{pod.metadata.name}/{pod.metadata.uid}"

    def answers() -> dict[str, list[str]]:
        return {proxy: a for (p, proxy), a in env.agent.payout_answers().items() if p == key}

    first = answers()
    assert len(first) == 2 and all(a == ["request sent"] for a in first.values()), first

    with operator() as proc:

        async def handled() -> dict[str, Any] | None:
            w = await get_worker(api, namespace, "k0")
            return w if w["status"].get("payoutRequestHandled") == asked else None

        await eventually(handled, within=60, what="the payout request seen through")
        events = await client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector="involvedObject.name=k0,reason=PayoutRequested"
        )
        assert [e.count or 1 for e in events.items] == [1]
        assert "asked before the operator restarted" in events.items[0].message
        assert answers() == first  # nobody asked twice
        assert proc.poll() is None, log.read_text()[-3000:]

    # The final payout: killed between the intent and the requests, then after them.
    await eventually(owed_by_every_proxy(pod), within=60, what="tokens owed again")
    with operator("payout.after-intent") as proc:
        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "cocoon.network", "v1alpha1", namespace, "cocoonworkers", "k0"
        )
        await killed_at_failpoint(proc, "the operator killed before asking for the final payout")
    assert answers() == first  # the intent is written, nobody asked yet
    with operator("payout.after-send") as proc:
        await killed_at_failpoint(proc, "the operator killed after asking for the final payout")
    assert {p: len(a) for p, a in answers().items()} == {p: 2 for p in first}
    with operator() as proc:

        async def gone() -> bool:
            items = (
                await client.CustomObjectsApi(api).list_namespaced_custom_object(
                    "cocoon.network", "v1alpha1", namespace, "cocoonworkers"
                )
            )["items"]
            return not items

        await eventually(gone, within=90, what="k0 drained, paid out and deleted")
        assert {p: a for p, a in answers().items()} == {
            p: ["request sent", "request sent"] for p in first
        }
        final = await client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector="involvedObject.name=k0,reason=PayoutRequested"
        )
        assert any(
            "asked before the operator restarted" in e.message
            for e in final.items
            if "final payout" in e.message
        ), [e.message for e in final.items]
        assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_coefficient_moved_on_the_worker_is_set_back_to_the_spec(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    """Once applied, the coefficient is not read again by its own check; the chain
    step's reading of the worker's stats finds it moved (the worker re-read its
    configuration after a restart inside the VM, or was set by hand) and the
    spec's value is applied again, in place, with an Event saying from what.
    The stats of a quiet Ready worker are read at doubling intervals, up to 10
    chain checks apart (policy/chain.py ``stats_read_due``): the checks between
    go by the last reading, and the value set by hand is still found within
    that bound."""
    log = tmp_path / "operator.log"
    metrics = OperatorMetrics.on_free_port()
    args = (*env.operator_args(), *metrics.args())
    proc = operator(*args, log=log)
    await create_worker(api, namespace, "c0")
    await eventually(ready(api, namespace, "c0"), within=90, what="c0 Ready")
    pod, _ = await pod_conditions(api, namespace, "c0")
    assert (await simulator_stats(pod))["localconfig"]["coefficient"] == 1000
    # A coefficient check has run (after the tick's attestation check) and found
    # nothing to do.
    await metrics.checks_ran(2, what="a coefficient check of c0")
    assert not await has_event(api, namespace, "c0", "CoefficientApplied")
    read = await metrics.total(STATS_READS, reading="read")
    kept = await metrics.total(STATS_READS, reading="kept")
    await metrics.checks_ran(6, what="six more checks of c0")
    # Ready and quiet: read 1, 2, 4 checks apart, so at most 3 of these 6.
    assert await metrics.total(STATS_READS, reading="read") - read <= 3
    assert await metrics.total(STATS_READS, reading="kept") - kept >= 3

    # By hand, on the node: through the harness's stand-in for `kubectl exec`.
    await simulator_admin(pod, "/simulator/worker/request/change_coefficient?coefficient=2.5")
    assert (await simulator_stats(pod))["localconfig"]["coefficient"] == 2500

    async def restored() -> bool:
        return (await simulator_stats(pod))["localconfig"]["coefficient"] == 1000

    await eventually(restored, within=30, what="the spec's coefficient applied again")
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=c0,reason=CoefficientApplied"
    )
    assert [e.message for e in events.items] == ["coefficient 2500 -> 1000 per mille, applied live"]
    same, _ = await pod_conditions(api, namespace, "c0")
    assert same.metadata.uid == pod.metadata.uid  # in place, no restart
    assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_runner_waiting_for_its_first_funds_is_funded_at_its_derived_wallet(
    stack: Stack, api: client.ApiClient, namespace: str, local_chain: Chain, tmp_path: Path
) -> None:
    # COCOON's runner answers 400 on every path until it holds 2.1 TON and has
    # initialised (BaseRunner.cpp, WorkerRunner.cpp): the operator cannot learn its
    # wallet from /jsonstats, so it funds the address the launcher derived.
    log = tmp_path / "operator.log"
    async with reporting_env(
        stack, api, namespace, tmp_path, local_chain, "not-initialised"
    ) as env:
        args = (*env.operator_args(), "--node-report-namespace", namespace)
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await create_worker(api, namespace, "n0")
            expected = derived_wallet(namespace, "n0")

            async def funded() -> dict[str, Any] | None:
                w = await get_worker(api, namespace, "n0")
                wallet = (w.get("status") or {}).get("wallet") or {}
                return w if wallet.get("balance") == TARGET else None

            worker = await eventually(funded, within=90, what="n0's derived wallet funded")
            assert worker["status"]["wallet"]["address"] == expected
            assert await balances(env, [expected]) == [TARGET]
            assert "earnings" not in worker["status"]  # nothing read from the worker
            assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_worker_naming_another_wallet_is_never_funded_and_says_both(
    stack: Stack, api: client.ApiClient, namespace: str, local_chain: Chain, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    async with reporting_env(stack, api, namespace, tmp_path, local_chain, "other-wallet") as env:
        metrics = OperatorMetrics.on_free_port()
        args = (*env.operator_args(), "--node-report-namespace", namespace, *metrics.args())
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await create_worker(api, namespace, "m0")
            expected = derived_wallet(namespace, "m0")

            async def refused() -> dict[str, Any] | None:
                w = await get_worker(api, namespace, "m0")
                funded = conditions(w).get("WalletFunded", {})
                return w if funded.get("reason") == "WalletMismatch" else None

            worker = await eventually(refused, within=90, what="m0's wallet refused")
            message = conditions(worker)["WalletFunded"]["message"]
            assert expected in message and "reports node wallet" in message
            assert conditions(worker)["Ready"]["status"] == "False"
            await metrics.checks_ran(3, what="three more checks of m0")  # still nothing sent
            assert await balances(env, [expected]) == [0]
            assert await treasury_seqno(env) == 0
            assert proc.poll() is None, log.read_text()[-3000:]
