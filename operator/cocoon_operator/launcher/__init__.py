"""The VM launcher: the process in the launcher Pod that boots the worker's TDX VM.

``cocoon-operator launch`` reads the worker configuration the operator
rendered (:mod:`cocoon_operator.desired.config`), checks the release's measured
files against the digests in the spec, resolves what only the node knows (the
GPU the device plugin allocated, the Secrets' files), writes COCOON's final
``[node]`` config into the VM's private spec share, records the VM for the
node agent and runs QEMU with exactly the release's shape. On SIGTERM (the
pod's deletion) it asks the guest to power down, waits, and only then stops
QEMU, so the GPU is released before the pod goes.

``_plan`` is pure (config in, QEMU argv and COCOON config out); ``_run`` does
the I/O.
"""

from cocoon_operator.launcher._plan import (
    LaunchError,
    LaunchPlan,
    ReleaseFiles,
    final_worker_config,
    parse_launch_config,
    process_name,
    qemu_argv,
)
from cocoon_operator.launcher._run import vm_running

__all__ = [
    "LaunchError",
    "LaunchPlan",
    "ReleaseFiles",
    "final_worker_config",
    "parse_launch_config",
    "process_name",
    "qemu_argv",
    "vm_running",
]
