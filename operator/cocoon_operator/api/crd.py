"""Render the typed models into a CustomResourceDefinition (pure).

Pydantic emits JSON Schema (with ``$defs``/``$ref``, ``anyOf`` for optionals and
``title`` on everything); Kubernetes wants a structural OpenAPI v3 schema with
everything inlined. This module does that translation, keeping only the
keywords Kubernetes understands, so ``hack/gen-crds`` can write ``crds/`` and CI
can check that the committed file is exactly what the models say.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cocoon_operator.api import pool, v1alpha1

# Keywords carried over from pydantic's output; anything else is dropped.
_KEEP = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def _collapse(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    """Rewrite a ``$ref`` / ``Optional`` (``anyOf`` with null) node, else None."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node['anyOf']}")
        merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        if "default" in merged and merged["default"] is None:
            del merged["default"]
        return merged
    return None


def _copy(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key in ("x-kubernetes-validations", "x-kubernetes-list-map-keys", "enum"):
            out[key] = value  # data, not schemas
        elif key == "description":
            # Docstrings are wrapped for source; the API shows one paragraph.
            out[key] = " ".join(value.replace("``", "").split())
        elif key in _KEEP:
            out[key] = _resolve(value, defs)
    return out


def _fix_defaults(out: dict[str, Any]) -> dict[str, Any]:
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]  # structural schemas prune unknown fields anyway
    if "default" in out:
        if out.get("type") == "object":
            # Spell out the nested defaults: the apiserver checks a default
            # against the object's CEL rules as written, before defaulting.
            out["default"] = {
                name: prop["default"]
                for name, prop in out.get("properties", {}).items()
                if "default" in prop
            }
        elif out.get("type") == "array" and out["default"] == []:
            del out["default"]
    return out


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s, collapse ``Optional`` and ``const`` into plain schemas."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    collapsed = _collapse(node, defs)
    if collapsed is not None:
        return _resolve(collapsed, defs)
    return _fix_defaults(_copy(node, defs))


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    short: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    description: str,
    scale: dict[str, str] | None = None,
) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale is not None:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{v1alpha1.GROUP}",
            "annotations": {"cocoon.network/generated-by": "hack/gen-crds"},
        },
        "spec": {
            "group": v1alpha1.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["cocoon"],
            },
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(spec),
                                "status": openapi_schema(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def cocoonworker_crd() -> dict[str, Any]:
    return _crd(
        kind=v1alpha1.KIND,
        plural=v1alpha1.PLURAL,
        short="cw",
        spec=v1alpha1.CocoonWorkerSpec,
        status=v1alpha1.CocoonWorkerStatus,
        columns=v1alpha1.PRINTER_COLUMNS,
        description="One COCOON worker: a confidential VM (Intel TDX)"
        " with one NVIDIA GPU in CC mode, serving one model on TON.",
    )


def cocoonworkerpool_crd() -> dict[str, Any]:
    return _crd(
        kind=pool.POOL_KIND,
        plural=pool.POOL_PLURAL,
        short="cwp",
        spec=pool.CocoonWorkerPoolSpec,
        status=pool.CocoonWorkerPoolStatus,
        columns=pool.POOL_PRINTER_COLUMNS,
        description="A pool of identical CocoonWorkers, rolled at most maxUnavailable at a"
        " time with up to maxSurge extra workers.",
        # `kubectl scale` and HorizontalPodAutoscalers (with Object or External
        # metrics: the selector names the pool's CocoonWorkers, not pods).
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name under ``crds/`` -> CRD object."""
    return {
        f"{v1alpha1.GROUP}_{v1alpha1.PLURAL}.yaml": cocoonworker_crd(),
        f"{v1alpha1.GROUP}_{pool.POOL_PLURAL}.yaml": cocoonworkerpool_crd(),
    }
