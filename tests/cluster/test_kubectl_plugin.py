"""``kubectl cocoon`` against the real apiserver: a CocoonWorker whose status is
written through the status subresource (no operator running), read back by the
installed ``kubectl-cocoon`` script run as its own process, and paused and
resumed through its annotation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from tests.cluster.crds import install_crds
from tests.cluster.fixtures import Stack
from tests.cluster.test_worker_lifecycle import create_worker, get_worker

API = (v1alpha1.GROUP, v1alpha1.VERSION)
PLUGIN = Path(sys.executable).parent / "kubectl-cocoon"
PAUSED = "cocoon.network/paused"
MRTD = "9f" * 48
IMAGE = "5c" * 32
MODEL_HASH = "71" * 32
WALLET = "0:" + "3e" * 32


def stamp(ago: float) -> str:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": stamp(300),
    }


def ready_status(pod: str) -> dict[str, Any]:
    """What the operator writes for a Ready worker on the local stack."""
    return {
        "phase": "Ready",
        "node": "sim-cc-0",
        "gpu": "0000:1b:00.0",
        "pod": pod,
        "instance": 0,
        "observedGeneration": 1,
        "currentRevision": "r0c0ffee",
        "targetRevision": "r0c0ffee",
        "conditions": [
            condition("Scheduled", "True", "Scheduled", "assigned to sim-cc-0"),
            condition("VMRunning", "True", "VMRunning", "launcher running"),
            condition(
                "Attested", "True", "EvidenceVerified", "TDX evidence verified (TCB UpToDate, test)"
            ),
            condition("OnChainAllowed", "True", "Listed", "image and model hashes listed"),
            condition("WalletFunded", "True", "Funded", "balance above the minimum"),
            condition("Ready", "True", "Ready", "serving"),
        ],
        "attestation": {
            "imageHash": IMAGE,
            "mrtd": MRTD,
            "tcbStatus": "UpToDate",
            "trustRoot": "test",
            "quoteSha256": "0a" * 32,
            "pod": pod,
            "verifiedAt": stamp(120),
            "expiresAt": stamp(-1680),
        },
        "chain": {
            "imageHashListed": True,
            "modelHashListed": True,
            "modelHash": MODEL_HASH,
            "source": "worker",
            "checkedAt": stamp(10),
        },
        "wallet": {
            "address": WALLET,
            "balance": 9_876_543_210,
            "funding": "topped up to the target",
            "checkedAt": stamp(10),
        },
        "earnings": {"earnedTokens": 424242, "paidOutTokens": 400000, "payouts": 3},
    }


async def worker_with_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    await install_crds(api)
    await create_worker(api, namespace, name)
    patched: dict[str, Any] = await client.CustomObjectsApi(
        api
    ).patch_namespaced_custom_object_status(
        *API,
        namespace,
        v1alpha1.PLURAL,
        name,
        {"status": ready_status(f"{name}-r0c0ffee-0")},
        _content_type="application/merge-patch+json",
    )
    return patched


async def post_event(
    api: client.ApiClient, worker: dict[str, Any], reason: str, message: str, ago: float
) -> None:
    meta = worker["metadata"]
    await client.CoreV1Api(api).create_namespaced_event(
        meta["namespace"],
        {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": v1alpha1.API_VERSION,
                "kind": v1alpha1.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": "cocoon-operator"},
            "firstTimestamp": stamp(ago),
            "lastTimestamp": stamp(ago),
            "count": 1,
        },
    )


async def plugin(
    stack: Stack, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(PLUGIN), "--kubeconfig", str(kubeconfig or stack.kubeconfig), *args]
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )


def rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()
    return {line.split()[0]: line.split() for line in lines[1:]}


@pytest.fixture
async def worker(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return await worker_with_status(api, namespace, "w0")


async def test_status_shows_the_status_subresource(
    stack: Stack, api: client.ApiClient, namespace: str, worker: dict[str, Any]
) -> None:
    await create_worker(api, namespace, "w1")  # no status yet

    out = await plugin(stack, "status", "-n", namespace)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "PHASE",
        "READY",
        "NODE",
        "GPU",
        "POD",
        "MODEL",
        "ATTESTED",
        "BALANCE",
        "EARNED",
        "AGE",
    ]
    table = rows(out.stdout)
    assert table["w0"][:11] == [
        "w0",
        "Ready",
        "True",
        "sim-cc-0",
        "0000:1b:00.0",
        "w0-r0c0ffee-0",
        "Qwen/Qwen3-8B@9b5a8ef",
        "UpToDate/test",
        "9.876",
        "TON",
        "424242",
    ]
    assert table["w1"][1:6] == ["-", "-", "-", "-", "-"]

    everywhere = await plugin(stack, "status", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    mine = [line.split() for line in everywhere.stdout.splitlines() if line.startswith(namespace)]
    assert [r[1] for r in mine] == ["w0", "w1"]

    as_json = json.loads((await plugin(stack, "status", "-n", namespace, "-o", "json")).stdout)
    assert [w["name"] for w in as_json] == ["w0", "w1"]
    assert as_json[0]["balanceNanoton"] == 9_876_543_210


async def test_namespace_defaults_to_the_kubeconfig_context(
    stack: Stack, namespace: str, worker: dict[str, Any], tmp_path: Path
) -> None:
    config = yaml.safe_load(stack.kubeconfig.read_text())
    current = config["current-context"]
    for ctx in config["contexts"]:
        if ctx["name"] == current:
            ctx["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    out = await plugin(stack, "status", kubeconfig=kubeconfig)
    assert out.returncode == 0, out.stderr
    assert list(rows(out.stdout)) == ["w0"]


async def test_describe_shows_status_and_the_workers_events(
    stack: Stack, api: client.ApiClient, namespace: str, worker: dict[str, Any]
) -> None:
    for i in range(12):
        await post_event(api, worker, f"Step{i:02d}", f"step {i} done", ago=600 - 10 * i)
    other = await create_worker(api, namespace, "w9")
    await post_event(api, other, "NotMine", "about another worker", ago=1)

    out = await plugin(stack, "describe", "w0", "-n", namespace)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Phase:        Ready" in lines
    start = lines.index("Conditions:")
    assert [line.split()[0] for line in lines[start + 2 : start + 8]] == [
        "Scheduled",
        "VMRunning",
        "Attested",
        "OnChainAllowed",
        "WalletFunded",
        "Ready",
    ]
    attested = lines[start + 4].split()
    assert attested[:3] == ["Attested", "True", "EvidenceVerified"]
    assert attested[3].startswith("5m")  # since the transition, 300 s ago
    assert f"  Image hash:    {IMAGE}" in lines
    assert f"  MRTD:          {MRTD[:16]}..." in lines
    assert "  TCB status:    UpToDate" in lines
    assert "  Trust root:    test" in lines
    assert f"  Model hash:         {MODEL_HASH}" in lines
    assert f"  Address:  {WALLET}" in lines
    assert "  Balance:  9.876 TON (9876543210 nanoTON)" in lines
    assert "  Funding:  topped up to the target" in lines
    assert "  Earned tokens:    424242" in lines
    assert "  Current:              r0c0ffee" in lines
    events = lines[lines.index("Events:") + 2 :]
    assert [e.split()[2] for e in events] == [f"Step{i:02d}" for i in range(11, 1, -1)]
    assert "NotMine" not in out.stdout

    as_json = json.loads(
        (await plugin(stack, "describe", "w0", "-n", namespace, "-o", "json")).stdout
    )
    assert as_json["status"]["earnings"]["payouts"] == 3
    assert len(as_json["events"]) == 10


async def test_attest_prints_the_summary_and_the_condition(
    stack: Stack, namespace: str, worker: dict[str, Any]
) -> None:
    out = await plugin(stack, "-n", namespace, "attest", "w0")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["attestation"]["mrtd"] == MRTD
    assert data["attestation"]["imageHash"] == IMAGE
    assert data["attestation"]["trustRoot"] == "test"
    assert data["condition"]["type"] == "Attested"
    assert data["condition"]["reason"] == "EvidenceVerified"


async def test_pause_and_resume_set_and_remove_the_annotation(
    stack: Stack, api: client.ApiClient, namespace: str, worker: dict[str, Any]
) -> None:
    async def annotation() -> str | None:
        got = await get_worker(api, namespace, "w0")
        value: str | None = (got["metadata"].get("annotations") or {}).get(PAUSED)
        return value

    out = await plugin(stack, "pause", "w0", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert f"annotation {PAUSED}: <unset> -> 'true'" in out.stdout
    assert await annotation() == "true"
    before = (await get_worker(api, namespace, "w0"))["metadata"]["resourceVersion"]

    again = await plugin(stack, "pause", "w0", "-n", namespace)
    assert again.returncode == 0, again.stderr
    assert "already paused" in again.stdout
    assert (await get_worker(api, namespace, "w0"))["metadata"]["resourceVersion"] == before

    rows_ = rows((await plugin(stack, "status", "-n", namespace)).stdout)
    assert rows_["w0"][1] == "Ready"  # the status is the operator's to change

    out = await plugin(stack, "resume", "w0", "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["changed"] is True
    assert await annotation() is None
    again = await plugin(stack, "resume", "w0", "-n", namespace)
    assert again.returncode == 0, again.stderr
    assert "already resumed" in again.stdout


async def test_a_missing_worker_exits_1_naming_it(
    stack: Stack, api: client.ApiClient, namespace: str
) -> None:
    await install_crds(api)
    for command in ("describe", "attest", "pause", "resume"):
        out = await plugin(stack, command, "ghost", "-n", namespace)
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert f'"ghost" in namespace "{namespace}" not found' in out.stderr
    usage = await plugin(stack, "describe")
    assert usage.returncode == 2


async def test_kubectl_finds_the_plugin_on_path(
    stack: Stack, namespace: str, worker: dict[str, Any]
) -> None:
    env = {
        **os.environ,
        "PATH": f"{stack.bin}{os.pathsep}{PLUGIN.parent}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(stack.kubeconfig),
    }
    out = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "cocoon", "status", "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout)["w0"][1] == "Ready"
