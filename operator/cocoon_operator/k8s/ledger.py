"""The funding ledger in a ConfigMap, written with the resourceVersion as the CAS token.

Intents hold signed messages (public once sent) and amounts, never keys, so a
ConfigMap is the right kind of object; the resourceVersion makes two writers
(a stale leader, a restarted process) fail rather than overwrite each other.
"""

from __future__ import annotations

from typing import Any

from cocoon_operator.funding import Ledger, LedgerConflictError
from cocoon_operator.k8s.rest import Conflict, Kube, path

KEY = "ledger.json"


class ConfigMapLedgerStore:
    def __init__(self, api: Kube, namespace: str, name: str) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name

    async def load(self) -> tuple[Ledger | None, str | None]:
        cm = await self._api.request_unless_gone("GET", self._path(self._name))
        if cm is None:
            return None, None
        raw = (cm.get("data") or {}).get(KEY)
        ledger = Ledger.model_validate_json(raw) if raw else None
        return ledger, cm["metadata"]["resourceVersion"]

    def _path(self, name: str | None = None) -> str:
        return path("v1", "configmaps", namespace=self._namespace, name=name)

    async def save(self, ledger: Ledger, version: str | None) -> str:
        body: dict[str, Any] = {
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
                cm = await self._api.request("POST", self._path(), body=body)
            else:
                body["metadata"]["resourceVersion"] = version
                cm = await self._api.request("PUT", self._path(self._name), body=body)
        except Conflict:
            raise LedgerConflictError(f"ConfigMap {self._namespace}/{self._name} changed") from None
        version_out: str = cm["metadata"]["resourceVersion"]
        return version_out
