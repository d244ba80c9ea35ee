"""Timers that ride out a Kubernetes API outage.

A timer whose API call fails because the apiserver is restarting (connection
refused, reset, a 5xx, a 429) has nothing to fix: the next tick will do. Left
to kopf, any exception is logged with a traceback and the timer backs off for
60 seconds, so a ten-second apiserver restart kept workers out of Ready for a
minute. :func:`riding_out_outages` turns such errors into a one-line
``kopf.TemporaryError`` retried after the timer's own interval; every other
exception still reaches kopf unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio.client.rest import ApiException

Handler = Callable[..., Awaitable[Any]]


def transient_api_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the apiserver is unavailable for now, not that a request is wrong."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))


def riding_out_outages(handler: Handler, *, delay: float) -> Handler:
    """``handler``, with transient API errors retried after ``delay`` s without a traceback."""

    @functools.wraps(handler)
    async def wrapper(**kwargs: Any) -> Any:
        try:
            return await handler(**kwargs)
        except Exception as exc:
            if not transient_api_error(exc):
                raise
            reason = f"Kubernetes API unavailable ({type(exc).__name__}: {exc})"[:300]
            raise kopf.TemporaryError(f"{reason}; retrying in {delay:g}s", delay=delay) from None

    return wrapper


__all__ = ["riding_out_outages", "transient_api_error"]
