"""A step that runs on a body older than the operator's own last status write decides
on the newer copy: it neither rewrites what it wrote nor moves a condition's
lastTransitionTime (at 1,000 workers, kopf's bodies lagged the operator's writes
and workers flapped between Ready and Registering).

The reconcile runs in-process here against the real apiserver, so the stale body
can be handed to it deliberately; the watch that would normally deliver it is
what lags under load.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

import kopf
from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from cocoon_operator.handlers.reconciler import reconcile, reconcile_body
from cocoon_operator.handlers.runtime import Deps, Indexes, Runtime
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.policy.launcherimages import LauncherImages
from cocoon_operator.reconcile.gather import pod_facts
from cocoon_operator.workerapi import ControlKeys, ControlSigner, generate_private_key_text
from tests.cluster.helpers import create_worker_ref

API = (v1alpha1.GROUP, v1alpha1.VERSION)
T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


async def _read(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        *API, namespace, v1alpha1.PLURAL, name
    )
    return obj


async def test_a_reconcile_on_a_stale_body_keeps_the_status_the_operator_just_wrote(
    api: client.ApiClient, namespace: str, kube: Kube
) -> None:
    await create_worker_ref(api, namespace, "w")
    stale = kopf.Body(cast(kopf.RawBody, await _read(api, namespace, "w")))
    clock = [T0]
    # The operator's configuration as a test's: its own control key, any launcher image.
    deps = Deps(
        api=kube,
        clock=lambda: clock[0],
        control=ControlKeys(ControlSigner.from_text(generate_private_key_text()), []),
        launcher_images=LauncherImages(allow_any=True),
    )
    runtime = Runtime(started=deps)
    logger = logging.getLogger("test")

    await reconcile(runtime, stale, Indexes(pods={}, instances={}, nodes={}), logger)  # type: ignore[arg-type]
    first = await _read(api, namespace, "w")
    assert first["status"]["phase"] == "Pending"
    times = {c["type"]: c["lastTransitionTime"] for c in first["status"]["conditions"]}

    # Five seconds on, the same (stale) body again, now with the pod it created
    # in the index, as a timer or a pod event would hand it over.
    clock[0] = T0 + dt.timedelta(seconds=5)
    pods = (await client.CoreV1Api(api).list_namespaced_pod(namespace)).items
    assert len(pods) == 1
    raw_pod = api.sanitize_for_serialization(pods[0])
    index = {(namespace, "w"): [pod_facts(kopf.Body(raw_pod))]}
    await reconcile(runtime, stale, Indexes(pods=index, instances={}, nodes={}), logger)  # type: ignore[arg-type]

    second = await _read(api, namespace, "w")
    assert second["status"]["pod"] == pods[0].metadata.name  # the new fact is recorded
    flipped = {
        c["type"]
        for c in second["status"]["conditions"]
        if c["status"] != {d["type"]: d["status"] for d in first["status"]["conditions"]}[c["type"]]
    }
    for cond in second["status"]["conditions"]:
        if cond["type"] not in flipped:
            assert cond["lastTransitionTime"] == times[cond["type"]], cond

    # A step hands our copy on to the reconcile, as the attestation and chain
    # steps do: that is not the watch catching up, so our copy is kept and the
    # stale body after it still decides on it.
    ours = deps.fresh(stale)
    await reconcile_body(runtime, ours, Indexes(pods=index, instances={}, nodes={}), logger)  # type: ignore[arg-type]
    assert len(deps.latest) == 1

    # Once more on the same stale body and the same facts: nothing left to write.
    clock[0] = T0 + dt.timedelta(seconds=10)
    await reconcile(runtime, stale, Indexes(pods=index, instances={}, nodes={}), logger)  # type: ignore[arg-type]
    third = await _read(api, namespace, "w")
    assert third["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"], (
        "the stale body made the reconcile write status again"
    )
    # The operator keeps nothing once the watch's copy has caught up.
    deps.fresh(kopf.Body(cast(kopf.RawBody, third)))
    assert len(deps.latest) == 0
