"""Start, record, supervise and stop one worker VM (the I/O around :mod:`._plan`)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from cocoon_operator.launcher._plan import (
    LaunchConfig,
    LaunchError,
    LaunchPlan,
    ReleaseFiles,
    allocated_gpu,
    final_worker_config,
    parse_launch_config,
    process_name,
    qemu_argv,
)

log = logging.getLogger("cocoon_operator.launcher")

POWERDOWN_SECONDS = 240.0  # within the pod's 300 s grace: the guest drains first


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_release(release: ReleaseFiles, expected: Mapping[str, str]) -> None:
    """Each measured file must have the digest the spec names, or no VM starts."""
    for name, path in (
        ("ovmf", release.ovmf),
        ("kernel", release.kernel),
        ("initrd", release.initrd),
    ):
        if not path.is_file():
            raise LaunchError(f"release file {name} not found at {path}")
        got = sha256_file(path)
        if got != expected[name]:
            raise LaunchError(
                f"release file {name} ({path}) has sha256 {got}, the spec expects"
                f" {expected[name]}: the VM would not measure as the release"
            )


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        # The error names the file, never its content.
        raise LaunchError(f"cannot read {path}: {exc.strerror}") from None


def write_spec_share(spec_dir: Path, config_text: str) -> None:
    """The VM's read-only config share: private to root, never logged."""
    spec_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = spec_dir / "worker.ini"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config_text)


def vm_running(proc_root: Path, pid: int, instance: int) -> bool:
    """Whether ``pid`` is alive and is the QEMU of ``instance`` (not a reused pid)."""
    try:
        cmdline = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return process_name(instance).encode() in cmdline


def state_file(state_dir: Path, instance: int) -> Path:
    return state_dir / f"instance-{instance}.json"


def write_state(
    state_dir: Path, config: LaunchConfig, gpu: str, pid: int, env: Mapping[str, str]
) -> Path:
    """Tell the node agent which pod this VM belongs to (atomically: write, then rename)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "instance": config.instance,
        "namespace": env.get("POD_NAMESPACE", ""),
        "worker": env.get("COCOON_WORKER", ""),
        "pod": env.get("POD_NAME", ""),
        "podUid": env.get("POD_UID", ""),
        "pci": gpu,
        "pid": pid,
    }
    path = state_file(state_dir, config.instance)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def qmp_powerdown(qmp: Path, timeout: float = 5.0) -> bool:
    """Ask the guest to shut down (ACPI), as a person pressing the power button."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(qmp))
            reader = sock.makefile("rb")
            reader.readline()  # the greeting
            for command in ("qmp_capabilities", "system_powerdown"):
                sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
                reader.readline()
    except OSError as exc:
        log.warning("QMP %s: %s", qmp, exc)
        return False
    return True


def supervise(
    argv: list[str], state_dir: Path, config: LaunchConfig, gpu: str, *, qmp: Path, grace: float
) -> int:
    """Run QEMU until it exits; on SIGTERM power the guest down, then stop QEMU."""
    proc = subprocess.Popen(argv)
    path = write_state(state_dir, config, gpu, proc.pid, os.environ)
    stopping: list[float] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            log.info("stopping: asking the guest to power down (up to %.0f s)", grace)
            if not qmp_powerdown(qmp):
                proc.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(timeout=0.5)
            if stopping and time.monotonic() - stopping[0] > grace:
                log.warning("the guest did not power down in %.0f s: stopping QEMU", grace)
                proc.terminate()
                try:
                    return proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()
    finally:
        # Only once QEMU is gone (and with it the GPU): the agent stops listing the VM.
        if proc.poll() is not None:
            path.unlink(missing_ok=True)


def build_plan(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[LaunchPlan, str]:
    """The plan and the final config text (with secrets: only for the spec share)."""
    config = parse_launch_config(Path(args.config).read_text(), str(args.config))
    release_dir = Path(args.release_dir)
    cmdline_file = release_dir / "cmdline"
    if not cmdline_file.is_file():
        raise LaunchError(f"release file cmdline not found at {cmdline_file}")
    release = ReleaseFiles(
        ovmf=release_dir / "OVMF.fd",
        kernel=release_dir / "vmlinuz",
        initrd=release_dir / "initrd.img",
        cmdline=cmdline_file.read_text().strip(),
    )
    verify_release(
        release,
        {
            "ovmf": args.expect_ovmf_sha256,
            "kernel": args.expect_kernel_sha256,
            "initrd": args.expect_initrd_sha256,
        },
    )
    gpu = allocated_gpu(config, env)
    models = Path(args.model_dir)
    model_tar = models / f"{config.verity_hash}.tar"
    model_verity = models / f"{config.verity_hash}.verity"
    for path in (model_tar, model_verity):
        if not path.is_file():
            raise LaunchError(f"model image {path} not found (model {config.model})")
    persistent = Path(config.node.get("persistent", "/var/lib/cocoon/persistent.img"))
    if not persistent.exists():
        with persistent.open("wb") as f:
            f.truncate(args.disk_gib << 30)  # sparse: the guest formats it
    run_dir = Path(args.state_dir)
    plan = LaunchPlan(
        config=config,
        release=release,
        vcpus=args.vcpus,
        memory_gib=args.memory_gib,
        machine=args.machine,
        gpu=gpu,
        spec_dir=run_dir / f"spec-{config.instance}",
        persistent_image=persistent,
        model_tar=model_tar,
        model_verity=model_verity,
        qmp_socket=run_dir / f"instance-{config.instance}.qmp",
    )
    return plan, final_worker_config(config, gpu, _read_secret)


def cmd_launch(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        plan, config_text = build_plan(args, os.environ)
        qemu = shutil.which(args.qemu) or args.qemu
        argv = qemu_argv(plan, qemu)
        if args.dry_run:
            print(json.dumps({"argv": argv, "gpu": plan.gpu, "instance": plan.config.instance}))
            return 0
        previous = state_file(Path(args.state_dir), plan.config.instance)
        if previous.exists():
            pid = int(json.loads(previous.read_text()).get("pid", 0))
            if vm_running(Path("/proc"), pid, plan.config.instance):
                # A force-deleted pod's VM (the agent reports it): a second VM
                # of this instance would fight it for the GPU, ports and CID.
                raise LaunchError(
                    f"the VM of instance {plan.config.instance} (pid {pid}) still runs on"
                    " this node without its pod; stop it first"
                )
            previous.unlink()  # left by a launcher that died with its VM
        write_spec_share(plan.spec_dir, config_text)
    except LaunchError as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return 1
    log.info(
        "starting instance %d: GPU %s, %d vCPU, %d GiB, model %s",
        plan.config.instance,
        plan.gpu,
        plan.vcpus,
        plan.memory_gib,
        plan.config.model,
    )
    return supervise(
        argv,
        Path(args.state_dir),
        plan.config,
        plan.gpu,
        qmp=plan.qmp_socket,
        grace=args.powerdown_seconds,
    )
