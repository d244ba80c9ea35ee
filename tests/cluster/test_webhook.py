"""The validating webhook refuses what CEL cannot check (a TON address's
checksum) and names the field; the mutating one gives a new worker the
operator's finalizer as it is created; both configurations go on shutdown."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.k8s.webhook_tls import self_signed
from tests.cluster.helpers import example_worker, try_create
from tests.cluster.operator import running_operator
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually, free_port

API = (v1alpha1.GROUP, v1alpha1.VERSION)
# The example's owner address with the last character changed: the CRC breaks.
BAD_CHECKSUM = "UQC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH6GD"


def webhook_operator(
    stack: Stack, namespace: str, tmp_path: Path
) -> tuple[str, AbstractContextManager[subprocess.Popen[bytes]]]:
    """The webhook configuration's name, and the operator serving it (a context manager)."""
    # Webhook names are "<id>.<config>" and need three DNS labels.
    config = f"{namespace[-6:]}.test.cocoon.network"
    args = ("--webhook-addr", "127.0.0.1", "--webhook-port", str(free_port()))
    log = tmp_path / "op.log"
    return config, running_operator(
        stack.kubeconfig, namespace, log, *args, "--webhook-config", config
    )


async def refusal_once_up(api: client.ApiClient, namespace: str, name: str) -> str:
    """The webhook's message refusing a worker ``name`` with a bad checksum, once it is
    registered: until then the worker is created, so it is deleted and tried again."""
    bad = example_worker()
    bad["metadata"]["name"] = name
    bad["spec"]["ownerAddress"] = BAD_CHECKSUM

    async def refused() -> str | None:
        message = await try_create(api, namespace, bad)
        if message is None:  # webhook not registered yet: undo and retry
            await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                *API, namespace, v1alpha1.PLURAL, name
            )
        return message

    message: str = await eventually(refused, within=60, what="the webhook to refuse")
    return message


async def test_bad_checksum_is_refused_naming_the_field(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    config, operator = webhook_operator(stack, namespace, tmp_path)
    with operator:
        message = await refusal_once_up(api, namespace, "typo")
        assert "spec.ownerAddress: bad checksum" in message, message
        hook = await admission.read_validating_webhook_configuration(config)
        assert hook.webhooks[0].failure_policy == "Ignore"

        good = example_worker()
        good["metadata"]["name"] = "fine"
        assert await try_create(api, namespace, good) is None

    for read in (
        admission.read_validating_webhook_configuration,
        admission.read_mutating_webhook_configuration,
    ):
        with pytest.raises(ApiException) as err:
            await read(config)
        assert err.value.status == 404


async def test_an_object_that_got_in_while_the_webhook_was_down_stays_editable_and_deletable(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """failurePolicy Ignore lets a bad address in while the webhook is down. Once it
    is up, the object must still take the operator's finalizer, other edits and
    its deletion: refusing them (as a webhook that judged every request by the
    whole object did, DELETE included) would leave it stuck."""
    custom = client.CustomObjectsApi(api)
    stuck = example_worker()
    stuck["metadata"]["name"] = "early"
    stuck["spec"]["ownerAddress"] = BAD_CHECKSUM
    assert await try_create(api, namespace, stuck) is None  # no webhook yet
    _, operator = webhook_operator(stack, namespace, tmp_path)
    with operator:
        await refusal_once_up(api, namespace, "probe")
        # An edit that leaves the bad address alone goes through.
        await custom.patch_namespaced_custom_object(
            *API,
            namespace,
            v1alpha1.PLURAL,
            "early",
            {"metadata": {"labels": {"x": "y"}}},
            _content_type="application/merge-patch+json",
        )
        await custom.delete_namespaced_custom_object(*API, namespace, v1alpha1.PLURAL, "early")

        async def gone() -> bool:
            try:
                await custom.get_namespaced_custom_object(*API, namespace, v1alpha1.PLURAL, "early")
            except ApiException as err:
                return err.status == 404
            return False

        await eventually(gone, within=60, what="the early object deleted")


async def test_a_new_worker_has_the_finalizer_as_created_and_is_not_patched_for_it(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Without the mutating webhook kopf patches its finalizer onto each new worker
    and waits for the watch to bring the patch back before it handles the worker:
    a write per worker, and minutes at 3,000 workers. With it the worker is created
    with the finalizer, and only its creator ever writes the worker itself (the
    operator writes its status)."""
    custom = client.CustomObjectsApi(api)
    admission = client.AdmissionregistrationV1Api(api)
    config, operator = webhook_operator(stack, namespace, tmp_path)
    names = (f"w{i}" for i in itertools.count())
    with operator:

        async def created_with_finalizer() -> dict[str, Any] | None:
            body = example_worker()
            body["metadata"]["name"] = next(names)
            created: dict[str, Any] = await custom.create_namespaced_custom_object(
                *API, namespace, v1alpha1.PLURAL, body
            )
            # None: the mutating configuration is not registered yet (kopf adds
            # its finalizer to this one itself); try another worker.
            if v1alpha1.WORKER_FINALIZER in (created["metadata"].get("finalizers") or []):
                return created
            return None

        created = await eventually(
            created_with_finalizer, within=60, what="a worker created with the finalizer"
        )
        name = created["metadata"]["name"]
        assert created["metadata"]["finalizers"] == [v1alpha1.WORKER_FINALIZER]
        hook = await admission.read_mutating_webhook_configuration(config)
        assert [w.failure_policy for w in hook.webhooks] == ["Ignore"]
        assert hook.webhooks[0].rules[0].operations == ["CREATE"]

        async def handled() -> dict[str, Any] | None:
            worker: dict[str, Any] = await custom.get_namespaced_custom_object(
                *API, namespace, v1alpha1.PLURAL, name
            )
            return worker if (worker.get("status") or {}).get("phase") else None

        worker = await eventually(handled, within=60, what=f"{name} handled by the operator")
        creator = {m["manager"] for m in created["metadata"]["managedFields"]}
        writers = {
            m["manager"] for m in worker["metadata"]["managedFields"] if not m.get("subresource")
        }
        assert writers == creator, worker["metadata"]["managedFields"]
        assert worker["metadata"]["finalizers"] == [v1alpha1.WORKER_FINALIZER]


async def test_a_namespace_scoped_operator_leaves_workers_of_other_namespaces_alone(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The apiserver sends the webhooks requests from every namespace (kopf's
    configurations have no namespaceSelector). A finalizer on a worker in a
    namespace no replica watches would never be removed: the worker could never
    be deleted. Such workers get neither the finalizer nor a verdict."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    other = f"{namespace[:50]}-other"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    _, operator = webhook_operator(stack, namespace, tmp_path)
    try:
        with operator:
            # Both webhooks up: a bad address in the watched namespace is refused,
            # and a new worker there is created with the finalizer.
            await refusal_once_up(api, namespace, "probe")
            names = (f"w{i}" for i in itertools.count())

            async def created_with_finalizer() -> bool:
                body = example_worker()
                body["metadata"]["name"] = next(names)
                created = await custom.create_namespaced_custom_object(
                    *API, namespace, v1alpha1.PLURAL, body
                )
                return v1alpha1.WORKER_FINALIZER in (created["metadata"].get("finalizers") or [])

            await eventually(created_with_finalizer, within=60, what="the mutating webhook")
            body = example_worker()
            body["metadata"]["name"] = "elsewhere"
            created = await custom.create_namespaced_custom_object(
                *API, other, v1alpha1.PLURAL, body
            )
            assert not created["metadata"].get("finalizers"), created["metadata"]
            bad = example_worker()
            bad["metadata"]["name"] = "not-ours"
            bad["spec"]["ownerAddress"] = BAD_CHECKSUM
            assert await try_create(api, other, bad) is None
    finally:
        await core.delete_namespace(other)


async def test_a_follower_behind_the_same_service_answers_admission_reviews_as_the_leader(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """With a mounted certificate the configurations name a Service, which calls every
    replica. A follower runs no kopf: unanswered, its share of reviews would pass
    unchecked (failure policy Ignore). Here the configurations are pointed at the
    follower alone, and it refuses the bad address and adds the finalizer."""
    admission = client.AdmissionregistrationV1Api(api)
    custom = client.CustomObjectsApi(api)
    cert, key = self_signed(tmp_path, ["127.0.0.1"], now=dt.datetime.now(dt.UTC))
    config = f"{namespace[-6:]}.test.cocoon.network"
    leader_port, follower_port = free_port(), free_port()

    def replica(port: int, log: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
        return running_operator(
            stack.kubeconfig,
            namespace,
            tmp_path / log,
            "--leader-elect",
            "--leader-election-namespace",
            namespace,
            "--webhook-addr",
            "127.0.0.1",
            "--webhook-port",
            str(port),
            "--webhook-config",
            config,
            "--webhook-cert",
            str(cert),
            "--webhook-key",
            str(key),
        )

    with replica(leader_port, "leader.log"):
        await refusal_once_up(api, namespace, "probe")  # the leader serves
        with replica(follower_port, "follower.log"):
            # Every review now goes to the follower (as a Service may send it).
            for read, patch in (
                (
                    admission.read_validating_webhook_configuration,
                    admission.patch_validating_webhook_configuration,
                ),
                (
                    admission.read_mutating_webhook_configuration,
                    admission.patch_mutating_webhook_configuration,
                ),
            ):
                current = await read(config)
                hooks = []
                for hook in current.webhooks:
                    url = hook.client_config.url.replace(f":{leader_port}/", f":{follower_port}/")
                    hooks.append({"name": hook.name, "clientConfig": {"url": url}})
                await patch(config, {"webhooks": hooks})

            names = (f"typo{i}" for i in itertools.count())

            async def refused_by_the_follower() -> str | None:
                # None: created, as the patched configuration is not in effect yet,
                # or the follower is not listening yet (or, unfixed, never answers).
                bad = example_worker()
                bad["metadata"]["name"] = next(names)
                bad["spec"]["ownerAddress"] = BAD_CHECKSUM
                return await try_create(api, namespace, bad)

            message = await eventually(refused_by_the_follower, within=30, what="a refusal")
            assert "spec.ownerAddress: bad checksum" in message, message
            good = example_worker()
            good["metadata"]["name"] = "fine"
            created = await custom.create_namespaced_custom_object(
                *API, namespace, v1alpha1.PLURAL, good
            )
            assert created["metadata"]["finalizers"] == [v1alpha1.WORKER_FINALIZER]
            assert "LauncherCreated" not in (tmp_path / "follower.log").read_text()


async def test_gpu_verify_mode_is_refused_naming_the_field_without_the_operators_flag(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """COCOON's worker serves no GPU evidence endpoint: ``gpu.mode: Verify`` could never
    attest, so the webhook refuses it unless the operator runs with --allow-gpu-verify-mode."""
    _, operator = webhook_operator(stack, namespace, tmp_path)
    with operator:
        await refusal_once_up(api, namespace, "probe")
        verify = example_worker()
        verify["metadata"]["name"] = "gpu-verify"
        verify["spec"]["attestation"] = {"gpu": {"mode": "Verify"}}
        message = await try_create(api, namespace, verify)
        assert message is not None, "Verify was accepted"
        assert "spec.attestation.gpu.mode: Verify" in message, message
        assert "--allow-gpu-verify-mode" in message, message
        in_guest = example_worker()
        in_guest["metadata"]["name"] = "gpu-in-guest"
        in_guest["spec"]["attestation"] = {"gpu": {"mode": "InGuest"}}
        assert await try_create(api, namespace, in_guest) is None
