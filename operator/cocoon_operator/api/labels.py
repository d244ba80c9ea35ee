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
