"""Fetching the certificate a worker presents on its RA-TLS port."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    # RA-TLS: no CA vouches for a worker. Trust comes from verifying the TDX
    # quote inside the certificate, which binds the certificate's key.
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def fetch_ratls_certificate(host: str, port: int, *, timeout_seconds: float = 5.0) -> bytes:
    """Complete a TLS handshake with ``host:port`` and return the peer certificate (DER).

    The whole exchange is bounded by ``timeout_seconds``: a worker that accepts the
    connection and then stalls must not hold the caller.
    """
    async with asyncio.timeout(timeout_seconds):
        _, writer = await asyncio.open_connection(host, port, ssl=_unverified_context())
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):  # the peer may drop first
                await writer.wait_closed()
    if not der:
        raise ConnectionError(f"{host}:{port} presented no certificate")
    return bytes(der)
