"""Thin, idempotent writes: create tolerating 409, delete tolerating 404, status merge-patch.

Launcher Pods are created, never patched: their name carries the revision, and
everything else in them (the instance's host port, the VM shape) is immutable
once scheduled. A 409 therefore means "already done", which is what makes a
retried or concurrent reconcile harmless.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.pool import POOL_PLURAL

# The client's typed signatures omit its ``_content_type`` switch; a merge patch
# (not a JSON patch) is what a partial status document is.
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
STRATEGIC_PATCH: dict[str, Any] = {"_content_type": "application/strategic-merge-patch+json"}


# Returns the raw response: the client would otherwise build typed models of
# every answer (a V1Pod, a V1Event), which cost more CPU than the request.
RAW: dict[str, Any] = {"_preload_content": False}


async def raw_json(call: Awaitable[Any]) -> dict[str, Any]:
    """The JSON body of a call made with :data:`RAW`; ApiException on an error status,
    as the client raises it otherwise."""
    response = await call
    try:
        data = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        err = ApiException(status=response.status, reason=response.reason)
        err.body = data.decode(errors="replace")
        raise err
    out: dict[str, Any] = json.loads(data)
    return out


async def create_if_absent(api: client.ApiClient, obj: dict[str, Any]) -> bool:
    """Create a namespaced Pod, ConfigMap, Secret or CocoonWorker; False if it already existed."""
    core = client.CoreV1Api(api)
    namespace = obj["metadata"]["namespace"]
    # The builders produce plain manifests; the client serialises dicts as they are.
    body: Any = obj
    try:
        if obj["kind"] == "Pod":
            await core.create_namespaced_pod(namespace, body)
        elif obj["kind"] == "ConfigMap":
            await core.create_namespaced_config_map(namespace, body)
        elif obj["kind"] == "Secret":
            await core.create_namespaced_secret(namespace, body)
        elif obj["kind"] == v1alpha1.KIND:
            await client.CustomObjectsApi(api).create_namespaced_custom_object(
                v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, body
            )
        else:
            raise ValueError(f"create_if_absent does not handle {obj['kind']}")
    except ApiException as err:
        if err.status == 409:
            return False
        raise
    return True


async def delete_pod(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Delete with the pod's own grace period; False if it was already gone."""
    try:
        await client.CoreV1Api(api).delete_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


async def _patch_custom_status(
    api: client.ApiClient, plural: str, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch the status subresource of one of our objects; the object as patched,
    None if it vanished (a deleted object's status needs no writing)."""
    try:
        patched: dict[str, Any] = await client.CustomObjectsApi(
            api
        ).patch_namespaced_custom_object_status(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            **MERGE_PATCH,
        )
    except ApiException as err:
        if err.status != 404:
            raise
        return None
    return patched


async def patch_worker_status(
    api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch a worker's status; the worker as patched, None if it vanished."""
    return await _patch_custom_status(api, v1alpha1.PLURAL, namespace, name, status)


async def patch_pod_condition(
    api: client.ApiClient, namespace: str, name: str, condition: dict[str, Any]
) -> dict[str, Any] | None:
    """Set one condition in a pod's status (a readiness gate); the pod as patched,
    None if it is gone.

    A strategic merge patch: pod conditions merge by ``type``, so the
    kubelet's own conditions are left as they are.
    """
    try:
        return await raw_json(
            client.CoreV1Api(api).patch_namespaced_pod_status(
                name,
                namespace,
                {"status": {"conditions": [condition]}},
                **STRATEGIC_PATCH,
                **RAW,
            )
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise


async def annotate_pod(
    api: client.ApiClient, namespace: str, name: str, annotations: dict[str, str]
) -> bool:
    """Merge ``annotations`` into a pod's; False if the pod is gone."""
    try:
        await client.CoreV1Api(api).patch_namespaced_pod(
            name, namespace, {"metadata": {"annotations": annotations}}, **MERGE_PATCH
        )
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


async def delete_worker(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Delete a CocoonWorker (its finalizer drains it); False if it was already gone."""
    try:
        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, name
        )
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


async def patch_worker_spec(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    """Merge-patch a CocoonWorker's spec; a vanished worker is not an error."""
    try:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            v1alpha1.PLURAL,
            name,
            {"spec": spec},
            **MERGE_PATCH,
        )
    except ApiException as err:
        if err.status != 404:
            raise


async def patch_pool_status(
    api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch a pool's status; the pool as patched, None if it vanished."""
    return await _patch_custom_status(api, POOL_PLURAL, namespace, name, status)
