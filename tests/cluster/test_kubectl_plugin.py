"""``kubectl cocoon`` against the real apiserver: a CocoonWorker whose status is
written through the status subresource (no operator running), read back by the
installed ``kubectl-cocoon`` script run as its own process, and paused and
resumed through its annotation."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.nodereport import REPORT_LABEL
from tests.cluster.helpers import CHART, create_worker, get_worker, node_wallet_key, release_for
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

API = (v1alpha1.GROUP, v1alpha1.VERSION)
# The chart tests' fixtures, under their names, for the report with the chart installed.
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


# ---- report and logs ------------------------------------------------------------------

FAKE_KEY = "fake-mnemonic-abandon-ability-able-about-above-absent-0123456789"
FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefABCDEF"
LAUNCHER_LABELS = {
    "app.kubernetes.io/name": "cocoon-worker",
    "app.kubernetes.io/component": "vm-launcher",
    "app.kubernetes.io/managed-by": "cocoon-operator",
}


async def launcher_pod_with_secrets(
    api: client.ApiClient, namespace: str, worker: dict[str, Any]
) -> dict[str, Any]:
    """A Secret holding a fake key, and a launcher pod of the worker that carries the key
    the ways carelessness puts one in an object: a literal env value, a flag's value and
    a line of the worker's INI annotation; plus a secretKeyRef, the right way."""
    core = client.CoreV1Api(api)
    secret = await core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "operator-keys"},
            "stringData": {"mnemonic": FAKE_KEY, "hf-token": FAKE_TOKEN},
        },
    )
    name = worker["metadata"]["name"]
    pod = await core.create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": f"{name}-r0c0ffee-0",
                "labels": {**LAUNCHER_LABELS, "cocoon.network/worker": name},
                "annotations": {
                    "cocoon.network/worker.ini": f"[node]\nnode_wallet_key = {FAKE_KEY}\n",
                    "example.com/api-token": FAKE_TOKEN,
                },
                "ownerReferences": [
                    {
                        "apiVersion": v1alpha1.API_VERSION,
                        "kind": v1alpha1.KIND,
                        "name": name,
                        "uid": worker["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "nodeName": "sim-cpu-0000",  # kwok runs it; no kubelet serves its logs
                "containers": [
                    {
                        "name": "launcher",
                        "image": "registry.example/cocoon-launcher:test",
                        "args": ["launch", f"--node-wallet-key={FAKE_KEY}"],
                        "env": [
                            {"name": "HF_TOKEN", "value": FAKE_TOKEN},
                            {
                                "name": "NODE_WALLET_KEY",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "operator-keys", "key": "mnemonic"}
                                },
                            },
                        ],
                    }
                ],
            },
        },
    )
    return {"secret": api.sanitize_for_serialization(secret), "pod": pod.metadata.name}


def bundle_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


async def test_report_bundles_the_worker_and_its_events_and_no_secret(
    stack: Stack, api: client.ApiClient, namespace: str, worker: dict[str, Any], tmp_path: Path
) -> None:
    await post_event(api, worker, "Attested", "evidence verified", ago=60)
    made = await launcher_pod_with_secrets(api, namespace, worker)
    wallet_key = node_wallet_key(namespace, "w0")  # the Secret create_worker made
    out_file = tmp_path / "bundle.tar.gz"

    out = await plugin(stack, "report", "-n", namespace, "-o", str(out_file))
    assert out.returncode == 0, out.stderr
    assert f"wrote {out_file}" in out.stdout
    files = bundle_files(out_file)

    manifest = json.loads(files["manifest.json"])
    collected = {c["path"] for c in manifest["collected"]}
    worker_path = f"namespaces/{namespace}/cocoonworkers/w0.yaml"
    events_path = f"namespaces/{namespace}/events.yaml"
    pod_path = f"namespaces/{namespace}/pods/{made['pod']}.yaml"
    assert {worker_path, events_path, pod_path, "cluster/crds.yaml"} <= collected
    assert set(files) == collected | {"manifest.json"}
    assert manifest["scope"]["namespaces"] == [namespace]
    # No operator is installed on the stack: said so, not silently left out.
    assert any(f["what"] == "operator logs" for f in manifest["failed"])

    saved = yaml.safe_load(files[worker_path])
    assert saved["metadata"]["uid"] == worker["metadata"]["uid"]
    assert saved["status"]["wallet"]["balance"] == 9_876_543_210
    events = yaml.safe_load(files[events_path])
    assert [(e["involvedObject"]["name"], e["reason"]) for e in events] == [("w0", "Attested")]
    pod = yaml.safe_load(files[pod_path])
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["NODE_WALLET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "operator-keys"
    assert env["HF_TOKEN"]["value"] == "<redacted>"
    crds = {c["name"]: c for c in yaml.safe_load(files["cluster/crds.yaml"])}
    assert [v["name"] for v in crds[f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}"]["versions"]] == [
        v1alpha1.VERSION
    ]

    secret_uid = made["secret"]["metadata"]["uid"]
    forbidden = {
        FAKE_KEY,
        FAKE_TOKEN,
        wallet_key,
        base64.b64encode(FAKE_KEY.encode()).decode(),
        base64.b64encode(FAKE_TOKEN.encode()).decode(),
        base64.b64encode(wallet_key.encode()).decode(),
        secret_uid,
    }
    for path, data in files.items():
        text = data.decode()
        for value in forbidden:
            assert value not in text, (path, value)
        for doc in [json.loads(text)] if path.endswith(".json") else [yaml.safe_load(text)]:
            docs = doc if isinstance(doc, list) else [doc]
            assert all(not (isinstance(d, dict) and d.get("kind") == "Secret") for d in docs)


async def test_report_all_namespaces_and_a_missing_output_directory(
    stack: Stack, api: client.ApiClient, namespace: str, worker: dict[str, Any], tmp_path: Path
) -> None:
    out_file = tmp_path / "all.tar.gz"
    out = await plugin(stack, "report", "-A", "-o", str(out_file))
    assert out.returncode == 0, out.stderr
    files = bundle_files(out_file)
    assert f"namespaces/{namespace}/cocoonworkers/w0.yaml" in files
    assert json.loads(files["manifest.json"])["scope"]["namespaces"] == "all"

    bad = await plugin(stack, "report", "-n", namespace, "-o", str(tmp_path / "no" / "x.tgz"))
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1].startswith(f"error: cannot write {tmp_path}/no/x.tgz")
    assert "Traceback" not in bad.stderr


async def test_logs_names_each_unavailable_source_on_the_local_stack(
    stack: Stack, api: client.ApiClient, namespace: str, worker: dict[str, Any]
) -> None:
    made = await launcher_pod_with_secrets(api, namespace, worker)
    out = await plugin(stack, "logs", "w0", "-n", namespace, "--operator-namespace", namespace)
    # kwok's nodes have no kubelet: the launcher pod's logs cannot be read, and no
    # operator runs in that namespace: neither source, so exit 1, each one named.
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert any(
        line.startswith(
            f"unavailable: cannot access logs of launcher pod {namespace}/{made['pod']}"
            " (container launcher): "
        )
        for line in lines
    ), lines
    assert any(
        line.startswith(f"unavailable: no operator pods in namespace {namespace}") for line in lines
    ), lines
    assert "Traceback" not in out.stderr


async def test_context_option_picks_the_context_and_its_namespace(
    stack: Stack, namespace: str, worker: dict[str, Any], tmp_path: Path
) -> None:
    config = yaml.safe_load(stack.kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["contexts"].append(
        {"name": "tenant", "context": {**current["context"], "namespace": namespace}}
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    out = await plugin(stack, "status", "--context", "tenant", kubeconfig=kubeconfig)
    assert out.returncode == 0, out.stderr
    assert list(rows(out.stdout)) == ["w0"]

    missing = await plugin(stack, "status", "--context", "nope", kubeconfig=kubeconfig)
    assert missing.returncode == 1
    assert len(missing.stderr.splitlines()) == 1, missing.stderr
    assert missing.stderr.startswith(f"error: cannot load {kubeconfig} (context nope): ")


async def test_report_and_logs_with_the_chart_installed(
    stack: Stack,
    api: client.ApiClient,
    namespace: str,
    worker: dict[str, Any],
    helm: Any,
    tmp_path: Path,
) -> None:
    """The operator side of the bundle: the chart's Deployment and DaemonSet, their
    pods' statuses, the values read back from the Deployment, the node reports in
    the namespace the operator reads them from; Helm's release Secret left unread."""
    release = release_for(namespace)
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        # The stack's CRDs are the tests' own (tests/cluster/crds.py), not this release's.
        "logging.format=json,chain.endpoint=https://ton.example/api/v2/jsonRPC,crds.enabled=false",
        kubeconfig=stack.kubeconfig,
    )
    try:
        core = client.CoreV1Api(api)
        await core.create_namespaced_config_map(
            namespace,
            {
                "metadata": {
                    "name": "cocoon-node-sim-cc-0000",
                    "labels": {REPORT_LABEL: "true"},
                },
                "data": {"report.json": json.dumps({"node": "sim-cc-0000", "checks": []})},
            },
        )

        async def operator_pod() -> bool:
            pods = await core.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/name=cocoon-operator"
            )
            return bool(pods.items)

        await eventually(operator_pod, within=60, what="the chart's operator pod")
        out_file = tmp_path / "bundle.tar.gz"
        out = await plugin(
            stack, "report", "-n", namespace, "--operator-namespace", namespace, "-o", str(out_file)
        )
        assert out.returncode == 0, out.stderr
        files = bundle_files(out_file)
        fullname = f"{release}-cocoon-operator"
        assert f"namespaces/{namespace}/deployments/{fullname}.yaml" in files
        assert f"namespaces/{namespace}/daemonsets/{fullname}-node-agent.yaml" in files
        values = yaml.safe_load(files["chart-values.yaml"])
        assert values["chart"].startswith("cocoon-operator-")
        assert values["args"]["log-format"] == "json"
        assert values["args"]["node-report-namespace"] == namespace
        assert values["args"]["ton-endpoint"] == "https://ton.example/api/v2/jsonRPC"
        report = yaml.safe_load(
            files[f"namespaces/{namespace}/node-reports/cocoon-node-sim-cc-0000.yaml"]
        )
        assert json.loads(report["data"]["report.json"])["node"] == "sim-cc-0000"
        pod_files = [p for p in files if p.startswith(f"namespaces/{namespace}/pods/{fullname}-")]
        assert pod_files
        assert "status" in yaml.safe_load(files[pod_files[0]])
        manifest = json.loads(files["manifest.json"])
        # kwok's nodes serve no logs: the failure is recorded per operator pod.
        assert any(f["what"].startswith("logs of operator pod") for f in manifest["failed"])
        everything = b"".join(files.values()).decode()
        assert "sh.helm.release" not in everything

        logs_out = await plugin(
            stack, "logs", "w0", "-n", namespace, "--operator-namespace", namespace
        )
        assert logs_out.returncode == 1
        assert f"unavailable: cannot access logs of operator pod {namespace}/{fullname}-" in (
            logs_out.stderr
        )
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", kubeconfig=stack.kubeconfig)
