"""From the rendered worker config to QEMU's command line and COCOON's config (pure).

The command line follows COCOON's worker VM: q35 with TDX (``tdx-guest``,
quotes through the host's quote service on vsock CID 2 port 4050), OVMF,
the release's kernel, initrd and command line, one GPU by PCI address through
vfio-pci, vsock guest CID 6+10*i, the worker's HTTP and RA-TLS ports forwarded
from the host's 12000+10*i and 12001+10*i, a read-only 9p "spec" share with
the config, the persistent disk, and the model's tar and dm-verity images
read-only. Any other shape measures differently, which is why none of it is
configurable beyond what the release fixes.
"""

from __future__ import annotations

import configparser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

QGS_CID: Final = 2
QGS_PORT: Final = 4050
GUEST_HTTP_PORT: Final = 12000  # the worker listens on the same ports inside
GUEST_RATLS_PORT: Final = 12001


def process_name(instance: int) -> str:
    """QEMU's ``-name`` for an instance: how the node agent recognises the VM's process."""
    return f"cocoon-instance-{instance}"


class LaunchError(Exception):
    """The VM cannot be started as configured; the message names what and where."""


@dataclass(frozen=True)
class LaunchConfig:
    """The operator's rendered worker.ini: COCOON's ``[node]`` and the launcher's own keys."""

    node: dict[str, str]
    instance: int
    http_port: int
    ratls_port: int
    guest_cid: int
    node_wallet_key_file: str
    gpu_from_env: str
    hf_token_file: str | None
    model: str  # Name@commit:verity

    @property
    def verity_hash(self) -> str:
        return self.model.rsplit(":", 1)[1]


def _int(section: Mapping[str, str], key: str, where: str) -> int:
    try:
        return int(section[key])
    except KeyError:
        raise LaunchError(f"{where}: [{key}] is missing") from None
    except ValueError:
        raise LaunchError(f"{where}: {key}={section[key]!r} is not an integer") from None


def parse_launch_config(text: str, where: str = "worker.ini") -> LaunchConfig:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise LaunchError(f"{where}: {exc}") from None
    for section in ("node", "launcher"):
        if not parser.has_section(section):
            raise LaunchError(f"{where}: no [{section}] section")
    node, launcher = dict(parser["node"]), parser["launcher"]
    for key in ("model", "instance"):
        if key not in node:
            raise LaunchError(f"{where}: [node] {key} is missing")
    for key in ("node_wallet_key_file", "gpu_from_env"):
        if key not in launcher:
            raise LaunchError(f"{where}: [launcher] {key} is missing")
    if ":" not in node["model"]:
        raise LaunchError(f"{where}: [node] model={node['model']!r} is not Name@commit:verity")
    return LaunchConfig(
        node=node,
        instance=_int(node, "instance", f"{where} [node]"),
        http_port=_int(launcher, "http_port", f"{where} [launcher]"),
        ratls_port=_int(launcher, "ratls_port", f"{where} [launcher]"),
        guest_cid=_int(launcher, "guest_cid", f"{where} [launcher]"),
        node_wallet_key_file=launcher["node_wallet_key_file"],
        gpu_from_env=launcher["gpu_from_env"],
        hf_token_file=launcher.get("hf_token_file"),
        model=node["model"],
    )


def allocated_gpu(config: LaunchConfig, env: Mapping[str, str]) -> str:
    """The PCI address the device plugin handed this container (one GPU per VM)."""
    value = env.get(config.gpu_from_env, "").strip()
    addresses = [a for a in value.split(",") if a]
    if len(addresses) != 1:
        raise LaunchError(
            f"${config.gpu_from_env} must name exactly one GPU PCI address, got {value!r}"
            " (is the GPU device plugin allocating nvidia.com/pgpu?)"
        )
    return addresses[0]


def final_worker_config(config: LaunchConfig, gpu: str, read_secret: Callable[[str], str]) -> str:
    """COCOON's INI as the worker reads it, secrets included: for the VM's spec share only."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    node = dict(config.node)
    node["gpu"] = gpu
    node["node_wallet_key"] = read_secret(config.node_wallet_key_file)
    if config.hf_token_file is not None:
        node["hf_token"] = read_secret(config.hf_token_file)
    parser["node"] = node
    lines: list[str] = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in parser[section].items())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReleaseFiles:
    ovmf: Path
    kernel: Path
    initrd: Path
    cmdline: str


@dataclass(frozen=True)
class LaunchPlan:
    config: LaunchConfig
    release: ReleaseFiles
    vcpus: int
    memory_gib: int
    machine: str
    gpu: str
    spec_dir: Path
    persistent_image: Path
    model_tar: Path
    model_verity: Path
    qmp_socket: Path


def qemu_argv(plan: LaunchPlan, qemu: str = "qemu-system-x86_64") -> list[str]:
    c = plan.config
    memory = f"{plan.memory_gib}G"
    forwards = ",".join(
        [
            f"hostfwd=tcp::{c.http_port}-:{GUEST_HTTP_PORT}",
            f"hostfwd=tcp::{c.ratls_port}-:{GUEST_RATLS_PORT}",
        ]
    )
    return [
        qemu,
        "-name",
        f"{process_name(c.instance)},process={process_name(c.instance)}",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        str(plan.vcpus),
        "-m",
        memory,
        "-object",
        f"memory-backend-memfd,id=ram0,size={memory}",
        "-object",
        f'{{"qom-type":"tdx-guest","id":"tdx0",{_qgs_json()}}}',
        "-machine",
        f"{plan.machine},kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram0",
        "-bios",
        str(plan.release.ovmf),
        "-kernel",
        str(plan.release.kernel),
        "-initrd",
        str(plan.release.initrd),
        "-append",
        plan.release.cmdline,
        "-nodefaults",
        "-nographic",
        "-serial",
        "stdio",
        "-netdev",
        f"user,id=net0,{forwards}",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        f"vhost-vsock-pci,guest-cid={c.guest_cid}",
        "-device",
        f"vfio-pci,host={plan.gpu}",
        "-fsdev",
        f"local,id=spec,path={plan.spec_dir},security_model=none,readonly=on",
        "-device",
        "virtio-9p-pci,fsdev=spec,mount_tag=spec",
        "-drive",
        f"file={plan.persistent_image},if=virtio,format=raw,cache=none",
        "-drive",
        f"file={plan.model_tar},if=virtio,format=raw,readonly=on",
        "-drive",
        f"file={plan.model_verity},if=virtio,format=raw,readonly=on",
        "-qmp",
        f"unix:{plan.qmp_socket},server=on,wait=off",
    ]


def _qgs_json() -> str:
    """TDX quotes go to the host's quote generation service (QEMU's JSON object syntax)."""
    return f'"quote-generation-socket":{{"type":"vsock","cid":"{QGS_CID}","port":"{QGS_PORT}"}}'
