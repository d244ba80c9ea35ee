"""The launcher against COCOON's own ``scripts/cocoon-launch``, run as the oracle.

Both are given the same worker.conf and the same release tree (laid out as
``scripts/prepare-release`` lays it out, with COCOON's real ``spec/`` and a copy
of the real cocoon-launch in its ``scripts/``); cocoon-launch runs with stub
``build-model`` and ``setup-gpu-vfio`` beside it and a stub
``qemu-system-x86_64`` on PATH that records its argv. The QEMU argv must be
equal once the operator's documented differences (``docs/launcher.md``) are
accounted for, and the prepared spec trees byte-equal (``runtime/runtime.vars``
as a key/value set). A change in COCOON's script, or in ours, fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoon_operator.cli import main
from cocoon_operator.launcher import _cocoon, _plan, _run

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "cocoon"
VERITY = "7ed74afe17a2c27c8292ffadf79b8f88d255891766fa2ddd9850e2e595c792ec"
MODEL = f"Qwen/Qwen3-8B@9b5a8ef0fa05a010d8339363a7eb176c14275e51:{VERITY}"
OWNER = "UQC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH6GC"
ROOT = "EQAtB1gLuMCi8bSOjQkovFMCC40oCBCf7UsoUcQ3-zlXZhe8"
KEY = "c2VjcmV0LW5vZGUtd2FsbGV0LWtleS0zMi1ieXRlcyE="
GPU = "0000:1b:00.0"
CMDLINE = "console=hvc0 root=/dev/vda1 roothash=" + "ab" * 32 + " ro quiet\n"

STUB_QEMU = """#!/bin/sh
exec "{python}" -c 'import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], "w"))' \
  "$QEMU_ARGV_OUT" "$@"
"""
STUB_BUILD_MODEL = """#!/bin/sh
# build-model's contract (scripts/build-model, last line): "Name@commit:verity PATH".
echo "$1 $MODEL_TAR"
"""


def _writable_copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@dataclass(frozen=True)
class Release:
    root: Path
    models: Path
    stubs: Path
    ton_config: Path


@pytest.fixture
def release(tmp_path: Path) -> Release:
    """A release tree as scripts/prepare-release makes it, with stubs for the hardware."""
    if not (REFERENCE / "scripts" / "cocoon-launch").is_file():
        pytest.fail(f"COCOON's source is missing at {REFERENCE} (shared/reference/cocoon)")
    root = tmp_path / "release"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REFERENCE / "scripts" / "cocoon-launch", root / "scripts" / "cocoon-launch")
    (root / "scripts" / "build-model").write_text(STUB_BUILD_MODEL)
    (root / "scripts" / "setup-gpu-vfio").write_text("#!/bin/sh\nexit 0\n")
    for name in ("build-model", "setup-gpu-vfio", "cocoon-launch"):
        (root / "scripts" / name).chmod(0o755)
    _writable_copy(REFERENCE / "spec", root / "spec")
    for kind in ("prod", "test"):  # prepare-release's two build types
        images = root / "images" / kind
        images.mkdir(parents=True)
        for name in ("OVMF.fd", "image.img", "image.vmlinuz", "image.initrd"):
            (images / name).write_bytes(f"fake {kind} {name}\n".encode())
        (images / "image.cmdline").write_text(CMDLINE)
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{VERITY}.tar").write_bytes(b"tar")
    (models / f"{VERITY}.tar.verity").write_bytes(b"verity")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "qemu-system-x86_64").write_text(STUB_QEMU.format(python=sys.executable))
    (stubs / "qemu-system-x86_64").chmod(0o755)
    ton = tmp_path / "liteservers.json"
    ton.write_text(json.dumps({"liteservers": [{"ip": 1, "port": 2, "id": {"key": "k"}}]}))
    return Release(root, models, stubs, ton)


def conf_text(release: Release, **node: str) -> str:
    values = {
        "type": "worker",
        "model": MODEL,
        "owner_address": OWNER,
        "root_contract_address": ROOT,
        "worker_coefficient": "1250",
        "node_wallet_key": KEY,
        "ton_config": str(release.ton_config),
        **node,
    }
    return "[node]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v != "")


@dataclass(frozen=True)
class Run:
    argv: list[str]
    spec: Path


def spec_path(argv: list[str]) -> Path:
    (virtfs,) = [a for a in argv if a.startswith("local,path=")]
    return Path(virtfs.split(",")[1].removeprefix("path="))


def run_oracle(release: Release, workdir: Path, conf: str, instance: int | None) -> Run:
    workdir.mkdir()
    (workdir / "worker.conf").write_text(conf)
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(
        PATH=f"{release.stubs}:{env['PATH']}",
        QEMU_ARGV_OUT=str(workdir / "argv.json"),
        MODEL_TAR=str(release.models / f"{VERITY}.tar"),
        TMPDIR=str(workdir),
    )
    flags = [] if instance is None else ["--instance", str(instance)]
    # Flags before the config file: everything after it is QEMU's (argparse.REMAINDER).
    # The operator's two additions go where cocoon-launch appends extra QEMU arguments.
    extra = ["--", "-name", "NAME", "-qmp", "QMP"]
    out = subprocess.run(
        [
            sys.executable,
            str(release.root / "scripts" / "cocoon-launch"),
            *flags,
            "worker.conf",
            *extra,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    argv = json.loads((workdir / "argv.json").read_text())
    return Run(["qemu-system-x86_64", *argv], spec_path(argv))


def run_ours(
    release: Release,
    workdir: Path,
    conf: str,
    instance: int | None,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    workdir.mkdir()
    (workdir / "worker.conf").write_text(conf)
    spec = workdir / "spec"
    flags = [] if instance is None else [f"--instance={instance}"]
    old = Path.cwd()
    os.chdir(workdir)  # the default persistent disk is relative, as in cocoon-launch
    try:
        capsys.readouterr()
        code = main(
            [
                "launch",
                "--print-only",
                f"--prepare-only={spec}",
                "--config=worker.conf",
                f"--release={release.root}",
                f"--model-dir={release.models}",
                *flags,
            ]
        )
    finally:
        os.chdir(old)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return Run(printed.out.splitlines(), spec)


def normalised(run: Run, *, ours: bool, test_mode: bool, instance: int) -> list[str]:
    """Paths that are each side's own, and the listed deliberate differences, made equal."""
    out = []
    for given in run.argv:
        arg = given.replace(str(run.spec), "<SPEC>")
        if ours and arg.startswith("cocoon-instance-"):
            arg = "NAME"
        if ours and arg.startswith("unix:") and arg.endswith(",server=on,wait=off"):
            arg = "QMP"
        if ours and arg.startswith('{"qom-type":"tdx-guest"'):
            # Difference 4: quotes through the launcher's relay, which forwards them to
            # the host's QGS where cocoon-launch points QEMU directly.
            arg = re.sub(
                r'"quote-generation-socket":\{"type":"unix","path":"[^"]+"\}',
                '"quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}',
                arg,
            )
        if ours and ",hostfwd=" in arg:
            # Difference 5: the forwards listen on the pod's loopback only; the
            # pattern demands it of every forward, so an open one stays a difference.
            arg = re.sub(r",hostfwd=tcp:127\.0\.0\.1:(\d+)-", r",hostfwd=tcp::\1-", arg)
        if not ours and not test_mode:
            # Difference 3 (docs/launcher.md): no SSH forward outside test images.
            arg = arg.replace(f",hostfwd=tcp::{12005 + 10 * instance}-:22", "")
        out.append(arg)
    return out


def runtime_vars(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line]
    return {k: v for k, v in pairs}


def tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), bool(p.stat().st_mode & stat.S_IXUSR))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_same_spec(oracle: Path, ours: Path) -> None:
    theirs, mine = tree(oracle), tree(ours)
    assert sorted(theirs) == sorted(mine)
    vars_name = "runtime/runtime.vars"
    assert runtime_vars(oracle / vars_name) == runtime_vars(ours / vars_name)
    for name in theirs:
        if name != vars_name:
            assert theirs[name] == mine[name], name


CASES = {
    "instance 0 with a GPU": ({"gpu": GPU}, 0),
    "instance 3 with a GPU and an HF token": ({"gpu": GPU, "hf_token": "hf_secret"}, 3),
    "instance 9 without a GPU": ({}, 9),
    "instance from the file": ({"instance": "4", "gpu": GPU}, None),
    "test image": ({"test": "true", "gpu": GPU}, 1),
    "fake TON": ({"fake_ton": "true", "ton_config": "", "node_wallet_key": ""}, 2),
    "fake TON with a key and a GPU in test mode": (
        {"fake_ton": "true", "test": "true", "gpu": GPU},
        5,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_launcher_builds_cocoon_launchs_qemu_argv_and_spec_share(
    case: str, release: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node, instance = CASES[case]
    conf = conf_text(release, **node)
    oracle = run_oracle(release, tmp_path / "oracle", conf, instance)
    ours = run_ours(release, tmp_path / "ours", conf, instance, capsys)
    test_mode = node.get("test") == "true"
    index = instance if instance is not None else int(node["instance"])
    assert normalised(ours, ours=True, test_mode=test_mode, instance=index) == normalised(
        oracle, ours=False, test_mode=test_mode, instance=index
    )
    assert_same_spec(oracle.spec, ours.spec)


MUTATIONS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "guest memory": lambda m: m.setattr(_cocoon, "GUEST_MEMORY_GIB", 99),
    "the drive serials": lambda m: m.setattr(
        _plan, "qemu_argv", _without_serial(_cocoon.qemu_argv)
    ),
    "the GPU flag on the cmdline": lambda m: m.setattr(
        _run, "kernel_cmdline", lambda text, conf: text.strip()
    ),
    "a runtime var": lambda m: m.setattr(
        _run, "runtime_vars", lambda conf, model: {"OWNER_ADDRESS": conf.owner_address}
    ),
    "the fake-TON init": lambda m: m.setattr(_run, "fake_ton_init", lambda text: text),
}


def _without_serial(
    build: Callable[..., list[str]],
) -> Callable[..., list[str]]:
    def mutated(*args: object, **kwargs: object) -> list[str]:
        return [a.replace(",serial=persistent", "") for a in build(*args, **kwargs)]

    return mutated


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_deliberate_mutation_of_the_launcher_is_caught_by_the_oracle(
    mutation: str,
    release: Release,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = {"fake_ton": "true"} if "fake" in mutation else {}
    conf = conf_text(release, gpu=GPU, **fake)
    oracle = run_oracle(release, tmp_path / "oracle", conf, 1)
    MUTATIONS[mutation](monkeypatch)
    ours = run_ours(release, tmp_path / "ours", conf, 1, capsys)
    same_argv = normalised(ours, ours=True, test_mode=False, instance=1) == normalised(
        oracle, ours=False, test_mode=False, instance=1
    )
    try:
        assert_same_spec(oracle.spec, ours.spec)
        same_spec = True
    except AssertionError:
        same_spec = False
    assert not (same_argv and same_spec), f"mutating {mutation} went unnoticed"
