"""The local chain's HTTP server: one route table, and starting it on loopback.

Every route the local chain serves is in :func:`build_app`: toncenter's v2
methods under ``/api/v2/`` (answered by :class:`~.v2.LocalChainApi`) and the
local-only ``/local/mint`` and ``/local/calls``. A new API surface adds its
handler module beside :mod:`.v2` and its routes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cocoon_operator import jsondoc

from .chain import LocalChain
from .v2 import LocalChainApi, _ApiError
from .v3 import v3_account_states_route


def build_app(chain: LocalChain, *, api_key: str | None = None) -> web.Application:
    """aiohttp application serving ``/api/v2/<method>`` (GET query or POST JSON)."""
    api = LocalChainApi(chain)

    def reply(status: int, payload: dict[str, Any]) -> web.Response:
        return web.json_response(payload, status=status)

    async def params_of(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json(loads=jsondoc.loads)
            except ValueError:
                raise _ApiError(400, "body is not JSON") from None
            if not isinstance(body, dict):
                raise _ApiError(400, "body must be a JSON object")
            params.update(body)
        return params

    def authorised(request: web.Request) -> bool:
        return api_key is None or request.headers.get("X-API-Key") == api_key

    async def handle(request: web.Request) -> web.Response:
        if not authorised(request):
            return reply(401, {"ok": False, "error": "API key required", "code": 401})
        try:
            result = await api.call(request.match_info["method"], await params_of(request))
        except _ApiError as exc:
            return reply(exc.status, {"ok": False, "error": exc.message, "code": exc.status})
        return reply(200, {"ok": True, "result": result})

    async def handle_mint(request: web.Request) -> web.Response:
        if not authorised(request):
            return reply(401, {"ok": False, "error": "API key required", "code": 401})
        try:
            result = await api.mint(await params_of(request))
        except _ApiError as exc:
            return reply(exc.status, {"ok": False, "error": exc.message, "code": exc.status})
        return reply(200, {"ok": True, "result": result})

    async def handle_calls(_request: web.Request) -> web.Response:
        return reply(200, {"ok": True, "result": dict(api.calls)})

    app = web.Application()
    app.router.add_route("GET", "/api/v2/{method}", handle)
    app.router.add_route("POST", "/api/v2/{method}", handle)
    app.router.add_route("POST", "/local/mint", handle_mint)
    app.router.add_route("GET", "/local/calls", handle_calls)
    app.router.add_route("GET", "/api/v3/accountStates", v3_account_states_route(api, api_key))
    return app


@dataclass
class RunningLocalChain:
    """A started server. ``api_url`` is what a TonClient takes as ``base_url``."""

    chain: LocalChain
    runner: web.AppRunner
    host: str
    port: int

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v2"

    @property
    def calls_url(self) -> str:
        """Where the API calls answered so far are counted, by method (not TON's API)."""
        return f"http://{self.host}:{self.port}/local/calls"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_local_chain(
    chain: LocalChain | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
) -> RunningLocalChain:
    """Serve ``chain`` (a fresh one by default) on loopback; ``port=0`` picks a free port."""
    chain = chain or LocalChain()
    runner = web.AppRunner(build_app(chain, api_key=api_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return RunningLocalChain(chain, runner, host, bound)
