"""Where the apiserver is and how to authenticate: a kubeconfig or the pod's service account.

The operator's own client (:mod:`.rest`) is built from a :class:`Connection`.
Loading is plain file reading, done once at startup; the only thing read again
later is a token file (a projected service-account token is rotated by the
kubelet, hourly by default, and an old one expires).

Supported: a kubeconfig's current context with a server, its CA (file or
data), ``insecure-skip-tls-verify``, ``tls-server-name``, and a user with a
client certificate and key (files or data), a token or a token file, a
username and password, or an ``exec`` credential plugin (client-go's: OIDC
logins, cloud CLIs; :class:`ExecCredential`). ``auth-provider`` users are
refused with an error naming the user and the provider: Kubernetes' own clients
dropped the ``gcp`` and ``azure`` providers in 1.26 for exec plugins, and the
``oidc`` one needs an identity provider's token refresh this client does not do.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
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


# The ExecCredential versions a plugin may speak (client.authentication.k8s.io; v1
# since Kubernetes 1.22, v1beta1 before; v1alpha1 was removed in 1.24).
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# A token this close to its expirationTimestamp is fetched again before use, so a
# request is never sent with one that expires on the way.
EXEC_REFRESH_MARGIN = dt.timedelta(seconds=30)
# A plugin that has not answered after this long (a login waiting for a browser
# that nobody opens, say) fails instead of hanging the command.
EXEC_TIMEOUT_SECONDS = 120.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, repr=False)
class ExecResult:
    """What a plugin printed: a token, or a client certificate and key (PEM), and
    until when. ``repr`` shows neither."""

    token: str | None
    certificate: bytes | None
    key: bytes | None
    expires: dt.datetime | None

    def __repr__(self) -> str:
        return f"ExecResult(expires={self.expires!r})"


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class ExecCredential:
    """Credentials from a kubeconfig user's ``exec`` plugin, as client-go runs them.

    The command (``args``, ``env`` added to this process's environment; a
    relative path with a slash is relative to the kubeconfig's directory, a bare
    name is looked up on ``PATH``) gets the environment variable
    ``KUBERNETES_EXEC_INFO``, an ExecCredential whose ``spec`` says it is not
    interactive (and holds the cluster when ``provideClusterInfo``), and prints
    an ExecCredential of the same ``apiVersion`` whose ``status`` has a
    ``token`` or ``clientCertificateData`` and ``clientKeyData``, and an
    optional ``expirationTimestamp``. The answer is kept until that time (less
    :data:`EXEC_REFRESH_MARGIN`), or for the life of the process without one;
    then the plugin runs again. Its stderr goes to this process's (a login
    prompt's hints); its stdout, which holds the secret, is never in an error.
    A plugin with ``interactiveMode: Always`` is refused: it needs a terminal,
    which an operator does not have. The command runs synchronously: a token is
    fetched when a request needs one, so an event loop waits for the plugin
    about once per token lifetime.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        who: str,
        base: Path,
        cluster: Mapping[str, Any] | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
        run: Runner = subprocess.run,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        where = f"{who}.exec"
        self._where = where
        version = spec.get("apiVersion")
        if version not in EXEC_API_VERSIONS:
            raise KubeconfigError(
                f"kubeconfig: {where}.apiVersion: {version!r} is not one of"
                f" {', '.join(EXEC_API_VERSIONS)}"
            )
        command = spec.get("command")
        if not command or not isinstance(command, str):
            raise KubeconfigError(f"kubeconfig: {where}.command is not set")
        if spec.get("interactiveMode") == "Always":
            raise KubeconfigError(
                f"kubeconfig: {where}.interactiveMode is Always: the plugin needs a"
                " terminal, which cocoon-operator does not give it; log in first"
                " (kubectl would prompt) or use a plugin mode that needs no input"
            )
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise KubeconfigError(f"kubeconfig: {where}.args must be a list of strings")
        env: dict[str, str] = {}
        for i, item in enumerate(spec.get("env") or []):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise KubeconfigError(f"kubeconfig: {where}.env[{i}] needs a name and a value")
            env[item["name"]] = str(item.get("value", ""))
        self.version: str = version
        self.command = (
            str(base / command) if "/" in command and not command.startswith("/") else command
        )
        self._argv = [self.command, *args]
        self._hint = spec.get("installHint") or ""
        info: dict[str, Any] = {"interactive": False}
        if spec.get("provideClusterInfo") and cluster is not None:
            info["cluster"] = dict(cluster)
        exec_info = {"apiVersion": version, "kind": "ExecCredential", "spec": info}
        self._env = {**environ, **env, "KUBERNETES_EXEC_INFO": json.dumps(exec_info)}
        self._now = now
        self._run = run
        self._result: ExecResult | None = None

    def __repr__(self) -> str:  # never the token
        return f"ExecCredential({self._where!r}, command={self.command!r})"

    def fresh(self) -> ExecResult:
        """The plugin's answer, run again when there is none or it is about to expire."""
        result = self._result
        if result is None or (
            result.expires is not None and self._now() >= result.expires - EXEC_REFRESH_MARGIN
        ):
            result = self._result = self._fetch()
        return result

    def get(self) -> str:
        """The bearer token (for :meth:`Connection.authorization`)."""
        token = self.fresh().token
        if not token:
            raise KubeconfigError(f"kubeconfig: {self._where}: the plugin gave no token")
        return token

    def _fetch(self) -> ExecResult:
        name = self._where
        try:
            done = self._run(
                self._argv,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                timeout=EXEC_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError:
            hint = f" ({' '.join(self._hint.split())})" if self._hint else ""
            raise KubeconfigError(f"kubeconfig: {name}: {self.command}: not found{hint}") from None
        except subprocess.TimeoutExpired:
            raise KubeconfigError(
                f"kubeconfig: {name}: {self.command} gave no answer in {EXEC_TIMEOUT_SECONDS:.0f} s"
            ) from None
        except OSError as exc:
            raise KubeconfigError(f"kubeconfig: {name}: {self.command}: {exc.strerror}") from None
        if done.returncode != 0:
            raise KubeconfigError(
                f"kubeconfig: {name}: {self.command} exited with status {done.returncode}"
            )
        return parse_exec_credential(done.stdout, self.version, name)


def parse_exec_credential(stdout: bytes, version: str, name: str) -> ExecResult:
    """A plugin's output, checked: an ExecCredential of ``version`` with a token or a
    client certificate and key. Errors name ``name`` and never quote the output."""
    # Nothing of stdout goes into an error: it holds the credentials.
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise KubeconfigError(f"kubeconfig: {name}: the plugin's output is not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise KubeconfigError(f"kubeconfig: {name}: the plugin's output is not an ExecCredential")
    if doc.get("apiVersion") != version:
        raise KubeconfigError(
            f"kubeconfig: {name}: the plugin answered {doc.get('apiVersion')!r},"
            f" asked for {version!r}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise KubeconfigError(f"kubeconfig: {name}: the plugin's ExecCredential has no status")
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(cert) != bool(key):
        raise KubeconfigError(
            f"kubeconfig: {name}: the plugin gave a client certificate or key without the other"
        )
    if not token and not cert:
        raise KubeconfigError(
            f"kubeconfig: {name}: the plugin gave neither a token nor a certificate"
        )
    expires = None
    if status.get("expirationTimestamp"):
        try:
            expires = dt.datetime.fromisoformat(str(status["expirationTimestamp"]))
        except ValueError:
            raise KubeconfigError(
                f"kubeconfig: {name}: status.expirationTimestamp is not an RFC 3339 time"
            ) from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
    return ExecResult(
        token=str(token) if token else None,
        certificate=str(cert).encode() if cert else None,
        key=str(key).encode() if key else None,
        expires=expires,
    )


def _refuse_auth_provider(provider: Any, who: str) -> KubeconfigError:
    name = provider.get("name") if isinstance(provider, dict) else None
    why = {
        "gcp": "removed from Kubernetes' clients in 1.26; use the exec plugin"
        " gke-gcloud-auth-plugin (gcloud container clusters get-credentials writes it)",
        "azure": "removed from Kubernetes' clients in 1.26; use the exec plugin kubelogin"
        " (kubelogin convert-kubeconfig writes it)",
        "oidc": "its token refresh is not implemented here; use an exec plugin for OIDC"
        " (kubelogin's oidc-login get-token, say) or a token",
    }.get(str(name), "not supported; use an exec plugin, a token or a client certificate")
    return KubeconfigError(f"kubeconfig: {who}.auth-provider {name!r}: {why}")


@dataclass(frozen=True, repr=False)
class Connection:
    """What the client needs: the server URL, TLS settings and the credentials.

    ``repr`` names the server only: the credentials must never reach a log.
    """

    server: str
    ssl: ssl.SSLContext | None
    token: str | TokenFile | ExecCredential | None = None
    basic_auth: tuple[str, str] | None = None
    server_hostname: str | None = None
    namespace: str | None = None
    # The user's exec plugin, when its credentials come from one (its token is
    # ``token`` too; a certificate it gave is in ``ssl``).
    exec_credential: ExecCredential | None = None

    def __repr__(self) -> str:
        return f"Connection(server={self.server!r})"

    def authorization(self) -> str | None:
        """The ``Authorization`` header's value, if the credentials are a token or a password."""
        if isinstance(self.token, TokenFile | ExecCredential):
            token = self.token.get()
            return f"Bearer {token}"
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


def exec_credentials(kubeconfig: str | None = None) -> ExecResult | None:
    """What the kubeconfig user's exec plugin answers now (cached until it expires), or
    None when the credentials do not come from a plugin, or there is no kubeconfig.

    For kopf's login (handlers/process.py): kopf reads a kubeconfig itself but
    does not run plugins, so the operator hands it the plugin's answer and its
    expiry, and kopf logs in again when that passes.
    """
    if not (kubeconfig or os.environ.get("KUBECONFIG")):
        return None
    credential = load(kubeconfig).exec_credential
    return credential.fresh() if credential is not None else None


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
    if creds.get("auth-provider"):
        raise _refuse_auth_provider(creds["auth-provider"], who)
    server = spec.get("server")
    if not server:
        raise KubeconfigError(f"kubeconfig: {where}.server is not set")
    ca_data, ca_file = _pem(spec, cluster["dir"], "certificate-authority", where)
    cert_data, cert_file = _pem(creds, user["dir"], "client-certificate", who)
    key_data, key_file = _pem(creds, user["dir"], "client-key", who)
    exec_credential = None
    if creds.get("exec"):
        exec_credential = _exec_credential(
            creds["exec"], who=who, base=user["dir"], cluster=spec, ca_data=ca_data, ca_file=ca_file
        )
        # Run once now: a bad plugin fails at startup, and a client certificate
        # it gives goes into the TLS context (kept for the process's life: a
        # certificate is not renewed without a new connection).
        first = exec_credential.fresh()
        if first.certificate is not None and not (cert_data or cert_file):
            cert_data, key_data = first.certificate, first.key
    context_ssl = None
    if server.startswith("https://"):
        context_ssl = _context(
            ca_file=ca_file,
            ca_data=ca_data,
            insecure=bool(spec.get("insecure-skip-tls-verify")),
        )
        _client_certificate(context_ssl, cert_data or cert_file, key_data or key_file, who)
    token_file = creds.get("tokenFile")
    token: str | TokenFile | ExecCredential | None = creds.get("token") or (
        TokenFile(user["dir"] / token_file) if token_file else None
    )
    if token is None and exec_credential is not None and exec_credential.fresh().token:
        token = exec_credential
    username, password = creds.get("username"), creds.get("password")
    return Connection(
        server=server.rstrip("/"),
        ssl=context_ssl,
        token=token,
        basic_auth=(username, password) if username and password else None,
        server_hostname=spec.get("tls-server-name"),
        namespace=context.get("namespace"),
        exec_credential=exec_credential,
    )


def _exec_credential(
    spec: Any,
    *,
    who: str,
    base: Path,
    cluster: Mapping[str, Any],
    ca_data: bytes | None,
    ca_file: Path | None,
) -> ExecCredential:
    """The user's plugin, with the cluster it may be told about (``provideClusterInfo``:
    the fields of client.authentication.k8s.io's ``Cluster``, the CA as data)."""
    if not isinstance(spec, dict):
        raise KubeconfigError(f"kubeconfig: {who}.exec is not a mapping")
    info: dict[str, Any] = {"server": cluster.get("server")}
    for field in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url"):
        if cluster.get(field):
            info[field] = cluster[field]
    if ca_data is None and ca_file is not None and ca_file.is_file():
        ca_data = ca_file.read_bytes()
    if ca_data is not None:
        info["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    return ExecCredential(spec, who=who, base=base, cluster=info)


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
