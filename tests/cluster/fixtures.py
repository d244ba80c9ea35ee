"""Fixtures that give tests the real local control plane.

The stack is started by the same script a developer uses (``hack/cluster``), so
what the tests exercise is what the README documents. A healthy stack that is
already running (for instance one a developer keeps up while iterating) is
reused and left running; one the session started is stopped at the end unless
``COCOON_KEEP_STACK=1``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.pool import POOL_PLURAL
from cocoon_operator.k8s.client import connect
from cocoon_operator.k8s.kubeconfig import load
from cocoon_operator.k8s.rest import MERGE_PATCH, Kube, path
from tests.cluster.crds import install_crds
from tests.cluster.simulated import Chain, Env, running_agent, running_local_chain
from tests.cluster.wait import eventually

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "hack" / "cluster"


@dataclass(frozen=True)
class Stack:
    """A running local control plane."""

    dir: Path
    kubeconfig: Path
    bin: Path


def _status(env: dict[str, str]) -> bool:
    out = subprocess.run(
        [str(CLUSTER), "status"], env=env, capture_output=True, text=True, check=False
    )
    return out.returncode == 0 and bool(json.loads(out.stdout or "{}").get("healthy"))


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stack_dir = Path(os.environ.get("COCOON_STACK_DIR", REPO / ".stack")).resolve()
    env = {**os.environ, "COCOON_STACK_DIR": str(stack_dir)}
    reused = _status(env)
    if not reused:
        # A stale state dir (crashed run) would pin dead ports; start clean.
        subprocess.run([str(CLUSTER), "down"], env=env, check=True)
        subprocess.run([str(CLUSTER), "up"], env=env, check=True)
    bin_dir = subprocess.run(
        [str(REPO / "hack" / "build-tools"), "--print"], check=True, capture_output=True, text=True
    ).stdout.strip()
    running = Stack(stack_dir, stack_dir / "kubeconfig", Path(bin_dir))
    try:
        yield running
        if created_namespaces:
            no_namespace_left_terminating(running, created_namespaces)
    finally:
        if not reused and os.environ.get("COCOON_KEEP_STACK") != "1":
            subprocess.run([str(CLUSTER), "down"], env=env, check=False)


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[client.ApiClient]:
    async with connect(str(stack.kubeconfig)) as api_client:
        yield api_client


@pytest.fixture
async def kube(stack: Stack) -> AsyncIterator[Kube]:
    """The operator's own client (k8s/rest.py), for tests that call its handlers."""
    async with Kube(load(str(stack.kubeconfig))) as operator_client:
        yield operator_client


@pytest.fixture
async def namespace(
    api: client.ApiClient, stack: Stack, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh namespace per test, ready for Pods (its default ServiceAccount exists)."""
    core = client.CoreV1Api(api)
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    async def sa_exists() -> bool:
        try:
            await core.read_namespaced_service_account("default", name)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    await eventually(sa_exists, within=30, what=f"default ServiceAccount in {name}")
    created_namespaces.append(name)
    try:
        yield name
    finally:
        # The test's operator has stopped by now: what still carries its finalizer
        # would keep the namespace Terminating for ever on a shared stack.
        async with Kube(load(str(stack.kubeconfig))) as kube:
            await release_finalizers(kube, name)
        await core.delete_namespace(name)


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


@pytest.fixture
def agent_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The simulation agent's extra flags (a test parametrizes them indirectly)."""
    args: tuple[str, ...] = getattr(request, "param", ())
    return args


@pytest.fixture
def local_chain(tmp_path: Path) -> Iterator[Chain]:
    with running_local_chain(tmp_path) as chain:
        yield chain


@pytest.fixture
async def env(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    local_chain: Chain,
    agent_args: tuple[str, ...],
) -> AsyncIterator[Env]:
    await install_crds(api)
    seed = base64.b64encode(local_chain.genesis_seed_hex.encode()).decode()
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {"metadata": {"name": "treasury"}, "data": {"seed": seed}},  # type: ignore[arg-type]
    )
    with running_agent(stack.kubeconfig, namespace, tmp_path, *agent_args) as agent:
        yield Env(agent, local_chain, namespace)
