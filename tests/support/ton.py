"""A TON API transport for tests: each request answered by a plain function.

:class:`MockTransport` satisfies :class:`cocoon_operator.ton.client.Transport`,
so a :class:`~cocoon_operator.ton.client.TonClient` under test never opens a
socket. Only tests use it; production and the simulator talk to a real server
(toncenter, or the local chain over loopback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from cocoon_operator.ton.client import HttpRequest, HttpResponse

Handler: TypeAlias = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


class MockTransport:
    """Transport that answers with a user function; for tests.

    The handler may return an :class:`HttpResponse` (or an awaitable of one) or
    raise :class:`TonTransportError` to simulate a network failure. Every request
    is appended to :attr:`requests`.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[HttpRequest] = []
        self.closed = False

    async def send(self, request: HttpRequest, time_limit: float) -> HttpResponse:
        self.requests.append(request)
        result = self._handler(request)
        if isinstance(result, HttpResponse):
            return result
        return await result

    async def close(self) -> None:
        self.closed = True
