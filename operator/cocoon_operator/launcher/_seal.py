"""``cocoon-operator seal-server``: run the release's seal server, checked; say when it is ready.

The seal-server DaemonSet's command (``desired/sealserver.py``), in the launcher
image that holds the release (``images/launcher/Dockerfile``).

Before start: ``bin/enclave.signed.so`` must have the digest the CocoonWorkers'
``spec.release.files.enclave`` names. The keys the enclave derives for a guest
are sealed to its MRENCLAVE (reference/cocoon/docs/seal-keys.md, "Derive
Persistent Key": ``SGX_KEYPOLICY_MRENCLAVE``), and COCOON insists on the
release's own binary (scripts/dist-worker/README.md:35): another enclave would
hand every VM keys that open none of its disks. ``bin/seal-server`` is checked
too when a digest is given (the README allows building your own, so it is optional).

Then ``seal-server --enclave-path ... --port 12345`` (its options:
tee/sgx-enclave/seal-server.cpp:345-365; 12345 is its default, line 338, and
where guests connect). Its output is relayed line by line to ours.

Readiness: the protocol has no ping. Its one request, ``getPersistentKey``
(docs/seal-keys.md, "TL Schema"), needs a TDX report whose MAC only a TD on
this CPU can produce, so the host cannot ask a real question. What can be
known from outside: (1) the line ``SGX enclave created: path=...`` that
seal-server.cpp:49 logs once ``sgx_create_enclave`` and the quoting enclave's
target info and quote size succeeded (a failure there is ``LOG(FATAL)``,
line 294, and the process ends), right before it opens its vsock listener
(line 312); (2) then a vsock connection to this host's port succeeding, i.e. the
listener is there. When both hold, the ready file is written (the pod's
readiness probe tests it); it is removed when the server exits, and the
exit status is the server's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoon_operator.launcher._plan import LaunchError
from cocoon_operator.launcher._run import sha256_file

log = logging.getLogger("cocoon_operator.launcher.seal")

SEAL_SERVER: Final = "bin/seal-server"  # scripts/prepare-release:76
ENCLAVE: Final = "bin/enclave.signed.so"  # scripts/prepare-release:76
SEAL_PORT: Final = 12345  # seal-server.cpp:338, the guests' port
#: seal-server.cpp:49: logged once the enclave and the quoting enclave's info are set up.
ENCLAVE_CREATED: Final = "SGX enclave created:"
VMADDR_CID_LOCAL: Final = 1  # this host, from the host (as the node agent probes)

#: Try a vsock connection to (cid, port); None when it connected, else why not.
Connect = Callable[[int, int], str | None]


def check_binaries(release: Path, enclave: str, seal_server: str | None) -> None:
    """Refuse to start when the release's seal-server files are not the spec's."""
    for rel, want in ((ENCLAVE, enclave), (SEAL_SERVER, seal_server)):
        path = release / rel
        if not path.is_file():
            raise LaunchError(f"release file {rel} not found at {path}")
        if want is None:
            continue
        got = sha256_file(path)
        if got != want:
            raise LaunchError(
                f"release file {rel} ({path}) has sha256 {got}, the spec expects {want}:"
                " the guests' sealed keys would not be theirs"
            )


def seal_argv(release: Path, port: int) -> list[str]:
    """dist-worker/README.md:33 (``./bin/seal-server --enclave-path ./bin/enclave.signed.so``),
    the port given explicitly."""
    return [
        str(release / SEAL_SERVER),
        "--enclave-path",
        str(release / ENCLAVE),
        "--port",
        str(port),
    ]


@dataclass
class Readiness:
    """Watches the server's output for the enclave line, then checks its listener."""

    ready_file: Path
    port: int
    connect: Connect
    enclave_created: bool = False
    ready: bool = False
    # The record the node agent reports (its contract: SEAL_STATE_FILE); None: none kept.
    state_file: Path | None = None
    enclave: str = ""

    def _record(self, ready: bool) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"enclave": self.enclave, "ready": ready}) + "\n")
        tmp.replace(self.state_file)

    def saw(self, line: str) -> None:
        if ENCLAVE_CREATED in line:
            self.enclave_created = True

    def check(self) -> bool:
        """Write the ready file once the enclave is up and the port answers."""
        if self.ready or not self.enclave_created:
            return self.ready
        problem = self.connect(VMADDR_CID_LOCAL, self.port)
        if problem is None:
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self.ready_file.write_text("ready\n")
            self.ready = True
            self._record(True)
            log.info("seal server ready: enclave created, vsock port %d answers", self.port)
        return self.ready

    def clear(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self._record(False)


MAX_LINE_BYTES = 64 * 1024  # a log line longer than this is cut


def supervise(argv: Sequence[str], readiness: Readiness, poll: float = 1.0) -> int:
    """Run the server, relay its output, keep the ready file true; return its exit status.

    The output is read from the pipe's descriptor and split into lines here: a
    buffered ``readline`` after ``select`` can pull several lines into Python's
    buffer and leave them there while the descriptor stays quiet (seal-server
    logs its start and then waits for guests), so the enclave line would go unseen.
    """
    readiness.clear()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    pending = b""

    def lines(data: bytes) -> bytes:
        *complete, rest = data.split(b"\n")
        if len(rest) > MAX_LINE_BYTES:  # no newline for too long: take it as a line
            complete, rest = [*complete, rest], b""
        for raw in complete:
            line = raw.decode(errors="replace") + "\n"
            sys.stderr.write(line)
            readiness.saw(line)
        return rest

    try:
        while True:
            for _ in sel.select(timeout=poll):
                pending = lines(pending + os.read(fd, 65536))
            readiness.check()
            if proc.poll() is not None:
                rest = lines(pending + proc.stdout.read())
                if rest:
                    lines(rest + b"\n")
                return proc.returncode
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        sel.close()
        readiness.clear()


def connect_vsock(cid: int, port: int, timeout: float = 2.0) -> str | None:
    """Connect to ``cid:port`` over AF_VSOCK and close at once (no request is sent)."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        return "this kernel or Python has no AF_VSOCK"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((cid, port))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def cmd_seal_server(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    release = Path(args.release)
    try:
        check_binaries(release, args.expect_enclave_sha256, args.expect_seal_server_sha256)
    except LaunchError as exc:
        print(f"seal-server: {exc}", file=sys.stderr)
        return 1
    readiness = Readiness(
        Path(args.ready_file),
        args.port,
        connect_vsock,
        state_file=Path(args.state_file) if args.state_file else None,
        enclave=args.expect_enclave_sha256,
    )
    started = time.monotonic()
    status = supervise(seal_argv(release, args.port), readiness)
    log.info("seal server exited with status %s after %.0f s", status, time.monotonic() - started)
    return status
