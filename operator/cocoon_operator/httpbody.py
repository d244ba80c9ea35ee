"""Bodies from outside the process, read up to a cap.

A worker, a TON API provider and a PCCS are not trusted to answer briefly:
``aiohttp``'s ``read()`` and ``text()`` buffer whatever arrives, so one endless
or huge answer would take the operator's memory, and with it every worker's
reconcile. Every such read goes through :func:`read_capped`, which stops at
``limit`` bytes and says which answer was too large; each caller turns
:class:`BodyTooLargeError` into its own error type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024


class BodyTooLargeError(ValueError):
    """An answer longer than the reader's cap (its message names what and the cap)."""


async def read_capped(resp: aiohttp.ClientResponse, limit: int, *, what: str) -> bytes:
    """The body of ``resp``, or :class:`BodyTooLargeError` once it passes ``limit`` bytes.

    A declared Content-Length over the cap is refused before anything is read;
    a body sent without one (or with a wrong one) is cut off as it passes.
    """
    if (resp.content_length or 0) > limit:
        raise BodyTooLargeError(f"{what}: answer of {resp.content_length} bytes, over {limit}")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(f"{what}: answer over {limit} bytes")
    return bytes(body)
