"""Kubeconfig users whose credentials come from an ``exec`` plugin (client-go's
credential plugins: OIDC logins, cloud CLIs), run by the operator's own client
(k8s/kubeconfig.py): a small Python script stands in for the plugin, printing an
ExecCredential, counting its runs and recording what it was given."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from aiohttp import web

from cocoon_operator.k8s.kubeconfig import (
    EXEC_REFRESH_MARGIN,
    ExecCredential,
    KubeconfigError,
    from_kubeconfig,
)
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.k8s.webhook_tls import self_signed
from tests.unit.helpers import serve, write_kubeconfig

V1 = "client.authentication.k8s.io/v1"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

# The plugin: prints an ExecCredential built from its environment, numbering its
# tokens by the runs recorded in $RUNS, and writes KUBERNETES_EXEC_INFO to $SEEN.
PLUGIN = """\
import json, os, sys
from pathlib import Path
runs = Path(os.environ["RUNS"])
n = len(runs.read_text().splitlines()) + 1 if runs.exists() else 1
with runs.open("a") as f:
    f.write("run\\n")
Path(os.environ["SEEN"]).write_text(os.environ.get("KUBERNETES_EXEC_INFO", ""))
mode = os.environ.get("MODE", "token")
if mode == "fail":
    print("login failed: token-that-must-not-leak", file=sys.stderr)
    sys.exit(3)
if mode == "garbage":
    print("not json token-that-must-not-leak")
    sys.exit(0)
status = {}
if mode in ("token", "both"):
    status["token"] = f"tok-{n}"
if mode in ("cert", "both"):
    status["clientCertificateData"] = Path(os.environ["CERT"]).read_text()
    status["clientKeyData"] = Path(os.environ["KEY"]).read_text()
if os.environ.get("EXPIRES"):
    status["expirationTimestamp"] = os.environ["EXPIRES"]
version = os.environ.get("ANSWER_VERSION") or json.loads(os.environ["KUBERNETES_EXEC_INFO"])[
    "apiVersion"
]
print(json.dumps({"apiVersion": version, "kind": "ExecCredential", "status": status}))
"""


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def _plugin(tmp_path: Path) -> Path:
    script = tmp_path / "bin" / "fake-login"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\n{PLUGIN}")
    script.chmod(0o755)
    return script


def _spec(tmp_path: Path, **env: str) -> dict[str, Any]:
    values = {"RUNS": str(tmp_path / "runs"), "SEEN": str(tmp_path / "seen"), **env}
    return {
        "apiVersion": V1,
        "command": str(_plugin(tmp_path)),
        "args": ["get-token", "--cluster", "prod"],
        "env": [{"name": k, "value": v} for k, v in values.items()],
        "interactiveMode": "IfAvailable",
    }


def _runs(tmp_path: Path) -> int:
    runs = tmp_path / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_the_token_is_kept_until_shortly_before_it_expires_then_fetched_again(
    tmp_path: Path,
) -> None:
    expires = NOW + dt.timedelta(minutes=10)
    clock = Clock()
    credential = ExecCredential(
        _spec(tmp_path, EXPIRES=expires.isoformat().replace("+00:00", "Z")),
        who="users[u]",
        base=tmp_path,
        now=clock,
    )
    assert _runs(tmp_path) == 0  # nothing runs before a token is needed
    assert credential.get() == "tok-1"
    clock.now = expires - EXEC_REFRESH_MARGIN - dt.timedelta(seconds=1)
    assert credential.get() == "tok-1"
    assert _runs(tmp_path) == 1
    clock.now = expires - EXEC_REFRESH_MARGIN
    assert credential.get() == "tok-2"
    assert _runs(tmp_path) == 2
    # What the plugin was told: the version asked for, and that nobody is at a terminal.
    seen = json.loads((tmp_path / "seen").read_text())
    assert seen == {"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": False}}
    assert "tok-" not in repr(credential)


def test_a_token_without_an_expiry_is_kept_for_the_life_of_the_process(tmp_path: Path) -> None:
    clock = Clock()
    credential = ExecCredential(_spec(tmp_path), who="users[u]", base=tmp_path, now=clock)
    assert credential.get() == "tok-1"
    clock.now = NOW + dt.timedelta(days=30)
    assert credential.get() == "tok-1"
    assert _runs(tmp_path) == 1


async def test_a_kubeconfig_exec_user_sends_the_plugins_token_to_the_apiserver(
    tmp_path: Path,
) -> None:
    tokens: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        tokens.append(request.headers.get("Authorization"))
        return web.json_response({"kind": "NodeList", "items": []})

    runner, port = await serve(handler)
    try:
        spec = _spec(tmp_path)
        spec["provideClusterInfo"] = True
        # A relative command with a slash is relative to the kubeconfig's directory.
        spec["command"] = "bin/fake-login"
        config = write_kubeconfig(
            tmp_path / "kubeconfig",
            {"server": f"http://127.0.0.1:{port}", "tls-server-name": "api.example"},
            {"exec": spec},
        )
        connection = from_kubeconfig([config])
        async with Kube(connection) as kube:
            await kube.request("GET", "/api/v1/nodes")
            await kube.request("GET", "/api/v1/nodes")
    finally:
        await runner.cleanup()
    assert tokens == ["Bearer tok-1", "Bearer tok-1"]
    assert _runs(tmp_path) == 1  # run at load, its token reused
    seen = json.loads((tmp_path / "seen").read_text())
    assert seen["spec"]["cluster"] == {
        "server": f"http://127.0.0.1:{port}",
        "tls-server-name": "api.example",
    }


async def test_a_client_certificate_from_the_plugin_makes_a_mutual_tls_request(
    tmp_path: Path,
) -> None:
    server_cert, server_key = self_signed(tmp_path / "server", ["127.0.0.1"], now=NOW)
    client_cert, client_key = self_signed(tmp_path / "client", ["operator"], now=NOW)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_cert, server_key)
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(cafile=str(client_cert))
    peers: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peercert") if request.transport else None)
        return web.json_response({"kind": "NodeList", "items": []})

    runner, port = await serve(handler, tls)
    try:
        spec = _spec(tmp_path, MODE="cert", CERT=str(client_cert), KEY=str(client_key))
        config = write_kubeconfig(
            tmp_path / "kubeconfig",
            {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority-data": base64.b64encode(server_cert.read_bytes()).decode(),
            },
            {"exec": spec},
        )
        connection = from_kubeconfig([config])
        assert connection.authorization() is None  # a certificate, no token
        async with Kube(connection) as kube:
            assert (await kube.request("GET", "/api/v1/nodes"))["kind"] == "NodeList"
    finally:
        await runner.cleanup()
    assert peers and peers[0] is not None


@pytest.mark.parametrize(
    ("env", "change", "message"),
    [
        ({"MODE": "fail"}, {}, r"users\[u\]\.exec: .*fake-login exited with status 3"),
        ({"MODE": "garbage"}, {}, r"users\[u\]\.exec: the plugin's output is not JSON"),
        (
            {"ANSWER_VERSION": "client.authentication.k8s.io/v1beta1"},
            {},
            r"the plugin answered 'client.authentication.k8s.io/v1beta1', asked for '.*/v1'",
        ),
        ({"EXPIRES": "soon"}, {}, r"status\.expirationTimestamp is not an RFC 3339 time"),
        (
            {},
            {"command": "no-such-login-plugin", "installHint": "Install it:\n  apt install x"},
            r"users\[u\]\.exec: no-such-login-plugin: not found \(Install it: apt install x\)",
        ),
    ],
)
def test_a_plugin_that_fails_is_one_error_naming_the_user_never_its_output(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    env: dict[str, str],
    change: dict[str, Any],
    message: str,
) -> None:
    spec = {**_spec(tmp_path, **env), **change}
    config = write_kubeconfig(tmp_path / "kubeconfig", {"server": "https://x"}, {"exec": spec})
    with pytest.raises(KubeconfigError, match=message) as info:
        from_kubeconfig([config])
    assert "token-that-must-not-leak" not in str(info.value)
    assert "tok-" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apiVersion": None}, r"users\[u\]\.exec\.apiVersion: None is not one of"),
        (
            {"apiVersion": "client.authentication.k8s.io/v1alpha1"},
            r"users\[u\]\.exec\.apiVersion: 'client.authentication.k8s.io/v1alpha1'",
        ),
        ({"command": ""}, r"users\[u\]\.exec\.command is not set"),
        ({"interactiveMode": "Always"}, r"users\[u\]\.exec\.interactiveMode is Always"),
        ({"env": [{"value": "x"}]}, r"users\[u\]\.exec\.env\[0\] needs a name"),
    ],
)
def test_an_exec_section_it_cannot_run_is_refused_before_running_anything(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    spec = {**_spec(tmp_path), **change}
    config = write_kubeconfig(tmp_path / "kubeconfig", {"server": "https://x"}, {"exec": spec})
    with pytest.raises(KubeconfigError, match=message):
        from_kubeconfig([config])
    assert _runs(tmp_path) == 0


@pytest.mark.parametrize(
    ("provider", "advice"),
    [
        ("gcp", "gke-gcloud-auth-plugin"),
        ("azure", "kubelogin"),
        ("oidc", "oidc-login get-token"),
        ("custom", "use an exec plugin"),
    ],
)
def test_auth_provider_users_are_refused_naming_the_provider_and_the_way_out(
    tmp_path: Path, provider: str, advice: str
) -> None:
    user = {"auth-provider": {"name": provider, "config": {"id-token": "secret-id-token"}}}
    config = write_kubeconfig(tmp_path / "kubeconfig", {"server": "https://x"}, user)
    with pytest.raises(KubeconfigError) as info:
        from_kubeconfig([config])
    text = str(info.value)
    assert f"users[u].auth-provider '{provider}'" in text
    assert advice in text
    assert "secret-id-token" not in text


def test_kubeconfig_written_by_a_cloud_cli_parses(tmp_path: Path) -> None:
    """The shape `gcloud container clusters get-credentials` writes (v1, no args)."""
    spec = _spec(tmp_path)
    spec.pop("args")
    spec["installHint"] = "Install gke-gcloud-auth-plugin"
    spec["provideClusterInfo"] = True
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, {"server": "http://127.0.0.1:1"}, {"exec": spec})
    assert yaml.safe_load(path.read_text())["users"][0]["user"]["exec"]["apiVersion"] == V1
    assert from_kubeconfig([path]).authorization() == "Bearer tok-1"


def test_kopf_logs_in_with_the_plugins_token_and_its_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf's own kubeconfig login runs no plugin: the operator's login handler adds
    the plugin's token and expiry, so `run` works from an OIDC or cloud kubeconfig."""
    from cocoon_operator.handlers.process import login  # noqa: PLC0415 - loads kopf

    expires = "2030-01-01T00:00:00Z"
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True},
        {"exec": _spec(tmp_path, EXPIRES=expires)},
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    assert info is not None
    assert info.server == "https://127.0.0.1:1"
    assert info.token == "tok-1"
    assert info.expiration == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    # A user with a token of its own is kopf's alone: no plugin is run.
    static = write_kubeconfig(
        tmp_path / "static", {"server": "https://127.0.0.1:1"}, {"token": "t"}
    )
    monkeypatch.setenv("KUBECONFIG", str(static))
    runs = _runs(tmp_path)
    info = login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    assert info is not None and info.token == "t"
    assert _runs(tmp_path) == runs
