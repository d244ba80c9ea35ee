"""The funding ledger in a ConfigMap, written with the resourceVersion as the CAS token.

Intents hold signed messages (public once sent) and amounts, never keys, so a
ConfigMap is the right kind of object; the resourceVersion makes two writers
(a stale leader, a restarted process) fail rather than overwrite each other.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.funding import Ledger, LedgerConflictError

KEY = "ledger.json"


class ConfigMapLedgerStore:
    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._name = name

    async def load(self) -> tuple[Ledger | None, str | None]:
        try:
            cm = await self._core.read_namespaced_config_map(self._name, self._namespace)
        except ApiException as err:
            if err.status == 404:
                return None, None
            raise
        raw = (cm.data or {}).get(KEY)
        ledger = Ledger.model_validate_json(raw) if raw else None
        return ledger, cm.metadata.resource_version

    async def save(self, ledger: Ledger, version: str | None) -> str:
        # The client serialises plain dicts as they are.
        body: Any = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self._name,
                "namespace": self._namespace,
                "labels": {"app.kubernetes.io/managed-by": "cocoon-operator"},
            },
            "data": {KEY: ledger.model_dump_json(indent=1)},
        }
        try:
            if version is None:
                cm = await self._core.create_namespaced_config_map(self._namespace, body)
            else:
                body["metadata"]["resourceVersion"] = version
                cm = await self._core.replace_namespaced_config_map(
                    self._name, self._namespace, body
                )
        except ApiException as err:
            if err.status == 409:
                raise LedgerConflictError(
                    f"ConfigMap {self._namespace}/{self._name} changed"
                ) from None
            raise
        version_out: str = cm.metadata.resource_version
        return version_out
