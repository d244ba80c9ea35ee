"""Bad CocoonWorker specs are refused by the apiserver itself (OpenAPI schema and
CEL rules in the generated CRD), with a message that names the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from tests.cluster.helpers import example_worker


async def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        v1alpha1.GROUP,
        v1alpha1.VERSION,
        namespace,
        v1alpha1.PLURAL,
        body,
        field_validation="Strict",
    )
    return obj


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(leaf)
    else:
        node[leaf] = value


DELETE = object()

# (case id, field path in spec, new value, text the apiserver's message must contain)
BAD_SPECS: list[tuple[str, str, Any, str]] = [
    ("coefficient below bound", "coefficient", 50, "spec.coefficient"),
    ("coefficient above bound", "coefficient", 20_000, "spec.coefficient"),
    ("model commit not 40 hex", "model.commit", "main", "spec.model.commit"),
    ("verity hash not 64 hex", "model.verityHash", "abc", "spec.model.verityHash"),
    ("owner address garbage", "ownerAddress", "not-an-address", "spec.ownerAddress"),
    ("root address garbage", "rootContractAddress", "0:xyz", "spec.rootContractAddress"),
    ("unknown network", "network", "devnet", "spec.network"),
    ("two GPUs per VM", "gpu.count", 2, "spec.gpu.count"),
    ("non-CC GPU product", "gpu.product", "NVIDIA-A100-SXM4-80GB", "spec.gpu.product"),
    ("release image not pinned", "release.image", "registry/launcher:latest", "spec.release.image"),
    (
        "release digest malformed",
        "release.files.kernel",
        "sha256:beef",
        "spec.release.files.kernel",
    ),
    ("wallet key ref missing", "nodeWalletKeySecretRef", DELETE, "spec.nodeWalletKeySecretRef"),
    ("funding below COCOON floor", "funding.minimum", 1_000_000_000, "spec.funding.minimum"),
    (
        "funding target not above minimum",
        "funding.target",
        5_000_000_000,
        "spec.funding.target must be greater than spec.funding.minimum",
    ),
    ("daily cap below one top-up", "funding.dailyCap", 1, "spec.funding.dailyCap"),
    ("unknown field", "replicas", 3, 'unknown field "spec.replicas"'),
    (
        "testnet owner on mainnet",
        "network",
        "mainnet",
        "spec.ownerAddress is a testnet address but spec.network is mainnet",
    ),
    ("unknown GPU evidence mode", "attestation.gpu.mode", "Trust", "spec.attestation.gpu.mode"),
    (
        "VBIOS version malformed",
        "attestation.gpu",
        {"mode": "Verify", "allowedVbiosVersions": ["96.0.5E"]},
        "spec.attestation.gpu.allowedVbiosVersions[0]",
    ),
    (
        "GPU version lists without Verify",
        "attestation.gpu",
        {"allowedDriverVersions": ["550.54.15"]},
        "spec.attestation.gpu.allowedDriverVersions and allowedVbiosVersions need mode Verify",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
async def test_bad_spec_is_refused_naming_the_field(
    api: client.ApiClient, namespace: str, path: str, value: Any, expected: str
) -> None:
    body = example_worker()
    if expected.startswith("spec.ownerAddress is a testnet"):
        body["spec"]["ownerAddress"] = "0QCIn28wIKAZ9cTL8ouR65jA1kspvSQosdLN39Mu0lonaoOG"
    set_path(body["spec"], path, value)
    with pytest.raises(ApiException) as err:
        await create(api, namespace, body)
    # 422 from schema/CEL validation, 400 from strict decoding of unknown fields.
    assert err.value.status in (400, 422), err.value.body
    message = json.loads(err.value.body)["message"]
    assert expected in message, message


async def test_example_is_accepted_and_defaulted(api: client.ApiClient, namespace: str) -> None:
    body = example_worker()
    del body["spec"]["coefficient"]
    del body["spec"]["funding"]
    created = await create(api, namespace, body)
    spec = created["spec"]
    assert spec["coefficient"] == v1alpha1.COEFFICIENT_DEFAULT
    assert spec["gpu"] == {"count": 1}
    assert spec["funding"] == {
        "minimum": v1alpha1.FUNDING_MINIMUM_DEFAULT,
        "target": v1alpha1.FUNDING_TARGET_DEFAULT,
    }
    assert spec["paused"] is False
    # What the apiserver stored parses into the operator's own types.
    parsed = v1alpha1.CocoonWorker.model_validate(created)
    assert parsed.spec.model.cocoon_id.startswith("Qwen/Qwen3-8B@")


IMMUTABLE: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("network", lambda s: s.update(network="testnet"), "spec.network is immutable"),
    (
        "rootContractAddress",
        lambda s: s.update(rootContractAddress="0:" + "ab" * 32),
        "spec.rootContractAddress is immutable",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [c[1:] for c in IMMUTABLE], ids=[c[0] for c in IMMUTABLE]
)
async def test_immutable_fields_cannot_change_in_place(
    api: client.ApiClient,
    namespace: str,
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    created = await create(api, namespace, example_worker())
    updated = copy.deepcopy(created)
    change(updated["spec"])
    with pytest.raises(ApiException) as err:
        await client.CustomObjectsApi(api).replace_namespaced_custom_object(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            v1alpha1.PLURAL,
            created["metadata"]["name"],
            updated,
        )
    assert err.value.status == 422
    assert expected in json.loads(err.value.body)["message"]


async def test_mutable_fields_change_in_place(api: client.ApiClient, namespace: str) -> None:
    created = await create(api, namespace, example_worker())
    updated = copy.deepcopy(created)
    updated["spec"]["coefficient"] = 1500
    updated["spec"]["model"]["name"] = "Qwen/Qwen3-32B"
    got = await client.CustomObjectsApi(api).replace_namespaced_custom_object(
        v1alpha1.GROUP,
        v1alpha1.VERSION,
        namespace,
        v1alpha1.PLURAL,
        created["metadata"]["name"],
        updated,
    )
    assert got["spec"]["coefficient"] == 1500
    assert got["metadata"]["generation"] == 2
