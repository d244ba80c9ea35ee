"""asyncio's TLS read buffer made smaller (tlsbuffers.py): each connection holds
64 KB instead of 256, and what crosses it is unchanged."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime as dt
import ssl
from pathlib import Path

import pytest

from cocoon_operator.k8s.webhook_tls import self_signed
from cocoon_operator.tlsbuffers import READ_BUFFER, shrink_tls_read_buffers

DEFAULT = asyncio.sslproto.SSLProtocol.max_size


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The class attribute as it was, after the test (the test runner's own TLS too)."""
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", DEFAULT)


def test_python_s_asyncio_reads_tls_into_256_kb_buffers() -> None:
    # What tlsbuffers.py is about: were it otherwise, the tests below prove little.
    assert DEFAULT == 256 * 1024


def test_connections_made_afterwards_get_64_kb(restored: None) -> None:
    assert shrink_tls_read_buffers() == (DEFAULT, READ_BUFFER)
    loop = asyncio.new_event_loop()
    try:
        protocol = asyncio.sslproto.SSLProtocol(
            loop, asyncio.Protocol(), ssl.create_default_context(), None
        )
    finally:
        loop.close()
    assert len(protocol._ssl_buffer) == READ_BUFFER


def test_a_buffer_already_smaller_is_left_alone(restored: None) -> None:
    asyncio.sslproto.SSLProtocol.max_size = 32 * 1024
    assert shrink_tls_read_buffers() == (32 * 1024, 32 * 1024)


def test_an_asyncio_without_the_setting_is_left_alone(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(asyncio.sslproto.SSLProtocol, "max_size")
    assert shrink_tls_read_buffers() is None
    assert not hasattr(asyncio.sslproto.SSLProtocol, "max_size")


async def test_a_megabyte_crosses_a_tls_connection_whole_both_ways(
    restored: None, tmp_path: Path
) -> None:
    shrink_tls_read_buffers()
    cert, key = self_signed(tmp_path, ["localhost"], now=dt.datetime.now(dt.UTC))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))
    payload = bytes(range(256)) * 4096  # 1 MiB, sixteen of the buffers
    buffers: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))  # type: ignore[attr-defined]
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_side, server_hostname="localhost"
        )
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
    assert echoed == payload
    assert buffers == [READ_BUFFER]
