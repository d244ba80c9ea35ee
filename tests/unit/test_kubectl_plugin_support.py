"""``kubectl cocoon`` support commands without a cluster: redaction, the bundle, the
operator-log filter, option handling, and ``logs`` against a fake apiserver whose
log endpoints fail the way kwok's nodes (no kubelet) make them fail."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from cocoon_operator import __version__
from cocoon_operator.kubectl_plugin import bundle, logs, redact
from cocoon_operator.kubectl_plugin.cli import build_parser, default_namespace
from tests.unit.helpers import serve

R = redact.REDACTED
NOW = dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=dt.UTC)


# ---- redaction ------------------------------------------------------------------------


def test_secret_looking_annotations_and_last_applied_are_redacted() -> None:
    obj = {
        "metadata": {
            "name": "w0",
            "annotations": {
                "cocoon.network/control-key": "ed25519:abc",
                "example.com/api-token": "t0ken",
                "kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}',
                "cocoon.network/config-hash": "0123abcd",
                "cocoon.network/worker.ini": "[node]\nnode_wallet_key = S3CRET\n"
                "owner_address = EQabc\n[launcher]\nnode_wallet_key_file = /run/secrets/k\n",
            },
        }
    }
    out = redact.redact_object(obj)
    ann = out["metadata"]["annotations"]
    assert ann["cocoon.network/control-key"] == R
    assert ann["example.com/api-token"] == R
    assert ann["kubectl.kubernetes.io/last-applied-configuration"] == R
    assert ann["cocoon.network/config-hash"] == "0123abcd"
    # COCOON's secret (cocoon-launch:79) hidden; the pointer to its file and the rest kept.
    assert ann["cocoon.network/worker.ini"] == (
        f"[node]\nnode_wallet_key = {R}\nowner_address = EQabc\n[launcher]\n"
        "node_wallet_key_file = /run/secrets/k\n"
    )
    assert obj["metadata"]["annotations"]["example.com/api-token"] == "t0ken"  # input unchanged


def test_env_values_are_redacted_by_name_and_references_kept() -> None:
    container = {
        "name": "launcher",
        "env": [
            {"name": "HF_TOKEN", "value": "hf_x"},
            {"name": "TON_API_KEY", "value": "k"},
            {"name": "DB_PASSWORD", "value": "p"},
            {"name": "LOG_LEVEL", "value": "info"},
            {
                "name": "NODE_WALLET_KEY",
                "valueFrom": {"secretKeyRef": {"name": "w0-wallet", "key": "node-wallet-key"}},
            },
        ],
    }
    env = {e["name"]: e for e in redact.redact_object(container)["env"]}
    assert env["HF_TOKEN"]["value"] == R
    assert env["TON_API_KEY"]["value"] == R
    assert env["DB_PASSWORD"]["value"] == R
    assert env["LOG_LEVEL"]["value"] == "info"
    assert env["NODE_WALLET_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "w0-wallet", "key": "node-wallet-key"}
    }


def test_flag_values_are_redacted_unless_they_point_at_a_file_or_secret() -> None:
    args = [
        "run",
        "--ton-api-key=abc",
        "--api-token",
        "xyz",
        "--ton-api-key-file=/etc/cocoon-operator/ton/api-key",
        "--control-key-secret=cocoon-system/control",
        "--namespace=team-a",
        "--leader-elect",
    ]
    assert redact.redact_args(args) == [
        "run",
        f"--ton-api-key={R}",
        "--api-token",
        R,
        "--ton-api-key-file=/etc/cocoon-operator/ton/api-key",
        "--control-key-secret=cocoon-system/control",
        "--namespace=team-a",
        "--leader-elect",
    ]


def test_fields_by_key_pem_blocks_and_selector_keys() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----"
    obj = {
        "spec": {
            "privateKey": "abc",
            "mnemonic": "word " * 24,
            "note": f"pasted: {pem} oops",
            "affinity": {
                "matchExpressions": [{"key": "nvidia.com/cc.mode.state", "operator": "In"}],
                "topologyKey": "kubernetes.io/hostname",
            },
            "nodeWalletKeySecretRef": {"name": "w0-wallet", "key": "node-wallet-key"},
            "balance": 5,
        }
    }
    spec = redact.redact_object(obj)["spec"]
    assert spec["privateKey"] == R
    assert spec["mnemonic"] == R
    assert spec["note"] == f"pasted: {R} oops"
    assert spec["affinity"] == obj["spec"]["affinity"]
    assert spec["nodeWalletKeySecretRef"] == obj["spec"]["nodeWalletKeySecretRef"]
    assert spec["balance"] == 5


def test_log_lines_with_assignments_of_secrets_are_redacted() -> None:
    text = "starting\nTON_API_KEY=abc123\nmnemonic: one two three\nfunded w0: 2 TON\n"
    assert redact.redact_text(text) == (
        f"starting\nTON_API_KEY={R}\nmnemonic: {R}\nfunded w0: 2 TON\n"
    )


# ---- the bundle -----------------------------------------------------------------------


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names[0].endswith("/manifest.json")  # first, so `tar t | head` shows it
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_bundle_archive_holds_redacted_files_under_one_root_and_a_manifest() -> None:
    out = bundle.Bundle()
    worker = {
        "kind": "CocoonWorker",
        "metadata": {"name": "w0", "namespace": "team-a", "annotations": {"x/token": "t"}},
    }
    out.add_object(bundle.object_path("cocoonworkers", worker), "CocoonWorker team-a/w0", worker)
    out.add_text("namespaces/cocoon-system/logs/op.log", "operator log", "API_KEY=abc\nok\n")
    out.fail("operator logs", "cannot access logs: 500 no kubelet")
    files = _members(out.archive(NOW, {"namespaces": ["team-a"]}))

    root = "cocoon-report-20261206T120000Z"
    assert set(files) == {
        f"{root}/manifest.json",
        f"{root}/namespaces/team-a/cocoonworkers/w0.yaml",
        f"{root}/namespaces/cocoon-system/logs/op.log",
    }
    saved = yaml.safe_load(files[f"{root}/namespaces/team-a/cocoonworkers/w0.yaml"])
    assert saved["metadata"]["annotations"]["x/token"] == R
    assert files[f"{root}/namespaces/cocoon-system/logs/op.log"] == f"API_KEY={R}\nok\n".encode()
    manifest = json.loads(files[f"{root}/manifest.json"])
    assert manifest["createdAt"] == "2026-12-06T12:00:00Z"
    assert [c["path"] for c in manifest["collected"]] == [
        "namespaces/cocoon-system/logs/op.log",
        "namespaces/team-a/cocoonworkers/w0.yaml",
    ]
    assert manifest["failed"] == [
        {"what": "operator logs", "error": "cannot access logs: 500 no kubelet"}
    ]
    assert any("Secrets" in n for n in manifest["neverCollected"])
    assert manifest["redacted"] == list(redact.RULES)


def test_bundle_refuses_one_path_twice_and_unsafe_names() -> None:
    out = bundle.Bundle()
    out.add_object("a.yaml", "a", {})
    with pytest.raises(ValueError, match="twice"):
        out.add_object("a.yaml", "a again", {})
    odd = {"metadata": {"name": "../../etc/passwd", "namespace": "n"}}
    assert bundle.object_path("pods", odd) == "namespaces/n/pods/_.._etc_passwd.yaml"
    assert bundle.object_path("crds", {"metadata": {"name": "c"}}) == "cluster/crds/c.yaml"


def test_chart_values_come_from_the_operator_deployment_args() -> None:
    deployment = {
        "metadata": {
            "name": "cocoon-operator",
            "namespace": "cocoon-system",
            "labels": {
                "helm.sh/chart": "cocoon-operator-0.1.0",
                "app.kubernetes.io/version": "0.1.0",
                "app.kubernetes.io/instance": "cocoon-operator",
            },
        },
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "image": "ghcr.io/x/cocoon-operator:0.1.0",
                            "args": [
                                "run",
                                "--log-format=json",
                                "--namespace=a",
                                "--namespace=b",
                                "--leader-elect",
                                "--node-report-namespace",
                                "cocoon-system",
                            ],
                        }
                    ]
                }
            },
        },
    }
    values = bundle.chart_values(deployment, "operator")
    assert values["chart"] == "cocoon-operator-0.1.0"
    assert values["replicas"] == 2
    assert values["args"] == {
        "_positional": "run",
        "log-format": "json",
        "namespace": ["a", "b"],
        "leader-elect": True,
        "node-report-namespace": "cocoon-system",
    }


def test_a_workloads_pods_are_found_by_its_selector() -> None:
    deployment = {"spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}}
    assert bundle.match_labels_selector(deployment) == "a=1,b=2"
    assert bundle.match_labels_selector({"spec": {}}) is None


def test_crd_versions() -> None:
    crd = {
        "metadata": {"name": "cocoonworkers.cocoon.network"},
        "spec": {"versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {}}]},
        "status": {"storedVersions": ["v1alpha1"]},
    }
    assert bundle.crd_versions(crd) == {
        "name": "cocoonworkers.cocoon.network",
        "labels": {},
        "versions": [{"name": "v1alpha1", "served": True, "storage": True}],
        "storedVersions": ["v1alpha1"],
    }


# ---- the operator-log filter and durations --------------------------------------------


def _json_line(message: str, **ref: str) -> str:
    doc: dict[str, Any] = {"message": message, "severity": "info"}
    if ref:
        doc["object"] = {"apiVersion": "cocoon.network/v1alpha1", "kind": "CocoonWorker", **ref}
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (_json_line("Handler succeeded.", namespace="team-a", name="w0"), True),
        (_json_line("Handler succeeded.", namespace="team-b", name="w0"), False),
        (_json_line("Handler succeeded.", namespace="team-a", name="w01"), False),
        (_json_line("pod deleted", kind="Pod", namespace="team-a", name="w0-r1-0"), False),
        (_json_line("launcher of team-a/w0 gone", namespace="team-a", name="w0-r1-0"), True),
        (_json_line("leader elected"), False),
        ("[team-a/w0] Handler 'reconcile' succeeded.", True),
        ("[team-a/w01] Handler 'reconcile' succeeded.", False),
        ("funding w0 with 2 TON", True),
        ("funding w0-x with 2 TON", False),
        ("funding team-b/w0 with 2 TON", False),
        ("funding team-a/w0 with 2 TON", True),
        ("{not json about w0", True),
    ],
)
def test_operator_lines_about_a_worker(line: str, kept: bool) -> None:
    assert logs.LineFilter("team-a", "w0").keeps(line) is kept


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800)]
)
def test_parse_since(text: str, seconds: int) -> None:
    assert logs.parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "0s", "1h 5m", "-5m"])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        logs.parse_since(text)


def test_launcher_selector_is_the_labels_the_operator_sets() -> None:
    from cocoon_operator.api.labels import COMMON_LABELS, LABEL_WORKER  # noqa: PLC0415

    pairs = dict(p.split("=") for p in logs.launcher_selector("w0").split(","))
    assert pairs == {**COMMON_LABELS, LABEL_WORKER: "w0"}


def test_last() -> None:
    assert logs.last(["a", "b", "c"], -1) == ["a", "b", "c"]
    assert logs.last(["a", "b", "c"], 2) == ["b", "c"]
    assert logs.last(["a", "b", "c"], 0) == []


# ---- option handling ------------------------------------------------------------------

SUBCOMMANDS = {
    "status": [],
    "describe": ["w0"],
    "attest": ["w0"],
    "pause": ["w0"],
    "resume": ["w0"],
    "payout": ["w0"],
    "logs": ["w0"],
    "report": [],
}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_takes_the_kubectl_options(command: str) -> None:
    argv = [command, *SUBCOMMANDS[command], "--kubeconfig", "k", "--context", "c", "-n", "ns"]
    args = build_parser().parse_args(argv)
    assert (args.kubeconfig, args.context, args.namespace) == ("k", "c", "ns")
    before = build_parser().parse_args(
        ["--context", "c", "-n", "ns", command, *SUBCOMMANDS[command]]
    )
    assert (before.context, before.namespace) == ("c", "ns")


@pytest.mark.parametrize("command", ["status", "report"])
def test_listing_subcommands_take_all_namespaces(command: str) -> None:
    assert build_parser().parse_args([command, "-A"]).all_namespaces is True


@pytest.mark.parametrize("argv", [["--version"], ["logs", "--version"], ["report", "--version"]])
def test_version_exits_0_with_the_package_version(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cocoon_operator.kubectl_plugin", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kubectl-cocoon {__version__}"


def test_logs_options() -> None:
    args = build_parser().parse_args(["logs", "w0", "--since", "5m", "--tail", "20"])
    assert (args.since, args.tail, args.container) == (300, 20, "launcher")
    assert args.operator_namespace == "cocoon-system"
    assert args.operator_selector == "app.kubernetes.io/name=cocoon-operator"
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["logs", "w0", "--since", "soon"])
    assert exit_.value.code == 2


def test_context_option_picks_that_contexts_namespace(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "here",
        "contexts": [
            {"name": "here", "context": {"cluster": "c", "user": "u", "namespace": "ns-here"}},
            {"name": "there", "context": {"cluster": "c", "user": "u", "namespace": "ns-there"}},
            {"name": "bare", "context": {"cluster": "c", "user": "u"}},
        ],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert default_namespace(str(path)) == "ns-here"
    assert default_namespace(str(path), "there") == "ns-there"
    assert default_namespace(str(path), "bare") == "default"


# ---- logs against a fake apiserver ----------------------------------------------------

LAUNCHER_LOG = "qemu started\nvm running\n"
OPERATOR_LOG = "\n".join(
    [
        _json_line("Handler 'reconcile' succeeded.", namespace="ns", name="w0"),
        _json_line("Handler 'reconcile' succeeded.", namespace="ns", name="w1"),
        "[ns/w0] funded to the target",
        "[ns/w1] funded to the target",
        _json_line("Attested.", namespace="ns", name="w0"),
    ]
)


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": "2026-12-06T11:00:00Z"}}


class FakeApiserver:
    """Answers the reads ``logs`` makes; ``failing`` names the log paths that answer 500."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.operator_pods = [_pod("op-1")]
        self.queries: dict[str, dict[str, str]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.queries[path] = dict(request.query)
        if path.endswith("/cocoonworkers/w0"):
            return web.json_response({"kind": "CocoonWorker", "metadata": {"name": "w0"}})
        if path in self.failing:
            status = {"kind": "Status", "code": 500, "message": "no kubelet on kwok-node"}
            return web.json_response(status, status=500)
        if path == "/api/v1/namespaces/ns/pods":
            return web.json_response({"kind": "PodList", "items": [_pod("w0-r1-0")]})
        if path == "/api/v1/namespaces/cocoon-system/pods":
            return web.json_response({"kind": "PodList", "items": self.operator_pods})
        if path == "/api/v1/namespaces/ns/pods/w0-r1-0/log":
            return web.Response(text=LAUNCHER_LOG)
        if path == "/api/v1/namespaces/cocoon-system/pods/op-1/log":
            return web.Response(text=OPERATOR_LOG)
        return web.json_response({"kind": "Status", "code": 404}, status=404)


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[tuple[FakeApiserver, Path]]:
    fake = FakeApiserver()
    runner, port = await serve(fake.handle)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield fake, path
    await runner.cleanup()


async def _plugin(kubeconfig: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cocoon_operator.kubectl_plugin",
        "--kubeconfig",
        str(kubeconfig),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(), err.decode())


async def test_logs_prints_the_launcher_and_the_operators_lines_about_the_worker(
    apiserver: tuple[FakeApiserver, Path],
) -> None:
    fake, kubeconfig = apiserver
    done = await _plugin(kubeconfig, "logs", "w0", "--since", "10m", "--tail", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[pod/w0-r1-0/launcher] qemu started",
        "[pod/w0-r1-0/launcher] vm running",
        # The operator's last 2 lines about w0 (tail after filtering), in their own format.
        "[pod/op-1/operator] [ns/w0] funded to the target",
        "[pod/op-1/operator] " + _json_line("Attested.", namespace="ns", name="w0"),
    ]
    launcher_query = fake.queries["/api/v1/namespaces/ns/pods/w0-r1-0/log"]
    assert launcher_query == {"container": "launcher", "sinceSeconds": "600", "tailLines": "2"}
    operator_query = fake.queries["/api/v1/namespaces/cocoon-system/pods/op-1/log"]
    assert operator_query == {"container": "operator", "sinceSeconds": "600"}
    selector = fake.queries["/api/v1/namespaces/ns/pods"]["labelSelector"]
    assert selector == logs.launcher_selector("w0")


async def test_logs_says_which_source_failed_and_prints_the_rest_exit_3(
    apiserver: tuple[FakeApiserver, Path],
) -> None:
    fake, kubeconfig = apiserver
    fake.failing.add("/api/v1/namespaces/ns/pods/w0-r1-0/log")
    done = await _plugin(kubeconfig, "logs", "w0")
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        "unavailable: cannot access logs of launcher pod ns/w0-r1-0 (container launcher):"
        " 500 no kubelet on kwok-node"
    ]
    assert [line.split("] ", 1)[0] for line in done.stdout.splitlines()] == [
        "[pod/op-1/operator"
    ] * 3


async def test_logs_with_no_source_readable_exits_1_naming_each(
    apiserver: tuple[FakeApiserver, Path],
) -> None:
    fake, kubeconfig = apiserver
    fake.failing.add("/api/v1/namespaces/ns/pods/w0-r1-0/log")
    fake.operator_pods = []
    done = await _plugin(kubeconfig, "logs", "w0")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "unavailable: cannot access logs of launcher pod ns/w0-r1-0 (container launcher):"
        " 500 no kubelet on kwok-node",
        "unavailable: no operator pods in namespace cocoon-system"
        " (app.kubernetes.io/name=cocoon-operator); see --operator-namespace",
    ]


async def test_an_unreachable_apiserver_is_one_line_for_report_and_logs(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    report = await _plugin(path, "report", "-o", str(tmp_path / "r.tar.gz"))
    assert report.returncode == 1
    assert len(report.stderr.splitlines()) == 1, report.stderr
    assert report.stderr.startswith("error: nothing could be collected: cannot access ")
    assert not (tmp_path / "r.tar.gz").exists()
    status = await _plugin(path, "status")
    assert status.returncode == 1
    assert len(status.stderr.splitlines()) == 1, status.stderr
    assert "Traceback" not in report.stderr + status.stderr


def test_redaction_leaves_no_secret_in_a_deep_copy_of_a_launcher_pod() -> None:
    pod = {
        "metadata": {"annotations": {"cocoon.network/worker.ini": "node_wallet_key=K\n"}},
        "spec": {
            "containers": [{"args": ["--hf-token", "H"], "env": [{"name": "SEED", "value": "S"}]}]
        },
    }
    before = copy.deepcopy(pod)
    text = json.dumps(redact.redact_object(pod))
    assert all(f'"{s}"' not in text and f"={s}" not in text for s in ("K", "H", "S"))
    assert pod == before
