"""kill -9 of the operator in the middle of a rollout: a new process resumes it,
every worker converges to its target revision with exactly one launcher pod."""

from __future__ import annotations

import signal
from pathlib import Path

from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import LABEL_REVISION
from tests.cluster.helpers import create_worker, example_worker, get_worker, worker_pods
from tests.cluster.operator import running_operator
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

API = (v1alpha1.GROUP, v1alpha1.VERSION)
NAMES = [f"r{i}" for i in range(4)]


async def all_converged(api: client.ApiClient, namespace: str) -> bool:
    for name in NAMES:
        worker = await get_worker(api, namespace, name)
        status = worker.get("status", {})
        pods = await worker_pods(api, namespace, name)
        if status.get("phase") != "Attesting" or len(pods) != 1:
            return False
        if pods[0].metadata.labels[LABEL_REVISION] != status.get("targetRevision"):
            return False
        if status.get("currentRevision") != status.get("targetRevision"):
            return False
        if worker["metadata"]["generation"] != status.get("observedGeneration"):
            return False
    return True


async def test_kill_9_mid_rollout_then_restart_converges(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    with running_operator(stack.kubeconfig, namespace, log):
        for name in NAMES:
            await create_worker(api, namespace, name)
        await eventually(lambda: all_converged(api, namespace), within=90, what="first rollout")

    # A model change lands while no operator runs, and another right after the
    # next one starts; kill -9 it in the middle.
    custom = client.CustomObjectsApi(api)
    model = example_worker()["spec"]["model"]

    async def set_model(name: str, model_name: str) -> None:
        await custom.patch_namespaced_custom_object(
            *API,
            namespace,
            v1alpha1.PLURAL,
            name,
            {"spec": {"model": {**model, "name": model_name}}},
            _content_type="application/merge-patch+json",
        )

    for name in NAMES[:2]:
        await set_model(name, "Qwen/Qwen3-14B")
    with running_operator(stack.kubeconfig, namespace, log) as proc:
        for name in NAMES[2:]:
            await set_model(name, "Qwen/Qwen3-32B")

        async def rotation_started() -> bool:
            events = await client.CoreV1Api(api).list_namespaced_event(namespace)
            return any(e.reason == "Rotating" for e in events.items)

        await eventually(rotation_started, within=30, what="a rotation to begin", interval=0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    with running_operator(stack.kubeconfig, namespace, log) as proc:
        await eventually(
            lambda: all_converged(api, namespace), within=120, what="rollout after restart"
        )
        assert proc.poll() is None
    for name in NAMES:
        worker = await get_worker(api, namespace, name)
        expected = "Qwen/Qwen3-14B" if name in NAMES[:2] else "Qwen/Qwen3-32B"
        assert worker["spec"]["model"]["name"] == expected
