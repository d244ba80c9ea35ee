"""kill -9 of the operator at random moments while workers are created, funded,
rotated and deleted (50 kills in all, some at the funding and payout
failpoints). Afterwards everything converges: remaining workers Ready at the
new revision, deleted ones gone with no pod or finalizer left, no two pods on
a node with one instance, the local chain shows every node wallet funded
exactly once, and no proxy was asked twice for a stopped pod's final payout."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.localchain import DEFAULT_GENESIS_SEED
from cocoon_operator.ton.wallet import WalletKey, WalletVersion, make_wallet
from tests.cluster.helpers import (
    TARGET,
    conditions,
    create_worker,
    example_worker,
    get_worker,
    treasury_secret,
)
from tests.cluster.operator import running_operator
from tests.cluster.simulated import Env, example_model, running_agent, running_local_chain
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

API = ("cocoon.network", "v1alpha1")
NAMES = ("c0", "c1", "c2", "c3")
KILLS = {"create": 15, "rotate": 15, "delete": 10, "funding": 10}
FUNDING_FAILPOINTS = ("funding.after-record", "funding.after-send")
# Rotation and deletion drain each old pod: its final payout, asked for once.
PAYOUT_FAILPOINTS = ("", "payout.after-intent", "payout.after-send")


async def patch_spec(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        *API,
        namespace,
        "cocoonworkers",
        name,
        {"spec": spec},
        _content_type="application/merge-patch+json",
    )


async def kill_randomly(
    stack: Stack,
    env: Env,
    log: Path,
    rng: random.Random,
    times: int,
    failpoints: tuple[str, ...] = (),
) -> int:
    """Start the operator and SIGKILL it after a random delay, or at one of
    ``failpoints`` (picked at random; "" for none) if it gets there first."""
    killed = 0
    for _ in range(times):
        extra = {}
        if failpoints:
            extra["COCOON_FAILPOINTS"] = rng.choice(failpoints)
        with running_operator(
            stack.kubeconfig, env.namespace, log, *env.operator_args(), env_extra=extra
        ) as proc:
            waiter = asyncio.create_task(asyncio.to_thread(proc.wait))
            done, _ = await asyncio.wait({waiter}, timeout=rng.uniform(0.5, 4.0))
            if not done:  # still running: kill -9 wherever it is
                proc.kill()
            await waiter
            killed += proc.returncode == -9
    return killed


async def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    log = tmp_path / "operator.log"
    with (
        running_local_chain(
            tmp_path, models=[example_model(), example_model(commit="2" * 40)]
        ) as chain,
        running_agent(stack.kubeconfig, namespace, tmp_path) as agent,
    ):
        await treasury_secret(api, namespace, chain)
        # A v5r1 treasury here (test_chain and test_faults run v4r2): the
        # local chain's genesis key has both wallets, equally funded.
        env = Env(agent, chain, namespace, wallet=WalletVersion.V5R1)
        kills = 0
        for name in NAMES:
            await create_worker(api, namespace, name)
        kills += await kill_randomly(stack, env, log, rng, KILLS["create"])
        kills += await kill_randomly(stack, env, log, rng, KILLS["funding"], FUNDING_FAILPOINTS)
        model = example_worker()["spec"]["model"] | {"commit": "2" * 40}
        for name in NAMES:
            await patch_spec(api, namespace, name, {"model": model})
        kills += await kill_randomly(stack, env, log, rng, KILLS["rotate"], PAYOUT_FAILPOINTS)
        for name in NAMES[2:]:
            await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                *API, namespace, "cocoonworkers", name
            )
        kills += await kill_randomly(stack, env, log, rng, KILLS["delete"], PAYOUT_FAILPOINTS)
        assert kills >= 45, kills  # nearly every run was cut short

        with running_operator(stack.kubeconfig, namespace, log, *env.operator_args()) as proc:
            seen: dict[str, Any] = {}

            async def converged() -> list[dict[str, Any]] | None:
                items = (
                    await client.CustomObjectsApi(api).list_namespaced_custom_object(
                        *API, namespace, "cocoonworkers"
                    )
                )["items"]
                seen["workers"] = {
                    w["metadata"]["name"]: {
                        "phase": w.get("status", {}).get("phase"),
                        "deleting": "deletionTimestamp" in w["metadata"],
                        "finalizers": w["metadata"].get("finalizers"),
                        "false": {
                            t: (c.get("reason"), c.get("message"))
                            for t, c in conditions(w).items()
                            if c.get("status") != "True"
                        },
                    }
                    for w in items
                }
                if sorted(w["metadata"]["name"] for w in items) != list(NAMES[:2]):
                    return None
                ready = all(conditions(w).get("Ready", {}).get("status") == "True" for w in items)
                return items if ready else None

            try:
                workers = await eventually(converged, within=180, what="convergence after 50 kills")
            except AssertionError as e:
                raise AssertionError(f"{e}; workers: {seen.get('workers')}") from None
            for w in workers:
                assert w["spec"]["model"]["commit"] == "2" * 40
                assert w["status"]["currentRevision"] == w["status"]["targetRevision"]

            pods = (await client.CoreV1Api(api).list_namespaced_pod(namespace)).items
            live = [p for p in pods if p.metadata.deletion_timestamp is None]
            assert sorted(p.metadata.labels["cocoon.network/worker"] for p in live) == list(
                NAMES[:2]
            )
            slots = Counter(
                (p.spec.node_name, p.metadata.labels["cocoon.network/instance"]) for p in live
            )
            assert max(slots.values()) == 1  # no GPU slot or host port handed out twice

            async def settled() -> list[dict[str, Any]] | None:
                cm = await client.CoreV1Api(api).read_namespaced_config_map(
                    "cocoon-funding-ledger", namespace
                )
                intents: list[dict[str, Any]] = json.loads(cm.data["ledger.json"])["intents"]
                return intents if all(i["state"] != "pending" for i in intents) else None

            intents = await eventually(settled, within=60, what="no pending funding intent")
            confirmed = [t for i in intents if i["state"] == "confirmed" for t in i["transfers"]]
            per_wallet = Counter(t["address"] for t in confirmed)
            assert max(per_wallet.values()) == 1, per_wallet  # nobody funded twice
            key = WalletKey(DEFAULT_GENESIS_SEED)
            treasury = make_wallet(WalletVersion.V5R1, key.public_key).address
            async with TonClient(chain.api_url, timeout=10) as ton:
                for address in per_wallet:
                    assert await ton.get_address_balance(address) == TARGET
                seqno = (await ton.get_wallet_information(treasury)).seqno
            assert seqno == sum(1 for i in intents if i["state"] == "confirmed")
            for w in workers:
                assert (await get_worker(api, namespace, w["metadata"]["name"]))["status"][
                    "wallet"
                ]["balance"] == TARGET
            # Every old pod's final payout: each proxy asked once, never twice.
            payouts = agent.payout_answers()
            assert payouts and all(a == ["request sent"] for a in payouts.values()), payouts
            print(f"final payouts: {len({pod for pod, _ in payouts})} pods, {len(payouts)} asks")
            assert proc.poll() is None, log.read_text()[-3000:]
