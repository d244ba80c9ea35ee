"""A CocoonWorkerPool of ten workers on the local stack: all reach Ready (attested,
allowed, funded), a model change rolls them at most maxUnavailable at a time, a
coefficient change is applied in place, and deleting the pool drains its workers
but keeps their wallet keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.cluster.helpers import (
    API,
    MAX_UNAVAILABLE,
    REPLICAS,
    conditions,
    example_worker,
    pool_body,
    pool_workers,
    treasury_secret,
)
from tests.cluster.operator import StartOperator
from tests.cluster.simulated import Env, example_model, running_agent, running_local_chain
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually


@pytest.fixture
async def env(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> AsyncIterator[Env]:
    with (
        running_local_chain(
            tmp_path, models=[example_model(), example_model(commit="3" * 40)]
        ) as chain,
        running_agent(stack.kubeconfig, namespace, tmp_path) as agent,
    ):
        await treasury_secret(api, namespace, chain)
        yield Env(agent, chain, namespace)


def is_ready(worker: dict[str, Any]) -> bool:
    return conditions(worker).get("Ready", {}).get("status") == "True"


async def patch_template(api: client.ApiClient, namespace: str, spec: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        *API,
        namespace,
        "cocoonworkerpools",
        "fleet",
        {"spec": {"template": {"spec": spec}}},
        _content_type="application/merge-patch+json",
    )


async def test_a_pool_rolls_within_max_unavailable_and_keeps_wallet_keys(
    api: client.ApiClient,
    namespace: str,
    env: Env,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    # Ten workers and their replacements in one namespace, 10 TON each: more than the
    # operator's default namespace cap (100 TON a day), which this test is not about.
    caps = ("--funding-namespace-daily-cap", "1000")
    proc = operator(*env.operator_args(), *caps, log=log)
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        *API, namespace, "cocoonworkerpools", pool_body()
    )

    async def all_ready() -> list[dict[str, Any]] | None:
        workers = await pool_workers(api, namespace)
        live = [w for w in workers if "deletionTimestamp" not in w["metadata"]]
        return live if len(live) == REPLICAS and all(map(is_ready, live)) else None

    first = await eventually(all_ready, within=180, what="ten Ready workers")
    first_names = {w["metadata"]["name"] for w in first}
    assert all(w["metadata"]["labels"]["team"] == "gpu" for w in first)

    # Roll to another model; watch availability all the way.
    model = example_worker()["spec"]["model"] | {"commit": "3" * 40}
    await patch_template(api, namespace, {"model": model})
    fewest_ready = REPLICAS
    for _ in range(1200):
        workers = await pool_workers(api, namespace)
        live = [w for w in workers if "deletionTimestamp" not in w["metadata"]]
        fewest_ready = min(fewest_ready, sum(map(is_ready, live)))
        rolled = [w for w in live if w["spec"]["model"]["commit"] == "3" * 40]
        if len(live) == REPLICAS and len(rolled) == REPLICAS and all(map(is_ready, rolled)):
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the roll did not finish within 300 s")
    assert fewest_ready >= REPLICAS - MAX_UNAVAILABLE, fewest_ready
    assert not first_names & {w["metadata"]["name"] for w in live}

    pool = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        *API, namespace, "cocoonworkerpools", "fleet"
    )

    async def status_settled() -> bool:
        p = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            *API, namespace, "cocoonworkerpools", "fleet"
        )
        s = p.get("status", {})
        return s.get("readyReplicas") == REPLICAS and s.get("updatedReplicas") == REPLICAS

    await eventually(status_settled, within=30, what="pool status")
    assert (
        pool["status"]["updateRevision"]
        in live[0]["metadata"]["labels"]["cocoon.network/pool-revision"]
    )

    # The coefficient is applied in place: same workers, new value.
    names = {w["metadata"]["name"] for w in live}
    await patch_template(api, namespace, {"coefficient": 1300})

    async def repriced() -> bool:
        workers = await pool_workers(api, namespace)
        return {w["metadata"]["name"] for w in workers} == names and all(
            w["spec"]["coefficient"] == 1300 for w in workers
        )

    await eventually(repriced, within=30, what="coefficient set on every worker in place")

    # Deleting the pool deletes its workers (drained by their finalizers) but never keys.
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        *API, namespace, "cocoonworkerpools", "fleet", propagation_policy="Foreground"
    )

    async def workers_gone() -> bool:
        return not await pool_workers(api, namespace)

    await eventually(workers_gone, within=120, what="pool workers deleted")
    secrets = await client.CoreV1Api(api).list_namespaced_secret(
        namespace, label_selector="cocoon.network/pool=fleet"
    )
    assert len(secrets.items) == 2 * REPLICAS  # one key per worker ever made, all kept
    assert proc.poll() is None, log.read_text()[-3000:]


async def test_a_pool_scales_through_its_scale_subresource(
    api: client.ApiClient, namespace: str, tmp_path: Path, operator: StartOperator
) -> None:
    # What `kubectl scale cocoonworkerpool/fleet --replicas=3` and an HPA do: read and
    # write /scale, whose selector (status.selector) names the pool's CocoonWorkers.
    body = pool_body()
    body["spec"]["replicas"] = 1
    custom = client.CustomObjectsApi(api)
    log = tmp_path / "operator.log"
    operator(log=log)
    await custom.create_namespaced_custom_object(*API, namespace, "cocoonworkerpools", body)

    async def scale_says(replicas: int) -> dict[str, Any] | None:
        scale: dict[str, Any] = await custom.get_namespaced_custom_object_scale(
            *API, namespace, "cocoonworkerpools", "fleet"
        )
        status = scale.get("status") or {}
        return scale if status.get("replicas") == replicas else None

    first = await eventually(lambda: scale_says(1), within=30, what="/scale replicas 1")
    assert first["spec"]["replicas"] == 1
    assert first["status"]["selector"] == "cocoon.network/pool=fleet"

    await custom.patch_namespaced_custom_object_scale(
        *API,
        namespace,
        "cocoonworkerpools",
        "fleet",
        {"spec": {"replicas": 3}},
        _content_type="application/merge-patch+json",
    )
    await eventually(lambda: scale_says(3), within=30, what="/scale replicas 3")
    workers = await pool_workers(api, namespace)
    assert len(workers) == 3
    pool = await custom.get_namespaced_custom_object(*API, namespace, "cocoonworkerpools", "fleet")
    assert pool["spec"]["replicas"] == 3
