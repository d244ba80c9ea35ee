"""What a COCOON guest checks before its worker runs, for the simulated worker.

A real guest finds its disks by serial and its configuration on the ``spec``
share; without them it stops at boot. The simulator refuses to start a worker
in the same cases, from the QEMU argv and spec share the real launcher code
prepared, so the local stack fails where a real host would:

- the disks: ``cocoon-init`` and the spec's ``init`` open
  ``/dev/disk/by-id/virtio-<serial>`` for ``root``, ``persistent``,
  ``model-tar`` and ``model-tar-verity`` (reference/cocoon/reprodebian/cocoon-init/
  cocoon-init; spec/spec-worker/init:9; cocoon-launch:593-611);
- the spec: the guest runs ``/spec/init`` (spec/spec-worker/init), mounted from
  the ``spec`` 9p share (cocoon-launch:619, ``mount_tag=spec``);
- the runtime: ``cocoon-render-config`` fills the worker's config from
  ``/spec/runtime/runtime.vars`` (reprodebian/cocoon-init/cocoon-render-config:15-17;
  spec/spec-worker/worker-config.json's ``$OWNER_ADDRESS`` and others).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REQUIRED_SERIALS: Final = ("root", "persistent", "model-tar", "model-tar-verity")
# The runtime vars the worker's config needs (spec/spec-worker/worker-config.json).
REQUIRED_VARS: Final = (
    "MODEL_NAME",
    "MODEL_COMMIT",
    "MODEL_VERITY_HASH",
    "OWNER_ADDRESS",
    "ROOT_CONTRACT_ADDRESS",
    "NODE_WALLET_KEY",
    "WORKER_COEFFICIENT",
)


class GuestBootError(Exception):
    """The guest would not boot or not run its worker; the message says where it stops."""


@dataclass(frozen=True)
class GuestConfig:
    """What the guest's worker runs with, read as the guest reads it."""

    model: str
    owner_address: str
    root_contract_address: str
    coefficient: int
    node_wallet_key: str
    fake_ton: bool
    node_wallet: str | None = None  # what the launcher derived and recorded


def _serials(argv: Sequence[str]) -> set[str]:
    out = set()
    for flag, value in itertools.pairwise(argv):
        if flag == "-device" and value.startswith("virtio-blk-pci,"):
            for part in value.split(","):
                if part.startswith("serial="):
                    out.add(part.removeprefix("serial="))
    return out


def _spec_share(argv: Sequence[str]) -> Path:
    for flag, value in itertools.pairwise(argv):
        if flag == "-virtfs" and "mount_tag=spec" in value.split(","):
            for part in value.split(","):
                if part.startswith("path="):
                    return Path(part.removeprefix("path="))
    raise GuestBootError("no 9p share with mount_tag=spec: the guest has no /spec")


def read_runtime_vars(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines, as cocoon-subst reads runtime.vars."""
    out = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def boot(argv: Sequence[str]) -> GuestConfig:
    """Check what the guest checks and return the configuration its worker would run with."""
    missing = [s for s in REQUIRED_SERIALS if s not in _serials(argv)]
    if missing:
        raise GuestBootError(f"No virtio device with serial '{missing[0]}'")
    spec = _spec_share(argv)
    init = spec / "init"
    if not init.is_file() or not os.access(init, os.X_OK):
        raise GuestBootError(f"{init}: no executable /spec/init")
    try:
        values = read_runtime_vars((spec / "runtime" / "runtime.vars").read_text())
    except OSError as exc:
        raise GuestBootError(f"/spec/runtime/runtime.vars: {exc.strerror}") from None
    absent = [k for k in REQUIRED_VARS if not values.get(k)]
    if absent:
        raise GuestBootError(f"runtime.vars has no {', '.join(absent)}")
    cmdline = argv[list(argv).index("-append") + 1] if "-append" in argv else ""
    try:
        coefficient = int(values["WORKER_COEFFICIENT"])
    except ValueError:
        raise GuestBootError("WORKER_COEFFICIENT is not an integer") from None
    return GuestConfig(
        model=f"{values['MODEL_NAME']}@{values['MODEL_COMMIT']}:{values['MODEL_VERITY_HASH']}",
        owner_address=values["OWNER_ADDRESS"],
        root_contract_address=values["ROOT_CONTRACT_ADDRESS"],
        coefficient=coefficient,
        node_wallet_key=values["NODE_WALLET_KEY"],
        fake_ton="cocoon_fake_ton" in cmdline.split(),
    )
