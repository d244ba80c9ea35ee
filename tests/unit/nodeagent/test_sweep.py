"""The janitor of launcher state: a gone launcher's directory (its VM's secrets) goes,
a live one's never does, and nothing but pod-UID directories is touched."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cocoon_operator.nodeagent._sweep import LOCK_NAME, PodDir, stale, sweep

UID_A = "0b7c6f4e-1a2b-4c3d-8e9f-0123456789ab"
UID_B = "1c8d7a5f-2b3c-4d4e-9fa0-123456789abc"
UID_C = "2d9e8b60-3c4d-4e5f-a0b1-23456789abcd"
NOW = 1_800_000_000.0


def pod_dir(root: Path, uid: str, *, age: float, secrets: bool = True) -> Path:
    d = root / uid
    (d / "vm-3" / "spec" / "runtime").mkdir(parents=True)
    if secrets:
        (d / "vm-3" / "spec" / "runtime" / "runtime.vars").write_text("node_wallet_key=x\n")
    (d / "instance-3.json").write_text('{"instance": 3}')
    (d / LOCK_NAME).touch()
    for path in (d / "vm-3", d / "instance-3.json", d / LOCK_NAME, d):
        os.utime(path, (NOW - age, NOW - age))
    return d


def test_only_unlocked_pod_dirs_untouched_for_the_grace_go_oldest_first_bounded() -> None:
    dirs = [
        PodDir(UID_A, locked=False, touched_at=NOW - 3600),
        PodDir(UID_B, locked=True, touched_at=NOW - 86400),  # a live launcher: never
        PodDir(UID_C, locked=False, touched_at=NOW - 30),  # a launcher starting
        PodDir("not-a-pod-uid", locked=False, touched_at=NOW - 86400),  # never ours
        PodDir("0b7c6f4e-1a2b-4c3d-8e9f-0123456789ac", locked=False, touched_at=NOW - 7200),
    ]
    assert stale(dirs, now=NOW, grace=600, limit=10) == [
        "0b7c6f4e-1a2b-4c3d-8e9f-0123456789ac",
        UID_A,
    ]
    assert stale(dirs, now=NOW, grace=600, limit=1) == ["0b7c6f4e-1a2b-4c3d-8e9f-0123456789ac"]
    assert stale(dirs, now=NOW, grace=600, limit=0) == []


def test_a_gone_launchers_secrets_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    gone = pod_dir(tmp_path, UID_A, age=3600)
    live = pod_dir(tmp_path, UID_B, age=3600)
    fresh = pod_dir(tmp_path, UID_C, age=10)
    (tmp_path / "instance-0.json").write_text("{}")  # an older launcher's, outside pods/
    fd = os.open(live / LOCK_NAME, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the launcher holds it
        assert sweep(tmp_path, now=NOW, grace=600) == [UID_A]
    finally:
        os.close(fd)
    assert not gone.exists()
    assert (live / "vm-3" / "spec" / "runtime" / "runtime.vars").exists()
    assert fresh.exists()
    assert (tmp_path / "instance-0.json").exists()


def test_a_missing_pods_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert sweep(tmp_path / "absent", now=NOW) == []


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    pods = tmp_path / "pods"
    pods.mkdir()
    (pods / UID_A).symlink_to(target)
    assert sweep(pods, now=NOW + 10**6, grace=600) == []
    assert (target / "keep").exists()
