"""Issue 30's path on the local stack: a COCOON-shaped release tarball goes through
``cocoon-operator release import``, and a CocoonWorker using the block it prints
reaches Ready, on a node whose seal server for that release's enclave was Ready
before the VM was placed there.

The launcher image itself is built from the same tarball by ``hack/release-e2e``
(CI runs it); here the import is given the image (``--image``): kwok pulls nothing,
and the simulated VM measures the image it is named, which the local chain's root
lists (tests/cluster/simulated.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from cocoon_operator.api import labels
from cocoon_operator.simulator._release import write_release_tarball
from tests.cluster.helpers import (
    create_worker,
    example_worker,
    pod_ready,
    ready,
    seal_pods,
    worker_pods,
)
from tests.cluster.operator import REPO, running_operator
from tests.cluster.simulated import Env
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually


def import_release(tmp_path: Path, image: str) -> dict[str, Any]:
    """The ``spec.release`` block ``release import`` prints for a generated tarball."""
    tarball = write_release_tarball(tmp_path / "src", tmp_path / "cocoon-worker-release.tar.xz")
    argv = [sys.executable, "-m", "cocoon_operator", "release", "import", str(tarball)]
    argv += ["--out", str(tmp_path / "context"), "--image", image]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    block: dict[str, Any] = yaml.safe_load(done.stdout)["release"]
    return block


def transition(pod: client.V1Pod, kind: str) -> dt.datetime:
    (cond,) = [c for c in pod.status.conditions or [] if c.type == kind]
    stamp: dt.datetime = cond.last_transition_time
    return stamp


async def test_a_worker_from_an_imported_release_is_ready_after_its_nodes_seal_server(
    stack: Stack, api: client.ApiClient, namespace: str, env: Env, tmp_path: Path
) -> None:
    image = example_worker()["spec"]["release"]["image"]
    block = import_release(tmp_path, image)
    assert block["image"] == image
    enclave = block["files"]["enclave"]
    log = tmp_path / "operator.log"
    args = (
        *env.operator_args(),
        "--seal-servers",
        "--seal-server-namespace",
        namespace,
        "--seal-server-release",
        f"{image}={enclave}",
        "--seal-server-settle-seconds",
        "2",
    )
    core = client.CoreV1Api(api)
    try:
        with running_operator(stack.kubeconfig, namespace, log, *args) as proc:
            await create_worker(api, namespace, "w0", release=block)
            await eventually(ready(api, namespace, "w0"), within=180, what="w0 Ready")
            (launcher,) = await worker_pods(api, namespace, "w0")
            node = launcher.spec.node_name
            (seal,) = [
                p for p in await seal_pods(core, namespace, enclave) if p.spec.node_name == node
            ]
            assert pod_ready(seal)
            # The seal server was Ready before the launcher was placed on its node.
            assert transition(seal, "Ready") <= transition(launcher, "PodScheduled")
            assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        for n in (await core.list_node(label_selector=labels.SEAL_ENCLAVE)).items:
            await core.patch_node(
                n.metadata.name, {"metadata": {"labels": {labels.SEAL_ENCLAVE: None}}}
            )
