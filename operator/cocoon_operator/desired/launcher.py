"""The launcher Pod of a worker, as a pure function of the spec.

The Pod asks the real kube-scheduler for a node that can host a TDX guest with
a CC-mode GPU (node affinity on the NFD and GPU Operator labels) and for one
whole passthrough GPU (the ``nvidia.com/pgpu`` extended resource). Two workers
on one node must not share a host port or a vsock CID, so the Pod declares the
instance's control port as a ``hostPort``: the scheduler's NodePorts filter then
keeps instance indexes unique per node without any bookkeeping of ours.

The VM shape comes from the release, never from the user: it is part of the
TDX measurement, so any other shape would produce an image hash that proxies
refuse. The Pod carries a readiness gate that only the operator sets, after
the worker's attestation verifies.

The model's two disks come from the node's cache (``MODELS_DIR``): an init
container, ``model``, runs ``cocoon-operator model ensure`` from the same image
with that directory read-write, so the launcher (which mounts it read-only)
starts only once the model is there and verified (docs/models.md).

The worker's port (12000+10i) is COCOON's unauthenticated HTTP, controls
included, so the Pod does not publish it: QEMU forwards it to the Pod's
loopback only and the launcher publishes its control relay instead
(``12002+10i``, ``launcher/_controlrelay.py``), which forwards only requests
signed with the operator's control key for this Pod. The Pod carries the public
key (a launcher flag, and an annotation telling the operator which of its keys
the Pod trusts); the private key never leaves the operator's Secret. The relay's
``hostPort`` keeps instance indexes unique per node as the worker's did.

The worker's configuration (COCOON's ``worker.conf``) travels in a Pod annotation and
reaches the launcher as a file through a downward API volume: a Pod never
changes its configuration (a new one is a new revision, a new Pod), so a
ConfigMap of its own would only cost a write and an object per Pod.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cocoon_operator.api import labels
from cocoon_operator.api.labels import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_CONTROL_KEY,
    ANNOTATION_WORKER_INI,
    COMMON_LABELS,
    LABEL_ENCLAVE,
    LABEL_INSTANCE,
    LABEL_REVISION,
    LABEL_WORKER,
    READINESS_GATE,
)
from cocoon_operator.api.memo import PerObject
from cocoon_operator.api.v1alpha1 import API_VERSION, KIND, CocoonWorkerSpec
from cocoon_operator.desired.config import (
    HF_TOKEN_FILE,
    MODELS_DIR,
    NODE_WALLET_KEY_FILE,
    PERSISTENT_DIR,
    S3_CREDENTIALS_DIR,
    SECRETS_DIR,
    TON_BASE_CONFIG_DIR,
    TON_BASE_CONFIG_FILE,
    TON_CONFIG_DIR,
    TON_CONFIG_FILE,
    InstanceSlot,
    worker_config,
)
from cocoon_operator.launcher._cocoon import GUEST_MEMORY_GIB, GUEST_VCPUS
from cocoon_operator.policy.nodes import required_node_labels
from cocoon_operator.policy.sealserver import ID_LENGTH as SEAL_ID_LENGTH
from cocoon_operator.workerapi._signing import ControlKeyError, parse_public_key

CONFIG_PATH: Final = "/etc/cocoon/worker.conf"
# Where each worker's persistent disks live on the node.
HOST_DISKS_DIR: Final = "/var/lib/cocoon/disks"
# The launcher's state directory, as it sees it: its VM's record and quotes (read by
# the node agent), its spec share (the VM's secrets) and sockets. On the node it is
# HOST_LAUNCHER_PODS_DIR/<pod UID>, the pod's own: no launcher sees another's.
LAUNCHER_STATE_DIR: Final = "/run/cocoon"
HOST_LAUNCHER_PODS_DIR: Final = "/run/cocoon/pods"
# Time the launcher gets to disable the worker, drain in-flight requests and
# shut the VM down cleanly before the kubelet kills it.
TERMINATION_GRACE_SECONDS: Final = 300


@dataclass(frozen=True)
class VMShape:
    """The confidential VM's shape, as scripts/cocoon-launch fixes it (measured)."""

    vcpus: int
    memory_gib: int

    @property
    def launcher_cpu(self) -> str:
        return str(self.vcpus + 1)  # one core for QEMU's own threads

    @property
    def launcher_memory(self) -> str:
        """Guest RAM plus QEMU's own. cocoon-launch backs the guest with ordinary pages
        (``memory-backend-ram,size=100G``, cocoon-launch:603), so the container's memory
        limit must hold all of it, or the kubelet kills QEMU as the guest touches it."""
        return f"{self.memory_gib + QEMU_OVERHEAD_GIB}Gi"


# QEMU, the launcher and the GPU's DMA buffers beside the guest's RAM.
QEMU_OVERHEAD_GIB: Final = 4
# COCOON's worker VM (cocoon-launch:600, :603): 32 vCPU, 100 GiB of RAM.
COCOON_SHAPE: Final = VMShape(vcpus=GUEST_VCPUS, memory_gib=GUEST_MEMORY_GIB)
# Where the launcher image holds the release (the release tarball's layout).
RELEASE_DIR: Final = "/opt/cocoon/release"


def vm_shape(spec: CocoonWorkerSpec) -> VMShape:
    """Every COCOON release so far uses one shape; a release that changes it
    gets its own entry here, keyed by version, never a user-facing field."""
    del spec
    return COCOON_SHAPE


@dataclass(frozen=True)
class WorkerRef:
    """Identity of the owning CocoonWorker (for names, labels, ownerReferences)."""

    name: str
    namespace: str
    uid: str


_REVISION_FIELDS: Final = frozenset(
    {
        "release",
        "model",
        "owner_address",
        "root_contract_address",
        "network",
        "gpu",
        "tolerations",
        "node_wallet_key_secret_ref",
        "hf_token_secret_ref",
        "ton",
    }
)


#: spec.release.files keys added after workers were running (the seal server's
#: binaries): left out of the revision while unset.
_FILES_ADDED_LATER: Final = ("enclave", "sealServer")


def _revision(spec: CocoonWorkerSpec) -> str:
    """Hash of what requires a new VM when it changes (model, release, owner,
    network, root, TON files, GPU choice, tolerations). Coefficient, funding and pause are
    applied without a restart, so they are left out.

    Every check of every worker asks for it, several times (the attestation,
    chain and coefficient steps: 2.8% of the steady CPU at 1,000 workers,
    nearly all of it the dump below, docs/bench.md), so it is kept per spec
    object while that object lives (:class:`~cocoon_operator.api.memo.PerObject`),
    and the digest per distinct value of those fields (a compact JSON dump is
    the key: cheap, unlike the canonical form the digest is taken of, which
    must never change: it names the running pods).
    """
    return _revision_of(spec.model_dump_json(by_alias=True, include=set(_REVISION_FIELDS)))


revision = PerObject(_revision)


@functools.lru_cache(maxsize=4096)
def _revision_of(relevant_json: str) -> str:
    relevant = json.loads(relevant_json)
    files = relevant.get("release", {}).get("files", {})
    for key in _FILES_ADDED_LATER:
        if files.get(key) is None:
            # Absent from the canonical form when unset, as before the field existed:
            # an operator upgrade must not give every running VM a new revision.
            files.pop(key, None)
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def pod_name(worker: WorkerRef, rev: str) -> str:
    return f"{worker.name}-{rev}"


def _owner_reference(worker: WorkerRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": worker.name,
        "uid": worker.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(worker: WorkerRef, rev: str) -> dict[str, str]:
    return {**COMMON_LABELS, LABEL_WORKER: worker.name, LABEL_REVISION: rev}


def _node_affinity(
    spec: CocoonWorkerSpec, prefer: Sequence[str] = (), seal: bool = False
) -> dict[str, Any]:
    expressions = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(required_node_labels().items())
    ]
    if seal and spec.release.files.enclave is not None:
        # A node whose seal server of this enclave is ready (desired/sealserver.py).
        expressions.append(
            {
                "key": labels.SEAL_ENCLAVE,
                "operator": "In",
                "values": [spec.release.files.enclave[:SEAL_ID_LENGTH]],
            }
        )
    if spec.gpu.product is not None:
        expressions.append(
            {"key": labels.GPU_PRODUCT, "operator": "In", "values": [spec.gpu.product]}
        )
    else:
        expressions.append({"key": labels.GPU_PRODUCT, "operator": "Exists"})
    affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]
        }
    }
    if prefer:
        # Nodes whose agent reports the model Ready: no download, no build.
        # One term per node: a node field selector takes a single value with `In`
        # (the apiserver refuses more).
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                "weight": MODEL_NODE_WEIGHT,
                "preference": {
                    "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]
                },
            }
            for node in sorted(prefer)
        ]
    return {"nodeAffinity": affinity}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _host_path(name: str, path: str, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _secret_volumes(spec: CocoonWorkerSpec) -> list[dict[str, Any]]:
    """One projected volume holding exactly the referenced Secret keys, read-only."""
    sources = [
        {
            "secret": {
                "name": spec.node_wallet_key_secret_ref.name,
                "items": [
                    {
                        "key": spec.node_wallet_key_secret_ref.key,
                        "path": NODE_WALLET_KEY_FILE.rsplit("/", 1)[1],
                        "mode": 0o400,
                    }
                ],
            }
        }
    ]
    if spec.hf_token_secret_ref is not None:
        sources.append(
            {
                "secret": {
                    "name": spec.hf_token_secret_ref.name,
                    "items": [
                        {
                            "key": spec.hf_token_secret_ref.key,
                            "path": HF_TOKEN_FILE.rsplit("/", 1)[1],
                            "mode": 0o400,
                        }
                    ],
                }
            }
        )
    return [{"name": "secrets", "projected": {"sources": sources, "defaultMode": 0o400}}]


def _ton_volumes(spec: CocoonWorkerSpec) -> list[dict[str, Any]]:
    """The ConfigMaps holding the TON files COCOON reads (spec.ton), one key each."""
    ton = spec.ton_config
    out = []
    for name, ref, path in (
        ("ton-config", ton.liteservers, TON_CONFIG_FILE),
        ("ton-base-config", ton.base, TON_BASE_CONFIG_FILE),
    ):
        if ref is not None and not ton.fake:
            item = {"key": ref.key, "path": path.rsplit("/", 1)[1]}
            out.append({"name": name, "configMap": {"name": ref.name, "items": [item]}})
    return out


def _ton_mounts(spec: CocoonWorkerSpec) -> list[dict[str, Any]]:
    where = {"ton-config": TON_CONFIG_DIR, "ton-base-config": TON_BASE_CONFIG_DIR}
    return [
        {"name": v["name"], "mountPath": where[v["name"]], "readOnly": True}
        for v in _ton_volumes(spec)
    ]


# The init container's share: streaming downloads, tar and veritysetup. Requests
# equal limits, as the launcher's, so the Pod stays in the Guaranteed QoS class;
# the launcher's far larger requests are what the scheduler counts.
MODEL_INIT_RESOURCES: Final = {"cpu": "1", "memory": "2Gi"}
MODEL_INIT_CONTAINER: Final = "model"
#: The container running the VM launcher (what ``kubectl cocoon logs`` reads by default).
LAUNCHER_CONTAINER: Final = "launcher"
# The weight of preferring nodes that hold the model Ready (1-100; the only
# preference of the pod, so its value matters only against the scheduler's own scores).
MODEL_NODE_WEIGHT: Final = 100


def _hf_token_volumes(spec: CocoonWorkerSpec) -> list[dict[str, Any]]:
    """The HF token alone (the init container never sees the node wallet key)."""
    ref = spec.hf_token_secret_ref
    if ref is None:
        return []
    item = {"key": ref.key, "path": HF_TOKEN_FILE.rsplit("/", 1)[1], "mode": 0o400}
    source = {"secret": {"name": ref.name, "items": [item]}}
    return [{"name": "hf-token", "projected": {"sources": [source], "defaultMode": 0o400}}]


def _s3_volumes(spec: CocoonWorkerSpec) -> list[dict[str, Any]]:
    """The s3 credentials Secret, for the init container alone."""
    source = spec.model.source
    ref = source.s3.credentials_secret_ref if source and source.s3 else None
    if ref is None:
        return []
    secret = {"secret": {"name": ref.name}}
    return [{"name": "s3-credentials", "projected": {"sources": [secret], "defaultMode": 0o400}}]


def model_init_container(spec: CocoonWorkerSpec) -> dict[str, Any]:
    """``model ensure`` for the worker's model, before the launcher starts (docs/models.md)."""
    args = ["model", "ensure", f"--cache={MODELS_DIR}", f"--model={spec.model.cocoon_id}"]
    if spec.model.source is not None:
        args += [
            f"--source-tar={spec.model.source.tar_url}",
            f"--source-verity={spec.model.source.verity_url}",
        ]
    mounts: list[dict[str, Any]] = [{"name": "models", "mountPath": MODELS_DIR}]
    s3 = spec.model.source.s3 if spec.model.source is not None else None
    if s3 is not None:
        args.append(f"--s3-region={s3.region}")
        if s3.endpoint:
            args.append(f"--s3-endpoint={s3.endpoint}")
        if s3.credentials_secret_ref is not None:
            args.append(f"--s3-credentials-dir={S3_CREDENTIALS_DIR}")
            mounts.append(
                {"name": "s3-credentials", "mountPath": S3_CREDENTIALS_DIR, "readOnly": True}
            )
    if spec.hf_token_secret_ref is not None:
        args.append(f"--token-file={HF_TOKEN_FILE}")
        mounts.append({"name": "hf-token", "mountPath": SECRETS_DIR, "readOnly": True})
    return {
        "name": MODEL_INIT_CONTAINER,
        "image": spec.release.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "resources": {"requests": MODEL_INIT_RESOURCES, "limits": MODEL_INIT_RESOURCES},
        # Root, to write the node's root-owned cache; nothing else: no device,
        # no capability (veritysetup verify reads files, it maps nothing).
        "securityContext": {
            "runAsUser": 0,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": mounts,
        # Its one-line failure (`model ensure: REASON: message`) becomes the
        # termination message, which the worker's ModelReady condition repeats.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def launcher_pod(
    worker: WorkerRef,
    spec: CocoonWorkerSpec,
    slot: InstanceSlot,
    *,
    control_key: str,
    model_nodes: Sequence[str] = (),
    seal: bool = False,
    priority_class: str | None = None,
) -> dict[str, Any]:
    """The desired launcher Pod for ``worker`` at the spec's current revision, whose
    control relay trusts ``control_key`` (the operator's, base64 Ed25519 public key).

    ``model_nodes``: nodes that hold the worker's model Ready (their node
    agents say so), which the pod prefers. A pod's spec is immutable, so this
    only steers pods created from now on.
    ``seal``: the operator runs the nodes' seal servers; the pod then requires a
    node whose seal server of the release's enclave is ready, and says which
    enclave it uses (label), so the seal server is kept while the pod exists.
    ``priority_class``: the operator's --launcher-priority-class. An operator
    setting, not a spec field: a PriorityClass decides whose pods the scheduler
    evicts, which is the cluster administrator's call, not a tenant's. Like
    ``model_nodes`` it only reaches pods created from now on (no rotation).
    """
    try:
        parse_public_key(control_key)
    except ControlKeyError as exc:
        raise ValueError(f"control_key: {exc}") from None
    rev = revision(spec)
    shape = vm_shape(spec)
    gpu = labels.PASSTHROUGH_GPU_RESOURCE
    resources = {gpu: "1", "cpu": shape.launcher_cpu, "memory": shape.launcher_memory}
    config_text = worker_config(spec, slot)
    files = spec.release.files
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    pod_labels = {**_labels(worker, rev), LABEL_INSTANCE: str(slot.index)}
    if seal and files.enclave is not None:
        pod_labels[LABEL_ENCLAVE] = files.enclave[:SEAL_ID_LENGTH]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(worker, rev),
            "namespace": worker.namespace,
            "labels": pod_labels,
            "annotations": {
                ANNOTATION_CONFIG_HASH: hashlib.sha256(config_text.encode()).hexdigest()[:16],
                ANNOTATION_WORKER_INI: config_text,
                ANNOTATION_CONTROL_KEY: control_key,
            },
            "ownerReferences": [_owner_reference(worker)],
        },
        "spec": {
            "readinessGates": [{"conditionType": READINESS_GATE}],
            "affinity": _node_affinity(spec, model_nodes, seal),
            "tolerations": tolerations,
            "restartPolicy": "Always",
            # The host's pid namespace: the launcher records QEMU's pid in its state
            # file, and the node agent looks it up in the host's /proc (nodeagent/
            # _probe.py, launcher/_run.py vm_running); in a pod's own namespace the
            # pid would name another process, or none, and a running VM would read
            # as stopped. (The container is privileged already: it sees no more.)
            "hostPID": True,
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "initContainers": [model_init_container(spec)],
            "containers": [
                {
                    "name": LAUNCHER_CONTAINER,
                    "image": spec.release.image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": [
                        "launch",
                        f"--config={CONFIG_PATH}",
                        f"--release={RELEASE_DIR}",
                        f"--expect-ovmf-sha256={files.ovmf}",
                        f"--expect-image-sha256={files.image}",
                        f"--expect-kernel-sha256={files.kernel}",
                        f"--expect-initrd-sha256={files.initrd}",
                        f"--expect-cmdline-sha256={files.cmdline}",
                        f"--control-public-key={control_key}",
                    ],
                    "ports": [
                        {
                            "name": "worker-control",
                            "containerPort": slot.control_port,
                            "hostPort": slot.control_port,
                            "protocol": "TCP",
                        },
                        {
                            "name": "worker-ratls",
                            "containerPort": slot.ratls_port,
                            "hostPort": slot.ratls_port,
                            "protocol": "TCP",
                        },
                    ],
                    # Who this VM belongs to, for the node agent's report (the
                    # launcher writes it to /run/cocoon); POD_UID also names the
                    # pod's own state directory on the node (subPathExpr below).
                    "env": [
                        _field_env("POD_NAME", "metadata.name"),
                        _field_env("POD_NAMESPACE", "metadata.namespace"),
                        _field_env("POD_UID", "metadata.uid"),
                        {"name": "COCOON_WORKER", "value": worker.name},
                    ],
                    "resources": {"requests": resources, "limits": resources},
                    # The launcher's refusal (a release file that is not the spec's,
                    # say) becomes the termination message the VMRunning condition shows.
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    # QEMU needs /dev/kvm, /dev/vhost-vsock and the VFIO group
                    # of the allocated GPU; none are reachable unprivileged
                    # without device plugins for each of them.
                    "securityContext": {"privileged": True},
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/cocoon", "readOnly": True},
                        {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
                        {"name": "dev-kvm", "mountPath": "/dev/kvm"},
                        {"name": "dev-vsock", "mountPath": "/dev/vhost-vsock"},
                        {"name": "dev-vfio", "mountPath": "/dev/vfio"},
                        {"name": "persistent", "mountPath": PERSISTENT_DIR},
                        {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
                        # Its own directory only (by its pod UID, from POD_UID above):
                        # the spec shares of the node's other VMs, present or past,
                        # hold their node wallet keys and HF tokens.
                        {
                            "name": "launcher-state",
                            "mountPath": LAUNCHER_STATE_DIR,
                            "subPathExpr": "$(POD_UID)",
                        },
                        *_ton_mounts(spec),
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "config",
                    "downwardAPI": {
                        "items": [
                            {
                                "path": CONFIG_PATH.rsplit("/", 1)[1],
                                "fieldRef": {
                                    "fieldPath": f"metadata.annotations['{ANNOTATION_WORKER_INI}']"
                                },
                            }
                        ]
                    },
                },
                *_secret_volumes(spec),
                *_hf_token_volumes(spec),
                *_s3_volumes(spec),
                _host_path("dev-kvm", "/dev/kvm", "CharDevice"),
                _host_path("dev-vsock", "/dev/vhost-vsock", "CharDevice"),
                _host_path("dev-vfio", "/dev/vfio", "Directory"),
                _host_path("launcher-state", HOST_LAUNCHER_PODS_DIR, "DirectoryOrCreate"),
                # One directory per worker: its disks, one per release identity.
                _host_path(
                    "persistent",
                    f"{HOST_DISKS_DIR}/{worker.namespace}/{worker.name}",
                    "DirectoryOrCreate",
                ),
                _host_path("models", MODELS_DIR, "DirectoryOrCreate"),
                *_ton_volumes(spec),
            ],
            **({"priorityClassName": priority_class} if priority_class else {}),
        },
    }
