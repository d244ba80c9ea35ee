"""Thin, idempotent writes: create tolerating 409, delete tolerating 404, status merge-patch.

Launcher Pods are created, never patched: their name carries the revision, and
everything else in them (the instance's host port, the VM shape) is immutable
once scheduled. A 409 therefore means "already done", which is what makes a
retried or concurrent reconcile harmless.
"""

from __future__ import annotations

from typing import Any

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.pool import POOL_PLURAL
from cocoon_operator.k8s.rest import MERGE_PATCH, STRATEGIC_PATCH, Conflict, Kube, path

# The kinds create_if_absent makes, and their collections.
_PLURALS = {
    "Pod": ("v1", "pods"),
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    v1alpha1.KIND: (v1alpha1.API_VERSION, v1alpha1.PLURAL),
}


async def create_if_absent(api: Kube, obj: dict[str, Any]) -> bool:
    """Create a namespaced Pod, ConfigMap, Secret or CocoonWorker; False if it already existed."""
    where = _PLURALS.get(obj["kind"])
    if where is None:
        raise ValueError(f"create_if_absent does not handle {obj['kind']}")
    api_version, plural = where
    try:
        await api.request(
            "POST", path(api_version, plural, namespace=obj["metadata"]["namespace"]), body=obj
        )
    except Conflict:
        return False
    return True


async def _patch_or_none(
    api: Kube, url: str, body: dict[str, Any], content_type: str
) -> dict[str, Any] | None:
    """The object as patched, None if it vanished."""
    return await api.request_unless_gone("PATCH", url, body=body, content_type=content_type)


async def delete_pod(api: Kube, namespace: str, name: str) -> bool:
    """Delete with the pod's own grace period; False if it was already gone."""
    url = path("v1", "pods", namespace=namespace, name=name)
    return await api.request_unless_gone("DELETE", url) is not None


async def _patch_custom_status(
    api: Kube, plural: str, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch the status subresource of one of our objects; the object as patched,
    None if it vanished."""
    url = path(v1alpha1.API_VERSION, plural, namespace=namespace, name=name, subresource="status")
    return await _patch_or_none(api, url, {"status": status}, MERGE_PATCH)


async def patch_worker_status(
    api: Kube, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch a worker's status; the worker as patched, None if it vanished."""
    return await _patch_custom_status(api, v1alpha1.PLURAL, namespace, name, status)


async def patch_pod_condition(
    api: Kube, namespace: str, name: str, condition: dict[str, Any]
) -> dict[str, Any] | None:
    """Set one condition in a pod's status (a readiness gate); the pod as patched,
    None if it is gone.

    A strategic merge patch: pod conditions merge by ``type``, so the
    kubelet's own conditions are left as they are.
    """
    url = path("v1", "pods", namespace=namespace, name=name, subresource="status")
    return await _patch_or_none(api, url, {"status": {"conditions": [condition]}}, STRATEGIC_PATCH)


async def annotate_pod(
    api: Kube, namespace: str, name: str, annotations: dict[str, str]
) -> dict[str, Any] | None:
    """Merge ``annotations`` into a pod's; the pod as patched, None if it is gone."""
    url = path("v1", "pods", namespace=namespace, name=name)
    patch = {"metadata": {"annotations": annotations}}
    return await _patch_or_none(api, url, patch, MERGE_PATCH)


async def delete_worker(api: Kube, namespace: str, name: str) -> bool:
    """Delete a CocoonWorker (its finalizer drains it); False if it was already gone."""
    url = path(v1alpha1.API_VERSION, v1alpha1.PLURAL, namespace=namespace, name=name)
    return await api.request_unless_gone("DELETE", url) is not None


async def patch_worker_spec(api: Kube, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Merge-patch a CocoonWorker's spec; a vanished worker is not an error."""
    url = path(v1alpha1.API_VERSION, v1alpha1.PLURAL, namespace=namespace, name=name)
    await _patch_or_none(api, url, {"spec": spec}, MERGE_PATCH)


async def patch_pool_status(
    api: Kube, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch a pool's status; the pool as patched, None if it vanished."""
    return await _patch_custom_status(api, POOL_PLURAL, namespace, name, status)
