"""The local control plane the cluster tier runs on, and the namespaces it leaves.

The fixtures that start it and hand out namespaces are in tests/cluster/conftest.py;
this module holds what they and the tests share: where the stack is, and the
finalizer release and end-of-session check that keep a shared stack free of
namespaces stuck Terminating.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.pool import POOL_PLURAL
from cocoon_operator.k8s.kubeconfig import load
from cocoon_operator.k8s.rest import MERGE_PATCH, Kube, path

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "hack" / "cluster"


@dataclass(frozen=True)
class Stack:
    """A running local control plane."""

    dir: Path
    kubeconfig: Path
    bin: Path


def stack_healthy(env: dict[str, str]) -> bool:
    out = subprocess.run(
        [str(CLUSTER), "status"], env=env, capture_output=True, text=True, check=False
    )
    return out.returncode == 0 and bool(json.loads(out.stdout or "{}").get("healthy"))


#: The namespaces this session's tests made (see :func:`no_namespace_left_terminating`).
created_namespaces: list[str] = []

#: Where the operator puts its finalizer: workers, pools, and nothing else here.
FINALIZED = (
    (f"{v1alpha1.GROUP}/{v1alpha1.VERSION}", v1alpha1.PLURAL),
    (f"{v1alpha1.GROUP}/{v1alpha1.VERSION}", POOL_PLURAL),
)


async def release_finalizers(kube: Kube, namespace: str) -> list[str]:
    """Take the operator's finalizer off every object of ``namespace`` left holding it
    (its operator is gone); the names released."""
    released = []
    for api_version, plural in FINALIZED:
        listing = await kube.request("GET", path(api_version, plural, namespace=namespace))
        for item in listing.get("items") or ():
            meta = item["metadata"]
            kept = [f for f in meta.get("finalizers") or () if f != v1alpha1.WORKER_FINALIZER]
            if kept == list(meta.get("finalizers") or ()):
                continue
            body = {"metadata": {"finalizers": kept}}
            url = path(api_version, plural, namespace=namespace, name=meta["name"])
            if await kube.request_unless_gone("PATCH", url, body=body, content_type=MERGE_PATCH):
                released.append(f"{plural}/{meta['name']}")
    return released


async def terminating(kube: Kube, names: list[str]) -> dict[str, str]:
    """Of ``names``, the namespaces still there, with why (their status conditions)."""
    left = {}
    for name in names:
        ns = await kube.request_unless_gone("GET", path("v1", "namespaces", name=name))
        if ns is not None:
            conditions = (ns.get("status") or {}).get("conditions") or []
            left[name] = "; ".join(
                c.get("message", "") for c in conditions if c.get("status") == "True"
            ) or (ns.get("status") or {}).get("phase", "")
    return left


def no_namespace_left_terminating(stack: Stack, names: list[str]) -> None:
    """Every namespace in ``names`` is gone within two minutes (the namespace controller
    deletes their objects first): none is held Terminating by a finalizer."""

    async def check() -> dict[str, str]:
        async with Kube(load(str(stack.kubeconfig))) as kube:
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                left = await terminating(kube, names)
                if not left or asyncio.get_running_loop().time() > deadline:
                    return left
                await asyncio.sleep(0.5)

    left = asyncio.run(check())
    assert not left, f"namespaces left behind by the session (phase or why): {left}"
