"""The seal-server DaemonSet for one enclave, and what a launcher Pod requires of its node (pure).

COCOON needs, on every host running worker VMs, a seal server on vsock port
12345 (scripts/dist-worker/README.md:30-37, 132-158) running the release's own
``enclave.signed.so``: the disk keys it derives are sealed to the enclave's
MRENCLAVE (docs/seal-keys.md, "Derive Persistent Key"). Workers whose releases
share an enclave share a seal server, so the DaemonSet is per enclave digest,
not per release: ``cocoon-seal-<id>``, id = the digest's first 16 hex digits.

A host has one vsock port 12345, so at most one enclave per node. The pod
declares host port 12345 (TCP, with host networking: nothing is bound by it),
so the scheduler never places two seal servers on one node: a second
enclave's pod waits (Pending) until the first is gone from that node, instead
of failing to bind. The DaemonSet runs on every node a worker VM may use
(the launcher's TDX and CC label rule); the operator labels a node
``seal.cocoon.network/enclave=<id>`` while that pod is Ready there, and the
launcher Pods of that enclave's workers require the label
(:func:`seal_affinity_expression`).

What the pod needs (seal-server.cpp): ``sgx_create_enclave`` (line 45) opens
``/dev/sgx_enclave``; the DCAP quote library's quoting and provisioning
enclaves (``sgx_qe_get_target_info``/``sgx_qe_get_quote``, lines 47-48, 206)
need ``/dev/sgx_provision`` as well; the vsock listener (line 312) needs no
device. Host networking because the vsock listener must be the host's: the
guests reach it at the host's CID 2. Devices: ``privileged`` (the default,
as the launcher Pod) or the Intel SGX device plugin's resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cocoon_operator.api import labels
from cocoon_operator.api.labels import COMMON_LABELS, LABEL_ENCLAVE
from cocoon_operator.api.nodereport import SEAL_STATE_FILE
from cocoon_operator.desired.launcher import LAUNCHER_STATE_DIR, RELEASE_DIR
from cocoon_operator.policy.nodes import required_node_labels
from cocoon_operator.policy.sealserver import ID_LENGTH

COMPONENT: Final = "seal-server"
SEAL_PORT: Final = 12345  # seal-server.cpp:338; guests connect there
READY_DIR: Final = "/run/cocoon-seal"
READY_FILE: Final = f"{READY_DIR}/ready"
# intel-device-plugins-for-kubernetes, cmd/sgx_plugin: the devices as resources.
SGX_PLUGIN_RESOURCES: Final = {"sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"}
SELECTOR: Final = {
    "app.kubernetes.io/component": COMPONENT,
    "app.kubernetes.io/managed-by": COMMON_LABELS["app.kubernetes.io/managed-by"],
}


def enclave_id(enclave_digest: str) -> str:
    """The short id a label value and a DaemonSet name can carry (64 bits of the digest)."""
    return enclave_digest[:ID_LENGTH]


def daemonset_name(enclave_digest: str) -> str:
    return f"cocoon-seal-{enclave_id(enclave_digest)}"


@dataclass(frozen=True)
class SealServerOptions:
    """The operator's configuration of seal servers (chart values ``sealServer.*``)."""

    namespace: str
    pull_policy: str = "IfNotPresent"
    resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    )
    sgx: Literal["privileged", "device-plugin"] = "privileged"
    priority_class: str | None = None


@dataclass(frozen=True)
class SealRelease:
    """The release files a seal server runs: its image and the binaries' digests."""

    image: str
    enclave: str
    seal_server: str | None = None


def _node_affinity() -> dict[str, Any]:
    expressions = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(required_node_labels().items())
    ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def seal_daemonset(release: SealRelease, options: SealServerOptions) -> dict[str, Any]:
    """The DaemonSet running ``release``'s seal server on every node a worker VM may use."""
    pod_labels = {
        "app.kubernetes.io/name": "cocoon-seal-server",
        "app.kubernetes.io/managed-by": COMMON_LABELS["app.kubernetes.io/managed-by"],
        **SELECTOR,
        LABEL_ENCLAVE: enclave_id(release.enclave),
    }
    args = [
        "seal-server",
        f"--release={RELEASE_DIR}",
        f"--expect-enclave-sha256={release.enclave}",
        f"--port={SEAL_PORT}",
        f"--ready-file={READY_FILE}",
        # For the node agent's report (nodeagent/_probe.py reads it).
        f"--state-file={LAUNCHER_STATE_DIR}/{SEAL_STATE_FILE}",
    ]
    if release.seal_server is not None:
        args.append(f"--expect-seal-server-sha256={release.seal_server}")
    resources = {k: dict(v) for k, v in options.resources.items()}
    volumes: list[dict[str, Any]] = [
        {"name": "ready", "emptyDir": {"medium": "Memory"}},
        {
            "name": "launcher-state",
            "hostPath": {"path": LAUNCHER_STATE_DIR, "type": "DirectoryOrCreate"},
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "ready", "mountPath": READY_DIR},
        {"name": "launcher-state", "mountPath": LAUNCHER_STATE_DIR},
    ]
    if options.sgx == "device-plugin":
        for kind in ("requests", "limits"):
            resources[kind] = {**resources.get(kind, {}), **SGX_PLUGIN_RESOURCES}
        security: dict[str, Any] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    else:
        # The SGX device nodes are not reachable unprivileged without a device plugin.
        security = {"privileged": True}
        for name, path in (
            ("sgx-enclave", "/dev/sgx_enclave"),
            ("sgx-provision", "/dev/sgx_provision"),
        ):
            volumes.append({"name": name, "hostPath": {"path": path, "type": "CharDevice"}})
            mounts.append({"name": name, "mountPath": path})
    pod_spec: dict[str, Any] = {
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "affinity": _node_affinity(),
        # A host service: on every node the launcher may use, whatever its taints.
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {
                "name": "seal-server",
                "image": release.image,
                "imagePullPolicy": options.pull_policy,
                "args": args,
                # A scheduling lock, not a listener: one seal server per host (module doc).
                "ports": [
                    {
                        "name": "seal-vsock",
                        "containerPort": SEAL_PORT,
                        "hostPort": SEAL_PORT,
                        "protocol": "TCP",
                    }
                ],
                "readinessProbe": {
                    "exec": {"command": ["test", "-f", READY_FILE]},
                    "periodSeconds": 5,
                    "failureThreshold": 1,
                },
                "resources": resources,
                "securityContext": security,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if options.priority_class:
        pod_spec["priorityClassName"] = options.priority_class
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": daemonset_name(release.enclave),
            "namespace": options.namespace,
            "labels": pod_labels,
        },
        "spec": {
            "selector": {"matchLabels": {**SELECTOR, LABEL_ENCLAVE: enclave_id(release.enclave)}},
            # One node at a time: a restarting seal server only delays VMs booting there.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def seal_affinity_expression(enclave_digest: str) -> dict[str, Any]:
    """What a launcher Pod adds to its node affinity: a node whose seal server of
    this enclave is ready (the operator keeps the label: handlers/sealserver.py)."""
    return {"key": labels.SEAL_ENCLAVE, "operator": "In", "values": [enclave_id(enclave_digest)]}
