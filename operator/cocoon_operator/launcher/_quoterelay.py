"""The quote relay: QEMU's ``quote-generation-socket``, forwarded unchanged to the host's QGS.

QEMU opens one connection per guest GetQuote, writes one framed GET_QUOTE_REQ
and reads one framed GET_QUOTE_RESP (``tdx-quote-generator.c:272-299``). The
relay stands where QEMU expects the quote generation service: it reads that
request, checks it (:mod:`cocoon_operator.qgs`), writes the very same bytes to
the real service (vsock CID 2 port 4050, QGS's default: ``qgs.conf:2``), reads
the answer, checks it, and writes the very same bytes back. The guest cannot
tell. Every quote that passes is handed to a capture callback, so the launcher
keeps the quotes its VM produced (see :class:`QuoteStore`).

When there is no quote to give, the relay answers the way QGS itself does: a
GET_QUOTE_RESP carrying ``QGS_MSG_ERROR_UNEXPECTED`` and no body
(``qgs_ql_logic.cpp:152-154,201``; ``qgs_msg_lib.cpp:343-391``). QEMU turns that
into ``TDX_VP_GET_QUOTE_ERROR`` for the guest (``tdx-quote-generator.c:153-158``),
exactly as it would for a QGS that failed; a closed connection would end the
same way (``:106-109``) but only the error answer says so in QEMU's log. A
refused request costs its own connection only: the next one is served afresh.

Point QEMU at the relay with a Unix socket (QEMU's ``SocketAddress`` allows
``inet``, ``unix``, ``vsock`` and ``fd``: ``qapi/sockets.json``); see
:func:`quote_generation_socket_json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol

from cocoon_operator.qgs import (
    MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME,
    PREFIX_SIZE,
    GetQuoteRequest,
    GetQuoteResponse,
    QgsError,
    QgsWireError,
    WireErrorReason,
    encode_get_quote_error,
    message_length,
    parse_get_quote_request,
    parse_get_quote_response,
    td_report_data,
)

log = logging.getLogger("cocoon_operator.launcher.quoterelay")


@dataclass(frozen=True)
class UnixAddress:
    path: Path

    def qemu(self) -> dict[str, str]:
        return {"type": "unix", "path": str(self.path)}

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class InetAddress:
    host: str
    port: int

    def qemu(self) -> dict[str, str]:
        return {"type": "inet", "host": self.host, "port": str(self.port)}

    def __str__(self) -> str:
        return f"tcp:{self.host}:{self.port}"


@dataclass(frozen=True)
class VsockAddress:
    cid: int
    port: int

    def qemu(self) -> dict[str, str]:
        return {"type": "vsock", "cid": str(self.cid), "port": str(self.port)}

    def __str__(self) -> str:
        return f"vsock:{self.cid}:{self.port}"


Address = UnixAddress | InetAddress | VsockAddress

HOST_QGS: Final = VsockAddress(cid=2, port=4050)
"""Where COCOON's own launcher points QEMU (``scripts/cocoon-launch``): the host's QGS."""


def parse_address(text: str) -> Address:
    """``unix:/path``, ``tcp:host:port`` or ``vsock:cid:port`` (a flag's value)."""
    kind, _, rest = text.partition(":")
    try:
        if kind == "unix" and rest:
            return UnixAddress(Path(rest))
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            if host:
                return InetAddress(host.strip("[]"), int(port))
        if kind == "vsock":
            cid, _, port = rest.partition(":")
            return VsockAddress(int(cid), int(port))
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not unix:PATH, tcp:HOST:PORT or vsock:CID:PORT")


def quote_generation_socket_json(address: Address) -> str:
    """The ``tdx-guest`` object's property, in QEMU's JSON ``-object`` syntax.

    Same shape as the launcher's current fragment, e.g.
    ``"quote-generation-socket":{"type":"unix","path":"/run/cocoon/instance-3.qgs"}``;
    QEMU parses it with ``visit_type_SocketAddress`` (``tdx.c`` ``tdx_guest_set_qgs``).
    """
    return '"quote-generation-socket":' + json.dumps(address.qemu(), separators=(",", ":"))


def relay_socket_path(state_dir: Path, instance: int) -> Path:
    """Where an instance's relay listens: beside its QMP socket, one per VM."""
    return state_dir / f"instance-{instance}.qgs"


@dataclass(frozen=True)
class RelayLimits:
    """Bounds on one exchange. QEMU gives a whole GetQuote 30 s
    (``tdx-quote-generator.c:247``) and allows 16 in flight (``tdx-quote-generator.h:19``):
    the relay gives up on the service first, so QEMU hears an answer, not its own timeout.
    """

    request_timeout: float = 5.0
    connect_timeout: float = 3.0
    upstream_timeout: float = 25.0
    reply_timeout: float = 5.0
    max_request_frame: int = MAX_REQUEST_FRAME
    max_response_frame: int = MAX_RESPONSE_FRAME
    max_connections: int = 16
    linger_timeout: float = 1.0
    max_discard: int = 1 << 20


@dataclass(frozen=True)
class CapturedQuote:
    """A quote the VM's guest obtained, with the request that asked for it."""

    vm: str
    request: GetQuoteRequest
    quote: bytes
    at: datetime

    @property
    def report_data(self) -> bytes | None:
        """The REPORTDATA the guest asked to be quoted (None if its report is no TDREPORT)."""
        try:
            return td_report_data(self.request.report)
        except QgsWireError:
            return None


class QuoteStore:
    """The latest ``keep`` quotes of each VM, newest first.

    Locked: the relay thread adds while the launcher's main thread reads.
    """

    def __init__(self, keep: int = 8) -> None:
        if keep < 1:
            raise ValueError("a quote store keeps at least one quote per VM")
        self._keep = keep
        self._lock = threading.Lock()
        self._quotes: dict[str, deque[CapturedQuote]] = {}

    def add(self, captured: CapturedQuote) -> None:
        with self._lock:
            kept = self._quotes.setdefault(captured.vm, deque(maxlen=self._keep))
            kept.appendleft(captured)

    def latest(self, vm: str) -> list[CapturedQuote]:
        with self._lock:
            return list(self._quotes.get(vm, ()))


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes:
    """One prefixed message, refused on its prefix alone if it is too large."""
    try:
        prefix = await reader.readexactly(PREFIX_SIZE)
    except asyncio.IncompleteReadError as exc:
        raise QgsWireError(
            WireErrorReason.TRUNCATED,
            f"connection closed after {len(exc.partial)} of {PREFIX_SIZE} prefix bytes",
        ) from None
    length = message_length(prefix, max_frame=max_frame)
    try:
        return prefix + await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise QgsWireError(
            WireErrorReason.TRUNCATED,
            f"connection closed after {len(exc.partial)} of {length} message bytes",
        ) from None


async def _open(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(address, UnixAddress):
        return await asyncio.open_unix_connection(str(address.path))
    if isinstance(address, InetAddress):
        return await asyncio.open_connection(address.host, address.port)
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (address.cid, address.port))
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class QuoteRelay:
    """One VM's relay: listens where QEMU connects, forwards to ``upstream``.

    ``capture`` sees every successful quote; its failures are logged, never felt by
    the guest. :attr:`outcomes` counts what happened to each connection (stable keys:
    ``relayed``, ``passed-error``, ``refused:<reason>``, ``upstream-unreachable``,
    ``upstream-timeout``, ``upstream-invalid:<reason>``, ``busy``, ``capture-failed``).
    """

    def __init__(
        self,
        *,
        vm: str,
        listen: UnixAddress | InetAddress,
        capture: Callable[[CapturedQuote], None],
        upstream: Address = HOST_QGS,
        limits: RelayLimits | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.vm = vm
        self.listen = listen
        self.upstream = upstream
        self.limits = limits or RelayLimits()
        self._capture = capture
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: Counter[str] = Counter()
        self._error_reply = encode_get_quote_error(QgsError.UNEXPECTED)

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(self._outcomes)

    @property
    def address(self) -> UnixAddress | InetAddress:
        """Where QEMU should connect (for ``InetAddress`` port 0: the port bound)."""
        if isinstance(self.listen, InetAddress) and self._server is not None:
            host, port = self._server.sockets[0].getsockname()[:2]
            return InetAddress(str(host), int(port))
        return self.listen

    async def start(self) -> UnixAddress | InetAddress:
        if isinstance(self.listen, UnixAddress):
            path = self.listen.path
            self._server = await asyncio.start_unix_server(self._handle, path=str(path))
            os.chmod(path, 0o600)  # QEMU runs as the launcher's user; nobody else asks
        else:
            self._server = await asyncio.start_server(
                self._handle, self.listen.host, self.listen.port
            )
        log.info("quote relay for %s: %s -> %s", self.vm, self.address, self.upstream)
        return self.address

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if isinstance(self.listen, UnixAddress):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(self.listen.path).st_mode):
                    self.listen.path.unlink()

    async def __aenter__(self) -> QuoteRelay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        busy = len(self._tasks) >= self.limits.max_connections
        if task is not None:
            self._tasks.add(task)
        try:
            if busy:
                self._outcomes["busy"] += 1
                log.warning(
                    "quote relay for %s: more than %d connections at once",
                    self.vm,
                    self.limits.max_connections,
                )
                reply = self._error_reply
            else:
                reply = await self._exchange(reader)
            async with asyncio.timeout(self.limits.reply_timeout):
                writer.write(reply)
                await writer.drain()
                writer.write_eof()
            await self._discard_rest(reader)
        except (OSError, TimeoutError) as exc:
            log.warning("quote relay for %s: could not answer QEMU: %r", self.vm, exc)
        except asyncio.CancelledError:
            # Only close() cancels a connection. Ending quietly keeps Python 3.11's
            # streams from logging the cancellation as an error.
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            await _close(writer)

    async def _discard_rest(self, reader: asyncio.StreamReader) -> None:
        """Wait (bounded) for the client to hang up, discarding what it still sends.

        Closing a socket that holds unread bytes resets the connection, and the reset
        can destroy the answer before QEMU reads it (a refused request is answered
        before it is read to its end). QEMU closes as soon as it has the answer.
        """
        discarded = 0
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(self.limits.linger_timeout):
                while discarded <= self.limits.max_discard and (chunk := await reader.read(65536)):
                    discarded += len(chunk)

    async def _exchange(self, reader: asyncio.StreamReader) -> bytes:
        """The bytes to answer one connection with: the service's own, or QGS's error."""
        try:
            raw, request = await self._read_request(reader)
            answer, response = await self._forward(raw)
        except _Refusal as refusal:
            self._outcomes[refusal.outcome] += 1
            log.warning("quote relay for %s: %s", self.vm, refusal)
            return self._error_reply
        if not response.ok:
            self._outcomes["passed-error"] += 1
            log.info(
                "quote relay for %s: the quote service refused (%#x)", self.vm, response.error_code
            )
            return answer
        self._outcomes["relayed"] += 1
        try:
            self._capture(
                CapturedQuote(vm=self.vm, request=request, quote=response.quote, at=self._clock())
            )
        except Exception:
            self._outcomes["capture-failed"] += 1
            log.exception("quote relay for %s: capturing a quote failed", self.vm)
        return answer

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, GetQuoteRequest]:
        try:
            async with asyncio.timeout(self.limits.request_timeout):
                raw = await _read_frame(reader, self.limits.max_request_frame)
            return raw, parse_get_quote_request(raw, max_frame=self.limits.max_request_frame)
        except QgsWireError as exc:
            raise _Refusal(f"refused:{exc.reason.value}", f"request refused: {exc}") from None
        except TimeoutError:
            raise _Refusal("refused:timeout", "request refused: not complete in time") from None

    async def _forward(self, raw: bytes) -> tuple[bytes, GetQuoteResponse]:
        """The service's answer to ``raw``, checked; any failure is a :class:`_Refusal`."""
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                reader, writer = await _open(self.upstream)
        except (OSError, TimeoutError) as exc:
            raise _Refusal(
                "upstream-unreachable", f"quote service {self.upstream}: {exc!r}"
            ) from None
        try:
            async with asyncio.timeout(self.limits.upstream_timeout):
                writer.write(raw)
                await writer.drain()
                answer = await _read_frame(reader, self.limits.max_response_frame)
            response = parse_get_quote_response(answer, max_frame=self.limits.max_response_frame)
        except TimeoutError:
            raise _Refusal(
                "upstream-timeout", f"quote service {self.upstream}: no answer in time"
            ) from None
        except OSError as exc:
            raise _Refusal(
                "upstream-unreachable", f"quote service {self.upstream}: {exc!r}"
            ) from None
        except QgsWireError as exc:
            raise _Refusal(
                f"upstream-invalid:{exc.reason.value}", f"quote service {self.upstream}: {exc}"
            ) from None
        finally:
            await _close(writer)
        return answer, response


class _Refusal(Exception):
    """No quote for this connection: counted under ``outcome``, answered with QGS's error."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class Relay(Protocol):
    """What :class:`RelayThread` runs: the quote relay, or the control relay
    (``launcher/_controlrelay.py``)."""

    @property
    def vm(self) -> str: ...

    @property
    def address(self) -> UnixAddress | InetAddress: ...

    async def start(self) -> UnixAddress | InetAddress: ...

    async def close(self) -> None: ...


class RelayThread:
    """A relay (:class:`QuoteRelay`, the control relay) on its own event loop in a
    daemon thread.

    The launcher's main thread is synchronous (it waits on QEMU and handles
    signals), so the relay gets a loop of its own; start it before QEMU, stop it
    after QEMU has exited.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"relay-{relay.vm}", daemon=True)

    def start(self, timeout: float = 5.0) -> UnixAddress | InetAddress:
        """Listen (or raise why not) before returning: QEMU may connect at once."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the relay for {self.relay.vm} did not start")
        if self._error is not None:
            raise self._error
        return self.relay.address

    def stop(self, timeout: float = 5.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished on its own
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self.relay.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.relay.close()


def start_quote_relay(
    *,
    vm: str,
    listen: UnixAddress | InetAddress,
    capture: Callable[[CapturedQuote], None],
    upstream: Address = HOST_QGS,
    limits: RelayLimits | None = None,
) -> RelayThread:
    """Start a VM's relay in the background; returns once it listens. ``stop()`` ends it."""
    runner = RelayThread(
        QuoteRelay(vm=vm, listen=listen, capture=capture, upstream=upstream, limits=limits)
    )
    runner.start()
    return runner
