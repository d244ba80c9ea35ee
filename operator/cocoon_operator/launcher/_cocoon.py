"""What COCOON's ``scripts/cocoon-launch`` decides for a worker, as pure functions.

A real COCOON guest only boots, unseals its disk and measures as the release
says when QEMU is started exactly as ``cocoon-launch`` starts it and the spec
share holds exactly what its ``prepare_spec`` writes: the kernel command line,
the device set and the spec tree are measured (RTMR1-3), and the guest finds
its disks by serial. So this module restates, rule for rule, what that script
does for ``type = worker``; every rule names the line of
``reference/cocoon/scripts/cocoon-launch`` (commit b75d444) it follows, and the
differential tests (``tests/unit/launcher/test_cocoon_launch_oracle.py``) run
the script itself on the same inputs and compare argv and spec tree.

What the operator adds on top (a QMP socket, a process name, no SSH forward
outside test images) is :func:`operator_argv`'s business, listed in
``docs/launcher.md``; nothing here is the operator's choice.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# cocoon-launch:255: the root contract when the config names none.
DEFAULT_ROOT_CONTRACT: Final = "EQBcXvP9DUA4k5tqUapcilt4kZnBzF0Ts7OW0Yp5FI0aN7g0"
# cocoon-launch:261: the node wallet key fake-TON mode uses when none is given.
FAKE_TON_NODE_WALLET_KEY: Final = "gaEatwGNgLGOeFI/TRGfPdJG/K4G8picYHQkDHpLQ9w="
# cocoon-launch:257-259: where a fake-TON guest finds its fake proxy.
FAKE_TON_EXTERNAL_IP: Final = "10.0.2.2"
FAKE_TON_WORKER_PORT: Final = 11001
FAKE_TON_CLIENT_PORT: Final = 11002
# cocoon-launch:293-295: the worker's one service port, SSH and vsock CID.
WORKER_HTTP_PORT: Final = 12000
WORKER_SSH_PORT: Final = 12005
WORKER_VSOCK_CID: Final = 6
# cocoon-launch:180, 593: instance i shifts ports and the CID by 10*i.
INSTANCE_STRIDE: Final = 10
# cocoon-launch:590: TDX quotes go to the host's QGS on vsock CID 2 port 4050.
QGS_CID: Final = 2
QGS_PORT: Final = 4050
# cocoon-launch:603: guest RAM, from ordinary (not huge) pages.
GUEST_MEMORY_GIB: Final = 100
GUEST_VCPUS: Final = 32  # cocoon-launch:600
PERSISTENT_DISK_BYTES: Final = 100 << 30  # cocoon-launch:538, `truncate --size=100g`

# The release tarball's layout (scripts/prepare-release:79-95).
SPEC_WORKER: Final = "spec/spec-worker"
SPEC_FAKE_TON: Final = "spec/fake-ton"
BASE_TON_CONFIG: Final = "spec/mainnet-base-ton-config.json"
FULL_TON_CONFIG: Final = "spec/mainnet-full-ton-config.json"  # cocoon-launch:273, not shipped
IMAGE_FILES: Final = ("OVMF.fd", "image.img", "image.vmlinuz", "image.initrd", "image.cmdline")

# In the prepared spec (cocoon-launch:405-452).
RUNTIME_DIR: Final = "runtime"
RUNTIME_VARS: Final = "runtime/runtime.vars"
GLOBAL_CONFIG: Final = "global.config.json"
FAKE_TON_CONFIG: Final = "fake-ton-config.json"
# cocoon-launch:348: the flag fake-TON mode appends to the runners' ExecStart.
FAKE_TON_FLAG: Final = " --disable-ton /run/spec/fake-ton-config.json"

# The drives the guest looks for by serial (cocoon-launch:593-611;
# reprodebian/cocoon-init, spec/spec-worker/init).
DRIVE_SERIALS: Final = ("root", "persistent", "model-tar", "model-tar-verity")


class CocoonConfigError(Exception):
    """The worker.conf or release cannot be launched; the message names the key or file."""


@dataclass(frozen=True)
class WorkerConf:
    """COCOON's ``[node]`` section for a worker, with cocoon-launch's defaults applied."""

    owner_address: str
    model: str
    root_contract_address: str = DEFAULT_ROOT_CONTRACT
    instance: int = 0
    worker_coefficient: str = "1000"
    hf_token: str | None = None
    node_wallet_key: str | None = None
    gpu: str | None = None
    persistent: str | None = None
    ton_config_base: str | None = None
    ton_config: str | None = None
    fake_ton: bool = False
    test: bool = False
    http_port: int = WORKER_HTTP_PORT
    ssh_port: int = WORKER_SSH_PORT
    vsock_cid: int = WORKER_VSOCK_CID
    image_dir: str | None = None
    external_ip: str | None = None
    external_worker_port: int | None = None
    external_client_port: int | None = None

    @property
    def offset(self) -> int:
        return self.instance * INSTANCE_STRIDE

    @property
    def guest_cid(self) -> int:
        """cocoon-launch:545: the guest's vsock CID, 6 + 10*i."""
        return self.vsock_cid + self.offset

    @property
    def host_http_port(self) -> int:
        """cocoon-launch:550-551: the host port forwarded to the guest's 12000."""
        return self.http_port + self.offset

    def persistent_path(self) -> str:
        """cocoon-launch:280: ``persistent-worker-<i>.img`` (relative) unless configured."""
        return self.persistent or f"persistent-worker-{self.instance}.img"

    def image_dir_in(self, release: Path) -> Path:
        """cocoon-launch:275: the release's ``images/prod`` (``images/test`` in test mode)."""
        if self.image_dir is not None:
            return Path(self.image_dir)
        return release / "images" / ("test" if self.test else "prod")

    def ton_config_base_in(self, release: Path) -> Path | None:
        """cocoon-launch:270-271: the release's mainnet base config; none in fake-TON mode."""
        if self.fake_ton:
            return None
        return Path(self.ton_config_base) if self.ton_config_base else release / BASE_TON_CONFIG

    def ton_config_in(self, release: Path) -> Path | None:
        """cocoon-launch:272-273: the liteserver config; none in fake-TON mode."""
        if self.fake_ton:
            return None
        return Path(self.ton_config) if self.ton_config else release / FULL_TON_CONFIG


def _bool(value: str) -> bool:
    """cocoon-launch:230: how the script reads a boolean key."""
    return value.lower() in ("true", "yes", "1", "on")


def _int(node: Mapping[str, str], key: str, default: int) -> int:
    if key not in node:
        return default
    try:
        return int(node[key])
    except ValueError:
        raise CocoonConfigError(f"[node] {key}={node[key]!r} is not an integer") from None


def read_ini(text: str, where: str) -> configparser.ConfigParser:
    """An INI file as cocoon-launch's ``configparser`` reads it (keys lower-cased, no
    interpolation: a ``%`` in a token must not be taken for a reference)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise CocoonConfigError(f"{where}: {exc}") from None
    return parser


def parse_worker_conf(
    node: Mapping[str, str], *, instance: int | None = None, where: str = "worker.conf"
) -> WorkerConf:
    """``[node]`` as ``load_config_from_file`` (cocoon-launch:204-331) reads it for a worker.

    ``instance`` overrides the file, as the script's ``--instance`` does (cocoon-launch:211).
    """
    kind = node.get("type", "").lower()
    if kind != "worker":
        # cocoon-launch:310-313; the operator launches workers only.
        raise CocoonConfigError(f"{where}: [node] type={kind!r}, expected 'worker'")
    owner = node.get("owner_address", "")
    if not owner:
        raise CocoonConfigError(f"{where}: [node] owner_address is required")  # :314-315
    fake_ton = _bool(node["fake_ton"]) if "fake_ton" in node else False
    conf = WorkerConf(
        owner_address=owner,
        # cocoon-launch:256: a worker without a model gets Qwen/Qwen3-0.6B.
        model=node.get("model", "Qwen/Qwen3-0.6B"),
        root_contract_address=node.get("root_contract_address", DEFAULT_ROOT_CONTRACT),
        instance=instance if instance is not None else _int(node, "instance", 0),
        worker_coefficient=node.get("worker_coefficient", "1000"),
        hf_token=node.get("hf_token") or None,
        node_wallet_key=node.get("node_wallet_key", FAKE_TON_NODE_WALLET_KEY if fake_ton else None),
        gpu=node.get("gpu") or None,
        persistent=node.get("persistent") or None,
        ton_config_base=node.get("ton_config_base") or None,
        ton_config=node.get("ton_config") or None,
        fake_ton=fake_ton,
        test=_bool(node["test"]) if "test" in node else False,
        http_port=_int(node, "http_port", WORKER_HTTP_PORT),
        ssh_port=_int(node, "ssh_port", WORKER_SSH_PORT),
        vsock_cid=_int(node, "vsock_cid", WORKER_VSOCK_CID),
        image_dir=node.get("image-dir") or None,  # cocoon-launch:275 reads 'image-dir'
        external_ip=node.get("external_ip", FAKE_TON_EXTERNAL_IP) if fake_ton else None,
        external_worker_port=(
            _int(node, "external_worker_port", FAKE_TON_WORKER_PORT) if fake_ton else None
        ),
        external_client_port=(
            _int(node, "external_client_port", FAKE_TON_CLIENT_PORT) if fake_ton else None
        ),
    )
    if not 0 <= conf.instance <= 9:
        raise CocoonConfigError(f"{where}: [node] instance={conf.instance} is not 0-9")
    return conf


@dataclass(frozen=True)
class ModelImage:
    """What ``build-model`` answers (cocoon-launch:45-63): the full id and the tar's path."""

    name: str
    commit: str
    verity_hash: str
    tar_path: str

    @property
    def verity_path(self) -> str:
        """cocoon-launch:528: the hash tree sits beside the tar as ``<tar>.verity``."""
        return self.tar_path + ".verity"

    @classmethod
    def parse(cls, model: str, tar_path: str) -> ModelImage:
        """``Name@commit:verity`` (cocoon-launch:54-61)."""
        if "@" not in model or ":" not in model:
            raise CocoonConfigError(f"model {model!r} is not Name@commit:verity")
        name, rest = model.split("@", 1)
        commit, verity = rest.split(":", 1)
        return cls(name=name, commit=commit, verity_hash=verity, tar_path=tar_path)


def runtime_vars(conf: WorkerConf, model: ModelImage) -> dict[str, str]:
    """``Config.get_runtime_vars`` for a worker in QEMU (cocoon-launch:158-201), in its order."""
    out: dict[str, str] = {
        "MODEL_NAME": model.name,  # :174-176, from build-model's answer
        "MODEL_COMMIT": model.commit,
        "MODEL_VERITY_HASH": model.verity_hash,
        "OWNER_ADDRESS": conf.owner_address,  # :185-186
        "ROOT_CONTRACT_ADDRESS": conf.root_contract_address,  # :187
    }
    if conf.external_ip:  # :188-193, fake-TON mode only (:257-259)
        out["EXTERNAL_IP"] = conf.external_ip
    if conf.external_worker_port:
        out["EXTERNAL_WORKER_PORT"] = str(conf.external_worker_port + conf.offset)
    if conf.external_client_port:
        out["EXTERNAL_CLIENT_PORT"] = str(conf.external_client_port + conf.offset)
    if conf.worker_coefficient:
        out["WORKER_COEFFICIENT"] = conf.worker_coefficient  # :194-195
    if conf.hf_token:
        out["HF_TOKEN"] = conf.hf_token  # :196-197
    if conf.node_wallet_key:
        out["NODE_WALLET_KEY"] = conf.node_wallet_key  # :198-199
    return out


def merge_runtime_vars(existing: str | None, new: Mapping[str, str]) -> str:
    """The runtime.vars file after prepare_spec's upsert (cocoon-launch:442-458):
    earlier lines whose key is not set again stay first, then the new keys in order."""
    lines: list[str] = []
    if existing is not None:
        for line in existing.splitlines():
            if "=" in line and line.strip() and line.split("=", 1)[0] not in new:
                lines.append(line)
    lines.extend(f"{key}={value}" for key, value in new.items())
    return "\n".join(lines) + "\n"


def fake_ton_init(init: str) -> str:
    """The guest's ``init`` in fake-TON mode (cocoon-launch:424-437): no TON config
    rendering, the fake config rendered before the first ``systemctl``."""

    def lines() -> Iterator[str]:
        injected = False
        for line in init.splitlines():
            if "cocoon-render-ton-config" in line:
                continue
            if not injected and "systemctl" in line:
                yield "cocoon-render-config fake-ton-config.json"
                injected = True
            yield line

    return "\n".join(lines()) + "\n"


def fake_ton_service(unit: str) -> str:
    """A ``.service`` of the spec in fake-TON mode (cocoon-launch:334-352): each runner's
    ExecStart gets ``--disable-ton /run/spec/fake-ton-config.json``."""
    out = []
    for line in unit.splitlines(keepends=True):
        if (
            line.startswith("ExecStart=")
            and "-runner" in line
            and "/run/spec/fake-ton-config.json" not in line
        ):
            out.append(line.rstrip("\n") + FAKE_TON_FLAG + "\n")
        else:
            out.append(line)
    return "".join(out)


def kernel_cmdline(image_cmdline: str, conf: WorkerConf) -> str:
    """cocoon-launch:554-562: the release's image.cmdline, then the mode flags. Measured
    (RTMR2): ``cocoon_gpu`` is what starts nvidia-tdx.service in the guest."""
    cmdline = image_cmdline.strip()
    if conf.test:
        cmdline += " cocoon_debug"
    if conf.fake_ton:
        cmdline += " cocoon_fake_ton"
    cmdline += " cocoon_gpu" if conf.gpu else " modprobe.blacklist=nvidia"
    return cmdline


def netdev(conf: WorkerConf, *, ssh: bool = True, forward_address: str = "") -> str:
    """cocoon-launch:565-569: user networking forwarding SSH and the worker's port.

    cocoon-launch leaves the host address empty (every interface); the operator's
    launcher gives ``127.0.0.1`` (``launcher/_plan.py``, difference 5). QEMU's
    syntax is ``hostfwd=tcp:[hostaddr]:hostport-[guestaddr]:guestport``.
    """
    out = "user,id=user.0"
    if ssh and conf.ssh_port:
        out += f",hostfwd=tcp:{forward_address}:{conf.ssh_port + conf.offset}-:22"
    out += f",hostfwd=tcp:{forward_address}:{conf.http_port + conf.offset}-:{conf.http_port}"
    return out


@dataclass(frozen=True)
class QemuInputs:
    """The paths QEMU is given: the same roles cocoon-launch fills (cocoon-launch:513-626)."""

    image_dir: Path
    cmdline: str  # the final kernel command line (kernel_cmdline)
    persistent: str
    spec_dir: Path
    model: ModelImage | None


def tdx_object() -> str:
    """cocoon-launch:589-590: the TD, its quotes through the host's QGS."""
    return (
        '{"qom-type":"tdx-guest","id":"tdx","quote-generation-socket":'
        f'{{"type":"vsock","cid":"{QGS_CID}","port":"{QGS_PORT}"}}}}'
    )


def qemu_argv(
    conf: WorkerConf, inputs: QemuInputs, *, ssh: bool = True, forward_address: str = ""
) -> list[str]:
    """``run_qemu``'s command (cocoon-launch:585-626), argument for argument."""
    machine = "q35,kernel-irqchip=split,memory-backend=mem0,confidential-guest-support=tdx"
    gpu = ["-device", f"vfio-pci,host={conf.gpu},bus=pci.0,iommufd=iommufd0"] if conf.gpu else []
    model = inputs.model
    tar = (
        [
            "-drive",
            f"readonly=on,file={model.tar_path},id=drivecache,if=none,index=3,werror=report",
            "-device",
            "virtio-blk-pci,drive=drivecache,serial=model-tar",
            "-drive",
            f"readonly=on,file={model.verity_path},id=drivecacheverity,if=none,index=4,"
            "werror=report",
            "-device",
            "virtio-blk-pci,drive=drivecacheverity,serial=model-tar-verity",
        ]
        if model is not None
        else []
    )
    images = str(inputs.image_dir)
    return [
        "qemu-system-x86_64",
        "-machine",
        machine,
        "-bios",
        str(inputs.image_dir / "OVMF.fd"),
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        str(GUEST_VCPUS),
        "-vga",
        "none",
        "-object",
        tdx_object(),
        "-object",
        f"memory-backend-ram,id=mem0,size={GUEST_MEMORY_GIB}G",
        "-device",
        f"vhost-vsock-pci,guest-cid={conf.guest_cid}",
        "-object",
        "iommufd,id=iommufd0",
        "-device",
        "pcie-root-port,id=pci.0,bus=pcie.0",
        "-drive",
        f"cache=writeback,file={images}/image.img,readonly=on,id=drive1,if=none,index=1,"
        "werror=report",
        "-device",
        "virtio-blk-pci,bootindex=1,drive=drive1,serial=root",
        "-drive",
        f"cache=writeback,file={inputs.persistent},format=raw,id=drive2,if=none,index=2,"
        "werror=report",
        "-device",
        "virtio-blk-pci,bootindex=2,drive=drive2,serial=persistent",
        *tar,
        "-chardev",
        "stdio,id=char0",
        "-device",
        "virtio-serial-pci,id=virtio-serial0",
        "-device",
        "virtconsole,chardev=char0",
        "-kernel",
        f"{images}/image.vmlinuz",
        "-initrd",
        f"{images}/image.initrd",
        "-append",
        inputs.cmdline,
        "-virtfs",
        f"local,path={inputs.spec_dir},mount_tag=spec,security_model=mapped,readonly=on",
        "-net",
        "nic,netdev=user.0,model=virtio",
        "-netdev",
        netdev(conf, ssh=ssh, forward_address=forward_address),
        "-nographic",
        "-serial",
        "null",
        "-monitor",
        "null",
        *gpu,
    ]
