"""The VM launcher: the process in the launcher Pod that boots the worker's TDX VM.

``cocoon-operator launch`` does what COCOON's ``scripts/cocoon-launch`` does for a
worker, and nothing that would change a measurement: it reads COCOON's
``worker.conf`` (the operator renders it, with a ``[launcher]`` section naming
where the secrets and the GPU come from), checks the release's image files
against the digests in the spec, writes the spec share as ``prepare_spec`` does,
gives the VM the persistent disk of the release's measured identity, records
the VM for the node agent and runs QEMU with cocoon-launch's argv plus the
operator's few unmeasured additions (``docs/launcher.md``). On SIGTERM (the
pod's deletion) it asks the guest to power down, waits, and only then stops
QEMU, so the GPU is released before the pod goes.

``_cocoon`` restates cocoon-launch (pure), ``_plan`` adds the operator's side
(pure), ``_spectree`` computes the guest's spec hash, ``_run`` does the I/O.
"""

from cocoon_operator.launcher._cocoon import (
    CocoonConfigError,
    ModelImage,
    QemuInputs,
    WorkerConf,
    kernel_cmdline,
    parse_worker_conf,
    qemu_argv,
    runtime_vars,
)
from cocoon_operator.launcher._plan import (
    STATE_LOCK,
    LaunchError,
    LaunchPlan,
    measured_identity,
    operator_argv,
    process_name,
)
from cocoon_operator.launcher._quotefile import (
    MAX_QUOTE_BYTES,
    MAX_QUOTE_FILE_BYTES,
    QUOTES_KEPT,
    FileQuote,
    QuoteFile,
    QuoteFileError,
    is_quote_file,
    parse_quote_file,
    quote_file_path,
    render_quote_file,
    write_quote_file,
)
from cocoon_operator.launcher._run import state_file, vm_running
from cocoon_operator.launcher._spectree import spec_tree_hash

__all__ = [
    "MAX_QUOTE_BYTES",
    "MAX_QUOTE_FILE_BYTES",
    "QUOTES_KEPT",
    "STATE_LOCK",
    "CocoonConfigError",
    "FileQuote",
    "LaunchError",
    "LaunchPlan",
    "ModelImage",
    "QemuInputs",
    "QuoteFile",
    "QuoteFileError",
    "WorkerConf",
    "is_quote_file",
    "kernel_cmdline",
    "measured_identity",
    "operator_argv",
    "parse_quote_file",
    "parse_worker_conf",
    "process_name",
    "qemu_argv",
    "quote_file_path",
    "render_quote_file",
    "runtime_vars",
    "spec_tree_hash",
    "state_file",
    "vm_running",
    "write_quote_file",
]
