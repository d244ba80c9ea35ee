#!/usr/bin/env python3
"""Local Kubernetes control plane for development, tests and benchmarks.

Real etcd, kube-apiserver, kube-scheduler and kube-controller-manager (built by
``hack/build-tools`` from the Go module proxy) on loopback, with kwok simulating
nodes and pod lifecycle. Nothing here is mocked: pods are placed by the real
scheduler and garbage-collected by the real controller-manager; only kubelets
are simulated.

    hack/cluster up [--cc-nodes N] [--gpu-nodes N] [--cpu-nodes N] [--audit]
    hack/cluster down
    hack/cluster status
    hack/cluster env           # shell exports: KUBECONFIG and PATH
    hack/cluster restart COMPONENT      # etcd, apiserver (kube-apiserver), ...
    hack/cluster nodes --cc-nodes N ...   # add simulated nodes to a running stack

State (certificates, kubeconfig, data, logs, pids) lives in ``$COCOON_STACK_DIR``
(default ``<repo>/.stack``). ``up`` on a running stack is a no-op apart from
adding missing nodes, so tests and developers can share one stack.

``up --audit`` (opt-in, for benchmarks) starts the apiserver with an audit log
at level Metadata for every request (``logs/audit.log``, one JSON event per
line, stage RequestReceived omitted); ``restart`` keeps it on.

Only the standard library and ``cryptography`` are used, so the script runs from
the project's virtualenv before the operator itself is importable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE = REPO / ".stack"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

# Labels of a node that can host a COCOON worker: Intel TDX host (Node Feature
# Discovery), NVIDIA GPU in confidential-computing mode and bound for VM
# passthrough (NVIDIA GPU Operator). The GPUs are advertised as nvidia.com/pgpu.
TDX_LABEL = "feature.node.kubernetes.io/cpu-security.tdx.enabled"
CC_MODE_LABEL = "nvidia.com/cc.mode.state"
WORKLOAD_LABEL = "nvidia.com/gpu.workload.config"
PRODUCT_LABEL = "nvidia.com/gpu.product"
PGPU = "nvidia.com/pgpu"
H100 = "NVIDIA-H100-80GB-HBM3"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NODE_KIND_LABEL = "cocoon.network/sim-node-kind"

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Short names for ``restart`` (fault tests: ``hack/cluster restart apiserver``).
ALIASES = {"apiserver": "kube-apiserver"}


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- state


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int


@dataclass
class State:
    dir: Path
    ports: Ports | None = None
    pids: dict[str, int] = field(default_factory=dict)
    audit: bool = False

    @property
    def file(self) -> Path:
        return self.dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def audit_policy(self) -> Path:
        return self.dir / "audit-policy.yaml"

    def load(self) -> State:
        if self.file.exists():
            raw = json.loads(self.file.read_text())
            self.ports = Ports(**raw["ports"])
            self.pids = {k: int(v) for k, v in raw.get("pids", {}).items()}
            self.audit = bool(raw.get("audit", False))
        return self

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        assert self.ports is not None
        payload = {"ports": asdict(self.ports), "pids": self.pids, "audit": self.audit}
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(self.file)

    @property
    def server(self) -> str:
        assert self.ports is not None
        return f"https://127.0.0.1:{self.ports.apiserver}"


def bin_dir() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "build-tools"), "--print"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def ensure_binaries() -> Path:
    """Build missing binaries (progress goes to stderr) and return their directory."""
    out = subprocess.run(
        [str(REPO / "hack" / "build-tools")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- PKI


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server_names: Iterable[str] = (),
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            sans: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_pki(pki: Path) -> None:
    """A cluster CA, the apiserver's serving cert, client certs, the SA key pair."""
    if (pki / "ca.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cocoon-local-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(_key_pem(ca_key))

    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    issued = {
        "apiserver": (
            _name("kube-apiserver"),
            {
                "server_names": [
                    "127.0.0.1",
                    "localhost",
                    service_ip,
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ]
            },
        ),
        "admin": (_name("cocoon-admin", "system:masters"), {"client": True}),
        "kube-controller-manager": (_name("system:kube-controller-manager"), {"client": True}),
        "kube-scheduler": (_name("system:kube-scheduler"), {"client": True}),
        "kwok": (_name("kwok", "system:masters"), {"client": True}),
    }
    for stem, (subject, kw) in issued.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, ca_name, ca_key, **kw)  # type: ignore[arg-type]
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{stem}.key").write_bytes(_key_pem(key))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_key_pem(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    """A kubeconfig as JSON (a valid YAML document), built from data, not text."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cocoon-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{user}.crt"),
                    "client-key": str(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {"name": "cocoon-local", "context": {"cluster": "cocoon-local", "user": user}}
        ],
        "current-context": "cocoon-local",
    }
    path.write_text(json.dumps(config, indent=2))


def write_audit_policy(path: Path) -> None:
    """Every request at level Metadata (who, verb, resource, code; no bodies).

    JSON is valid YAML. RequestReceived is omitted, so a request logs one event
    (ResponseComplete) and a watch two (ResponseStarted, then ResponseComplete
    when it ends), all sharing the request's auditID.
    """
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata"}],
    }
    path.write_text(json.dumps(policy, indent=2))


# --------------------------------------------------------------------------- REST


class Api:
    """A minimal HTTPS client with the admin certificate (stdlib only)."""

    def __init__(self, state: State) -> None:
        self.base = state.server
        ctx = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
        ctx.load_cert_chain(str(state.pki / "admin.crt"), str(state.pki / "admin.key"))
        self.ctx = ctx

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, Any] | str]:
        data = json.dumps(body).encode() if body is not None else None
        # Only ever https://127.0.0.1:<port> of our own apiserver.
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:  # noqa: S310
                raw = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw = err.read().decode()
            status = err.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def ok(self, path: str) -> bool:
        try:
            status, _ = self.request("GET", path, timeout=2)
        except (OSError, ssl.SSLError):
            return False
        return status == 200


def wait_for(what: str, check: Any, timeout: float, procs: dict[str, int] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, pid in (procs or {}).items():
            if not alive(pid):
                raise SystemExit(f"{name} exited while waiting for {what}; see its log")
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeSpec:
    """Counts of each kind of simulated node."""

    cc: int = 3
    gpu: int = 1
    cpu: int = 1


NODES_PER_BLOCK = 4096


def address_block(stack_dir: Path) -> int:
    """Which of 16 address blocks this stack's nodes use (127.K.B*16.x).

    Stacks in different directories (a developer's, the tests', a benchmark's)
    then never give two nodes the same loopback address, so their simulated
    workers cannot answer each other's operators.
    """
    return hashlib.sha256(str(stack_dir.resolve()).encode()).digest()[0] % 16


def node_manifests(spec: NodeSpec, block: int = 0) -> Iterator[dict[str, Any]]:
    """Simulated nodes: CC-ready TDX+H100, GPU without CC, plain CPU."""
    base_capacity = {"cpu": "128", "memory": "1024Gi", "pods": "110", "hugepages-1Gi": "512Gi"}
    kinds: list[tuple[str, int, dict[str, str], dict[str, str]]] = [
        (
            "cc",
            spec.cc,
            {
                TDX_LABEL: "true",
                CC_MODE_LABEL: "on",
                WORKLOAD_LABEL: "vm-passthrough",
                PRODUCT_LABEL: H100,
            },
            # Sized like an 8-GPU HGX host so 8 worker VMs (32 vCPU, 100 GiB
            # of 1 GiB hugepages each, plus launcher overhead) fit.
            {PGPU: "8", "cpu": "288", "memory": "2048Gi", "hugepages-1Gi": "1024Gi"},
        ),
        (
            "gpu",
            spec.gpu,
            {CC_MODE_LABEL: "off", WORKLOAD_LABEL: "container", PRODUCT_LABEL: H100},
            {"nvidia.com/gpu": "8", PGPU: "8"},
        ),
        ("cpu", spec.cpu, {}, {}),
    ]
    for k, (kind, count, labels, extra) in enumerate(kinds, start=1):
        for i in range(count):
            name = f"sim-{kind}-{i:04d}"
            # A distinct loopback address per node: kwok reports it as the
            # pods' hostIP, and the worker simulators listen on it, so the
            # operator reaches a worker at <hostIP>:<host port> as it would
            # on real nodes.
            if i + 1 >= NODES_PER_BLOCK:
                raise SystemExit(f"at most {NODES_PER_BLOCK - 1} {kind} nodes per stack")
            offset = block * NODES_PER_BLOCK + i + 1
            address = str(ipaddress.ip_address(f"127.{k}.0.0") + offset)
            capacity = {**base_capacity, **extra}
            yield {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        NODE_KIND_LABEL: kind,
                        **labels,
                    },
                },
                "spec": {},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": address},
                        {"type": "Hostname", "address": name},
                    ],
                    "capacity": capacity,
                    "allocatable": capacity,
                    "nodeInfo": {
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kubeletVersion": "fake",
                        "kubeProxyVersion": "fake",
                        "osImage": "simulated",
                        "kernelVersion": "simulated",
                        "containerRuntimeVersion": "kwok",
                    },
                },
            }


def create_nodes(state: State, spec: NodeSpec) -> int:
    """Create the nodes that do not exist yet; 409 (already there) is fine."""
    api = Api(state)
    manifests = list(node_manifests(spec, address_block(state.dir)))

    def create(node: dict[str, Any]) -> int:
        for attempt in range(5):
            status, body = api.request("POST", "/api/v1/nodes", node)
            if status in (201, 409):
                return 1 if status == 201 else 0
            time.sleep(0.2 * (attempt + 1))
        raise SystemExit(f"creating node {node['metadata']['name']}: HTTP {status}: {body}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        created = sum(pool.map(create, manifests))

    def all_ready() -> bool:
        _, body = api.request("GET", f"/api/v1/nodes?labelSelector={NODE_KIND_LABEL}", timeout=30)
        assert isinstance(body, dict)
        ready = 0
        for item in body.get("items", []):
            conditions = item.get("status", {}).get("conditions", []) or []
            is_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            )
            # The node lifecycle controller lifts this taint once it sees Ready;
            # until then the scheduler would refuse the node.
            taints = item.get("spec", {}).get("taints", []) or []
            tainted = any(t.get("key") == "node.kubernetes.io/not-ready" for t in taints)
            ready += is_ready and not tainted
        return ready >= len(manifests)

    wait_for(
        f"{len(manifests)} simulated nodes to be Ready and untainted",
        all_ready,
        120 + len(manifests) / 10,
    )
    return created


# --------------------------------------------------------------------------- processes


def component_args(name: str, state: State, bins: Path) -> list[str]:
    assert state.ports is not None
    p, pki = state.ports, state.pki
    etcd_url = f"http://127.0.0.1:{p.etcd_client}"
    if name == "etcd":
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        return [
            str(bins / "etcd"),
            f"--data-dir={state.dir / 'etcd'}",
            "--name=default",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync=true",  # throwaway data; fsync only slows tests down
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]
    if name == "kube-apiserver":
        audit = (
            [
                f"--audit-policy-file={state.audit_policy}",
                f"--audit-log-path={state.logs / 'audit.log'}",
                "--audit-log-format=json",
            ]
            if state.audit
            else []
        )
        return [
            str(bins / "kube-apiserver"),
            *audit,
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={p.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ]
    if name == "kube-controller-manager":
        return [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={state.dir / 'kube-controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",  # per-controller RBAC, as in production
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--cluster-cidr={POD_CIDR}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allocate-node-cidrs=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-gc-syncs=20",
            "--v=1",
        ]
    if name == "kube-scheduler":
        return [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={state.dir / 'kube-scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={state.dir / 'kube-scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={state.dir / 'kube-scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ]
    if name == "kwok":
        return [
            str(bins / "kwok"),
            f"--kubeconfig={state.dir / 'kwok.kubeconfig'}",
            f"--config={REPO / 'hack' / 'kwok' / 'pod-stages.yaml'}",
            # A kubelet's node status pace (kwok v0.7.0's own is 20 s: see the file).
            f"--config={REPO / 'hack' / 'kwok' / 'node-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--node-ip=127.0.0.1",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
            "--server-address=127.0.0.1:0",
            "--v=INFO",
        ]
    raise SystemExit(f"unknown component {name!r}")


def start(name: str, state: State, bins: Path) -> int:
    state.logs.mkdir(parents=True, exist_ok=True)
    logfile = open(state.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        component_args(name, state, bins),
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives the shell or pytest session that started it
        cwd=state.dir,
    )
    state.pids[name] = proc.pid
    state.save()
    return proc.pid


def stop(name: str, state: State, timeout: float = 10) -> None:
    pid = state.pids.get(name)
    if pid is None or not alive(pid):
        state.pids.pop(name, None)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    state.pids.pop(name, None)
    state.save()


def running(state: State) -> dict[str, bool]:
    return {name: name in state.pids and alive(state.pids[name]) for name in COMPONENTS}


def wait_component(name: str, state: State) -> None:
    api = Api(state)
    procs = {name: state.pids[name]}
    if name == "etcd":
        assert state.ports is not None
        url = f"http://127.0.0.1:{state.ports.etcd_client}/health"

        def etcd_ok() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(json.loads(resp.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        wait_for("etcd", etcd_ok, 60, procs)
    elif name == "kube-apiserver":
        wait_for("kube-apiserver /readyz", lambda: api.ok("/readyz"), 120, procs)
    else:
        # Schedulers, controller-manager and kwok have no endpoint we serve; give
        # them a moment and make sure they did not exit on bad flags.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if not alive(state.pids[name]):
                raise SystemExit(f"{name} exited; see {state.logs / (name + '.log')}")
            time.sleep(0.1)


def up(state: State, nodes: NodeSpec, *, audit: bool = False) -> None:
    bins = ensure_binaries()
    state.load()
    if state.ports is None:
        state.ports = Ports(free_port(), free_port(), free_port())
    state.dir.mkdir(parents=True, exist_ok=True)
    if audit and not state.audit:
        if running(state)["kube-apiserver"]:
            log("--audit: the apiserver is already running without an audit log; restart it")
        state.audit = True
    if state.audit:
        write_audit_policy(state.audit_policy)
    make_pki(state.pki)
    write_kubeconfig(state.kubeconfig, state.server, state.pki, "admin")
    for user in ("kube-controller-manager", "kube-scheduler", "kwok"):
        write_kubeconfig(state.dir / f"{user}.kubeconfig", state.server, state.pki, user)
    state.save()

    started = time.monotonic()
    for name in COMPONENTS:
        if running(state)[name]:
            continue
        log(f"starting {name}")
        start(name, state, bins)
        wait_component(name, state)
    api = Api(state)
    wait_for(
        "the default ServiceAccount",
        lambda: api.ok("/api/v1/namespaces/default/serviceaccounts/default"),
        60,
    )
    created = create_nodes(state, nodes)
    log(
        f"up in {time.monotonic() - started:.1f}s: {state.server}, "
        f"{created} nodes created ({nodes.cc} CC-ready, {nodes.gpu} GPU without CC, "
        f"{nodes.cpu} CPU)"
    )
    log(f"KUBECONFIG={state.kubeconfig}")


def stop_extras(state: State) -> None:
    """Stop processes that scripts started beside the stack (``<dir>/run/*.pid``)."""
    for pidfile in sorted((state.dir / "run").glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except (ValueError, FileNotFoundError):  # another script's cleanup got there first
            continue
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)


def down(state: State) -> None:
    state.load()
    if state.dir.exists():
        stop_extras(state)
    for name in reversed(COMPONENTS):
        stop(name, state)
    if state.dir.exists():
        subprocess.run(["rm", "-rf", str(state.dir)], check=True)
    log("down")


def restart(state: State, name: str) -> None:
    """Stop and start one component in place (fault tests: apiserver, etcd)."""
    state.load()
    bins = bin_dir()
    stop(name, state)
    start(name, state, bins)
    wait_component(name, state)
    log(f"restarted {name}")


def env_lines(state: State) -> list[str]:
    return [
        f"export KUBECONFIG={state.kubeconfig}",
        f'export PATH="{bin_dir()}:$PATH"',
        f"export COCOON_STACK_DIR={state.dir}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd in ("up", "nodes"):
        p = sub.add_parser(cmd)
        p.add_argument("--cc-nodes", type=int, default=3, help="TDX + H100 CC-ready nodes")
        p.add_argument("--gpu-nodes", type=int, default=1, help="GPU nodes without CC")
        p.add_argument("--cpu-nodes", type=int, default=1, help="plain CPU nodes")
        if cmd == "up":
            p.add_argument(
                "--audit",
                action="store_true",
                help="audit log of every request at level Metadata in logs/audit.log (benchmarks)",
            )
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("env")
    r = sub.add_parser("restart")
    r.add_argument("component", choices=(*COMPONENTS, *ALIASES))
    args = parser.parse_args(argv)

    state = State(Path(os.environ.get("COCOON_STACK_DIR", DEFAULT_STATE)).resolve())
    if args.cmd == "up":
        up(state, NodeSpec(args.cc_nodes, args.gpu_nodes, args.cpu_nodes), audit=args.audit)
    elif args.cmd == "nodes":
        state.load()
        create_nodes(state, NodeSpec(args.cc_nodes, args.gpu_nodes, args.cpu_nodes))
    elif args.cmd == "down":
        down(state)
    elif args.cmd == "restart":
        restart(state, ALIASES.get(args.component, args.component))
    elif args.cmd == "env":
        state.load()
        print("\n".join(env_lines(state)))
    elif args.cmd == "status":
        state.load()
        status = running(state)
        healthy = state.ports is not None and all(status.values()) and Api(state).ok("/readyz")
        print(json.dumps({"dir": str(state.dir), "healthy": healthy, "running": status}))
        return 0 if healthy else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
