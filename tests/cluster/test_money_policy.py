"""The operator's own money policy on the local stack (real TVM, real operator): what a
worker's spec cannot make the treasury pay. A target above the operator's cap is
funded to the cap; a namespace's daily cap holds, across a restart, in the
ledger; two workers sharing one node wallet get one top-up; a worker attested at
a TCB status its own spec accepts but the treasury does not is not funded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.cluster.helpers import (
    TARGET,
    TON,
    balances,
    conditions,
    create_worker,
    events,
    get_worker,
    ledger,
    ready,
    sent_to,
    treasury_seqno,
)
from tests.cluster.operator import StartOperator, running_operator
from tests.cluster.simulated import Env
from tests.cluster.stack import Stack
from tests.cluster.wait import OperatorMetrics, eventually


def funded_reason(api: client.ApiClient, namespace: str, name: str, reason: str) -> Any:
    async def probe() -> dict[str, Any] | None:
        worker = await get_worker(api, namespace, name)
        got = conditions(worker).get("WalletFunded", {}).get("reason")
        return worker if got == reason else None

    return probe


async def test_a_target_above_the_operators_cap_is_funded_to_the_cap(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    args = (*env.operator_args(), "--funding-max-target", "8")
    proc = operator(*args, log=log)
    await create_worker(api, namespace, "w0", funding={"minimum": 5 * TON, "target": 900 * TON})
    worker = await eventually(ready(api, namespace, "w0"), within=120, what="w0 Ready")
    address = worker["status"]["wallet"]["address"]
    assert await balances(env, [address]) == [8 * TON]
    funded = conditions(worker)["WalletFunded"]
    assert funded["status"] == "True"
    assert "capped at the operator's 8 TON (--funding-max-target)" in funded["message"]
    assert any(
        e.startswith("FundingLimited:") and "--funding-max-target" in e
        for e in await events(api, namespace, "w0")
    )
    assert sent_to(await ledger(api, namespace), address) == [8 * TON]
    assert proc.poll() is None, log.read_text()[-3000:]


async def test_two_workers_sharing_one_node_wallet_get_one_top_up(
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
    await create_worker(api, namespace, "w0")
    same_key = {"name": "w0-wallet", "key": "node-wallet-key"}
    await create_worker(api, namespace, "w1", nodeWalletKeySecretRef=same_key)
    first, second = [
        await eventually(ready(api, namespace, n), within=120, what=f"{n} Ready")
        for n in ("w0", "w1")
    ]
    address = first["status"]["wallet"]["address"]
    assert second["status"]["wallet"]["address"] == address  # one key, one wallet
    # Whichever was seen first is the wallet's; the other is told so.
    shared = await eventually(
        lambda: _one_shared(api, namespace), within=60, what="one SharedWallet condition"
    )
    funder = "w0" if shared == "w1" else "w1"
    worker = await get_worker(api, namespace, shared)
    assert f"also worker {namespace}/{funder}'s" in conditions(worker)["WalletFunded"]["message"]
    await metrics.checks_ran(6, what="three more checks of each")  # still one top-up
    assert sent_to(await ledger(api, namespace), address) == [TARGET]
    assert await balances(env, [address]) == [TARGET]
    assert any(e.startswith("SharedWallet:") for e in await events(api, namespace, shared))
    assert proc.poll() is None, log.read_text()[-3000:]


async def _one_shared(api: client.ApiClient, namespace: str) -> str | None:
    reasons = {
        n: conditions(await get_worker(api, namespace, n))["WalletFunded"]["reason"]
        for n in ("w0", "w1")
    }
    shared = [n for n, r in reasons.items() if r == "SharedWallet"]
    return shared[0] if len(shared) == 1 else None


async def test_a_namespace_daily_cap_holds_across_an_operator_restart(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    metrics = OperatorMetrics.on_free_port()
    args = (*env.operator_args(), "--funding-namespace-daily-cap", "12", *metrics.args())
    with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
        for name in ("w0", "w1"):
            await create_worker(api, namespace, name)
        await eventually(
            lambda: _limited(api, namespace), within=150, what="one worker held by the cap"
        )
        assert proc.poll() is None, log.read_text()[-3000:]
    spent = sum(t["amount"] for i in await ledger(api, namespace) for t in i["transfers"])
    assert spent == 12 * TON
    seqno = await treasury_seqno(env)

    # A new operator process reads the same ledger: the day's cap is still used up.
    proc = operator(*args, log=log)
    held = await eventually(
        lambda: _limited(api, namespace), within=90, what="still held after the restart"
    )
    await metrics.checks_ran(6, what="three more checks of each worker")
    message = conditions(await get_worker(api, namespace, held))["WalletFunded"]["message"]
    assert f"namespace {namespace}'s daily cap is used up" in message
    assert sum(t["amount"] for i in await ledger(api, namespace) for t in i["transfers"]) == (
        12 * TON
    )
    assert await treasury_seqno(env) == seqno
    assert proc.poll() is None, log.read_text()[-3000:]


async def _limited(api: client.ApiClient, namespace: str) -> str | None:
    """The worker WalletFunded says the operator's cap holds back, when there is one."""
    for name in ("w0", "w1"):
        worker = await get_worker(api, namespace, name)
        funded = conditions(worker).get("WalletFunded", {})
        if funded.get("reason") == "FundingLimited" and "daily cap" in funded.get("message", ""):
            return name
    return None


@pytest.mark.parametrize("agent_args", [("--tcb-status", "OutOfDate")], indirect=True)
async def test_a_worker_attested_below_the_treasurys_tcb_floor_is_not_funded(
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
    # The tenant accepts OutOfDate for its own worker: it runs and is attested.
    looser = {"acceptedTcbStatuses": ["UpToDate", "OutOfDate"]}
    await create_worker(api, namespace, "w0", attestation=looser)
    worker = await eventually(
        funded_reason(api, namespace, "w0", "TcbNotFunded"),
        within=120,
        what="attested, not funded",
    )
    conds = conditions(worker)
    assert conds["Attested"]["status"] == "True"
    assert worker["status"]["attestation"]["tcbStatus"] == "OutOfDate"
    assert conds["WalletFunded"]["status"] == "False"
    assert "--treasury-tcb-status: UpToDate" in conds["WalletFunded"]["message"]
    assert conds["Ready"]["status"] == "False"
    await metrics.checks_ran(3, what="three more checks of w0")
    assert await treasury_seqno(env) == 0  # the treasury paid nothing
    assert await ledger_or_empty(api, namespace) == []
    assert any(e.startswith("TcbNotFunded:") for e in await events(api, namespace, "w0"))
    assert proc.poll() is None, log.read_text()[-3000:]


async def ledger_or_empty(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    try:
        return await ledger(api, namespace)
    except client.ApiException as err:
        if err.status == 404:
            return []
        raise
