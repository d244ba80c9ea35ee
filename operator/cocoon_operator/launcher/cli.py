"""``cocoon-operator launch``: the launcher Pod's command (see :mod:`cocoon_operator.launcher`)."""

from __future__ import annotations

import argparse
from typing import Any


def _launch(args: argparse.Namespace) -> int:
    from cocoon_operator.launcher._run import cmd_launch  # noqa: PLC0415

    return cmd_launch(args)


# The release's image files and the flag naming each one's digest (scripts/prepare-release).
DIGEST_FLAGS = (
    ("ovmf", "OVMF.fd"),
    ("image", "image.img"),
    ("kernel", "image.vmlinuz"),
    ("initrd", "image.initrd"),
    ("cmdline", "image.cmdline"),
)


def add_subparsers(sub: Any) -> None:
    launch = sub.add_parser(
        "launch",
        help="boot this worker's TDX VM as COCOON's scripts/cocoon-launch would"
        " (the launcher Pod's command)",
    )
    launch.add_argument(
        "--config", required=True, help="COCOON's worker.conf ([node]; [launcher] is ours)"
    )
    launch.add_argument(
        "--release",
        "--release-dir",
        dest="release",
        default="/opt/cocoon/release",
        help="the release, laid out as COCOON's release tarball (scripts/prepare-release)",
    )
    launch.add_argument("--instance", type=int, default=None, help="overrides [node] instance")
    for flag, name in DIGEST_FLAGS:
        launch.add_argument(
            f"--expect-{flag}-sha256", default=None, help=f"refuse unless {name} has this digest"
        )
    launch.add_argument(
        "--model-dir", default=None, help="where <verity>.tar and <verity>.tar.verity are"
    )
    launch.add_argument("--state-dir", default="/run/cocoon", help="shared with the node agent")
    launch.add_argument("--qemu", default="qemu-system-x86_64")
    launch.add_argument(
        "--quote-service",
        default="vsock:2:4050",
        help="the host's quote generation service the relay forwards to"
        " (cocoon-launch's: vsock CID 2 port 4050)",
    )
    launch.add_argument(
        "--control-public-key",
        default=None,
        help="the operator's Ed25519 control key (base64): the relay on 12002+10i forwards"
        " to the worker's port only what it signed for this pod ($POD_UID)",
    )
    launch.add_argument(
        "--control-listen",
        default="0.0.0.0",  # noqa: S104 - the pod's own address; the hostPort publishes it
        help="the control relay's address (its port is 12002+10i, the one the pod publishes)",
    )
    launch.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="the control relay's port (default 12002+10i; 0: any free port, for tests)",
    )
    launch.add_argument("--powerdown-seconds", type=float, default=240.0)
    launch.add_argument(
        "--print-only",
        action="store_true",
        help="print QEMU's argv, one argument per line, and start nothing",
    )
    launch.add_argument(
        "--prepare-only",
        metavar="DIR",
        default=None,
        help="write the prepared spec share into DIR and start nothing",
    )
    launch.set_defaults(func=_launch)
