"""Remove the state directories of launchers that are gone (bounded; never a live one's).

Each launcher pod keeps its VM's state (the spec share with the node wallet
key and HF token, its sockets, the VM record and quotes) in a directory of its
own, ``/run/cocoon/pods/<pod UID>/`` (``desired/launcher.py`` mounts it as the
launcher's ``/run/cocoon`` by ``subPathExpr``). The launcher empties it when
its QEMU has exited; a launcher killed with its VM (the kubelet's SIGKILL at
the end of the grace period, an OOM kill) cannot, and its pod's directory,
secrets included, would stay until the node reboots (``/run`` is a tmpfs).

The launcher holds an exclusive ``flock`` on ``launcher.lock`` in its
directory for as long as it or its QEMU lives (QEMU inherits the descriptor).
So a directory whose lock nobody holds, untouched for ``grace`` seconds, has
no launcher: its pod is gone, or its container is between restarts, which
prepare the directory afresh anyway (the kubelet creates the ``subPath``
directory again at each container start). That directory is removed, at most
``limit`` per pass, and only under names shaped like a pod UID: nothing else
under the directory is ever touched.

``stale`` decides (pure); :func:`sweep` gathers and removes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cocoon_operator.launcher import STATE_LOCK

log = logging.getLogger("cocoon_operator.nodeagent.sweep")

LOCK_NAME: Final = STATE_LOCK
POD_DIRS: Final = "pods"  # under the launchers' state directory, /run/cocoon
_POD_UID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEFAULT_GRACE_SECONDS: Final = 600.0
DEFAULT_LIMIT: Final = 32


@dataclass(frozen=True)
class PodDir:
    """What the sweep knows of one launcher directory."""

    name: str
    locked: bool  # a launcher (or its QEMU) holds launcher.lock
    touched_at: float  # newest mtime of the directory and its entries (epoch seconds)


def stale(dirs: Iterable[PodDir], *, now: float, grace: float, limit: int) -> list[str]:
    """The directories to remove now: pod-UID names, no lock held, untouched for
    ``grace`` seconds; the longest untouched first, at most ``limit``."""
    gone = [
        d for d in dirs if _POD_UID.match(d.name) and not d.locked and now - d.touched_at >= grace
    ]
    gone.sort(key=lambda d: (d.touched_at, d.name))
    return [d.name for d in gone[: max(limit, 0)]]


def lock_held(path: Path) -> bool:
    """Whether someone holds ``path``'s flock (a missing file: nobody)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep the directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _touched_at(directory: Path) -> float:
    newest = directory.lstat().st_mtime
    with os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def gather(pods_dir: Path, locked: Callable[[Path], bool] = lock_held) -> list[PodDir]:
    """The launcher directories under ``pods_dir`` (real directories only, no symlinks)."""
    out = []
    try:
        with os.scandir(pods_dir) as entries:
            candidates = [e for e in entries if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    for entry in candidates:
        path = Path(entry.path)
        try:
            out.append(PodDir(entry.name, locked(path / LOCK_NAME), _touched_at(path)))
        except OSError as exc:
            log.warning("launcher state %s: %s", entry.name, exc)
    return out


def sweep(
    pods_dir: Path,
    *,
    now: float,
    grace: float = DEFAULT_GRACE_SECONDS,
    limit: int = DEFAULT_LIMIT,
    locked: Callable[[Path], bool] = lock_held,
) -> list[str]:
    """Remove the stale launcher directories under ``pods_dir``; their names."""
    removed = []
    for name in stale(gather(pods_dir, locked), now=now, grace=grace, limit=limit):
        path = pods_dir / name
        if locked(path / LOCK_NAME):  # taken since it was looked at: a launcher started
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed the state of launcher pod %s (no launcher for %.0f s)", name, grace)
        removed.append(name)
    return removed


def cmd_sweep(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.grace_seconds < 60:
        print("launcher-state-sweep: --grace-seconds must be at least 60", file=sys.stderr)
        return 2
    while True:
        try:
            sweep(args.dir, now=time.time(), grace=args.grace_seconds, limit=args.limit)
        except OSError as exc:
            log.warning("sweep of %s: %s", args.dir, exc)
        if args.once:
            return 0
        time.sleep(args.interval)


def add_subparsers(sub: Any) -> None:
    cmd = sub.add_parser(
        "launcher-state-sweep",
        help="remove the state directories of launcher pods that are gone (the node"
        " agent's janitor container)",
    )
    cmd.add_argument("--dir", type=Path, default=Path("/host/run/cocoon") / POD_DIRS)
    cmd.add_argument("--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS)
    cmd.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="directories per pass")
    cmd.add_argument("--interval", type=float, default=60.0)
    cmd.add_argument("--once", action="store_true")
    cmd.set_defaults(func=cmd_sweep)
