"""Label, annotation and resource names the operator reads or writes.

The node labels are not ours: they are published by Node Feature Discovery
(TDX) and the NVIDIA GPU Operator (confidential-computing mode, VM passthrough,
product). Keeping them in one place makes the eligibility rule auditable.
"""

from typing import Final

GROUP: Final = "cocoon.network"

# Node Feature Discovery: the CPU supports and has enabled Intel TDX.
TDX_ENABLED: Final = "feature.node.kubernetes.io/cpu-security.tdx.enabled"
# NVIDIA GPU Operator: the GPUs are in confidential-computing mode.
CC_MODE_STATE: Final = "nvidia.com/cc.mode.state"
# NVIDIA GPU Operator: the GPUs are bound to vfio-pci for VM passthrough.
GPU_WORKLOAD_CONFIG: Final = "nvidia.com/gpu.workload.config"
GPU_PRODUCT: Final = "nvidia.com/gpu.product"

# Extended resource the GPU Operator's sandbox device plugin advertises for
# passthrough GPUs: one unit is one whole physical GPU.
PASSTHROUGH_GPU_RESOURCE: Final = "nvidia.com/pgpu"

# Set by the operator on a node whose seal server is ready, to the enclave's
# id (the first 16 hex digits of spec.release.files.enclave): launcher Pods of
# workers of that enclave require it (desired/sealserver.py). One key, one value
# per node: one seal server per host, on vsock port 12345 (seal-server.cpp:338).
SEAL_ENCLAVE: Final = f"seal.{GROUP}/enclave"

# The launcher pods the operator builds (desired/launcher.py): their labels,
# readiness gate and annotations, read back by the operator, the node agent
# and the simulator.
READINESS_GATE: Final = f"{GROUP}/attested"
LABEL_WORKER: Final = f"{GROUP}/worker"
LABEL_REVISION: Final = f"{GROUP}/revision"
LABEL_INSTANCE: Final = f"{GROUP}/instance"
# The enclave id of a launcher Pod's seal server, when the operator runs them
# (policy/sealserver.py).
LABEL_ENCLAVE: Final = f"{GROUP}/enclave"
ANNOTATION_CONFIG_HASH: Final = f"{GROUP}/config-hash"
# The rendered worker.conf, mounted at CONFIG_PATH by a downward API volume (the key keeps
# its first name: running pods carry it).
ANNOTATION_WORKER_INI: Final = f"{GROUP}/worker.ini"
# Set by the operator on a pod whose worker it is stopping (drain, then payout).
ANNOTATION_DRAIN_STARTED: Final = f"{GROUP}/drain-started"
ANNOTATION_PAYOUT_REQUESTED: Final = f"{GROUP}/payout-requested"
# The operator's control public key the launcher's relay trusts (docs/deploy.md).
ANNOTATION_CONTROL_KEY: Final = f"{GROUP}/control-key"
# Written before a payout is asked for (see policy.payouts): no payout twice after a crash.
ANNOTATION_PAYOUT_INTENT: Final = f"{GROUP}/payout-intent"
COMMON_LABELS: Final = {
    "app.kubernetes.io/name": "cocoon-worker",
    "app.kubernetes.io/component": "vm-launcher",
    "app.kubernetes.io/managed-by": "cocoon-operator",
}
# Pauses a worker as spec.paused does (handlers/runtime.py paused), for tools that
# cannot edit the spec.
PAUSE_ANNOTATION: Final = f"{GROUP}/paused"
# kopf's own annotations' prefix: not ours, so ours count as changes to kopf.
KOPF_PREFIX: Final = f"kopf.{GROUP}"
# The launcher pods' labels every watch of pods selects by.
LAUNCHER_SELECTOR: Final = {
    "app.kubernetes.io/managed-by": COMMON_LABELS["app.kubernetes.io/managed-by"],
    "app.kubernetes.io/component": COMMON_LABELS["app.kubernetes.io/component"],
}
# The same, as the apiserver's labelSelector for every watch and list of pods
# (handlers/process.py configure): kopf's ``labels=`` filters only in the process.
LAUNCHER_LABEL_SELECTOR: Final = ",".join(f"{k}={v}" for k, v in sorted(LAUNCHER_SELECTOR.items()))

# The workers a pool made (desired/pool.py).
LABEL_POOL: Final = f"{GROUP}/pool"
LABEL_POOL_REVISION: Final = f"{GROUP}/pool-revision"

# The seal servers' DaemonSets (handlers/sealserver.py).
# The desired DaemonSet's digest, to replace it only when it changed.
DESIRED_HASH: Final = f"{GROUP}/desired-hash"
ENCLAVE_ANNOTATION: Final = f"{GROUP}/enclave-sha256"
SEAL_SERVER_ANNOTATION: Final = f"{GROUP}/seal-server-sha256"
