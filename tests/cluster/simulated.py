"""Run the node-side simulation agent (one simulated worker per Running launcher pod)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.operator import REPO, stop_process


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

    def operator_args(self) -> tuple[str, ...]:
        """What the operator needs to trust the agent's test PKI (explicitly)."""
        return (
            "--pccs-url",
            self.pccs_url,
            "--attestation-test-root",
            str(self.test_root),
            "--attestation-check-seconds",
            "2",
        )


@contextmanager
def running_agent(kubeconfig: Path, namespace: str, workdir: Path) -> Iterator[Agent]:
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
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
        )
    try:
        info = first_json_line(proc, "the simulation agent")
        yield Agent(pccs_url=info["pccs_url"], test_root=Path(info["test_root"]))
    finally:
        stop_process(proc, grace=10)


@dataclass(frozen=True)
class Chain:
    api_url: str
    genesis_seed_hex: str


@contextmanager
def running_local_chain(workdir: Path) -> Iterator[Chain]:
    """The local TON chain (real TVM) as its own process, as the demo runs it."""
    from cocoon_operator.ton.localchain import DEFAULT_GENESIS_SEED  # noqa: PLC0415

    with (workdir / "chain.log").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cocoon_operator.ton.localchain", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
        )
    try:
        info = first_json_line(proc, "the local chain")
        yield Chain(api_url=info["api_url"], genesis_seed_hex=DEFAULT_GENESIS_SEED.hex())
    finally:
        stop_process(proc, grace=10)
