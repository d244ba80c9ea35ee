"""COCOON's per-node instance index and what it fixes (ports, vsock CID)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_INSTANCES: Final = 10  # COCOON's instance is a single digit, 0-9


@dataclass(frozen=True)
class InstanceSlot:
    """Where instance ``index`` of a node listens: host ports and guest vsock CID.

    Ports ``12000 + 10*i`` to ``+9`` belong to instance ``i``.
    """

    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < MAX_INSTANCES:
            raise ValueError(f"instance must be 0-{MAX_INSTANCES - 1}, got {self.index}")

    @property
    def http_port(self) -> int:
        return 12000 + 10 * self.index

    @property
    def ratls_port(self) -> int:
        """Where the worker presents its RA-TLS certificate (the evidence)."""
        return self.http_port + 1

    @property
    def control_port(self) -> int:
        """Where the launcher's control relay listens, the one port the pod publishes
        (``launcher/_controlrelay.py``). COCOON's own ports of an instance are 12000
        (HTTP), 12001 (the runner's rpc_port, spec/spec-worker/worker-config.json:5)
        and 12005 (SSH, scripts/cocoon-launch:294), each +10*i; +2 is nobody's."""
        return self.http_port + 2

    @property
    def vsock_cid(self) -> int:
        return 6 + 10 * self.index
