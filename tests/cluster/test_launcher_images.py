"""Only the launcher images the operator's configuration allows ever run.

``spec.release.image`` becomes a privileged pod on a TDX/GPU node, so the
images that may run are the operator's list (``--launcher-image``), not the
worker author's choice: the webhook refuses another image naming the field,
and without the webhook (failure policy Ignore, or down) the reconcile starts
no launcher pod for it and says why. An image taken off the list later
starts no new pod; the running one is left to the administrator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from tests.cluster.helpers import (
    conditions,
    create_worker,
    example_worker,
    get_worker,
    try_create,
    worker_pods,
)
from tests.cluster.operator import StartOperator, running_operator
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually, free_port

API = (v1alpha1.GROUP, v1alpha1.VERSION)
ALLOWED = example_worker()["spec"]["release"]["image"]
OTHER_DIGEST = "sha256:" + "0b" * 32
OTHER = f"registry.local/cocoon/launcher@{OTHER_DIGEST}"


def refused_image(api: client.ApiClient, namespace: str, name: str) -> Any:
    async def probe() -> dict[str, Any] | None:
        worker = await get_worker(api, namespace, name)
        ready = conditions(worker).get("Ready", {})
        return worker if ready.get("reason") == "ImageNotAllowed" else None

    return probe


async def test_another_image_is_refused_at_admission_naming_the_field(
    api: client.ApiClient, namespace: str, tmp_path: Path, operator: StartOperator
) -> None:
    config = f"{namespace[-6:]}.img.cocoon.network"
    args = ("--webhook-addr", "127.0.0.1", "--webhook-port", str(free_port()))
    log = tmp_path / "op.log"
    proc = operator(*args, "--webhook-config", config, "--launcher-image", ALLOWED, log=log)
    body = example_worker()
    body["metadata"]["name"] = "other"
    body["spec"]["release"]["image"] = OTHER

    async def refused() -> str | None:
        message = await try_create(api, namespace, body)
        if message is None:  # the webhook is not registered yet: undo, try again
            await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                *API, namespace, v1alpha1.PLURAL, "other"
            )
        return message

    message = await eventually(refused, within=60, what="the webhook to refuse")
    assert "spec.release.image" in message and OTHER_DIGEST in message, message
    assert "--launcher-image" in message
    allowed = example_worker()
    allowed["metadata"]["name"] = "allowed"
    assert await try_create(api, namespace, allowed) is None
    assert proc.poll() is None, log.read_text()[-3000:]


async def test_without_the_webhook_a_refused_image_gets_no_pod_and_a_condition_saying_why(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path, operator: StartOperator
) -> None:
    log = tmp_path / "op.log"
    allow_example = ("--launcher-image", ALLOWED)
    with running_operator(stack.kubeconfig, namespace, log, *allow_example) as proc:
        await create_worker(api, namespace, "allowed")
        await create_worker(
            api, namespace, "other", release={**example_worker()["spec"]["release"], "image": OTHER}
        )
        worker = await eventually(
            refused_image(api, namespace, "other"), within=60, what="ImageNotAllowed"
        )
        ready = conditions(worker)["Ready"]
        assert ready["status"] == "False"
        assert "spec.release.image" in ready["message"] and OTHER_DIGEST in ready["message"]
        assert worker["status"]["phase"] == "Failed"

        async def allowed_has_a_pod() -> bool:
            return len(await worker_pods(api, namespace, "allowed")) == 1

        await eventually(allowed_has_a_pod, within=60, what="the allowed worker's pod")
        assert await worker_pods(api, namespace, "other") == []
        assert proc.poll() is None, log.read_text()[-3000:]

    # The example's image is taken off the list: its running pod is left alone (an
    # administrator decides to stop it), but once it is gone no new one starts.
    elsewhere = ("--launcher-image", OTHER)
    proc = operator(*elsewhere, log=log)
    await eventually(refused_image(api, namespace, "allowed"), within=60, what="now refused")
    (pod,) = await worker_pods(api, namespace, "allowed")
    await client.CoreV1Api(api).delete_namespaced_pod(
        pod.metadata.name, namespace, grace_period_seconds=0
    )

    async def no_pods() -> bool:
        return await worker_pods(api, namespace, "allowed") == []

    await eventually(no_pods, within=60, what="the pod gone")

    async def deletion_reconciled() -> bool:
        # The reconcile that saw the pod gone wrote the worker's pod as none: had
        # it started a new one, that one would be named.
        worker = await refused_image(api, namespace, "allowed")()
        return worker is not None and not worker["status"].get("pod")

    await eventually(deletion_reconciled, within=30, what="the pod's deletion reconciled")
    assert await worker_pods(api, namespace, "allowed") == []
    assert proc.poll() is None, log.read_text()[-3000:]
