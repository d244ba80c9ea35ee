"""A simulated node's quote path: the guest's GET_QUOTE_REQ, the launcher's relay, a test QGS.

On a real node the guest's TDREPORT goes QEMU -> the launcher's
:class:`~cocoon_operator.launcher._quoterelay.QuoteRelay` -> the host's QGS, and
the relay keeps the quote that comes back. kwok's nodes have no QEMU and no QGS,
so the simulation agent runs the same relay per simulated VM, in front of
:class:`SimulatedQgs` (which signs with the test DCAP PKI, as QGS signs with the
platform's PCK), and plays QEMU's part for the simulated guest: one framed
GET_QUOTE_REQ per connection, one GET_QUOTE_RESP back
(``tdx-quote-generator.c:272-299``). The quotes the node report carries are the
ones the relay captured.

The TDREPORT (1024 bytes) is laid out as the TDX module writes it: REPORTMACSTRUCT
(256 bytes, REPORTDATA at 128), TEE_TCB_INFO (239), 17 reserved, then TDINFO
(ATTRIBUTES, XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3).
Like QGS, the test QGS quotes the measurements the report carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from cocoon_operator.attestation.testing.pki import DcapTestPki
from cocoon_operator.attestation.testing.quotes import TdMeasurements, build_td_quote
from cocoon_operator.launcher._quoterelay import CapturedQuote, QuoteRelay, UnixAddress
from cocoon_operator.qgs import (
    MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME,
    PREFIX_SIZE,
    REPORT_DATA_OFFSET,
    REPORT_DATA_SIZE,
    TD_REPORT_SIZE,
    QgsWireError,
    encode_get_quote_error,
    encode_get_quote_request,
    encode_get_quote_response,
    message_length,
    parse_get_quote_request,
    parse_get_quote_response,
)

log = logging.getLogger("cocoon_operator.simulator.quotepath")

TDINFO_OFFSET = 256 + 239 + 17
_MEASUREMENTS_OFFSET = TDINFO_OFFSET + 8 + 8  # after ATTRIBUTES and XFAM
_M = 48


def td_report(measurements: TdMeasurements, report_data: bytes) -> bytes:
    """A TDREPORT of a TD with ``measurements``, binding ``report_data`` (64 bytes)."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError("REPORTDATA is 64 bytes")
    out = bytearray(TD_REPORT_SIZE)
    out[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + REPORT_DATA_SIZE] = report_data
    parts = (
        measurements.mrtd,
        measurements.mrconfigid,
        measurements.mrowner,
        measurements.mrownerconfig,
        *measurements.rtmr,
    )
    for i, part in enumerate(parts):
        out[_MEASUREMENTS_OFFSET + i * _M : _MEASUREMENTS_OFFSET + (i + 1) * _M] = part
    return bytes(out)


def report_measurements(report: bytes) -> TdMeasurements:
    """The measurements a TDREPORT carries (what QGS quotes)."""
    if len(report) != TD_REPORT_SIZE:
        raise ValueError(f"a {len(report)}-byte report is not a TDREPORT")
    parts = [
        report[_MEASUREMENTS_OFFSET + i * _M : _MEASUREMENTS_OFFSET + (i + 1) * _M]
        for i in range(8)
    ]
    return TdMeasurements(
        mrtd=parts[0],
        mrconfigid=parts[1],
        mrowner=parts[2],
        mrownerconfig=parts[3],
        rtmr=(parts[4], parts[5], parts[6], parts[7]),
    )


async def _read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes:
    prefix = await reader.readexactly(PREFIX_SIZE)
    return prefix + await reader.readexactly(message_length(prefix, max_frame=max_frame))


class SimulatedQgs:
    """A quote generation service on a Unix socket that signs with the test DCAP PKI."""

    def __init__(self, pki: DcapTestPki, path: Path, *, quote_version: int = 4) -> None:
        self.pki = pki
        self.address = UnixAddress(path)
        self._version = quote_version
        self._server: asyncio.Server | None = None

    async def start(self) -> SimulatedQgs:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.address.path))
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = parse_get_quote_request(await _read_frame(reader, MAX_REQUEST_FRAME))
                m = report_measurements(request.report)
                quote = build_td_quote(
                    self.pki,
                    mrtd=m.mrtd,
                    rtmr0=m.rtmr[0],
                    rtmr1=m.rtmr[1],
                    rtmr2=m.rtmr[2],
                    rtmr3=m.rtmr[3],
                    mrconfigid=m.mrconfigid,
                    mrowner=m.mrowner,
                    mrownerconfig=m.mrownerconfig,
                    report_data=request.report_data,
                    version=self._version,
                )
                answer = encode_get_quote_response(quote)
            except (QgsWireError, ValueError) as exc:
                log.warning("test QGS: refusing a request: %s", exc)
                answer = encode_get_quote_error()
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class SimulatedQuotePath:
    """One simulated VM's quote relay (the launcher's own class) and its guest's side."""

    def __init__(self, vm: str, socket_path: Path, qgs: UnixAddress) -> None:
        self.vm = vm
        self._latest: CapturedQuote | None = None
        self.relay = QuoteRelay(
            vm=vm, listen=UnixAddress(socket_path), capture=self._capture, upstream=qgs
        )

    def _capture(self, captured: CapturedQuote) -> None:
        self._latest = captured

    @property
    def latest(self) -> CapturedQuote | None:
        """The newest quote the relay captured for this VM (what the launcher would keep)."""
        return self._latest

    async def start(self) -> SimulatedQuotePath:
        await self.relay.start()
        return self

    async def close(self) -> None:
        await self.relay.close()

    async def ask(self, measurements: TdMeasurements, report_data: bytes) -> bytes:
        """What QEMU does for the guest's GetQuote: one request, one answer; the quote."""
        address = self.relay.address
        assert isinstance(address, UnixAddress)
        reader, writer = await asyncio.open_unix_connection(str(address.path))
        try:
            writer.write(encode_get_quote_request(td_report(measurements, report_data)))
            await writer.drain()
            response = parse_get_quote_response(await _read_frame(reader, MAX_RESPONSE_FRAME))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not response.ok:
            raise QuoteRefusedError(f"{self.vm}: no quote ({response.error_code:#x})")
        return response.quote


class QuoteRefusedError(Exception):
    """The guest's GetQuote failed (QEMU reports TDX_VP_GET_QUOTE_ERROR to the guest)."""
