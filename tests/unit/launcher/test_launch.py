"""The VM launcher: from the operator's rendered config to QEMU's command line, the
release's digests checked, the allocated GPU resolved, the VM recorded for the node
agent and stopped on SIGTERM. QEMU itself is a stand-in process here (no TDX host)."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cocoon_operator.cli import build_parser, main
from cocoon_operator.desired.config import InstanceSlot, worker_config
from cocoon_operator.desired.launcher import launcher_pod
from cocoon_operator.launcher import (
    LaunchError,
    LaunchPlan,
    ReleaseFiles,
    final_worker_config,
    parse_launch_config,
    qemu_argv,
    vm_running,
)
from cocoon_operator.launcher._plan import allocated_gpu
from tests.unit.test_launcher import WORKER, container, spec

GPU = "0000:1b:00.0"
GPU_ENV = "PCI_RESOURCE_NVIDIA_COM_PGPU"
WALLET_KEY = "c2VjcmV0LW5vZGUtd2FsbGV0LWtleS0zMi1ieXRlcyE="


def rendered(index: int = 3) -> str:
    return worker_config(spec(), InstanceSlot(index))


def test_the_pods_arguments_are_the_launchers_own() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(3))
    args = build_parser().parse_args(container(pod)["args"])
    assert args.command == "launch" and args.vcpus == 32 and args.memory_gib == 100
    env = {e["name"] for e in container(pod)["env"]}
    assert {"POD_NAME", "POD_NAMESPACE", "POD_UID", "COCOON_WORKER"} <= env
    mounts = {m["name"]: m["mountPath"] for m in container(pod)["volumeMounts"]}
    assert mounts["launcher-state"] == args.state_dir == "/run/cocoon"


def test_the_final_config_has_the_gpu_and_secrets_and_no_launcher_keys(tmp_path: Path) -> None:
    config = parse_launch_config(rendered())
    assert (config.instance, config.http_port, config.ratls_port, config.guest_cid) == (
        3,
        12030,
        12031,
        36,
    )
    key_file = tmp_path / "key"
    key_file.write_text(WALLET_KEY + "\n")
    secrets = {config.node_wallet_key_file: key_file}
    text = final_worker_config(config, GPU, lambda p: secrets[p].read_text().strip())
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert parser.sections() == ["node"]
    node = parser["node"]
    assert node["gpu"] == GPU and node["node_wallet_key"] == WALLET_KEY
    assert node["type"] == "worker" and node["instance"] == "3"
    assert node["model"] == spec().model.cocoon_id


@pytest.mark.parametrize("value", ["", "0000:1b:00.0,0000:2b:00.0"])
def test_exactly_one_allocated_gpu_or_an_error_naming_the_variable(value: str) -> None:
    config = parse_launch_config(rendered())
    with pytest.raises(LaunchError, match=GPU_ENV):
        allocated_gpu(config, {GPU_ENV: value})
    assert allocated_gpu(config, {GPU_ENV: GPU}) == GPU


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[node]\nmodel = a@b:c\ninstance = 1\n", "[launcher]"),
        (rendered().replace("instance = 3", "instance = three"), "instance"),
        ("not ini at all", "worker.ini"),
    ],
)
def test_a_broken_config_is_refused_naming_the_key(text: str, names: str) -> None:
    with pytest.raises(LaunchError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_launch_config(text)


def test_qemu_gets_cocoons_shape_tdx_the_gpu_and_the_instances_ports() -> None:
    config = parse_launch_config(rendered())
    plan = LaunchPlan(
        config=config,
        release=ReleaseFiles(Path("/r/OVMF.fd"), Path("/r/vmlinuz"), Path("/r/initrd"), "ro"),
        vcpus=32,
        memory_gib=100,
        machine="q35",
        gpu=GPU,
        spec_dir=Path("/run/cocoon/spec-3"),
        persistent_image=Path("/var/lib/cocoon/persistent.img"),
        model_tar=Path("/m/x.tar"),
        model_verity=Path("/m/x.verity"),
        qmp_socket=Path("/run/cocoon/instance-3.qmp"),
    )
    argv = qemu_argv(plan)
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-smp") + 1] == "32" and argv[argv.index("-m") + 1] == "100G"
    assert argv[argv.index("-name") + 1].startswith("cocoon-instance-3,")
    assert argv[argv.index("-bios") + 1] == "/r/OVMF.fd"
    tdx = json.loads(next(a for a in argv if "tdx-guest" in a))
    assert tdx["quote-generation-socket"] == {"type": "vsock", "cid": "2", "port": "4050"}
    assert "confidential-guest-support=tdx0" in argv[argv.index("-machine") + 1]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert f"vfio-pci,host={GPU}" in devices
    assert "vhost-vsock-pci,guest-cid=36" in devices
    net = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp::12030-:12000" in net and "hostfwd=tcp::12031-:12001" in net
    assert "readonly=on" in pairs["-fsdev"] and "/run/cocoon/spec-3" in pairs["-fsdev"]
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert sum("readonly=on" in d for d in drives) == 2  # the model's images


# --- the command, on a host tree -----------------------------------------------


def host(tmp_path: Path, *, tamper: bool = False) -> tuple[list[str], dict[str, str]]:
    """A release dir, model images, secrets and a config; the launch arguments and env."""
    release = tmp_path / "release"
    release.mkdir()
    digests = {}
    for name, file in (("ovmf", "OVMF.fd"), ("kernel", "vmlinuz"), ("initrd", "initrd.img")):
        (release / file).write_bytes(f"{name} bytes".encode())
        digests[name] = hashlib.sha256(f"{name} bytes".encode()).hexdigest()
    (release / "cmdline").write_text("console=ttyS0 ro\n")
    if tamper:
        (release / "vmlinuz").write_bytes(b"another kernel")
    config = parse_launch_config(rendered())
    models = tmp_path / "models"
    models.mkdir()
    for ext in ("tar", "verity"):
        (models / f"{config.verity_hash}.{ext}").write_bytes(b"model")
    key = tmp_path / "node-wallet-key"
    key.write_text(WALLET_KEY)
    ini = tmp_path / "worker.ini"
    text = rendered().replace(config.node_wallet_key_file, str(key))
    text = text.replace("/var/lib/cocoon/persistent.img", str(tmp_path / "persistent.img"))
    ini.write_text(text)
    qemu = tmp_path / "qemu"
    # QEMU's stand-in: runs until SIGTERM, as QEMU does.
    qemu.write_text(f"#!{sys.executable}\nimport time\nwhile True: time.sleep(1)\n")
    qemu.chmod(0o755)
    args = [
        "launch",
        f"--config={ini}",
        "--vcpus=32",
        "--memory-gib=100",
        "--disk-gib=1",
        "--machine=q35",
        f"--expect-ovmf-sha256={digests['ovmf']}",
        f"--expect-kernel-sha256={digests['kernel']}",
        f"--expect-initrd-sha256={digests['initrd']}",
        f"--release-dir={release}",
        f"--model-dir={models}",
        f"--state-dir={tmp_path / 'run'}",
        f"--qemu={qemu}",
        "--powerdown-seconds=2",
    ]
    env = {
        GPU_ENV: GPU,
        "POD_NAME": "w-abc",
        "POD_NAMESPACE": "ns",
        "POD_UID": "uid-1",
        "COCOON_WORKER": "w",
    }
    return args, env


def test_a_release_file_that_does_not_match_its_digest_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env = host(tmp_path, tamper=True)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([*args, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "kernel" in err and "vmlinuz" in err and "expects" in err
    assert not (tmp_path / "run").exists()


def test_a_dry_run_prints_qemus_argv_without_any_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env = host(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    doc: dict[str, Any] = json.loads(out)
    assert doc["gpu"] == GPU and doc["instance"] == 3
    assert WALLET_KEY not in out


def wait_for(probe: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if got := probe():
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cocoon_operator", *args],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_vm_is_recorded_while_it_runs_and_forgotten_once_stopped(tmp_path: Path) -> None:
    args, env = host(tmp_path)
    state = tmp_path / "run" / "instance-3.json"
    # Left by a launcher that died with its VM: the pid is gone, the file is stale.
    state.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.write_text(json.dumps({"instance": 3, "pid": dead.pid}))

    proc = start(args, env)
    try:
        record = wait_for(
            lambda: (
                state.exists() and (r := json.loads(state.read_text())).get("pid") != dead.pid and r
            )
        )
        assert record == {
            "instance": 3,
            "namespace": "ns",
            "worker": "w",
            "pod": "w-abc",
            "podUid": "uid-1",
            "pci": GPU,
            "pid": record["pid"],
        }
        # What the node agent checks (once the child has exec'd QEMU's stand-in).
        assert wait_for(lambda: vm_running(Path("/proc"), record["pid"], 3))
        share = tmp_path / "run" / "spec-3" / "worker.ini"
        assert WALLET_KEY in share.read_text() and share.stat().st_mode & 0o077 == 0

        # The pod's replacement, while this VM still runs: it starts nothing.
        second = start(args, env)
        _, err = second.communicate(timeout=20)
        assert second.returncode == 1
        assert "still runs" in err and str(record["pid"]) in err
        assert WALLET_KEY not in err

        proc.send_signal(signal.SIGTERM)  # the pod is deleted
        proc.wait(timeout=20)
        assert not state.exists()  # QEMU is gone: the agent stops listing the VM
        assert not vm_running(Path("/proc"), record["pid"], 3)
        assert WALLET_KEY not in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
