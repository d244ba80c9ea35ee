"""A pool whose members' index lags its own deletions deletes no more than
maxUnavailable, and asks for (and announces) each deletion once, whichever
member's event plans next.

Each member's event reconciles the pool; what the pool expects of its own
deletions is the process's (``Deps.pool_expectations``), shared across them.
The reconcile runs in-process against the real apiserver, with an index that
never catches up (under load at 1,000 workers it ran minutes behind).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

import kopf
from kubernetes_asyncio import client

from cocoon_operator.api.pool import CocoonWorkerPool
from cocoon_operator.desired.pool import PoolRef, pool_worker, template_revision
from cocoon_operator.handlers.pool import Members, _reconcile_pool
from cocoon_operator.handlers.runtime import Deps
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.policy.pool import PoolMember
from tests.cluster.helpers import API, pool_body, pool_workers

REPLICAS = 4
HELD = "test.cocoon.network/held"


async def test_members_events_share_what_the_pool_expects_of_its_deletions(
    api: client.ApiClient, namespace: str, kube: Kube
) -> None:
    objects = client.CustomObjectsApi(api)
    body = pool_body()
    body["spec"]["replicas"] = REPLICAS
    body["spec"]["strategy"] = {"maxUnavailable": 1, "maxSurge": 0}
    created: dict[str, Any] = await objects.create_namespaced_custom_object(
        *API, namespace, "cocoonworkerpools", body
    )
    pool = CocoonWorkerPool.model_validate(created)
    old = template_revision(pool.spec.template)
    ref = PoolRef("fleet", namespace, created["metadata"]["uid"])
    entries: list[tuple[PoolMember, int | None, int | None]] = []
    for i in range(REPLICAS):
        name = f"fleet-{old[:8]}-{i}"
        doc = pool_worker(ref, pool.spec.template, old, name)
        # As the operator's own finalizer would: a deleted worker stays, deleting.
        doc["metadata"]["finalizers"] = [HELD]
        worker = await objects.create_namespaced_custom_object(
            *API, namespace, "cocoonworkers", doc
        )
        version = int(worker["metadata"]["resourceVersion"])
        entries.append((PoolMember(name, old, ready=True), 1000, version))
    # Every member Ready at the old revision, as the index saw them; it never
    # sees what follows.
    index = cast(Members, {(namespace, "fleet"): entries})

    rotated: dict[str, Any] = await objects.patch_namespaced_custom_object(
        *API,
        namespace,
        "cocoonworkerpools",
        "fleet",
        {"spec": {"template": {"spec": {"model": {"commit": "3" * 40}}}}},
        _content_type="application/merge-patch+json",
    )
    deps = Deps(api=kube, clock=lambda: dt.datetime.now(dt.UTC))
    logger = logging.getLogger("test")
    # Three members' events, each reconciling the pool with the process's one state.
    for _ in range(3):
        await _reconcile_pool(kopf.Body(rotated), deps, index, logger)

    workers = await pool_workers(api, namespace)
    events = (await client.CoreV1Api(api).list_namespaced_event(namespace)).items
    try:
        # One deletion, asked for and announced once, not once per member's event.
        deleted = [e.message for e in events if e.reason == "WorkerDeleted"]
        assert len(deleted) == 1, deleted
        left = [
            w
            for w in workers
            if w["metadata"]["name"].startswith(f"fleet-{old[:8]}-")
            and not w["metadata"].get("deletionTimestamp")
        ]
        assert len(left) == REPLICAS - 1, [w["metadata"]["name"] for w in workers]
        new = [w for w in workers if not w["metadata"]["name"].startswith(f"fleet-{old[:8]}-")]
        assert len(new) == 1
    finally:
        for w in workers:
            await objects.patch_namespaced_custom_object(
                *API,
                namespace,
                "cocoonworkers",
                w["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )
