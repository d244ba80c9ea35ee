"""The launcher's client of COCOON's guest health monitor: td's framing, the ``tdx``
answer's shape, bounds and timeouts, and the health file handed to the node agent.

The answers below are written out as COCOON prints them (``tee/cocoon/health-render.cpp``
``render_tdx::get_status``, ``tee/cocoon/tdx.cpp`` ``operator<<``), not produced by the
simulator, so the client and the simulated monitor cannot share a mistake.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cocoon_operator.launcher import (
    MAX_HEALTH_FILE_BYTES,
    GuestHealth,
    HealthError,
    HealthFileError,
    guest_address,
    health_file_path,
    is_health_file,
    parse_health_file,
    parse_tdx_status,
    read_guest_health,
    write_health_file,
)
from cocoon_operator.launcher._health import MAX_ANSWER_BYTES, ask, encode_frame, frame_length
from cocoon_operator.launcher._healthfile import render_health_file
from cocoon_operator.launcher._quoterelay import UnixAddress, VsockAddress
from cocoon_operator.launcher._run import HealthPoller, health_monitor_address

MRTD = "a1" * 48
RTMR = ("b0" * 48, "b1" * 48, "b2" * 48, "b3" * 48)
IMAGE_HASH = "c4" * 32
AT = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)

# health-render.cpp:151-198 with a TDREPORT (make_report ok, get_data ok, is_tdx):
# the build lines (:155-158), "Image Hash:" from /etc/tdx/tdx_image_hash.b64 (:160-161),
# "Attestation Data:" (:181) and AttestationData's operator<< (tdx.cpp:81-95, 62-75),
# then the verification lines (:188-193).
COCOON_TDX_ANSWER = (
    "=== TDX STATUS ===\n\n"
    "Build:\n  Commit:  0123abcd\n  Date:    2026-11-30\n  Message: release\n\n"
    "Image Hash: xMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=\n\n"
    "Attestation Data:\n"
    f"COLLATERAL_ROOT_HASH: {'00' * 48}\n"
    "TDX attestation data\n"
    f"MRTD: {MRTD}\n"
    f"MRCONFIGID: {'00' * 48}\n"
    f"MROWNER: {'00' * 48}\n"
    f"MROWNERCONFIG: {'00' * 48}\n"
    f"RTMR0: {RTMR[0]}\nRTMR1: {RTMR[1]}\nRTMR2: {RTMR[2]}\nRTMR3: {RTMR[3]}\n"
    f"REPORTDATA: {'00' * 64}\n"
    f"image_hash: {IMAGE_HASH}\n"
    "\nVerification:\n  Image hash: + VERIFIED\n"
)
# health-render.cpp:167-173: no TDREPORT, the RTMRs from sysfs (read_rtmr, :131-145).
COCOON_FALLBACK_ANSWER = (
    "=== TDX STATUS ===\n\nBuild:\n  Commit:  0123abcd\n  Date:    2026-11-30\n"
    "  Message: release\n\nImage Hash: (not available)\n\n"
    "Error generating TDX report: [Error : 0 : TDX is not supported on this platform]\n"
    f"RTMR0: {RTMR[0]}\nRTMR1: {RTMR[1]}\nRTMR2: {RTMR[2]}\nRTMR3: {RTMR[3]}\n"
)


def test_a_frame_is_a_little_endian_32_bit_length_then_the_message() -> None:
    # td's framed_write: as<uint32>(head) = size, then the bytes (FramedPipe.h).
    assert encode_frame(b"tdx") == b"\x03\x00\x00\x00tdx"
    assert frame_length(b"\x10\x27\x00\x00", max_size=MAX_ANSWER_BYTES) == 10000


def test_a_frame_announcing_more_than_the_bound_is_refused_on_its_prefix() -> None:
    with pytest.raises(HealthError, match="announces"):
        frame_length(struct.pack("<I", MAX_ANSWER_BYTES + 1), max_size=MAX_ANSWER_BYTES)
    with pytest.raises(HealthError):
        encode_frame(b"x" * 16537)  # the monitor reads requests of at most 16536 bytes


def test_the_tdx_answer_gives_the_computed_image_hash_mrtd_and_rtmrs() -> None:
    health = parse_tdx_status(COCOON_TDX_ANSWER)
    assert health == GuestHealth(image_hash=IMAGE_HASH, mrtd=MRTD, rtmr=RTMR)


def test_without_a_tdreport_the_answer_gives_the_rtmrs_only() -> None:
    health = parse_tdx_status(COCOON_FALLBACK_ANSWER)
    assert health == GuestHealth(image_hash=None, mrtd=None, rtmr=RTMR)


@pytest.mark.parametrize(
    "text",
    [
        '{"error":"Unknown command. Available: status, logs, sys, svc, tdx, eventlog, gpu, all"}',
        "=== TDX STATUS ===\n\nImage Hash: (not available)\n",
        COCOON_TDX_ANSWER.replace(f"MRTD: {MRTD}", f"MRTD: {MRTD[:-2]}"),
        COCOON_TDX_ANSWER + f"RTMR3: {'ff' * 48}\n",
    ],
    ids=["error-answer", "no-measurement", "short-mrtd", "rtmr3-twice"],
)
def test_an_answer_that_is_not_cocoons_tdx_status_is_refused(text: str) -> None:
    with pytest.raises(HealthError):
        parse_tdx_status(text)


def test_a_worker_instances_monitor_is_at_its_guest_cid_port_9999() -> None:
    # cocoon-launch:295,563: CID 6 + 10 x instance; health-monitor.cpp:448: port 9999.
    assert guest_address(0) == VsockAddress(6, 9999)
    assert guest_address(3) == VsockAddress(36, 9999)
    assert health_monitor_address("guest", 2) == VsockAddress(26, 9999)
    assert health_monitor_address("off", 2) is None
    assert health_monitor_address("unix:/run/x.sock", 2) == UnixAddress(Path("/run/x.sock"))


@contextlib.contextmanager
def monitor(
    tmp_path: Path, serve: Callable[[socket.socket], None]
) -> Iterator[tuple[UnixAddress, list[bytes]]]:
    """A Unix-socket server running ``serve`` on one connection; what it received."""
    path = tmp_path / "health.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    received: list[bytes] = []

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            received.append(conn.recv(4096))
            serve(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield UnixAddress(path), received
    finally:
        server.close()
        thread.join(timeout=5)


def test_the_client_sends_one_tdx_frame_and_reads_one_answer(tmp_path: Path) -> None:
    body = COCOON_TDX_ANSWER.encode()
    with monitor(tmp_path, lambda c: c.sendall(struct.pack("<I", len(body)) + body)) as (
        address,
        received,
    ):
        health = read_guest_health(address, timeout=5)
    assert received == [b"\x03\x00\x00\x00tdx"]
    assert health.rtmr == RTMR and health.image_hash == IMAGE_HASH


def test_an_oversized_answer_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    huge = struct.pack("<I", 20 * (1 << 20))  # the monitor's own write limit, 20 MiB
    with (
        monitor(tmp_path, lambda c: c.sendall(huge + b"x" * 100)) as (address, _),
        pytest.raises(HealthError, match="announces"),
    ):
        ask(address, timeout=5)


def test_a_monitor_that_never_answers_costs_at_most_the_timeout(tmp_path: Path) -> None:
    done = threading.Event()  # the monitor stays silent until the test is over
    with monitor(tmp_path, lambda c: done.wait(5)) as (address, _):
        started = time.monotonic()
        try:
            with pytest.raises(HealthError):
                ask(address, timeout=0.3)
            assert time.monotonic() - started < 1.4
        finally:
            done.set()


def test_a_closed_connection_mid_answer_is_an_error(tmp_path: Path) -> None:
    with (
        monitor(tmp_path, lambda c: c.sendall(struct.pack("<I", 100) + b"partial")) as (address, _),
        pytest.raises(HealthError, match="closed"),
    ):
        ask(address, timeout=5)


def test_no_monitor_listening_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(HealthError):
        read_guest_health(UnixAddress(tmp_path / "absent.sock"), timeout=1)


def test_the_health_file_reads_back_bound_to_its_pod_and_instance(tmp_path: Path) -> None:
    health = GuestHealth(IMAGE_HASH, MRTD, RTMR)
    path = write_health_file(tmp_path, 4, "uid-4", AT, health)
    assert path == health_file_path(tmp_path, 4) and is_health_file(path.name)
    assert not is_health_file("instance-4.json") and not is_health_file("instance-4.quotes.json")
    parsed = parse_health_file(path.read_text())
    assert (parsed.instance, parsed.pod_uid, parsed.checked_at, parsed.health) == (
        4,
        "uid-4",
        AT,
        health,
    )
    assert oct(path.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace('"version":1', '"version":2'),
        lambda t: t.replace('"instance":4', '"instance":12'),
        lambda t: t.replace('"podUid":"uid-4"', '"podUid":""'),
        lambda t: t.replace("Z", ""),
        lambda t: t.replace(MRTD, MRTD.upper()),
        lambda t: t.replace(f'"{RTMR[3]}"', "null"),
        lambda t: t + " " * MAX_HEALTH_FILE_BYTES,
    ],
    ids=["version", "instance", "pod-uid", "naive-time", "upper-hex", "null-rtmr", "too-large"],
)
def test_a_health_file_that_is_not_the_launchers_is_refused(edit: Callable[[str], str]) -> None:
    text = render_health_file(4, "uid-4", AT, GuestHealth(IMAGE_HASH, MRTD, RTMR))
    with pytest.raises(HealthFileError):
        parse_health_file(edit(text))


def test_the_poller_writes_each_answer_and_leaves_no_file_while_unreachable(
    tmp_path: Path,
) -> None:
    now = [100.0]
    answers: list[GuestHealth | None] = [None, GuestHealth(IMAGE_HASH, MRTD, RTMR)]

    def read(_: object) -> GuestHealth:
        got = answers.pop(0)
        if got is None:
            raise HealthError("no route to the guest")
        return got

    poller = HealthPoller(
        VsockAddress(36, 9999), tmp_path, 3, "uid-3", every=60, read=read, clock=lambda: now[0]
    )
    assert not poller.due()  # the guest is given a moment to boot
    now[0] += 30
    assert poller.due() and poller.poll(AT) is None
    assert not health_file_path(tmp_path, 3).exists()
    assert not poller.due()
    now[0] += 60
    assert poller.poll(AT) == GuestHealth(IMAGE_HASH, MRTD, RTMR)
    parsed = parse_health_file(health_file_path(tmp_path, 3).read_text())
    assert (parsed.pod_uid, parsed.instance) == ("uid-3", 3)
