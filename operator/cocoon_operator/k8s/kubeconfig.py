"""Where the apiserver is and how to authenticate: a kubeconfig or the pod's service account.

The operator's own client (:mod:`.rest`) is built from a :class:`Connection`.
Loading is plain file reading, done once at startup; the only thing read again
later is a token file (a projected service-account token is rotated by the
kubelet, hourly by default, and an old one expires).

Supported: a kubeconfig's current context with a server, its CA (file or
data), ``insecure-skip-tls-verify``, ``tls-server-name``, and a user with a
client certificate and key (files or data), a token or a token file, or a
username and password. A user that needs a program run for its credentials
(``exec``, ``auth-provider``) is refused with an error naming the user: kopf's
own login, which the operator uses for its watches, cannot run them either.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How long a token read from a file is used before the file is read again. The
# kubelet refreshes a projected token at 80% of its lifetime (at least 10
# minutes), so a minute's staleness never hands the apiserver an expired one.
TOKEN_REREAD_SECONDS = 60.0


class KubeconfigError(Exception):
    """The kubeconfig or the service account cannot give a connection; the message says why."""


class TokenFile:
    """A bearer token kept in a file that something else rotates."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        reread: float = TOKEN_REREAD_SECONDS,
    ) -> None:
        self.path = path
        self._clock = clock
        self._reread = reread
        self._value = ""
        self._read_at: float | None = None

    def __repr__(self) -> str:  # never the token itself
        return f"TokenFile({str(self.path)!r})"

    def get(self) -> str:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._reread:
            self._value = self.path.read_text().strip()
            self._read_at = now
        return self._value


@dataclass(frozen=True, repr=False)
class Connection:
    """What the client needs: the server URL, TLS settings and the credentials.

    ``repr`` names the server only: the credentials must never reach a log.
    """

    server: str
    ssl: ssl.SSLContext | None
    token: str | TokenFile | None = None
    basic_auth: tuple[str, str] | None = None
    server_hostname: str | None = None
    namespace: str | None = None

    def __repr__(self) -> str:
        return f"Connection(server={self.server!r})"

    def authorization(self) -> str | None:
        """The ``Authorization`` header's value, if the credentials are a token or a password."""
        if isinstance(self.token, TokenFile):
            return f"Bearer {self.token.get()}"
        if self.token:
            return f"Bearer {self.token}"
        if self.basic_auth is not None:
            pair = ":".join(self.basic_auth).encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None


def load(kubeconfig: str | None = None) -> Connection:
    """``kubeconfig``, else ``$KUBECONFIG``, else the pod's service account."""
    paths = kubeconfig or os.environ.get("KUBECONFIG")
    if paths:
        return from_kubeconfig([Path(p).expanduser() for p in paths.split(os.pathsep) if p])
    return in_cluster()


def in_cluster(
    environ: Mapping[str, str] = os.environ, account: Path = SERVICE_ACCOUNT
) -> Connection:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeconfigError(
            "no kubeconfig given ($KUBECONFIG, --kubeconfig) and not in a pod"
            " (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)"
        )
    token, ca = account / "token", account / "ca.crt"
    for needed in (token, ca):
        if not needed.is_file():
            raise KubeconfigError(f"service account file {needed} is missing")
    namespace_file = account / "namespace"
    host = f"[{host}]" if ":" in host else host
    return Connection(
        server=f"https://{host}:{port}",
        ssl=_context(ca_file=ca),
        token=TokenFile(token),
        namespace=namespace_file.read_text().strip() if namespace_file.is_file() else None,
    )


def _merged(paths: list[Path]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The current context and every named entry, the first file naming one winning
    (kubectl's merge rule), each entry remembering the file it came from."""
    current: str | None = None
    named: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise KubeconfigError(f"kubeconfig {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise KubeconfigError(f"kubeconfig {path}: not a mapping")
        current = current or doc.get("current-context")
        for section, field in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in doc.get(section) or []:
                key = f"{section}/{item.get('name')}"
                if key not in named:
                    named[key] = {"entry": item.get(field) or {}, "dir": path.parent}
    return current, named


def _entry(named: dict[str, dict[str, Any]], section: str, name: str | None) -> dict[str, Any]:
    found = named.get(f"{section}/{name}")
    if found is None:
        raise KubeconfigError(f"kubeconfig: {section} has no entry named {name!r}")
    return found


def _pem(
    entry: Mapping[str, Any], base: Path, key: str, field_path: str
) -> tuple[bytes | None, Path | None]:
    """A PEM given inline (``<key>-data``, base64) or as a file (``<key>``, relative
    to the kubeconfig's directory)."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            # Line breaks are allowed in the value, as kubectl allows them.
            return base64.b64decode("".join(str(data).split()), validate=True), None
        except ValueError:
            raise KubeconfigError(f"kubeconfig: {field_path}.{key}-data is not base64") from None
    path = entry.get(key)
    return (None, base / path) if path else (None, None)


def from_kubeconfig(paths: list[Path]) -> Connection:
    current, named = _merged(paths)
    if not current:
        raise KubeconfigError(f"kubeconfig {os.pathsep.join(map(str, paths))}: no current-context")
    context = _entry(named, "contexts", current)["entry"]
    cluster = _entry(named, "clusters", context.get("cluster"))
    user = _entry(named, "users", context.get("user"))
    spec, where = cluster["entry"], f"clusters[{context.get('cluster')}]"
    creds, who = user["entry"], f"users[{context.get('user')}]"
    for unsupported in ("exec", "auth-provider"):
        if creds.get(unsupported):
            raise KubeconfigError(
                f"kubeconfig: {who}.{unsupported}: credentials from a program are not"
                " supported; use a token, a token file or a client certificate"
            )
    server = spec.get("server")
    if not server:
        raise KubeconfigError(f"kubeconfig: {where}.server is not set")
    ca_data, ca_file = _pem(spec, cluster["dir"], "certificate-authority", where)
    cert_data, cert_file = _pem(creds, user["dir"], "client-certificate", who)
    key_data, key_file = _pem(creds, user["dir"], "client-key", who)
    context_ssl = None
    if server.startswith("https://"):
        context_ssl = _context(
            ca_file=ca_file,
            ca_data=ca_data,
            insecure=bool(spec.get("insecure-skip-tls-verify")),
        )
        _client_certificate(context_ssl, cert_data or cert_file, key_data or key_file, who)
    token_file = creds.get("tokenFile")
    token: str | TokenFile | None = creds.get("token") or (
        TokenFile(user["dir"] / token_file) if token_file else None
    )
    username, password = creds.get("username"), creds.get("password")
    return Connection(
        server=server.rstrip("/"),
        ssl=context_ssl,
        token=token,
        basic_auth=(username, password) if username and password else None,
        server_hostname=spec.get("tls-server-name"),
        namespace=context.get("namespace"),
    )


def _context(
    *, ca_file: Path | None = None, ca_data: bytes | None = None, insecure: bool = False
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if ca_data is not None:
            context.load_verify_locations(cadata=ca_data.decode())
        elif ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:
        raise KubeconfigError(
            f"the cluster's certificate authority cannot be loaded: {exc}"
        ) from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _client_certificate(
    context: ssl.SSLContext, cert: bytes | Path | None, key: bytes | Path | None, who: str
) -> None:
    """Load a client certificate and key given as files or as PEM bytes (``ssl`` reads
    only files: bytes go through a private temporary directory, removed at once)."""
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise KubeconfigError(
            f"kubeconfig: {who} has a client certificate or key without the other"
        )
    try:
        with tempfile.TemporaryDirectory(prefix="cocoon-kube-") as tmp:
            paths = []
            for name, value in (("cert.pem", cert), ("key.pem", key)):
                if isinstance(value, Path):
                    paths.append(value)
                    continue
                path = Path(tmp) / name
                path.touch(mode=0o600)
                path.write_bytes(value)
                paths.append(path)
            context.load_cert_chain(certfile=str(paths[0]), keyfile=str(paths[1]))
    except (OSError, ssl.SSLError) as exc:
        # The message of ssl/OSError names files and PEM errors, never key bytes.
        raise KubeconfigError(f"kubeconfig: {who}: client certificate or key: {exc}") from None
