"""Which errors say the Kubernetes API is unavailable for now.

A periodic check whose API call fails because the apiserver is restarting
(connection refused, reset, a 5xx, a 429) has nothing to fix: the next tick
will do. Left to kopf, any exception is logged with a traceback and the handler
backs off for 60 seconds, so a ten-second apiserver restart kept workers out of
Ready for a minute. The shared timer (:mod:`.checks`) uses
:func:`transient_api_error` to retry those after its own tick, in one line.
"""

from __future__ import annotations

import asyncio

import aiohttp
from kubernetes_asyncio.client.rest import ApiException


def transient_api_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the apiserver is unavailable for now, not that a request is wrong."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))


__all__ = ["transient_api_error"]
