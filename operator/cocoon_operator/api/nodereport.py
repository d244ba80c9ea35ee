"""What the per-node agent reports about a worker host: a typed document in a ConfigMap.

The agent (a DaemonSet, ``cocoon-operator node-agent``) runs on each TDX + CC
GPU node and writes one ConfigMap per node, ``cocoon-node-<node>`` in its own
namespace, labelled :data:`REPORT_LABEL`, holding :class:`NodeReport` as JSON
under :data:`REPORT_KEY`. The operator reads only reports from the namespace it
is told to trust (``--node-report-namespace``): anyone able to write a ConfigMap
elsewhere must not be able to speak for a node.

A ConfigMap, not a field on the Node: the agent then needs no permission on
Nodes at all, only on ConfigMaps of one namespace.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from cocoon_operator.api.fieldsets import share_fields_set
from cocoon_operator.api.v1alpha1 import GROUP

REPORT_LABEL: Final = f"{GROUP}/node-report"
REPORT_KEY: Final = "report.json"
#: When the agent last wrote (or confirmed) its report, RFC 3339 UTC.
REPORTED_AT_ANNOTATION: Final = f"{GROUP}/reported-at"
NODE_LABEL: Final = f"{GROUP}/node"
#: The seal-server wrapper's record (``launcher/_seal.py`` writes it, the node
#: agent reads it for the report, the DaemonSet's builder names it): under the
#: launcher's state directory (/run/cocoon), ``{"enclave": <sha256>, "ready":
#: bool}``, replaced atomically.
SEAL_STATE_FILE: Final = "seal-server.json"
_PREFIX: Final = "cocoon-node-"
_MAX_NAME: Final = 253


def report_name(node: str) -> str:
    """The report ConfigMap's name: ``cocoon-node-<node>``, hashed when too long."""
    name = _PREFIX + node
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(node.encode()).hexdigest()[:16]
    return f"{name[: _MAX_NAME - 17].rstrip('.-')}-{digest}"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def model_post_init(self, context: Any, /) -> None:
        # Kept in memory by the thousand: one copy of each fields set (api/fieldsets.py).
        share_fields_set(self)


class HostCheck(_Model):
    """One thing the host must provide for a worker VM to boot and attest."""

    name: str
    ok: bool
    message: str


class GpuDevice(_Model):
    """An NVIDIA GPU on the host's PCI bus."""

    pci: str  # domain:bus:device.function, e.g. 0000:1b:00.0
    device_id: str  # vendor:device, e.g. 10de:2330 (H100 SXM5 80GB)
    driver: str | None  # vfio-pci when it can be passed to a VM
    iommu_group: str | None


#: The largest quote a report carries (the launcher's and agent's bound, base64 aside):
#: ten VMs of such quotes keep the report ConfigMap far below its 1 MiB limit.
MAX_REPORTED_QUOTE_BYTES: Final = 32 * 1024
#: Kubernetes' limit on a ConfigMap's data.
CONFIGMAP_LIMIT_BYTES: Final = 1024 * 1024


class RelayedQuote(_Model):
    """The latest TDX quote the VM's guest obtained through the launcher's quote relay.

    Written by the launcher (``instance-<i>.quotes.json``), checked and copied here
    by the node agent; the operator verifies it in full before it opens the gate.
    """

    quote: Annotated[str, Field(max_length=MAX_REPORTED_QUOTE_BYTES * 4 // 3 + 4)]  # base64
    captured_at: str  # RFC 3339: when the host's quote service answered
    report_data: Annotated[str | None, Field(pattern=r"^[0-9a-f]{128}$")] = None  # hex

    def quote_bytes(self) -> bytes:
        return base64.b64decode(self.quote, validate=True)


class GuestHealthReport(_Model):
    """What the VM's guest health monitor last said about its TD (unsigned: it can only
    close the readiness gate, never open it).

    Read by the launcher from COCOON's ``health-monitor`` (vsock port 9999, its
    ``tdx`` command: ``tee/cocoon/health-render.cpp:151-198``), kept in
    ``instance-<i>.health.json`` and copied here by the node agent.
    """

    # RFC 3339: when the monitor answered. Not a change of the report by itself: the
    # agent writes a new one with the next change or heartbeat (nodeagent/_publish.py).
    checked_at: str
    image_hash: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    mrtd: Annotated[str | None, Field(pattern=r"^[0-9a-f]{96}$")] = None
    rtmr: (
        Annotated[
            list[Annotated[str, Field(pattern=r"^[0-9a-f]{96}$")]],
            Field(min_length=4, max_length=4),
        ]
        | None
    ) = None


class VmRecord(_Model):
    """A worker VM the launcher started on this host (its state file), and whether it runs."""

    instance: int
    namespace: str
    worker: str
    pod: str
    pod_uid: str
    pci: str | None
    pid: int
    running: bool
    # The node wallet COCOON's CocoonWallet gives for the VM's node_wallet_key and owner,
    # raw form, derived by the launcher where the key is (the key never leaves it).
    node_wallet: str | None = None
    quote: RelayedQuote | None = None
    health: GuestHealthReport | None = None


#: At most this many models in a report (the newest first), so the ConfigMap stays
#: far below its 1 MiB: each record is under 1 KiB (its message is bounded).
MAX_MODEL_RECORDS: Final = 64
MAX_MODEL_MESSAGE: Final = 300

MODEL_READY: Final = "Ready"
MODEL_FAILED: Final = "Failed"


class ModelRecord(_Model):
    """A model in the node's cache, as its ``<verity>.progress.json`` says (docs/models.md).

    ``phase`` is ``Downloading``, ``Building``, ``Verifying``, ``Ready`` or
    ``Failed``; a failure has ``reason`` (``Unauthorized``, ``HashMismatch``,
    ``DiskFull``, ...) and a one-line ``message`` that never holds a token.
    """

    verity: str
    model: str  # Name@commit:verity
    phase: str
    bytes_done: int = 0
    bytes_total: int | None = None
    reason: str | None = None
    message: str | None = None
    updated_at: float = 0.0  # epoch seconds, the progress file's own stamp


class SealServerState(_Model):
    """The host's seal server as its wrapper (``cocoon-operator seal-server``) records it
    in ``/run/cocoon/seal-server.json``, with the agent's own vsock check."""

    enclave: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # its enclave.signed.so digest
    ready: bool  # the wrapper saw the enclave created and the port answer, and the agent's connect
    message: str


class NodeReport(_Model):
    node: str
    agent_version: str
    checks: list[HostCheck] = []
    gpus: list[GpuDevice] = []
    vms: list[VmRecord] = []
    models: list[ModelRecord] = []
    seal_server: SealServerState | None = None

    @property
    def host_ready(self) -> bool:
        return all(c.ok for c in self.checks)

    def failing(self) -> list[HostCheck]:
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> str:
        """Stable serialisation: the agent compares it to decide whether to write."""
        return self.model_dump_json(by_alias=True, indent=None)
