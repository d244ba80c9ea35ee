"""Answers from workers, the TON API and a PCCS are read up to a cap, with an error
naming the answer, whether or not they declare their length."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cocoon_operator.attestation import CollateralKey
from cocoon_operator.attestation.errors import CollateralFetchError
from cocoon_operator.attestation.pccs import PccsCollateralSource
from cocoon_operator.httpbody import BodyTooLargeError, read_capped
from cocoon_operator.k8s.webhook_tls import self_signed
from cocoon_operator.ton.client import AiohttpTransport, RetryPolicy, TonClient
from cocoon_operator.ton.errors import TonResponseError
from cocoon_operator.workerapi import WorkerStatsError, fetch_gpu_evidence

LIMIT = 1000
Serve = Callable[[web.Request], Awaitable[web.StreamResponse]]


def declared(size: int) -> Serve:
    """An answer of ``size`` bytes with its Content-Length."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * size)

    return handler


def streamed(size: int) -> Serve:
    """An answer of ``size`` bytes sent chunked, with no length declared."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(size // 100):
            await resp.write(b"y" * 100)
        await resp.write_eof()
        return resp

    return handler


async def serve(handler: Serve) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


@pytest.mark.parametrize("make", [declared, streamed])
async def test_a_body_up_to_the_cap_is_read_whole_and_one_over_it_is_refused(
    make: Callable[[int], Serve],
) -> None:
    async for server in serve(make(LIMIT)):
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as r:
            assert len(await read_capped(r, LIMIT, what="GET /")) == LIMIT
    async for server in serve(make(LIMIT + 100)):
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as r:
            with pytest.raises(BodyTooLargeError, match=f"GET /: answer .*over {LIMIT}"):
                await read_capped(r, LIMIT, what="GET /")


@pytest.mark.parametrize("make", [declared, streamed])
async def test_an_oversized_pccs_answer_is_a_fetch_error(make: Callable[[int], Serve]) -> None:
    async for server in serve(make(LIMIT + 100)):
        async with aiohttp.ClientSession() as session:
            source = PccsCollateralSource(str(server.make_url("/")), session, max_body_bytes=LIMIT)
            with pytest.raises(CollateralFetchError, match=f"tcb.*over {LIMIT}"):
                await source.fetch(CollateralKey("B0C06F000000", "platform"))


@pytest.mark.parametrize("make", [declared, streamed])
async def test_an_oversized_ton_api_answer_is_a_response_error_not_retried(
    make: Callable[[int], Serve],
) -> None:
    calls = 0
    inner = make(LIMIT + 100)

    async def counting(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return await inner(request)

    async for server in serve(counting):
        client = TonClient(
            str(server.make_url("/api/v2")),
            api_key="secret-key",
            transport=AiohttpTransport(max_body_bytes=LIMIT),
            retry=RetryPolicy(),
        )
        try:
            with pytest.raises(TonResponseError, match=f"over {LIMIT}") as err:
                await client.get_address_balance("EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8xqB2N")
        finally:
            await client.close()
    assert calls == 1
    assert "secret-key" not in str(err.value)


@pytest.mark.parametrize("make", [declared, streamed])
async def test_an_oversized_gpu_evidence_document_is_refused(
    make: Callable[[int], Serve], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path, ["127.0.0.1"], now=dt.datetime.now(dt.UTC))
    pin = hashlib.sha256(
        x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    ).hexdigest()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    monkeypatch.setattr("cocoon_operator.workerapi._ratls.MAX_EVIDENCE_BYTES", LIMIT)
    app = web.Application()
    app.router.add_get("/attestation/gpu", make(LIMIT + 100))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with pytest.raises(WorkerStatsError, match=f"/attestation/gpu: answer .*over {LIMIT}"):
            await fetch_gpu_evidence("127.0.0.1", port, certificate_sha256=pin, nonce=b"\0" * 32)
    finally:
        await runner.cleanup()
