"""What a pool's workers and their wallet-key Secrets look like (pure builders)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from cocoon_operator.api.labels import LABEL_POOL, LABEL_POOL_REVISION
from cocoon_operator.api.pool import POOL_KIND, WorkerTemplate
from cocoon_operator.api.v1alpha1 import API_VERSION, KIND, WORKER_FINALIZER


def pool_selector(pool: str) -> str:
    """The pool's CocoonWorkers as a label selector (``status.selector``, for ``/scale``)."""
    return f"{LABEL_POOL}={pool}"


WALLET_KEY: Final = "node-wallet-key"


@dataclass(frozen=True)
class PoolRef:
    name: str
    namespace: str
    uid: str


def template_revision(template: WorkerTemplate) -> str:
    """A short hash of the template: workers made from another template are old."""
    doc = template.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The coefficient is applied live by each worker: changing it rolls nothing.
    doc.get("spec", {}).pop("coefficient", None)
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def wallet_secret_name(worker: str) -> str:
    return f"{worker}-wallet"


def wallet_secret(pool: PoolRef, worker: str, key: bytes) -> dict[str, Any]:
    """The worker's node wallet key. Deliberately not owned by the pool or the worker:
    a key may hold money, and garbage collection must never delete it."""
    if len(key) != 32:
        raise ValueError("a node wallet key is 32 bytes")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": wallet_secret_name(worker),
            "namespace": pool.namespace,
            "labels": {LABEL_POOL: pool.name, "app.kubernetes.io/managed-by": "cocoon-operator"},
        },
        "type": "Opaque",
        "data": {WALLET_KEY: base64.b64encode(base64.b64encode(key)).decode()},
    }


def pool_worker(
    pool: PoolRef, template: WorkerTemplate, revision: str, name: str
) -> dict[str, Any]:
    """A CocoonWorker of ``pool`` at ``revision``, owned by the pool.

    It carries the operator's finalizer from the start: kopf would otherwise add
    it in a patch of its own (a write, and a watch event, per member) before it
    handled the new worker.
    """
    spec = template.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["nodeWalletKeySecretRef"] = {"name": wallet_secret_name(name), "key": WALLET_KEY}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": pool.namespace,
            "labels": {**template.labels, LABEL_POOL: pool.name, LABEL_POOL_REVISION: revision},
            "finalizers": [WORKER_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": POOL_KIND,
                    "name": pool.name,
                    "uid": pool.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
