"""The VM launcher: from the operator's worker.conf to QEMU's command line, the
release's digests checked, the allocated GPU resolved, the persistent disk of the
release's identity, the VM recorded for the node agent and stopped on SIGTERM.
QEMU itself is a stand-in process here (no TDX host). What must equal COCOON's
own cocoon-launch is in test_cocoon_launch_oracle.py."""

from __future__ import annotations

import configparser
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
from cocoon_operator.desired.config import GPU_ENV, InstanceSlot, worker_config
from cocoon_operator.desired.launcher import COCOON_SHAPE, launcher_pod
from cocoon_operator.launcher import STATE_LOCK, LaunchError, vm_running
from cocoon_operator.launcher._plan import (
    LauncherKeys,
    allocated_gpu,
    disks_to_remove,
    measured_identity,
    resolve_node,
)
from cocoon_operator.nodeagent._sweep import lock_held
from cocoon_operator.simulator._release import release_digests, write_release
from cocoon_operator.ton.cocoonwallet import node_wallet_address_of_key
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text
from tests.unit.helpers import WORKER, container, spec

# The operator's control public key the launcher pods built here trust.
CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key

GPU = "0000:1b:00.0"
WALLET_KEY = "c2VjcmV0LW5vZGUtd2FsbGV0LWtleS0zMi1ieXRlcyE="
FLAG_OF_FIELD = {
    "ovmf": "ovmf",
    "image": "image",
    "kernel": "kernel",
    "initrd": "initrd",
    "cmdline": "cmdline",
}


def rendered(index: int = 3) -> str:
    return worker_config(spec(), InstanceSlot(index))


def test_the_pods_arguments_are_the_launchers_own() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(3), control_key=CONTROL_KEY)
    args = build_parser().parse_args(container(pod)["args"])
    assert args.command == "launch" and args.release == "/opt/cocoon/release"
    files = spec().release.files
    assert (args.expect_image_sha256, args.expect_cmdline_sha256) == (files.image, files.cmdline)
    env = {e["name"] for e in container(pod)["env"]}
    assert {"POD_NAME", "POD_NAMESPACE", "POD_UID", "COCOON_WORKER"} <= env
    mounts = {m["name"]: m["mountPath"] for m in container(pod)["volumeMounts"]}
    assert mounts["launcher-state"] == args.state_dir == "/run/cocoon"


def test_each_launcher_pod_mounts_only_its_own_state_directory() -> None:
    """The spec shares of the node's other VMs, present or past, hold their node wallet
    keys and HF tokens: a launcher sees its own pod's directory, by its UID, only."""
    pod = launcher_pod(WORKER, spec(), InstanceSlot(3), control_key=CONTROL_KEY)
    (mount,) = [m for m in container(pod)["volumeMounts"] if m["name"] == "launcher-state"]
    assert mount["subPathExpr"] == "$(POD_UID)"
    env = {e["name"]: e for e in container(pod)["env"]}
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "launcher-state"]
    assert volume["hostPath"] == {"path": "/run/cocoon/pods", "type": "DirectoryOrCreate"}
    # No other volume of the pod reaches the launchers' state on the node.
    paths = [v["hostPath"]["path"] for v in pod["spec"]["volumes"] if "hostPath" in v]
    assert [p for p in paths if p.startswith("/run/cocoon")] == ["/run/cocoon/pods"]


def test_the_pods_memory_holds_the_guest_ram_that_qemu_backs_with_ordinary_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(3), control_key=CONTROL_KEY)
    limits = container(pod)["resources"]["limits"]
    assert not any(name.startswith("hugepages-") for name in limits)
    args, env = host(tmp_path)
    with pytest.MonkeyPatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        assert main([*args, "--print-only"]) == 0
    argv = capsys.readouterr().out.splitlines()
    backend = argv[argv.index("-object", argv.index("-vga")) + 3]
    assert backend.startswith("memory-backend-ram,") and "size=100G" in backend
    guest_gib = int(backend.rsplit("size=", 1)[1].removesuffix("G"))
    limit_gib = int(limits["memory"].removesuffix("Gi"))
    assert limit_gib >= guest_gib + 1 and guest_gib == COCOON_SHAPE.memory_gib
    assert int(limits["cpu"]) == int(argv[argv.index("-smp") + 1]) + 1


def test_the_secrets_and_the_gpu_come_from_where_the_launcher_section_says(
    tmp_path: Path,
) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(rendered())
    keys = LauncherKeys.from_section(dict(parser["launcher"]))
    files = {keys.node_wallet_key_file: WALLET_KEY + "\n"}
    node = resolve_node(dict(parser["node"]), keys, {GPU_ENV: GPU}, lambda p: files[p].strip())
    assert node["gpu"] == GPU and node["node_wallet_key"] == WALLET_KEY
    assert node["type"] == "worker" and node["instance"] == "3"
    assert node["model"] == spec().model.cocoon_id
    assert "persistent" not in node  # the launcher picks it by the release's identity


@pytest.mark.parametrize("value", ["", "0000:1b:00.0,0000:2b:00.0"])
def test_exactly_one_allocated_gpu_or_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(LaunchError, match=GPU_ENV):
        allocated_gpu(GPU_ENV, {GPU_ENV: value})
    assert allocated_gpu(GPU_ENV, {GPU_ENV: GPU}) == GPU


def test_an_unknown_launcher_key_is_refused_naming_it() -> None:
    with pytest.raises(LaunchError, match="gpu_from_envv"):
        LauncherKeys.from_section({"gpu_from_envv": "X"})


DIGESTS = {
    "OVMF.fd": "a" * 64,
    "image.img": "b" * 64,
    "image.vmlinuz": "c" * 64,
    "image.initrd": "d" * 64,
    "image.cmdline": "e" * 64,
}


@pytest.mark.parametrize(
    "change",
    [
        lambda d, c, s: ({**d, "image.img": "f" * 64}, c, s),
        lambda d, c, s: (d, c + " cocoon_debug", s),
        lambda d, c, s: (d, c, "1" * 64),
    ],
    ids=["another root disk", "another command line", "another spec tree"],
)
def test_anything_the_seal_key_depends_on_gives_another_persistent_disk(change: Any) -> None:
    base = measured_identity(DIGESTS, "ro cocoon_gpu", "0" * 64)
    assert measured_identity(*change(DIGESTS, "ro cocoon_gpu", "0" * 64)) != base
    assert measured_identity(dict(DIGESTS), "ro cocoon_gpu", "0" * 64) == base


def test_old_disks_stay_until_the_new_vm_is_up_and_then_only_unused_ones_go() -> None:
    names = [
        "persistent-" + "1" * 16 + ".img",
        "persistent-" + "2" * 16 + ".img",
        "persistent-" + "3" * 16 + ".img",
        "notes.txt",
    ]
    current = "3" * 16
    assert disks_to_remove(names, current, frozenset(), current_is_up=False) == []
    assert disks_to_remove(names, current, frozenset({"2" * 16}), current_is_up=True) == [
        "persistent-" + "1" * 16 + ".img"
    ]


# --- the command, on a host tree -----------------------------------------------


def host(tmp_path: Path, *, tamper: str | None = None) -> tuple[list[str], dict[str, str]]:
    """A release dir, model images, secrets and a config; the launch arguments and env."""
    release = write_release(tmp_path / "release")
    if tamper is not None:
        (release / "images" / "prod" / tamper).write_bytes(b"not the release's")
    verity = spec().model.verity_hash
    models = tmp_path / "models"
    models.mkdir()
    for name in (f"{verity}.tar", f"{verity}.tar.verity"):
        (models / name).write_bytes(b"model")
    key = tmp_path / "node-wallet-key"
    key.write_text(WALLET_KEY)
    conf = tmp_path / "worker.conf"
    text = rendered().replace("/run/secrets/cocoon/node-wallet-key", str(key))
    text = text.replace("/var/lib/cocoon/persistent", str(tmp_path / "disks"))
    text = text.replace("/var/lib/cocoon/models", str(models))
    conf.write_text(text)
    qemu = tmp_path / "qemu"
    # QEMU's stand-in: runs until SIGTERM, as QEMU does.
    qemu.write_text(f"#!{sys.executable}\nimport time\nwhile True: time.sleep(1)\n")
    qemu.chmod(0o755)
    digests = release_digests()
    args = [
        "launch",
        f"--config={conf}",
        f"--release={release}",
        *(f"--expect-{FLAG_OF_FIELD[k]}-sha256={v}" for k, v in digests.items()),
        f"--state-dir={tmp_path / 'run'}",
        f"--qemu={qemu}",
        "--powerdown-seconds=2",
        f"--control-public-key={CONTROL_KEY}",
        "--control-listen=127.0.0.1",
        "--control-port=0",  # not 12032: this machine may run other launchers' tests
    ]
    env = {
        GPU_ENV: GPU,
        "POD_NAME": "w-abc",
        "POD_NAMESPACE": "ns",
        "POD_UID": "uid-1",
        "COCOON_WORKER": "w",
    }
    return args, env


@pytest.mark.parametrize(
    "tampered", ["OVMF.fd", "image.img", "image.vmlinuz", "image.initrd", "image.cmdline"]
)
def test_a_release_file_that_does_not_match_its_digest_starts_nothing(
    tampered: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, env = host(tmp_path, tamper=tampered)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert tampered in err and "expects" in err
    assert not list((tmp_path / "run").glob("instance-*.json"))
    assert not (tmp_path / "disks").exists()


def test_a_node_wallet_key_cocoon_would_refuse_starts_nothing_and_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env = host(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bad = "c2hvcnQta2V5"  # base64 of 9 bytes, not 32
    (tmp_path / "node-wallet-key").write_text(bad)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "node_wallet_key" in err and bad not in err
    assert not list((tmp_path / "run").glob("instance-*.json"))


def test_a_launch_without_the_operators_control_key_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env = host(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    without = [a for a in args if not a.startswith("--control-public-key=")]
    assert main(without) == 1
    assert "--control-public-key is required" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("instance-*.json"))
    monkeypatch.delenv("POD_UID")
    assert main(args) == 1
    assert "$POD_UID" in capsys.readouterr().err


def test_print_only_prints_qemus_argv_one_per_line_without_any_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env = host(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([*args, "--print-only"]) == 0
    out = capsys.readouterr().out
    argv = out.splitlines()
    assert argv[argv.index("-device", argv.index("-netdev")) + 1] == (
        f"vfio-pci,host={GPU},bus=pci.0,iommufd=iommufd0"
    )
    assert "cocoon_gpu" in argv[argv.index("-append") + 1].split()
    # Difference 5 (launcher/_plan.py): the worker's port on the pod's loopback only.
    assert argv[argv.index("-netdev") + 1] == "user,id=user.0,hostfwd=tcp:127.0.0.1:12030-:12000"
    assert WALLET_KEY not in out
    assert not (tmp_path / "run").exists()


def test_prepare_only_writes_the_spec_share_with_the_secrets_in_runtime_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env = host(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "prepared"
    assert main([*args, f"--prepare-only={out}"]) == 0
    assert (out / "init").is_file() and (out / "fake-ton-config.json").is_file()
    runtime = (out / "runtime" / "runtime.vars").read_text()
    assert f"NODE_WALLET_KEY={WALLET_KEY}" in runtime
    assert (out / "runtime" / "runtime.vars").stat().st_mode & 0o077 == 0
    elsewhere = [p for p in out.rglob("*") if p.is_file() and "runtime" not in p.parts]
    assert all(WALLET_KEY not in p.read_text() for p in elsewhere)


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
            "persistent": record["persistent"],
            # What COCOON's CocoonWallet gives for the key and owner (ton/cocoonwallet.py).
            "nodeWallet": node_wallet_address_of_key(WALLET_KEY, spec().owner_address).to_raw(),
            # The model the VM reads: the node agent's gc keeps it.
            "modelVerity": spec().model.verity_hash,
        }
        # One disk, named by the release's measured identity, in the worker's directory.
        (disk,) = (tmp_path / "disks").iterdir()
        assert record["persistent"] == str(disk) and disk.name.startswith("persistent-")
        assert disk.stat().st_size == 100 << 30 and disk.stat().st_blocks == 0  # sparse
        # What the node agent checks (once the child has exec'd QEMU's stand-in).
        assert wait_for(lambda: vm_running(Path("/proc"), record["pid"], 3))
        private = tmp_path / "run" / "vm-3"
        share = private / "spec" / "runtime" / "runtime.vars"
        assert WALLET_KEY in share.read_text() and private.stat().st_mode & 0o077 == 0
        # QEMU's quotes go to the launcher's relay, listening before QEMU starts.
        relay = private / "instance-3.qgs"
        assert relay.is_socket() and relay.stat().st_mode & 0o077 == 0
        # Its directory is locked while it runs: the node agent's janitor keeps it.
        assert lock_held(tmp_path / "run" / STATE_LOCK)

        # The pod's replacement, while this VM still runs: it starts nothing.
        second = start(args, env)
        _, err = second.communicate(timeout=20)
        assert second.returncode == 1
        assert "still runs" in err and str(record["pid"]) in err
        assert WALLET_KEY not in err

        proc.send_signal(signal.SIGTERM)  # the pod is deleted
        proc.wait(timeout=20)
        assert not state.exists()  # QEMU is gone: the agent stops listing the VM
        assert not private.exists()  # and the VM's secrets are gone with its share
        assert not vm_running(Path("/proc"), record["pid"], 3)
        assert WALLET_KEY not in (proc.stderr.read() if proc.stderr else "")
        assert not lock_held(tmp_path / "run" / STATE_LOCK)  # the janitor's to remove
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
