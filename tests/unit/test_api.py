"""The typed models and the CRD generated from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.crd import all_crds, cocoonworker_crd
from cocoon_operator.api.gen import main as gen_main
from cocoon_operator.api.gen import render

REPO = Path(__file__).resolve().parents[2]


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out += walk(value, f"{path}.{key}")
        if "items" in node:
            out += walk(node["items"], f"{path}[]")
    return out


def test_generated_schema_is_structural() -> None:
    schema = cocoonworker_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "type" in node, f"{path} has no type"
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & node.keys(), path


def test_cel_rules_reach_the_crd_with_field_named_messages() -> None:
    schema = cocoonworker_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [
        (path, rule)
        for path, node in walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert {p for p, _ in rules} == {".spec", ".spec.funding", ".spec.attestation.gpu"}
    for _, rule in rules:
        assert rule["rule"] and rule["message"].startswith("spec."), rule


def test_committed_crds_match_the_models(tmp_path: Path) -> None:
    assert gen_main([str(REPO / "crds"), "--check"]) == 0
    stale = tmp_path / "crds"
    stale.mkdir()
    for name in all_crds():
        (stale / name).write_text(render({"stale": True}))
    assert gen_main([str(stale), "--check"]) == 1


def example_spec() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    worker = next(d for d in docs if d["kind"] == v1alpha1.KIND)
    spec: dict[str, Any] = worker["spec"]
    return spec


def test_example_parses_and_round_trips_in_camel_case() -> None:
    spec = v1alpha1.CocoonWorkerSpec.model_validate(example_spec())
    assert spec.network is v1alpha1.Network.LOCAL
    assert spec.gpu.count == 1
    dumped = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["nodeWalletKeySecretRef"] == {"name": "worker-0-wallet", "key": "node-wallet-key"}
    assert v1alpha1.CocoonWorkerSpec.model_validate(dumped) == spec


def test_model_identity_is_cocoons_name_at_commit_colon_verity() -> None:
    spec = v1alpha1.CocoonWorkerSpec.model_validate(example_spec())
    m = spec.model
    assert m.cocoon_id == f"Qwen/Qwen3-8B@{m.commit}:{m.verity_hash}"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"coefficient": 99}, "coefficient"),
        ({"gpu": {"count": 2}}, "gpu.count"),
        ({"unknownField": 1}, "unknownField"),
        ({"funding": {"minimum": 2_000_000_000}}, "funding.minimum"),
    ],
)
def test_models_refuse_what_the_schema_refuses(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        v1alpha1.CocoonWorkerSpec.model_validate({**example_spec(), **patch})
    locs = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert field in locs
