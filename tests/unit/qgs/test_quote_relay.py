"""The launcher's quote relay between QEMU and the host's quote generation service.

A fake QGS on a loopback Unix socket answers as QGS does (read the 4-byte length,
then the message; write one framed answer: qgs_server.cpp:158-230); the client
writes what QEMU writes and reads the answer the way QEMU does (``_frames``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cocoon_operator.attestation import parse_tdx_quote
from cocoon_operator.launcher._quoterelay import (
    HOST_QGS,
    CapturedQuote,
    InetAddress,
    QuoteRelay,
    QuoteStore,
    RelayLimits,
    UnixAddress,
    VsockAddress,
    parse_address,
    quote_generation_socket_json,
    relay_socket_path,
    start_quote_relay,
)
from cocoon_operator.qgs import (
    MAX_RESPONSE_FRAME,
    encode_get_quote_request,
    parse_get_quote_request,
)
from tests.unit.qgs import _frames

REPORT_DATA = bytes(range(100, 164))
REPORT = _frames.td_report(REPORT_DATA)
REQUEST = _frames.qemu_request(REPORT)
ERROR = _frames.qgs_error_response()
AT = datetime(2025, 6, 20, 12, 0, tzinfo=UTC)

Answer = Callable[[bytes], Awaitable[bytes | None]]


@dataclass
class FakeQgs:
    """Records every request it is sent; ``answer`` decides what goes back (None: hang up)."""

    answer: Answer
    received: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            prefix = await reader.readexactly(4)
            raw = prefix + await reader.readexactly(int.from_bytes(prefix, "big"))
            self.received.append(raw)
            reply = await self.answer(raw)
            if reply is not None:
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def answering(reply: bytes, delay: float = 0.0) -> Answer:
    async def answer(raw: bytes) -> bytes | None:
        await asyncio.sleep(delay)
        return reply

    return answer


@asynccontextmanager
async def fake_qgs(path: Path, answer: Answer) -> AsyncIterator[FakeQgs]:
    qgs = FakeQgs(answer)
    server = await asyncio.start_unix_server(qgs.handle, path=str(path))
    try:
        yield qgs
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def relay(
    sock_dir: Path, store: QuoteStore | None = None, **limits: float
) -> AsyncIterator[QuoteRelay]:
    kept = store or QuoteStore()
    async with QuoteRelay(
        vm="instance-3",
        listen=UnixAddress(sock_dir / "relay.sock"),
        upstream=UnixAddress(sock_dir / "qgs.sock"),
        capture=kept.add,
        limits=RelayLimits(**limits),  # type: ignore[arg-type]
        clock=lambda: AT,
    ) as running:
        yield running


async def ask(relay_path: Path, data: bytes, *, end_write: bool = False) -> bytes:
    """One QEMU-like exchange: connect, write, read the answer until the relay hangs up."""
    reader, writer = await asyncio.open_unix_connection(str(relay_path))
    writer.write(data)
    await writer.drain()
    if end_write:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


async def test_a_quote_passes_through_the_relay_byte_for_byte_and_is_kept(
    sock_dir: Path, real_quote: bytes
) -> None:
    quote_data = parse_tdx_quote(real_quote).body.report_data
    request = _frames.qemu_request(_frames.td_report(quote_data))
    reply = _frames.qgs_quote_response(real_quote)
    store = QuoteStore()

    async with fake_qgs(sock_dir / "qgs.sock", answering(reply)) as qgs, relay(sock_dir, store):
        got = await ask(sock_dir / "relay.sock", request)

    assert qgs.received == [request]
    assert got == reply
    assert _frames.qemu_reads(got) == ("quote", real_quote)
    [kept] = store.latest("instance-3")
    assert kept.quote == real_quote
    assert kept.at == AT
    assert kept.request == parse_get_quote_request(request)
    assert kept.report_data == quote_data
    assert parse_tdx_quote(kept.quote).body.report_data == kept.report_data


async def test_a_request_qemu_would_not_write_but_qgs_accepts_passes_unchanged(
    sock_dir: Path, sample_quote: bytes
) -> None:
    """Minor version 0 and an id list: the relay forwards the bytes, not a re-encoding."""
    request = encode_get_quote_request(REPORT, bytes(range(16)), minor_version=0)
    reply = _frames.qgs_quote_response(sample_quote, selected_id=bytes(range(16)))

    async with fake_qgs(sock_dir / "qgs.sock", answering(reply)) as qgs, relay(sock_dir):
        got = await ask(sock_dir / "relay.sock", request)

    assert qgs.received == [request]
    assert got == reply


BAD_REQUESTS: dict[str, tuple[bytes, str]] = {
    "truncated": (REQUEST[:500], "refused:truncated"),
    "oversized": (_frames.prefix(1 << 20) + REQUEST[4:], "refused:oversized"),
    "wrong version": (REQUEST[:4] + b"\x02" + REQUEST[5:], "refused:bad-version"),
    "length mismatch": (
        REQUEST[:12] + (1052).to_bytes(4, "little") + REQUEST[16:],
        "refused:size-mismatch",
    ),
    "a response instead of a request": (ERROR, "refused:bad-type"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_a_bad_request_gets_qgs_error_answer_and_the_next_request_succeeds(
    sock_dir: Path, sample_quote: bytes, case: str
) -> None:
    bad, outcome = BAD_REQUESTS[case]
    reply = _frames.qgs_quote_response(sample_quote)
    store = QuoteStore()

    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(reply)) as qgs,
        relay(sock_dir, store) as running,
    ):
        refused = await ask(sock_dir / "relay.sock", bad, end_write=True)
        served = await ask(sock_dir / "relay.sock", REQUEST)

    assert refused == ERROR
    assert _frames.qemu_reads(refused) == ("error", b"error code")
    assert served == reply
    assert qgs.received == [REQUEST]  # the bad one never reached the service
    assert [c.quote for c in store.latest("instance-3")] == [sample_quote]
    assert running.outcomes == {outcome: 1, "relayed": 1}


async def test_the_relay_ends_its_answer_at_once_rather_than_waiting_for_qemu_to_hang_up(
    sock_dir: Path, sample_quote: bytes
) -> None:
    """A client reading to end of stream gets it as soon as the answer is written."""
    reply = _frames.qgs_quote_response(sample_quote)

    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(reply)),
        relay(sock_dir, linger_timeout=30),
    ):
        got = await asyncio.wait_for(ask(sock_dir / "relay.sock", REQUEST), timeout=2)

    assert got == reply


async def test_a_client_that_stalls_mid_request_is_answered_when_the_read_times_out(
    sock_dir: Path, sample_quote: bytes
) -> None:
    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(_frames.qgs_quote_response(sample_quote))),
        relay(sock_dir, request_timeout=0.2) as running,
    ):
        got = await ask(sock_dir / "relay.sock", REQUEST[:100])

    assert got == ERROR
    assert running.outcomes == {"refused:timeout": 1}


async def test_an_unreachable_quote_service_is_reported_to_qemu_as_a_qgs_error(
    sock_dir: Path, sample_quote: bytes
) -> None:
    reply = _frames.qgs_quote_response(sample_quote)
    store = QuoteStore()

    async with relay(sock_dir, store) as running:
        down = await ask(sock_dir / "relay.sock", REQUEST)
        async with fake_qgs(sock_dir / "qgs.sock", answering(reply)):
            up = await ask(sock_dir / "relay.sock", REQUEST)

    assert down == ERROR
    assert _frames.qemu_reads(down)[0] == "error"
    assert up == reply
    assert running.outcomes == {"upstream-unreachable": 1, "relayed": 1}
    assert len(store.latest("instance-3")) == 1


async def test_a_quote_service_that_does_not_answer_in_time_is_reported_as_a_qgs_error(
    sock_dir: Path, sample_quote: bytes
) -> None:
    slow = answering(_frames.qgs_quote_response(sample_quote), delay=2.0)
    store = QuoteStore()

    async with (
        fake_qgs(sock_dir / "qgs.sock", slow),
        relay(sock_dir, store, upstream_timeout=0.2) as running,
    ):
        got = await ask(sock_dir / "relay.sock", REQUEST)

    assert got == ERROR
    assert running.outcomes == {"upstream-timeout": 1}
    assert store.latest("instance-3") == []


async def test_a_quote_service_that_hangs_up_without_answering_is_reported_as_a_qgs_error(
    sock_dir: Path,
) -> None:
    """QGS closes without a word when it cannot build any answer (qgs_server.cpp:221-225)."""

    async def hang_up(raw: bytes) -> bytes | None:
        return None

    async with fake_qgs(sock_dir / "qgs.sock", hang_up), relay(sock_dir) as running:
        got = await ask(sock_dir / "relay.sock", REQUEST)

    assert got == ERROR
    assert running.outcomes == {"upstream-invalid:truncated": 1}


async def test_the_quote_services_own_error_answer_passes_unchanged_and_nothing_is_kept(
    sock_dir: Path,
) -> None:
    refusal = _frames.qgs_error_response(0x12006)
    store = QuoteStore()

    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(refusal)),
        relay(sock_dir, store) as running,
    ):
        got = await ask(sock_dir / "relay.sock", REQUEST)

    assert got == refusal
    assert store.latest("instance-3") == []
    assert running.outcomes == {"passed-error": 1}


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (_frames.prefix(30) + _frames.header(1, 30) + bytes(14), "upstream-invalid:size-mismatch"),
        (_frames.prefix(MAX_RESPONSE_FRAME) + bytes(64), "upstream-invalid:oversized"),
        (REQUEST, "upstream-invalid:bad-type"),
    ],
    ids=["sizes that disagree", "more than QEMU can take", "a request echoed"],
)
async def test_a_malformed_answer_from_the_quote_service_becomes_a_qgs_error_and_is_not_kept(
    sock_dir: Path, answer: bytes, outcome: str
) -> None:
    store = QuoteStore()

    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(answer)),
        relay(sock_dir, store) as running,
    ):
        got = await ask(sock_dir / "relay.sock", REQUEST)

    assert got == ERROR
    assert store.latest("instance-3") == []
    assert running.outcomes == {outcome: 1}


async def test_a_failing_capture_does_not_cost_the_guest_its_quote(
    sock_dir: Path, sample_quote: bytes
) -> None:
    reply = _frames.qgs_quote_response(sample_quote)

    def broken(captured: CapturedQuote) -> None:
        raise RuntimeError("store is full")

    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(reply)),
        QuoteRelay(
            vm="instance-3",
            listen=UnixAddress(sock_dir / "relay.sock"),
            upstream=UnixAddress(sock_dir / "qgs.sock"),
            capture=broken,
        ) as running,
    ):
        got = await ask(sock_dir / "relay.sock", REQUEST)

    assert got == reply
    assert running.outcomes == {"relayed": 1, "capture-failed": 1}


async def test_concurrent_requests_are_relayed_each_to_its_own_answer(
    sock_dir: Path, tdx_dir: Path
) -> None:
    quotes = {
        bytes([i]) * 64: (tdx_dir / name).read_bytes()
        for i, name in enumerate(("dcap-qvl/tdx_quote", "cocoon/quote.dat"))
    }

    async def by_report_data(raw: bytes) -> bytes | None:
        await asyncio.sleep(0.2)  # both are in flight at once
        data = parse_get_quote_request(raw).report_data
        return _frames.qgs_quote_response(quotes[data])

    store = QuoteStore()
    async with fake_qgs(sock_dir / "qgs.sock", by_report_data), relay(sock_dir, store):
        answers = await asyncio.gather(
            *(
                ask(sock_dir / "relay.sock", _frames.qemu_request(_frames.td_report(data)))
                for data in quotes
            )
        )

    assert [_frames.qemu_reads(a) for a in answers] == [("quote", q) for q in quotes.values()]
    assert {c.report_data: c.quote for c in store.latest("instance-3")} == quotes


async def test_connections_beyond_the_limit_are_answered_with_a_qgs_error_at_once(
    sock_dir: Path, sample_quote: bytes
) -> None:
    reply = _frames.qgs_quote_response(sample_quote)

    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(reply, delay=0.3)),
        relay(sock_dir, max_connections=1) as running,
    ):
        first = asyncio.create_task(ask(sock_dir / "relay.sock", REQUEST))
        await asyncio.sleep(0.1)
        second = await ask(sock_dir / "relay.sock", REQUEST)
        assert not first.done()
        assert await first == reply

    assert second == ERROR
    assert running.outcomes == {"busy": 1, "relayed": 1}


def test_the_store_keeps_only_the_latest_quotes_of_each_vm_newest_first() -> None:
    store = QuoteStore(keep=2)
    request = parse_get_quote_request(REQUEST)
    for vm, n in (("a", 1), ("a", 2), ("b", 3), ("a", 4)):
        store.add(CapturedQuote(vm=vm, request=request, quote=bytes([n]), at=AT))

    assert [c.quote for c in store.latest("a")] == [b"\x04", b"\x02"]
    assert [c.quote for c in store.latest("b")] == [b"\x03"]
    assert store.latest("c") == []
    with pytest.raises(ValueError, match="at least one"):
        QuoteStore(keep=0)


def test_a_captured_request_whose_report_is_no_tdreport_has_no_report_data() -> None:
    request = parse_get_quote_request(_frames.qemu_request(b"not a TDREPORT"))

    assert CapturedQuote(vm="a", request=request, quote=b"q", at=AT).report_data is None


async def test_the_relay_socket_is_private_to_its_owner_and_removed_on_close(
    sock_dir: Path,
) -> None:
    path = sock_dir / "relay.sock"
    async with relay(sock_dir):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600

    assert not path.exists()


async def test_a_relay_on_loopback_tcp_reports_the_port_it_bound(
    sock_dir: Path, sample_quote: bytes
) -> None:
    reply = _frames.qgs_quote_response(sample_quote)
    async with (
        fake_qgs(sock_dir / "qgs.sock", answering(reply)),
        QuoteRelay(
            vm="instance-3",
            listen=InetAddress("127.0.0.1", 0),
            upstream=UnixAddress(sock_dir / "qgs.sock"),
            capture=QuoteStore().add,
        ) as running,
    ):
        bound = running.address
        assert isinstance(bound, InetAddress)
        assert bound.port != 0
        reader, writer = await asyncio.open_connection(bound.host, bound.port)
        writer.write(REQUEST)
        got = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()

    assert got == reply


def test_the_relay_thread_serves_a_blocking_client_and_removes_its_socket_on_stop(
    sock_dir: Path, sample_quote: bytes
) -> None:
    """The launcher is synchronous: the relay runs on its own loop in a thread."""
    reply = _frames.qgs_quote_response(sample_quote)
    store = QuoteStore()

    async def serve_qgs(ready: asyncio.Event, done: asyncio.Event) -> None:
        async with fake_qgs(sock_dir / "qgs.sock", answering(reply)):
            ready.set()
            await done.wait()

    def blocking_ask() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(sock_dir / "relay.sock"))
            sock.sendall(REQUEST)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    async def scenario() -> bytes:
        ready, done = asyncio.Event(), asyncio.Event()
        qgs = asyncio.create_task(serve_qgs(ready, done))
        await ready.wait()
        runner = start_quote_relay(
            vm="instance-3",
            listen=UnixAddress(sock_dir / "relay.sock"),
            upstream=UnixAddress(sock_dir / "qgs.sock"),
            capture=store.add,
        )
        try:
            return await asyncio.to_thread(blocking_ask)
        finally:
            await asyncio.to_thread(runner.stop)
            done.set()
            await qgs

    assert asyncio.run(scenario()) == reply
    assert [c.quote for c in store.latest("instance-3")] == [sample_quote]
    assert not (sock_dir / "relay.sock").exists()


def test_a_relay_that_cannot_listen_says_why_when_started(sock_dir: Path) -> None:
    with pytest.raises(OSError):
        start_quote_relay(
            vm="instance-3",
            listen=UnixAddress(sock_dir / "missing-dir" / "relay.sock"),
            capture=QuoteStore().add,
        )


def test_qemu_is_pointed_at_the_relay_with_a_unix_socket_address() -> None:
    path = relay_socket_path(Path("/run/cocoon"), 3)
    fragment = quote_generation_socket_json(UnixAddress(path))

    assert fragment == (
        '"quote-generation-socket":{"type":"unix","path":"/run/cocoon/instance-3.qgs"}'
    )
    tdx_object = json.loads('{"qom-type":"tdx-guest","id":"tdx0",' + fragment + "}")
    assert tdx_object["quote-generation-socket"] == {
        "type": "unix",
        "path": "/run/cocoon/instance-3.qgs",
    }


def test_the_host_service_default_is_what_cocoon_launch_gives_qemu() -> None:
    """scripts/cocoon-launch: {"type":"vsock","cid":"2","port":"4050"}."""
    assert quote_generation_socket_json(HOST_QGS) == (
        '"quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}'
    )


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("vsock:2:4050", VsockAddress(2, 4050)),
        ("unix:/run/qgs.sock", UnixAddress(Path("/run/qgs.sock"))),
        ("tcp:127.0.0.1:4050", InetAddress("127.0.0.1", 4050)),
        ("tcp:[::1]:4050", InetAddress("::1", 4050)),
    ],
)
def test_an_upstream_address_is_read_from_its_flag_form(text: str, address: object) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "vsock:2", "unix:", "tcp:4050", "http://qgs", "vsock:a:b"])
def test_an_address_in_no_known_form_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not unix:PATH"):
        parse_address(text)
