"""The simulated guest's health monitor: COCOON's ``health-monitor`` protocol, ``tdx`` only.

A real guest runs ``health-monitor --port 9999``
(``reprodebian/cocoon-init/cocoon-health.service:7``) on vsock; the local stack has
no vsock, so the simulated guest serves the same frames on a Unix socket and the
launcher's own client (:mod:`cocoon_operator.launcher._health`) is pointed there,
as ``--health-monitor unix:PATH`` points it on a node.

What is copied, line by line:

- framing: a 4-byte little-endian length, then the message (td's
  ``FramedPipe.h``); requests of at most 16536 bytes (the monitor reads with the
  default limit, ``health-monitor.cpp:326``); a larger one ends the connection,
  as td's ``framed_read`` error ends the monitor's task;
- one answer per request, the connection kept open for the next
  (``health-monitor.cpp:322-348``);
- the first word is the command (``:284-286``); an unknown one is answered
  ``{"error":"Unknown command. Available: ..."}`` (``:300,340``);
- ``tdx`` answers ``render_tdx::get_status()`` (``health-render.cpp:151-198``):
  the build lines, ``Image Hash:`` (the stored base64 hash), ``Attestation
  Data:`` with the TD's registers as ``tdx.cpp:62-95`` prints them (REPORTDATA
  zero: ``make_report(td::UInt512())``, ``health-render.cpp:165``) and the
  image hash computed over them (``tdx.cpp:126-140``), then the
  ``Verification:`` line.

Not simulated: the other commands (``status``, ``sys``, ``svc``, ``logs``,
``gpu``, ``all``, ``eventlog``) render the guest's systemd, /proc and
nvidia-smi state, which a simulated guest does not have; they answer the
unknown-command error, and nothing in the project asks for them.

Fault ``health_mismatch``: the monitor reports an RTMR3 with one byte changed,
and the image hash over it, as a guest whose RTMR3 was extended after its quote
(or a forged monitor) would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path

from cocoon_operator.attestation.testing.quotes import TdMeasurements
from cocoon_operator.launcher._health import MAX_REQUEST_BYTES, PREFIX_SIZE

#: health-monitor.cpp:300
UNKNOWN_COMMAND = "Unknown command. Available: status, logs, sys, svc, tdx, eventlog, gpu, all"
#: What the simulated image says it was built from (health-render.cpp:155-158).
BUILD = ("simulated", "1970-01-01", "cocoon-operator simulator")


def tdx_status(measurements: TdMeasurements) -> str:
    """``render_tdx::get_status()`` for a TD with ``measurements`` (health-render.cpp:151-198)."""
    image_hash = measurements.image_hash
    stored = base64.b64encode(image_hash).decode()
    registers = [
        ("MRTD", measurements.mrtd),
        ("MRCONFIGID", measurements.mrconfigid),
        ("MROWNER", measurements.mrowner),
        ("MROWNERCONFIG", measurements.mrownerconfig),
        *((f"RTMR{i}", r) for i, r in enumerate(measurements.rtmr)),
        ("REPORTDATA", bytes(64)),
    ]
    lines = [
        "=== TDX STATUS ===",
        "",
        "Build:",
        f"  Commit:  {BUILD[0]}",
        f"  Date:    {BUILD[1]}",
        f"  Message: {BUILD[2]}",
        "",
        f"Image Hash: {stored}",
        "",
        "Attestation Data:",
        # tdx.cpp:84-87: the collateral root hash (none for a bare report), the data, the hash.
        f"COLLATERAL_ROOT_HASH: {bytes(48).hex()}",
        "TDX attestation data",
        *(f"{name}: {value.hex()}" for name, value in registers),
        f"image_hash: {image_hash.hex()}",
        "",
        "Verification:",
        "  Image hash: + VERIFIED",
    ]
    return "\n".join(lines) + "\n"


def mismatched(measurements: TdMeasurements) -> TdMeasurements:
    """The fault's measurements: RTMR3 with its first byte changed."""
    r0, r1, r2, r3 = measurements.rtmr
    return dataclasses.replace(measurements, rtmr=(r0, r1, r2, bytes([r3[0] ^ 0xFF]) + r3[1:]))


def answer(request: str, measurements: TdMeasurements) -> str:
    """The monitor's answer to one request (health-monitor.cpp:283-301,336-341)."""
    words = request.split()
    command = words[0] if words else ""
    if command == "tdx":
        return tdx_status(measurements)
    return '{"error":"' + UNKNOWN_COMMAND + '"}'


class SimulatedHealthMonitor:
    """One simulated guest's monitor on a Unix socket; ``measurements`` is read per request
    (so a fault turned on at run time shows in the next answer)."""

    def __init__(self, path: Path, measurements: Callable[[], TdMeasurements]) -> None:
        self.path = path
        self._measurements = measurements
        self._server: asyncio.Server | None = None

    async def start(self) -> SimulatedHealthMonitor:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                prefix = await reader.readexactly(PREFIX_SIZE)
                (length,) = struct.unpack("<I", prefix)
                if length > MAX_REQUEST_BYTES:
                    return  # td's framed_read refuses it: the monitor's task ends
                request = (await reader.readexactly(length)).decode(errors="replace")
                text = answer(request, self._measurements()).encode()
                writer.write(struct.pack("<I", len(text)) + text)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
