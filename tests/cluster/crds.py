"""Install the generated CRDs into the test stack (idempotent, server-side apply)."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from tests.cluster.wait import eventually

CRDS = Path(__file__).resolve().parents[2] / "crds"


async def install_crds(api: client.ApiClient) -> list[str]:
    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        names.append(name)
        await ext.patch_custom_resource_definition(
            name,
            crd,
            field_manager="cocoon-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )

        async def established(name: str = name) -> bool:
            try:
                got = await ext.read_custom_resource_definition(name)
            except ApiException:
                return False
            return any(
                c.type == "Established" and c.status == "True" for c in got.status.conditions or []
            )

        await eventually(established, within=30, what=f"CRD {name} Established")

        async def served(crd: dict = crd) -> bool:  # type: ignore[type-arg]
            # Established can come before the resource's storage is ready (429).
            spec = crd["spec"]
            try:
                await client.CustomObjectsApi(api).list_cluster_custom_object(
                    spec["group"], spec["versions"][0]["name"], spec["names"]["plural"], limit=1
                )
            except ApiException:
                return False
            return True

        await eventually(served, within=30, what=f"CRD {name} served")
    return names
