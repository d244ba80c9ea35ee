"""From the operator's worker.conf to COCOON's final config and QEMU's argv (pure).

The argv is :func:`cocoon_operator.launcher._cocoon.qemu_argv` (what
``scripts/cocoon-launch`` runs) with the operator's deliberate differences, each
of which changes nothing the TD measures (``docs/launcher.md`` lists them):

1. ``-name cocoon-instance-<i>,process=...`` at the end: how the node agent
   recognises the VM's process (QEMU's name is not part of the TD's state);
2. ``-qmp unix:<socket>,server=on,wait=off`` at the end: how the launcher asks
   the guest to power down on the pod's deletion (cocoon-launch has only
   ``-monitor null`` and is stopped by a signal);
3. no forward of the guest's SSH port outside test images: production images
   serve nothing there, and the pod has no business opening a door to it;
4. the ``tdx-guest`` object's ``quote-generation-socket`` is the launcher's
   quote relay (a unix socket) instead of the host's QGS on vsock CID 2 port
   4050: the relay forwards every request to that QGS byte for byte and keeps
   the quotes the guest really produced, which the operator verifies
   (``launcher/_quoterelay.py``). Where QEMU sends a quote request is not part
   of the TD's measurements.

Both additions sit where cocoon-launch itself appends extra QEMU arguments
(``*cfg.extra_qemu_args``, cocoon-launch:626), so the same argv comes out of
``cocoon-launch worker.conf -- -name ... -qmp ...``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoon_operator.launcher._cocoon import (
    IMAGE_FILES,
    QemuInputs,
    WorkerConf,
    qemu_argv,
    tdx_object,
)

# In the launcher's state directory: held (flock, exclusive) by the launcher and
# its QEMU for as long as either lives. The node agent's janitor removes a pod's
# directory only when nobody holds it (nodeagent/_sweep.py).
STATE_LOCK: Final = "launcher.lock"


def process_name(instance: int) -> str:
    """QEMU's ``-name`` for an instance: how the node agent recognises the VM's process."""
    return f"cocoon-instance-{instance}"


class LaunchError(Exception):
    """The VM cannot be started as configured; the message names what and where."""


@dataclass(frozen=True)
class LauncherKeys:
    """The ``[launcher]`` section: where the node-only values of ``[node]`` come from."""

    node_wallet_key_file: str | None = None
    hf_token_file: str | None = None
    gpu_from_env: str | None = None
    persistent_dir: str | None = None
    model_dir: str | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, str] | None) -> LauncherKeys:
        if section is None:
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            raise LaunchError(f"[launcher] has unknown keys: {', '.join(unknown)}")
        return cls(**{k: v for k, v in section.items() if v})


def allocated_gpu(variable: str, env: Mapping[str, str]) -> str:
    """The PCI address the device plugin handed this container (one GPU per VM)."""
    value = env.get(variable, "").strip()
    addresses = [a for a in value.split(",") if a]
    if len(addresses) != 1:
        raise LaunchError(
            f"${variable} must name exactly one GPU PCI address, got {value!r}"
            " (is the GPU device plugin allocating nvidia.com/pgpu?)"
        )
    return addresses[0]


def resolve_node(
    node: Mapping[str, str],
    keys: LauncherKeys,
    env: Mapping[str, str],
    read_secret: Callable[[str], str],
) -> dict[str, str]:
    """``[node]`` with the secrets and the GPU filled in from where ``[launcher]`` says.

    A value already in ``[node]`` wins, as it would for cocoon-launch; the result is
    COCOON's worker.conf as a person would write it by hand.
    """
    out = dict(node)
    if keys.node_wallet_key_file and "node_wallet_key" not in out:
        out["node_wallet_key"] = read_secret(keys.node_wallet_key_file)
    if keys.hf_token_file and "hf_token" not in out:
        out["hf_token"] = read_secret(keys.hf_token_file)
    if keys.gpu_from_env and "gpu" not in out:
        out["gpu"] = allocated_gpu(keys.gpu_from_env, env)
    return out


def measured_identity(digests: Mapping[str, str], cmdline: str, spec_tree: str) -> str:
    """What the guest's seal key depends on, as far as the host can see it.

    COCOON's persistent disk is LUKS-encrypted with a key the seal server derives
    from the TD's measurements (MRTD, RTMRs: ``docs/seal-keys.md``, "Key Properties"):
    the firmware, the kernel, initrd and command line (the root disk through its
    ``roothash=``), and the spec tree. Another release or mode cannot open the old
    disk ("Disk seal key doesn't match"), so each identity gets a disk of its own.
    """
    missing = [name for name in IMAGE_FILES if name not in digests]
    if missing:
        raise LaunchError(f"no digest for {', '.join(missing)}")
    text = "".join(f"{name} {digests[name]}\n" for name in IMAGE_FILES)
    text += f"cmdline {cmdline}\nspec {spec_tree}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def persistent_image(directory: str, identity: str) -> str:
    return f"{directory.rstrip('/')}/persistent-{identity}.img"


def identity_of_image(name: str) -> str | None:
    """The identity in a persistent disk's file name, or None for other files."""
    if name.startswith("persistent-") and name.endswith(".img"):
        identity = name[len("persistent-") : -len(".img")]
        if len(identity) == 16 and all(c in "0123456789abcdef" for c in identity):
            return identity
    return None


def disks_to_remove(
    names: list[str], current: str, in_use: frozenset[str], current_is_up: bool
) -> list[str]:
    """Which persistent disks of a worker's directory may go.

    The disk of another identity is kept while a VM still uses it, and all of them
    are kept until the VM on the current identity has come up on its own disk (a
    failed upgrade keeps the old one). Then they are of no use: no VM of another
    release can open a disk sealed to this one, nor this one theirs.
    """
    if not current_is_up:
        return []
    return sorted(
        name
        for name in names
        if (identity := identity_of_image(name)) is not None
        and identity != current
        and identity not in in_use
    )


@dataclass(frozen=True)
class LaunchPlan:
    conf: WorkerConf
    inputs: QemuInputs
    qmp_socket: Path
    qgs_socket: Path | None = None  # the quote relay's, when the launcher runs one


def relayed_tdx_object(socket: Path) -> str:
    """cocoon-launch's ``tdx-guest`` object (cocoon-launch:589-590) with its quotes
    sent to the launcher's relay; same id, same everything else."""
    obj = json.loads(tdx_object())
    obj["quote-generation-socket"] = {"type": "unix", "path": str(socket)}
    return json.dumps(obj, separators=(",", ":"))


def operator_argv(plan: LaunchPlan, qemu: str = "qemu-system-x86_64") -> list[str]:
    """cocoon-launch's argv with the operator's deliberate differences (module docstring)."""
    argv = qemu_argv(plan.conf, plan.inputs, ssh=plan.conf.test)
    if plan.qgs_socket is not None:
        argv = [relayed_tdx_object(plan.qgs_socket) if a == tdx_object() else a for a in argv]
    name = process_name(plan.conf.instance)
    return [
        qemu,
        *argv[1:],
        "-name",
        f"{name},process={name}",
        "-qmp",
        f"unix:{plan.qmp_socket},server=on,wait=off",
    ]
