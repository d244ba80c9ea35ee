"""The operator's Kubernetes client (k8s/rest.py) and its connection loading
(k8s/kubeconfig.py), against a loopback HTTP(S) server standing in for the
apiserver: what is sent, how answers and errors come back, watches, TLS with a
client certificate from a kubeconfig, token files, and refusals naming the field.
The real apiserver is the cluster tests' (every operator run there uses this client).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from cocoon_operator.k8s.kubeconfig import (
    Connection,
    KubeconfigError,
    TokenFile,
    from_kubeconfig,
    in_cluster,
)
from cocoon_operator.k8s.rest import (
    MERGE_PATCH,
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Kube,
    NotFound,
    Unavailable,
    path,
)
from cocoon_operator.k8s.webhook_tls import self_signed
from tests.unit.helpers import serve, write_kubeconfig

NOW = dt.datetime.now(dt.UTC)
Seen = list[dict[str, Any]]


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, Seen]]:
    """A server that records each request and answers with a Status or an object."""
    seen: Seen = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": json.loads(body) if body else None,
            }
        )
        if request.path.endswith("/missing"):
            status = {"kind": "Status", "code": 404, "message": 'pods "missing" not found'}
            return web.json_response(status, status=404)
        if request.path.endswith("/broken"):
            status = {"kind": "Status", "code": 500, "message": "etcdserver: request timed out"}
            return web.json_response(status, status=500)
        return web.json_response({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7"}})

    runner, port = await serve(handler)
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def test_paths_of_core_and_group_resources_quote_names() -> None:
    assert path("v1", "pods", namespace="ns") == "/api/v1/namespaces/ns/pods"
    assert (
        path(
            "cocoon.network/v1alpha1",
            "cocoonworkers",
            namespace="n",
            name="w",
            subresource="status",
        )
        == "/apis/cocoon.network/v1alpha1/namespaces/n/cocoonworkers/w/status"
    )
    assert path("v1", "nodes", name="a/b") == "/api/v1/nodes/a%2Fb"


async def test_a_patch_sends_its_kind_the_token_and_json_and_answers_the_object(
    echo: tuple[str, Seen],
) -> None:
    server, seen = echo
    async with Kube(Connection(server=server, ssl=None, token="s3cret")) as kube:
        got = await kube.request(
            "PATCH",
            path("v1", "pods", namespace="ns", name="p"),
            body={"metadata": {"annotations": {"a": "b"}}},
            content_type=MERGE_PATCH,
        )
        await kube.request(
            "GET", path("v1", "pods", namespace="ns"), query={"labelSelector": "x=y"}
        )
    assert got["metadata"]["resourceVersion"] == "7"
    patch, listing = seen
    assert patch["method"] == "PATCH" and patch["path"] == "/api/v1/namespaces/ns/pods/p"
    assert patch["headers"]["Content-Type"] == MERGE_PATCH
    assert patch["headers"]["Authorization"] == "Bearer s3cret"
    assert patch["headers"]["User-Agent"].startswith("cocoon-operator/")
    assert patch["body"] == {"metadata": {"annotations": {"a": "b"}}}
    assert listing["query"] == {"labelSelector": "x=y"} and listing["body"] is None
    assert "Content-Type" not in listing["headers"]


async def test_an_error_status_raises_api_error_with_the_status_message(
    echo: tuple[str, Seen],
) -> None:
    server, _ = echo
    async with Kube(Connection(server=server, ssl=None, token="s3cret")) as kube:
        with pytest.raises(ApiError) as caught:
            await kube.request("GET", "/api/v1/namespaces/ns/pods/missing")
    assert caught.value.status == 404
    assert isinstance(caught.value, NotFound) and not caught.value.transient
    assert str(caught.value) == '404 Not Found: pods "missing" not found'
    assert "s3cret" not in repr(kube) + repr(kube.connection)


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        (404, NotFound, False),
        (409, Conflict, False),
        (410, Gone, False),
        (403, Forbidden, False),
        (422, ApiError, False),
        (429, Unavailable, True),
        (503, Unavailable, True),
        (0, Unavailable, True),
    ],
)
def test_an_api_error_is_the_class_its_status_names_and_says_whether_to_retry(
    status: int, kind: type[ApiError], transient: bool
) -> None:
    err = ApiError(status, "Reason", "{}")
    assert type(err) is kind
    assert err.transient is transient
    assert err.status == status
    assert pickle.loads(pickle.dumps(err)).status == status


async def test_unless_gone_answers_none_for_not_found_only(echo: tuple[str, Seen]) -> None:
    server, seen = echo
    async with Kube(Connection(server=server, ssl=None)) as kube:
        assert (
            await kube.request_unless_gone("DELETE", "/api/v1/namespaces/ns/pods/missing") is None
        )
        got = await kube.request_unless_gone("GET", "/api/v1/namespaces/ns/pods/p")
        assert got is not None and got["metadata"]["name"] == "p"
        with pytest.raises(ApiError) as caught:
            await kube.request_unless_gone("GET", "/api/v1/namespaces/ns/pods/broken")
    assert caught.value.status == 500
    assert isinstance(caught.value, Unavailable) and caught.value.transient
    assert [r["method"] for r in seen] == ["DELETE", "GET", "GET"]


async def test_a_watch_yields_events_split_across_chunks_and_raises_on_an_error_event() -> None:
    events = [
        {"type": "ADDED", "object": {"metadata": {"name": "a"}, "data": {"k": "x" * 200_000}}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "a"}}},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
    ]
    queries: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        wire = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        for start in range(0, len(wire), 7_000):  # lines cut mid-way
            await response.write(wire[start : start + 7_000])
        await response.write_eof()
        return response

    runner, port = await serve(handler)
    got: list[dict[str, Any]] = []
    try:
        async with Kube(Connection(server=f"http://127.0.0.1:{port}", ssl=None)) as kube:
            with pytest.raises(ApiError) as caught:
                async for event in kube.watch("/api/v1/configmaps", query={"resourceVersion": "5"}):
                    got.append(event)
    finally:
        await runner.cleanup()
    assert [e["type"] for e in got] == ["ADDED", "MODIFIED"]
    assert len(got[0]["object"]["data"]["k"]) == 200_000
    assert caught.value.status == 410
    assert queries == [{"resourceVersion": "5", "watch": "1", "timeoutSeconds": "300"}]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_a_kubeconfig_client_certificate_and_ca_make_a_verified_mutual_tls_request(
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
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": _b64(server_cert)},
        {"client-certificate-data": _b64(client_cert), "client-key-data": _b64(client_key)},
    )
    try:
        connection = from_kubeconfig([config])
        assert connection.namespace == "ns" and connection.authorization() is None
        async with Kube(connection) as kube:
            assert await kube.request("GET", "/api/v1/nodes") == {"kind": "NodeList", "items": []}
        # The same server is refused with another CA: the answer is verified.
        other_ca, _ = self_signed(tmp_path / "other", ["127.0.0.1"], now=NOW)
        wrong = write_kubeconfig(
            tmp_path / "wrong",
            {"server": f"https://127.0.0.1:{port}", "certificate-authority": str(other_ca)},
            {"client-certificate": str(client_cert), "client-key": str(client_key)},
        )
        async with Kube(from_kubeconfig([wrong])) as kube:
            with pytest.raises(Exception, match="certificate verify failed"):
                await kube.request("GET", "/api/v1/nodes")
    finally:
        await runner.cleanup()
    assert peers and peers[0] is not None  # the client presented its certificate


def test_kubeconfig_files_relative_to_it_and_the_first_file_wins(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text("from-file\n")
    first = write_kubeconfig(
        tmp_path / "conf" / "first",
        {"server": "http://first.example:8080/", "tls-server-name": "api"},
        {"tokenFile": "token"},
    )
    second = write_kubeconfig(
        tmp_path / "second", {"server": "http://second.example"}, {"token": "t"}
    )
    connection = from_kubeconfig([first, second])
    assert connection.server == "http://first.example:8080"
    assert connection.server_hostname == "api"
    assert connection.authorization() == "Bearer from-file"
    basic = write_kubeconfig(
        tmp_path / "basic", {"server": "http://x"}, {"username": "u", "password": "p"}
    )
    assert from_kubeconfig([basic]).authorization() == "Basic " + base64.b64encode(b"u:p").decode()


@pytest.mark.parametrize(
    ("cluster", "user", "named"),
    [
        ({"server": "https://x"}, {"exec": {"command": "aws"}}, "users[u].exec.apiVersion"),
        ({"server": "https://x"}, {"auth-provider": {"name": "gcp"}}, "users[u].auth-provider"),
        ({}, {"token": "t"}, "clusters[c].server"),
        (
            {"server": "https://x", "certificate-authority-data": "not base64!"},
            {},
            "clusters[c].certificate-authority-data",
        ),
        ({"server": "https://x"}, {"client-certificate-data": "QQ=="}, "users[u]"),
    ],
)
def test_a_kubeconfig_it_cannot_use_is_refused_naming_the_field(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], named: str
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", cluster, user)
    with pytest.raises(KubeconfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        from_kubeconfig([config])


def test_a_kubeconfig_without_the_context_it_names_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({"current-context": "gone", "contexts": []}))
    with pytest.raises(KubeconfigError, match="contexts has no entry named 'gone'"):
        from_kubeconfig([config])


def test_a_token_file_is_read_again_once_its_interval_passed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    clock = [0.0]
    source = TokenFile(token, clock=lambda: clock[0], reread=60.0)
    assert source.get() == "one"
    token.write_text("two")  # the kubelet rotated it
    clock[0] = 59.0
    assert source.get() == "one"
    clock[0] = 60.0
    assert source.get() == "two"
    assert "two" not in repr(source) + repr(Connection(server="https://x", ssl=None, token=source))


def test_in_cluster_reads_the_service_account_and_brackets_an_ipv6_host(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster({}, tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeconfigError, match="token is missing"):
        in_cluster(env, tmp_path)
    cert, _ = self_signed(tmp_path / "pki", ["kubernetes"], now=NOW)
    (tmp_path / "ca.crt").write_bytes(cert.read_bytes())
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("cocoon-system")
    connection = in_cluster(env, tmp_path)
    assert connection.server == "https://[fd00::1]:443"
    assert connection.namespace == "cocoon-system"
    assert connection.authorization() == "Bearer sa-token"
    assert connection.ssl is not None and connection.ssl.verify_mode == ssl.CERT_REQUIRED


def test_the_operator_process_loads_neither_the_generated_client_nor_its_models() -> None:
    """``run`` keeps kubernetes_asyncio out before importing kopf, which would load
    its thousand model modules only because the package is installed; building
    the command's parser (every subcommand's module) must not load it first.
    Nor pytoniq (with requests and urllib3: 9.6 MB), whose wallet v5r1 code a
    v5r1 treasury reads from ``ton/wallet.py`` instead."""
    probe = (
        "import sys\n"
        "from cocoon_operator import cli\n"
        "cli.build_parser().parse_args(['run'])\n"  # as main() does, every subcommand's parser
        "cli.without_generated_client()\n"
        "import kopf\n"
        "from cocoon_operator.handlers import admission, attestation, chain, checks, control\n"
        "from cocoon_operator.handlers import cordon, indexes, nodes, pool, process, worker\n"
        "from cocoon_operator.ton.wallet import wallet_v5r1_code_boc\n"
        "wallet_v5r1_code_boc()\n"
        "print(sorted(m for m, mod in sys.modules.items() if mod is not None"
        " and m.split('.')[0] in ('kubernetes_asyncio', 'pytoniq', 'requests')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_inline_certificate_data_may_be_split_across_lines(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path / "pki", ["127.0.0.1"], now=NOW)
    data = _b64(cert)
    wrapped = "\n".join(data[i : i + 64] for i in range(0, len(data), 64))
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        {"server": "https://127.0.0.1:6443", "certificate-authority-data": wrapped},
        {"token": "t"},
    )
    context = from_kubeconfig([config]).ssl
    assert context is not None and context.cert_store_stats()["x509_ca"] == 1
