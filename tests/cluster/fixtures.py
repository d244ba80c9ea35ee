"""Fixtures that give tests the real local control plane.

The stack is started by the same script a developer uses (``hack/cluster``), so
what the tests exercise is what the README documents. A healthy stack that is
already running (for instance one a developer keeps up while iterating) is
reused and left running; one the session started is stopped at the end unless
``COCOON_KEEP_STACK=1``.
"""

from __future__ import annotations

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

from cocoon_operator.k8s.client import connect
from cocoon_operator.k8s.kubeconfig import load
from cocoon_operator.k8s.rest import Kube
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
    try:
        yield Stack(stack_dir, stack_dir / "kubeconfig", Path(bin_dir))
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
async def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
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
    try:
        yield name
    finally:
        await core.delete_namespace(name)
