"""The simulated guest's health monitor, asked by the launcher's own client."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from cocoon_operator.attestation.testing.quotes import TdMeasurements
from cocoon_operator.launcher import HealthError, parse_tdx_status, read_guest_health
from cocoon_operator.launcher._health import ask
from cocoon_operator.launcher._quoterelay import UnixAddress
from cocoon_operator.simulator._health import SimulatedHealthMonitor, mismatched

M = TdMeasurements.from_label("release-1")


async def test_the_launchers_client_reads_the_simulated_guests_measurements(
    tmp_path: Path,
) -> None:
    monitor = await SimulatedHealthMonitor(tmp_path / "h.sock", lambda: M).start()
    try:
        health = await asyncio.to_thread(read_guest_health, UnixAddress(monitor.path))
    finally:
        await monitor.close()
    assert health.image_hash == M.image_hash.hex()
    assert health.mrtd == M.mrtd.hex()
    assert health.rtmr == tuple(r.hex() for r in M.rtmr)


async def test_the_fault_reports_another_rtmr3_and_the_image_hash_over_it(tmp_path: Path) -> None:
    faulty = [False]
    monitor = await SimulatedHealthMonitor(
        tmp_path / "h.sock", lambda: mismatched(M) if faulty[0] else M
    ).start()
    try:
        faulty[0] = True
        health = await asyncio.to_thread(read_guest_health, UnixAddress(monitor.path))
    finally:
        await monitor.close()
    assert health.rtmr is not None and health.rtmr[:3] == tuple(r.hex() for r in M.rtmr[:3])
    assert health.rtmr[3] != M.rtmr[3].hex()
    assert health.image_hash == mismatched(M).image_hash.hex() != M.image_hash.hex()


async def test_an_unknown_command_is_answered_with_cocoons_error(tmp_path: Path) -> None:
    monitor = await SimulatedHealthMonitor(tmp_path / "h.sock", lambda: M).start()
    try:
        raw = await asyncio.to_thread(ask, UnixAddress(monitor.path), "sys")
    finally:
        await monitor.close()
    # health-monitor.cpp:300,340
    assert raw.startswith(b'{"error":"Unknown command. Available: status, logs, sys,')
    with pytest.raises(HealthError):
        parse_tdx_status(raw.decode())


async def test_the_connection_serves_one_answer_per_request_and_stays_open(tmp_path: Path) -> None:
    monitor = await SimulatedHealthMonitor(tmp_path / "h.sock", lambda: M).start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(monitor.path))
        answers = []
        for _ in range(2):
            writer.write(b"\x03\x00\x00\x00tdx")
            await writer.drain()
            (length,) = struct.unpack("<I", await reader.readexactly(4))
            answers.append(await reader.readexactly(length))
        writer.close()
    finally:
        await monitor.close()
    assert answers[0] == answers[1] and b"image_hash: " + M.image_hash.hex().encode() in answers[0]
