"""The host's side of COCOON's guest health monitor: ask the guest's ``tdx`` status.

Every COCOON guest runs ``health-monitor --port 9999``
(``reprodebian/cocoon-init/cocoon-health.service:7``), a listener on vsock port
9999 (``tee/cocoon/health-monitor.cpp:396-397,448``) that COCOON's own
``health-client`` queries from the host at the guest's CID
(``tee/cocoon/health-client.cpp:41``). The launcher knows that CID: it is the one
it gives QEMU, 6 + 10 x instance for a worker (``scripts/cocoon-launch:295,563,604``;
``health-client.cpp:116-126``).

The wire protocol is td's framing (``ton`` submodule, ``tdnet/td/net/FramedPipe.h``,
used by ``health-client.cpp:51,60`` and ``health-monitor.cpp:326,345``): each
message is a 4-byte length (``as<uint32>``, the host's byte order: little-endian
on x86-64) followed by that many bytes. The client sends one request, the
command words joined by spaces (``health-client.cpp:197-205``); the monitor
answers one frame per request, on the same connection, and keeps it open
(``health-monitor.cpp:322-348``). An unknown command or a failed one is answered
``{"error":"<message>"}`` (``:340``). The monitor reads requests of at most
16536 bytes (td's ``DEFAULT_MAX_FRAMED_MESSAGE_SIZE``) and writes answers of
up to 20 MiB (``:345``); we ask only for ``tdx`` and read at most
:data:`MAX_ANSWER_BYTES`.

``tdx`` (``health-monitor.cpp:248-250`` -> ``health-render.cpp:151-198``) answers
text: the build, ``Image Hash: <base64>`` read from ``/etc/tdx/tdx_image_hash.b64``,
then, from a fresh TDREPORT (REPORTDATA zero), the attestation data as
``tee/cocoon/tdx.cpp:62-95`` prints it (``MRTD: <hex>``, ``MRCONFIGID``,
``MROWNER``, ``MROWNERCONFIG``, ``RTMR0``..``RTMR3``, ``REPORTDATA``, and
``image_hash: <hex>``, the SHA-256 COCOON computes over them, ``tdx.cpp:126-140``).
When no TDREPORT can be made it prints the RTMRs from sysfs instead
(``health-render.cpp:167-173,131-145``). :func:`parse_tdx_status` takes the
computed image hash, MRTD and RTMRs (whatever of them the answer carries).

What it says is unsigned: the guest (or anything between) can say anything. It
can only ever close the readiness gate (a mismatch with the verified quote),
never open it.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Final

from cocoon_operator.launcher._quoterelay import (
    Address,
    InetAddress,
    UnixAddress,
    VsockAddress,
)

#: ``health-monitor.cpp:448`` (``DEFAULT_VSOCK_PORT``), ``cocoon-health.service:7``.
HEALTH_PORT: Final = 9999
#: ``scripts/cocoon-launch:295`` (worker base CID), ``:563`` (+ 10 x instance).
WORKER_CID_BASE: Final = 6
#: td's framing: a 4-byte length (``FramedPipe.h``).
PREFIX_SIZE: Final = 4
#: The largest request the monitor reads (td's ``DEFAULT_MAX_FRAMED_MESSAGE_SIZE``).
MAX_REQUEST_BYTES: Final = 16536
#: The largest answer we read. ``tdx`` answers about 1.2 KB (eight 96-hex lines, a
#: 64-hex hash, the build); anything far larger is not a ``tdx`` status.
MAX_ANSWER_BYTES: Final = 64 * 1024
TDX_COMMAND: Final = "tdx"
MEASUREMENT_HEX: Final = 96  # 48 bytes: MRTD, RTMRs
IMAGE_HASH_HEX: Final = 64  # SHA-256
DEFAULT_TIMEOUT_SECONDS: Final = 3.0


def guest_address(instance: int) -> VsockAddress:
    """Where the health monitor of worker instance ``instance`` listens, from the host."""
    if not 0 <= instance <= 9:
        raise ValueError(f"instance {instance} is not 0..9")
    return VsockAddress(cid=WORKER_CID_BASE + 10 * instance, port=HEALTH_PORT)


class HealthError(Exception):
    """The monitor could not be asked, or its answer is not a ``tdx`` status."""


def encode_frame(payload: bytes, *, max_size: int = MAX_REQUEST_BYTES) -> bytes:
    """One td frame: the little-endian 32-bit length, then ``payload``."""
    if len(payload) > max_size:
        raise HealthError(f"a {len(payload)}-byte message is larger than {max_size} bytes")
    return struct.pack("<I", len(payload)) + payload


def frame_length(prefix: bytes, *, max_size: int) -> int:
    """The length a frame's prefix announces; refused above ``max_size`` before reading on."""
    if len(prefix) != PREFIX_SIZE:
        raise HealthError(f"a frame prefix is {PREFIX_SIZE} bytes, not {len(prefix)}")
    (length,) = struct.unpack("<I", prefix)
    if length > max_size:
        raise HealthError(f"the monitor announces a {length}-byte answer (at most {max_size})")
    return int(length)


@dataclass(frozen=True)
class GuestHealth:
    """What the guest's health monitor says about its TD (hex, lower case; None: not said)."""

    image_hash: str | None
    mrtd: str | None
    rtmr: tuple[str, str, str, str] | None

    @property
    def empty(self) -> bool:
        return self.image_hash is None and self.mrtd is None and self.rtmr is None


_LINE = re.compile(r"^(MRTD|RTMR[0-3]|image_hash): ([0-9a-fA-F]+)\s*$")
_LENGTHS: Final = {"image_hash": IMAGE_HASH_HEX}


def parse_tdx_status(text: str) -> GuestHealth:
    """The image hash, MRTD and RTMRs of a ``tdx`` answer (``health-render.cpp:151-198``).

    Lines other than those (the build, the stored base64 hash, MRCONFIGID..,
    REPORTDATA, COCOON's own VERIFIED line) are not used. A value of the wrong
    length, or a key given twice with two values, makes the whole answer
    unusable: it is not what COCOON prints. An error answer
    (``{"error":...}``, ``health-monitor.cpp:340``) is a :class:`HealthError`.
    """
    if text.startswith('{"error":'):
        raise HealthError(f"the health monitor answered an error: {text[:200]}")
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        key, value = match.group(1), match.group(2).lower()
        want = _LENGTHS.get(key, MEASUREMENT_HEX)
        if len(value) != want:
            raise HealthError(f"{key} is {len(value)} hex digits, not {want}")
        if found.get(key, value) != value:
            raise HealthError(f"{key} is given twice with two values")
        found[key] = value
    rtmrs = [found.get(f"RTMR{i}") for i in range(4)]
    rtmr = None
    if all(r is not None for r in rtmrs):
        r0, r1, r2, r3 = (str(r) for r in rtmrs)
        rtmr = (r0, r1, r2, r3)
    health = GuestHealth(found.get("image_hash"), found.get("MRTD"), rtmr)
    if health.empty:
        raise HealthError("the answer carries no image hash, MRTD or RTMRs")
    return health


def _connect(address: Address, timeout: float) -> socket.socket:
    if isinstance(address, UnixAddress):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[int, int] = str(address.path)
    elif isinstance(address, InetAddress):
        return socket.create_connection((address.host, address.port), timeout=timeout)
    else:
        family = getattr(socket, "AF_VSOCK", None)
        if family is None:
            raise HealthError("this kernel or Python has no AF_VSOCK")
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = (address.cid, address.port)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HealthError("the health monitor did not answer in time")
        sock.settimeout(left)
        chunk = sock.recv(min(size - len(out), 65536))
        if not chunk:
            raise HealthError(f"the connection closed after {len(out)} of {size} bytes")
        out += chunk
    return bytes(out)


def ask(
    address: Address,
    command: str = TDX_COMMAND,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_answer: int = MAX_ANSWER_BYTES,
) -> bytes:
    """Send one command and read its one answer, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(encode_frame(command.encode()))
            length = frame_length(_recv_exactly(sock, PREFIX_SIZE, deadline), max_size=max_answer)
            return _recv_exactly(sock, length, deadline)
    except OSError as exc:
        raise HealthError(f"{address}: {exc.strerror or exc}") from None


def read_guest_health(address: Address, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> GuestHealth:
    """The guest's measurements as its health monitor at ``address`` reports them."""
    answer = ask(address, TDX_COMMAND, timeout=timeout)
    try:
        text = answer.decode()
    except UnicodeDecodeError:
        raise HealthError("the answer is not text") from None
    return parse_tdx_status(text)
