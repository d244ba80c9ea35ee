"""Run the node-side simulation agent (one simulated worker per Running launcher pod)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cocoon_operator.simulator import payout_requests
from cocoon_operator.ton.wallet import WalletVersion
from tests.cluster.helpers import example_worker, treasury_secret
from tests.cluster.operator import REPO, stop_process

if TYPE_CHECKING:
    from kubernetes_asyncio import client

    from tests.cluster.stack import Stack


def first_json_line(proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    """The one JSON line a helper process prints once it is ready."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        raise RuntimeError(f"{what} did not start within 30 s")
    info: dict[str, Any] = json.loads(proc.stdout.readline())
    return info


@dataclass(frozen=True)
class Agent:
    pccs_url: str
    test_root: Path
    gpu_test_root: Path
    log: Path  # the agent's stderr, its simulated workers' lines among them
    # Where it publishes the simulated nodes' reports, with each VM's relayed quote.
    node_reports: str

    def payout_answers(self) -> dict[tuple[str, str], list[str]]:
        """Every payout request the simulated workers were asked, by (namespace/pod/uid,
        proxy): their answers in order ("request sent" is a payout made, and paid for)."""
        return payout_requests(self.log.read_text(errors="replace"))

    def operator_args(self) -> tuple[str, ...]:
        """What the operator needs to trust the agent's test PKIs (explicitly), and to
        read the quotes its simulated nodes relay (their reports' namespace)."""
        return (
            "--node-report-namespace",
            self.node_reports,
            "--pccs-url",
            self.pccs_url,
            "--attestation-test-root",
            str(self.test_root),
            "--gpu-attestation-test-root",
            str(self.gpu_test_root),
            "--attestation-check-seconds",
            "2",
        )


@contextmanager
def running_agent(
    kubeconfig: Path, namespace: str, workdir: Path, *agent_args: str
) -> Iterator[Agent]:
    """The agent, publishing node reports (with the simulated VMs' relayed quotes) into
    ``namespace``; ``agent_args`` go to its command line (e.g. ``--fault stale-quote``)."""
    root = workdir / "test-root.pem"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with (workdir / "agent.log").open("ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cocoon_operator.simulator.agent",
                "--namespace",
                namespace,
                "--root-out",
                str(root),
                "--gpu-root-out",
                str(workdir / "gpu-test-root.pem"),
                "--node-reports",
                namespace,
                *agent_args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
        )
    try:
        info = first_json_line(proc, "the simulation agent")
        yield Agent(
            pccs_url=info["pccs_url"],
            test_root=Path(info["test_root"]),
            gpu_test_root=Path(info["gpu_test_root"]),
            log=workdir / "agent.log",
            node_reports=namespace,
        )
    finally:
        stop_process(proc, grace=10)


@dataclass(frozen=True)
class Chain:
    api_url: str
    genesis_seed_hex: str
    root_address: str  # the project's root contract, deployed at start
    root_owner_seed_hex: str


def example_model(**changes: str) -> str:
    """The example worker's model as ``Name@commit:verity``, with ``changes`` (e.g. commit)."""
    model = {**example_worker()["spec"]["model"], **changes}
    return f"{model['name']}@{model['commit']}:{model['verityHash']}"


def example_image_hash() -> str:
    """The image hash the simulator's TD measurements of the example release give."""
    from cocoon_operator.attestation.testing.quotes import TdMeasurements  # noqa: PLC0415

    image = example_worker()["spec"]["release"]["image"]
    return TdMeasurements.from_label(image).image_hash.hex()


@contextmanager
def running_local_chain(
    workdir: Path,
    *,
    models: Sequence[str] | None = None,
    image_hashes: Sequence[str] | None = None,
) -> Iterator[Chain]:
    """The local TON chain (real TVM) as its own process, as the demo runs it, with the
    project's root contract listing ``models`` and ``image_hashes`` (default: the
    example worker's model and image hash)."""
    from cocoon_operator.ton.localchain import (  # noqa: PLC0415
        DEFAULT_GENESIS_SEED,
        DEFAULT_ROOT_OWNER_SEED,
    )

    listed = []
    for model in [example_model()] if models is None else models:
        listed += ["--root-model", model]
    for image in [example_image_hash()] if image_hashes is None else image_hashes:
        listed += ["--root-image-hash", image]
    with (workdir / "chain.log").open("ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cocoon_operator.ton.localchain",
                "--port",
                "0",
                "--root",
                *listed,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
        )
    try:
        info = first_json_line(proc, "the local chain")
        yield Chain(
            api_url=info["api_url"],
            genesis_seed_hex=DEFAULT_GENESIS_SEED.hex(),
            root_address=info["root_address"],
            root_owner_seed_hex=DEFAULT_ROOT_OWNER_SEED.hex(),
        )
    finally:
        stop_process(proc, grace=10)


@dataclass(frozen=True)
class Env:
    """A namespace with the simulation agent and a local chain whose genesis wallet is
    its treasury (Secret ``treasury``): what a worker needs to reach Ready."""

    agent: Agent
    chain: Chain
    namespace: str
    wallet: WalletVersion = WalletVersion.V4R2  # the treasury's

    def operator_args(self) -> tuple[str, ...]:
        return (
            *self.agent.operator_args(),
            "--ton-endpoint",
            self.chain.api_url,
            "--treasury-secret",
            f"{self.namespace}/treasury",
            "--treasury-wallet",
            self.wallet.value,
            "--funding-ledger",
            f"{self.namespace}/cocoon-funding-ledger",
            "--chain-check-seconds",
            "2",
        )


@asynccontextmanager
async def reporting_env(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    chain: Chain,
    *faults: str,
    agent_args: tuple[str, ...] = (),
) -> AsyncIterator[Env]:
    """The chain env with node reports on: the simulation agent publishes what the
    node agent would (each VM's node wallet, as its launcher derived it), and the
    operator trusts the reports of this namespace. ``faults`` go to every worker,
    ``agent_args`` to the agent."""
    await treasury_secret(api, namespace, chain)
    args = ["--node-reports", namespace, *(f"--fault={f}" for f in faults), *agent_args]
    with running_agent(stack.kubeconfig, namespace, tmp_path, *args) as agent:
        yield Env(agent, chain, namespace)
