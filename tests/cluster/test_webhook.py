"""The validating webhook refuses what CEL cannot check (a TON address's
checksum), names the field, and cleans its configuration up on shutdown."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from tests.cluster.crds import install_crds
from tests.cluster.fixtures import Stack
from tests.cluster.operator import running_operator
from tests.cluster.test_admission import example_worker
from tests.cluster.wait import eventually

API = (v1alpha1.GROUP, v1alpha1.VERSION)
# The example's owner address with the last character changed: the CRC breaks.
BAD_CHECKSUM = "UQC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH6GD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def try_create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> str | None:
    """None when created, else the apiserver's message."""
    try:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            *API, namespace, v1alpha1.PLURAL, body
        )
    except ApiException as err:
        message: str = json.loads(err.body)["message"]
        return message
    return None


async def test_bad_checksum_is_refused_naming_the_field(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await install_crds(api)
    # Webhook names are "<id>.<config>" and need three DNS labels.
    config = f"{namespace[-6:]}.test.cocoon.network"
    args = ("--webhook-addr", "127.0.0.1", "--webhook-port", str(free_port()))
    admission = client.AdmissionregistrationV1Api(api)
    with running_operator(
        stack.kubeconfig, namespace, tmp_path / "op.log", *args, "--webhook-config", config
    ):
        bad = example_worker()
        bad["metadata"]["name"] = "typo"
        bad["spec"]["ownerAddress"] = BAD_CHECKSUM

        async def refused() -> str | None:
            message = await try_create(api, namespace, bad)
            if message is None:  # webhook not registered yet: undo and retry
                await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                    *API, namespace, v1alpha1.PLURAL, "typo"
                )
            return message

        message = await eventually(refused, within=60, what="the webhook to refuse")
        assert "spec.ownerAddress: bad checksum" in message, message
        hook = await admission.read_validating_webhook_configuration(config)
        assert hook.webhooks[0].failure_policy == "Ignore"

        good = example_worker()
        good["metadata"]["name"] = "fine"
        assert await try_create(api, namespace, good) is None

    with pytest.raises(ApiException) as err:
        await admission.read_validating_webhook_configuration(config)
    assert err.value.status == 404
