"""The guest's spec hash, computed by the launcher, against COCOON's own script.

``reprodebian/cocoon-init/cocoon-prepare-spec`` is what the guest runs on its
``/spec`` share to get the hash it measures; it is a shell script over git, so
it runs here as the oracle on the same trees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cocoon_operator.launcher import spec_tree_hash
from cocoon_operator.launcher._spectree import SpecTreeError

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "cocoon"
SCRIPT = REFERENCE / "reprodebian" / "cocoon-init" / "cocoon-prepare-spec"


def oracle(spec: Path, out: Path) -> str:
    # The script asks git for SHA-256 objects with `-c init.defaultObjectFormat=sha256`,
    # which git reads from 2.42 on (the guest's); older ones (this machine's Debian 12
    # has 2.39) need the environment's GIT_DEFAULT_HASH for the same repository.
    env = {**os.environ, "GIT_DEFAULT_HASH": "sha256"}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(spec), str(out)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd="/",  # the guest's: cocoon-init.service sets no WorkingDirectory
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tree = (out / "spec.tree").read_text().strip()
    assert len(tree) == 64, f"git made a SHA-1 tree ({tree}): not what the guest measures"
    return tree


def worker_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec"
    shutil.copytree(REFERENCE / "spec" / "spec-worker", spec)
    for path in [spec, *spec.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    (spec / "global.config.json").write_text('{"@type": "config.global"}\n')
    (spec / "runtime").mkdir()
    (spec / "runtime" / "runtime.vars").write_text("NODE_WALLET_KEY=secret\n")
    (spec / "sub").mkdir()
    (spec / "sub" / "nested.json").write_text("{}\n")
    return spec


def test_the_launcher_computes_the_spec_hash_the_guest_measures(tmp_path: Path) -> None:
    spec = worker_spec(tmp_path)
    assert spec_tree_hash(spec) == oracle(spec, tmp_path / "out")


def test_runtime_is_outside_the_hash_and_an_executable_bit_is_inside(tmp_path: Path) -> None:
    spec = worker_spec(tmp_path)
    before = spec_tree_hash(spec)
    (spec / "runtime" / "runtime.vars").write_text("NODE_WALLET_KEY=another\n")
    assert spec_tree_hash(spec) == before
    (spec / "worker-config.json").chmod(0o755)
    changed = spec_tree_hash(spec)
    assert changed != before
    assert changed == oracle(spec, tmp_path / "out")


def test_what_a_gitignore_in_the_spec_names_is_not_measured_nor_the_gitignore(
    tmp_path: Path,
) -> None:
    spec = worker_spec(tmp_path)
    (spec / "sub" / ".gitignore").write_text("*.tmp\n")
    (spec / "sub" / "scratch.tmp").write_text("x\n")
    assert spec_tree_hash(spec) == oracle(spec, tmp_path / "out")


def test_a_symlink_in_the_spec_is_refused_as_the_guest_refuses_it(tmp_path: Path) -> None:
    spec = worker_spec(tmp_path)
    (spec / "link").symlink_to("init")
    with pytest.raises(SpecTreeError, match="link"):
        spec_tree_hash(spec)
