"""Funding before the VM starts, on the local stack (real apiserver, real TVM chain).

In a namespace the operator opts in (``--fund-before-start-namespace``), a worker's
node wallet, derived by the operator from the key Secret and owner, holds COCOON's
2.1 TON start floor (runners/BaseRunner.hpp:335-337) before its launcher pod
exists, and is topped up to the target only after attestation; in a namespace not
opted in, nothing is paid before the pod's evidence is verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from cocoon_operator.api.labels import READINESS_GATE
from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR
from cocoon_operator.policy.treasury import START_FUNDING_MARGIN
from cocoon_operator.ton.client import TonClient
from tests.cluster.helpers import (
    TARGET,
    balances,
    conditions,
    create_worker,
    derived_wallet,
    events,
    get_worker,
    ledger,
    ready,
    sent_to,
    worker_pods,
)
from tests.cluster.operator import running_operator
from tests.cluster.simulated import Chain, reporting_env, running_local_chain
from tests.cluster.stack import Stack
from tests.cluster.wait import OperatorMetrics, eventually


@pytest.fixture
def local_chain(tmp_path: Path) -> Iterator[Chain]:
    with running_local_chain(tmp_path) as chain:
        yield chain


def _gate(pod: client.V1Pod) -> str | None:
    for c in pod.status.conditions or []:
        if c.type == READINESS_GATE:
            return str(c.status)
    return None


async def _chain_time(chain: Chain, address: str) -> int:
    """When the chain first credited ``address`` (its first transaction's utime)."""
    async with TonClient(chain.api_url, timeout=10) as ton:
        txs = await ton.get_transactions(address, limit=16)
    return min(t.utime for t in txs)


async def test_an_opted_in_workers_wallet_holds_the_floor_before_its_pod_exists(
    stack: Stack, api: client.ApiClient, namespace: str, local_chain: Chain, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    # The simulated runners wait on the chain for their 2.1 TON, as COCOON's do.
    waiting = ("--ton-endpoint", local_chain.api_url)
    async with reporting_env(
        stack, api, namespace, tmp_path, local_chain, agent_args=waiting
    ) as env:
        args = (
            *env.operator_args(),
            "--node-report-namespace",
            namespace,
            "--fund-before-start-namespace",
            namespace,
        )
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await create_worker(api, namespace, "s0")
            address = derived_wallet(namespace, "s0")
            seen_pod = False
            async with TonClient(local_chain.api_url, timeout=10) as ton:
                # Watching: pods first, then the balance. Once a pod has been seen, the
                # chain must already show the floor (nothing here spends from it).
                for _ in range(400):
                    pods = await worker_pods(api, namespace, "s0")
                    balance = await ton.get_address_balance(address)
                    if pods:
                        seen_pod = True
                        assert balance >= FUNDING_FLOOR, (balance, log.read_text()[-3000:])
                        break
                    await asyncio.sleep(0.1)
            assert seen_pod, log.read_text()[-3000:]
            pod = (await worker_pods(api, namespace, "s0"))[0]
            credited = await _chain_time(local_chain, address)
            assert credited <= int(pod.metadata.creation_timestamp.timestamp())
            worker = await eventually(ready(api, namespace, "s0"), within=120, what="s0 Ready")
            assert worker["status"]["wallet"]["address"] == address

            async def at_target() -> bool:
                # Less the nanoTON of storage fee each credit may take (the account's).
                [balance] = await balances(env, [address])
                return TARGET - 1000 <= balance <= TARGET

            await eventually(at_target, within=60, what="s0's wallet at its target")

            async def earning() -> bool:  # the runner initialised and serves its stats
                w = await get_worker(api, namespace, "s0")
                return "earnings" in (w.get("status") or {})

            await eventually(earning, within=60, what="s0's stats read from its runner")
            # The floor before start, the rest to the target after attestation.
            start = FUNDING_FLOOR + START_FUNDING_MARGIN
            assert sent_to(await ledger(api, namespace), address) == [start, TARGET - start]
            assert any(
                e.startswith("FundedBeforeStart:") for e in await events(api, namespace, "s0")
            )
            assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_worker_in_a_namespace_not_opted_in_gets_nothing_before_attestation(
    stack: Stack, api: client.ApiClient, namespace: str, local_chain: Chain, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    async with reporting_env(stack, api, namespace, tmp_path, local_chain) as env:
        args = (
            *env.operator_args(),
            "--node-report-namespace",
            namespace,
            "--fund-before-start-namespace",
            "somewhere-else",
        )
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await create_worker(api, namespace, "u0")
            address = derived_wallet(namespace, "u0")
            unfunded_pod = False
            async with TonClient(local_chain.api_url, timeout=10) as ton:
                # Balance first, then the pod's gate: money on the wallet means the
                # operator had verified the pod (the gate is opened before any top-up).
                for _ in range(600):
                    balance = await ton.get_address_balance(address)
                    pods = await worker_pods(api, namespace, "u0")
                    gate = _gate(pods[0]) if pods else None
                    if balance > 0:
                        assert gate == "True", (balance, log.read_text()[-3000:])
                        break
                    unfunded_pod = unfunded_pod or bool(pods)
                    await asyncio.sleep(0.1)
            assert unfunded_pod  # the VM started unfunded, as before
            await eventually(ready(api, namespace, "u0"), within=120, what="u0 Ready")
            assert sent_to(await ledger(api, namespace), address) == [TARGET]
            assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_worker_naming_another_wallet_after_start_funding_stops_it_naming_both(
    stack: Stack, api: client.ApiClient, namespace: str, local_chain: Chain, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    metrics = OperatorMetrics.on_free_port()
    async with reporting_env(stack, api, namespace, tmp_path, local_chain, "other-wallet") as env:
        args = (
            *env.operator_args(),
            "--node-report-namespace",
            namespace,
            "--fund-before-start-namespace",
            namespace,
            *metrics.args(),
        )
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await create_worker(api, namespace, "x0")
            address = derived_wallet(namespace, "x0")

            async def refused() -> dict[str, Any] | None:
                w = await get_worker(api, namespace, "x0")
                funded = conditions(w).get("WalletFunded", {})
                return w if funded.get("reason") == "WalletMismatch" else None

            worker = await eventually(refused, within=90, what="x0's wallet refused")
            message = conditions(worker)["WalletFunded"]["message"]
            # The worker's word against the operator's own derivation, both named.
            assert "worker reports node wallet" in message and address in message
            assert "operator derived" in message
            # A few more checks: the floor, and nothing after it.
            await metrics.checks_ran(3, what="three more checks of x0")
            start = FUNDING_FLOOR + START_FUNDING_MARGIN
            assert sent_to(await ledger(api, namespace), address) == [start]
            assert proc.poll() is None, log.read_text()[-3000:]
