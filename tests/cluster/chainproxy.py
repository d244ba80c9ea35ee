"""A toncenter-API proxy that a fault test controls: in front of the local chain,
it forwards, answers HTTP 500, hangs, or serves stale readings. It serves the v2
API and v3's ``accountStates`` (the fleet's batched balance read), by method name.

It runs in the test's event loop, so it serves while the test awaits. Modes:

- ``pass``: forward every request;
- ``error``: answer every request (or only the ``failing`` methods) with HTTP 500,
  as an overloaded toncenter does;
- ``hang``: accept every request and never answer (the client's timeout decides);
- ``stale``: answer the ``frozen`` read methods with the first answer the chain
  gave for the same request since stale mode began, as a lagging API node
  would; everything else (``sendBoc`` above all) is forwarded.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import aiohttp
from aiohttp import web

Mode = Literal["pass", "error", "hang", "stale"]
STALE_DEFAULT = frozenset({"getAddressBalance"})


class ChainProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # .../api/v2
        self.upstream_v3 = self.upstream.removesuffix("/api/v2") + "/api/v3"
        self.mode: Mode = "pass"
        self.frozen: frozenset[str] = STALE_DEFAULT
        self.failing: frozenset[str] | None = None  # error mode: None = every method
        self.snapshot: dict[tuple[str, str, str], tuple[int, bytes]] = {}
        self.served: Counter[tuple[Mode, str]] = Counter()  # (mode, method): requests
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def set_mode(
        self,
        mode: Mode,
        *,
        frozen: frozenset[str] = STALE_DEFAULT,
        failing: frozenset[str] | None = None,
    ) -> None:
        """Switch modes; entering ``stale`` starts a new snapshot of the ``frozen`` methods;
        ``error`` fails the ``failing`` methods only (None: all of them)."""
        self.failing = failing
        if mode == "stale":
            self.snapshot.clear()
            self.frozen = frozen
        self.mode = mode

    async def _forward(self, request: web.Request, method: str, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        base = self.upstream_v3 if request.path.startswith("/api/v3/") else self.upstream
        async with self._session.request(
            request.method,
            f"{base}/{method}",
            params=request.query,
            data=body or None,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as resp:
            return resp.status, await resp.read()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        mode = self.mode
        self.served[(mode, method)] += 1
        body = await request.read()
        if mode == "error" and (self.failing is None or method in self.failing):
            error = {"ok": False, "error": "injected: internal server error", "code": 500}
            return web.json_response(error, status=500)
        if mode == "hang":
            await self._closing.wait()
            raise web.HTTPServiceUnavailable(text="proxy closing")
        key = (method, json.dumps(sorted(request.query.items())), body.decode())
        if mode == "stale" and method in self.frozen and key in self.snapshot:
            status, payload = self.snapshot[key]
        else:
            status, payload = await self._forward(request, method, body)
            if mode == "stale" and method in self.frozen and status == 200:
                self.snapshot.setdefault(key, (status, payload))
        return web.Response(status=status, body=payload, content_type="application/json")

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/api/v2/{method}", self._handle)
        app.router.add_route("GET", "/api/v3/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api/v2"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@asynccontextmanager
async def chain_proxy(upstream: str) -> AsyncIterator[ChainProxy]:
    proxy = ChainProxy(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
