"""The cluster tier's fixtures: the local control plane (started once), the CRDs
(installed once), a namespace per test, the local chain with its treasury, the
simulation agent, the operator, and helm.

Helpers the tests share are plain functions in tests/cluster/helpers.py and
tests/cluster/stack.py; the operator's process itself is run by
tests/cluster/operator.py, whose context managers the tests that kill or restart it
on purpose still use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.pool import POOL_PLURAL
from cocoon_operator.k8s.client import connect
from cocoon_operator.k8s.kubeconfig import load
from cocoon_operator.k8s.rest import Kube
from tests.cluster.crds import install_crds
from tests.cluster.helpers import KUBE_VERSION, treasury_secret
from tests.cluster.operator import StartOperator, running_operator
from tests.cluster.simulated import Chain, Env, running_agent, running_local_chain
from tests.cluster.stack import (
    CLUSTER,
    REPO,
    Stack,
    created_namespaces,
    no_namespace_left_terminating,
    release_finalizers,
    stack_healthy,
)
from tests.cluster.wait import eventually

T = TypeVar("T")


def run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a loop of its own, in another thread: for session
    fixtures, which outlive every test's event loop and must not touch the one
    pytest-asyncio keeps for this thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def crds(stack: Stack) -> list[str]:
    """The generated CRDs, applied once per session (server-side apply, so a stack
    that has them already is left as it is); their names. Every ``namespace`` comes
    with them. A test that changes them (tests/cluster/test_chart.py's Helm upgrade
    and uninstall) puts them back as it found them before it ends."""

    async def install() -> list[str]:
        async with connect(str(stack.kubeconfig)) as api:
            return await install_crds(api)

    return run_aside(install())


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stack_dir = Path(os.environ.get("COCOON_STACK_DIR", REPO / ".stack")).resolve()
    env = {**os.environ, "COCOON_STACK_DIR": str(stack_dir)}
    reused = stack_healthy(env)
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
    api: client.ApiClient, stack: Stack, crds: list[str], request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh namespace per test, ready for Pods (its default ServiceAccount exists),
    on a stack with the CRDs installed (:func:`crds`)."""
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


@pytest.fixture
def agent_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The simulation agent's extra flags (a test parametrizes them indirectly)."""
    args: tuple[str, ...] = getattr(request, "param", ())
    return args


@pytest.fixture
def local_chain(tmp_path: Path) -> Iterator[Chain]:
    with running_local_chain(tmp_path) as chain:
        yield chain


#: How long the operator has at teardown to finalize the test's workers and pools.
FINALIZE_WITHIN = 120.0


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


async def delete_workers(api: client.ApiClient, namespace: str) -> list[str]:
    """Delete every CocoonWorkerPool and CocoonWorker of ``namespace``; the ones not
    gone (their finalizer not released) within :data:`FINALIZE_WITHIN` seconds."""
    objects = client.CustomObjectsApi(api)
    group = (v1alpha1.GROUP, v1alpha1.VERSION, namespace)

    async def names(plural: str) -> list[str]:
        listed = await objects.list_namespaced_custom_object(*group, plural)
        return [f"{plural}/{i['metadata']['name']}" for i in listed["items"]]

    for plural in (POOL_PLURAL, v1alpha1.PLURAL):  # a pool's workers go with it
        for name in await names(plural):
            try:
                await objects.delete_namespaced_custom_object(*group, plural, name.split("/")[1])
            except ApiException as err:
                if err.status != 404:
                    raise

    async def all_gone() -> bool:
        return not [*await names(POOL_PLURAL), *await names(v1alpha1.PLURAL)]

    try:
        await eventually(all_gone, within=FINALIZE_WITHIN, what="the test's workers finalized")
    except AssertionError:
        return [*await names(POOL_PLURAL), *await names(v1alpha1.PLURAL)]
    return []


@pytest.fixture
async def operator(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> AsyncIterator[StartOperator]:
    """Start the real operator for the test's namespace (``operator(*args)``, any
    number of times; the log defaults to ``tmp_path/operator.log``).

    At teardown, before the namespace goes: an operator that exited during the test
    fails it, with the end of its log (a crash must not pass as a quiet test); the
    test's pools and workers are deleted while the operator still runs, so its
    finalizer is released by the operator itself, as in production, not stripped by
    the namespace fixture; then the operator stops. Tests that kill or restart the
    operator on purpose use :func:`tests.cluster.operator.running_operator`.
    """
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    with ExitStack() as running:

        def start(
            *args: str, log: Path | None = None, env_extra: dict[str, str] | None = None
        ) -> subprocess.Popen[bytes]:
            out = log or tmp_path / "operator.log"
            proc = running.enter_context(
                running_operator(stack.kubeconfig, namespace, out, *args, env_extra=env_extra)
            )
            started.append((proc, out))
            return proc

        yield start
        exited = [(proc, log) for proc, log in started if proc.poll() is not None]
        left = await delete_workers(api, namespace) if len(exited) < len(started) else []
    for proc, log in exited:
        pytest.fail(f"the operator exited ({proc.returncode}) during the test:\n{log_tail(log)}")
    if left:
        logs = "\n".join(log_tail(log) for _, log in started)
        pytest.fail(f"not finalized within {FINALIZE_WITHIN:g} s: {left}\n{logs}")


@pytest.fixture
async def treasury(api: client.ApiClient, namespace: str, local_chain: Chain) -> str:
    """Secret ``treasury`` in the test's namespace, holding the local chain's funded
    genesis wallet; its ``namespace/name`` (the operator's ``--treasury-secret``).
    Tests that start a chain of their own call :func:`helpers.treasury_secret`."""
    await treasury_secret(api, namespace, local_chain)
    return f"{namespace}/treasury"


@pytest.fixture
async def env(
    stack: Stack,
    namespace: str,
    tmp_path: Path,
    local_chain: Chain,
    treasury: str,
    agent_args: tuple[str, ...],
) -> AsyncIterator[Env]:
    """The simulation agent and the local chain, its genesis wallet the treasury."""
    with running_agent(stack.kubeconfig, namespace, tmp_path, *agent_args) as agent:
        yield Env(agent, local_chain, namespace)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "build-tools"), "--print"], check=True, capture_output=True, text=True
    )
    path = Path(out.stdout.strip()) / "helm"
    if not path.exists():
        pytest.fail(f"helm not built yet ({path}): run hack/build-tools")
    return path


@pytest.fixture
def helm(helm_bin: Path, tmp_path: Path) -> Iterator[Any]:
    """Run helm with its state in tmp_path; returns stdout, fails the test on errors."""
    home = tmp_path / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, kubeconfig: Path | None = None, check: bool = True) -> str:
        extra = {"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}
        if args and args[0] == "template" and not any(a.startswith("--kube-version") for a in args):
            # `helm template` assumes Kubernetes v1.20 without a cluster; the chart
            # needs 1.30 (Chart.yaml kubeVersion), so render for the local stack's.
            args = (*args, "--kube-version", KUBE_VERSION)
        out = subprocess.run(
            [str(helm_bin), *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout + (out.stderr if not check else "")

    yield run
