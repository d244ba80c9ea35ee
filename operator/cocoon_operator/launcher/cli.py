"""``cocoon-operator launch``: the launcher Pod's command (see :mod:`cocoon_operator.launcher`)."""

from __future__ import annotations

import argparse
from typing import Any


def _launch(args: argparse.Namespace) -> int:
    from cocoon_operator.launcher._run import cmd_launch  # noqa: PLC0415

    return cmd_launch(args)


def add_subparsers(sub: Any) -> None:
    launch = sub.add_parser("launch", help="boot this worker's TDX VM (the launcher Pod's command)")
    launch.add_argument("--config", required=True, help="the worker.ini the operator rendered")
    launch.add_argument("--vcpus", type=int, required=True)
    launch.add_argument("--memory-gib", type=int, required=True)
    launch.add_argument("--disk-gib", type=int, required=True)
    launch.add_argument("--machine", required=True)
    for name in ("ovmf", "kernel", "initrd"):
        launch.add_argument(f"--expect-{name}-sha256", required=True)
    launch.add_argument("--release-dir", default="/opt/cocoon/release")
    launch.add_argument("--model-dir", default="/var/lib/cocoon/models")
    launch.add_argument("--state-dir", default="/run/cocoon", help="shared with the node agent")
    launch.add_argument("--qemu", default="qemu-system-x86_64")
    launch.add_argument("--powerdown-seconds", type=float, default=240.0)
    launch.add_argument(
        "--dry-run", action="store_true", help="check everything, print QEMU's argv, start nothing"
    )
    launch.set_defaults(func=_launch)
