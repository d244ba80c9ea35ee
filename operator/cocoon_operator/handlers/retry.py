"""Which errors say the Kubernetes API is unavailable for now.

A periodic check whose API call fails because the apiserver is restarting
(connection refused, reset, a 5xx, a 429) has nothing to fix: the next tick
will do. Left to kopf, any exception is logged with a traceback and the handler
backs off for 60 seconds, so a ten-second apiserver restart kept workers out of
Ready for a minute. The checks' scheduler (:mod:`.checks`) uses
:func:`transient_api_error` to retry those after its own tick, in one line.
Event handlers, which kopf never retries, log them in one line too
(:func:`quiet_outages`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from cocoon_operator.k8s.rest import ApiError


def transient_api_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the apiserver is unavailable for now, not that a request is wrong."""
    if isinstance(exc, ApiError):
        return exc.transient
    return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))


Handler = Callable[..., Awaitable[Any]]


def outage_message(exc: BaseException) -> str:
    """One line for an error :func:`transient_api_error` accepts."""
    return f"Kubernetes API unavailable ({type(exc).__name__}: {str(exc)[:200]})"


def quiet_outages(handler: Handler) -> Handler:
    """``handler``, a kopf event handler, with an apiserver outage logged in one line.

    kopf does not retry an event handler: it logs the exception with a traceback
    and goes on. An outage has nothing to show in a traceback, and the worker's
    next event, check or resync reconciles it again. Other errors reach kopf.
    """

    @functools.wraps(handler)
    async def wrapper(**kwargs: Any) -> Any:
        try:
            return await handler(**kwargs)
        except Exception as exc:
            if not transient_api_error(exc):
                raise
            kwargs["logger"].warning(
                "%s; the next event or check reconciles again", outage_message(exc)
            )
            return None

    return wrapper


__all__ = ["outage_message", "quiet_outages", "transient_api_error"]
