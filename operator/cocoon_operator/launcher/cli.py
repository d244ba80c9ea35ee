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


def _seal_server(args: argparse.Namespace) -> int:
    from cocoon_operator.launcher._seal import cmd_seal_server  # noqa: PLC0415

    return cmd_seal_server(args)


def _add_seal_server(sub: Any) -> None:
    seal = sub.add_parser(
        "seal-server",
        help="run the release's seal-server, its enclave checked first"
        " (the seal-server DaemonSet's command)",
    )
    seal.add_argument("--release", default="/opt/cocoon/release", help="the release's root")
    seal.add_argument(
        "--expect-enclave-sha256",
        required=True,
        help="refuse unless bin/enclave.signed.so has this digest (spec.release.files.enclave)",
    )
    seal.add_argument(
        "--expect-seal-server-sha256",
        default=None,
        help="refuse unless bin/seal-server has this digest (spec.release.files.sealServer)",
    )
    seal.add_argument("--port", type=int, default=12345, help="the vsock port guests connect to")
    seal.add_argument(
        "--ready-file",
        default="/run/cocoon-seal/ready",
        help="written once the enclave is created and the port answers (the readiness probe)",
    )
    seal.add_argument(
        "--state-file",
        default=None,
        help="record the enclave and readiness for the node agent (/run/cocoon/seal-server.json)",
    )
    seal.set_defaults(func=_seal_server)


def add_subparsers(sub: Any) -> None:
    _add_seal_server(sub)
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
    launch.add_argument("--qemu", default="qemu-system-x86_64", help="the QEMU binary to run")
    launch.add_argument(
        "--quote-service",
        default="vsock:2:4050",
        help="the host's quote generation service the relay forwards to"
        " (cocoon-launch's: vsock CID 2 port 4050)",
    )
    launch.add_argument(
        "--health-monitor",
        default="guest",
        help="where the guest's health monitor answers: 'guest' (vsock CID 6+10*instance,"
        " port 9999, as COCOON's health-client), an address (unix:PATH, tcp:HOST:PORT,"
        " vsock:CID:PORT), or 'off'",
    )
    launch.add_argument(
        "--health-seconds",
        type=float,
        default=60.0,
        help="how often to read the guest's measurements from its health monitor",
    )
    launch.add_argument(
        "--powerdown-seconds",
        type=float,
        default=240.0,
        help="on stop, how long the guest has to power down before QEMU is killed",
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
