"""The operator's Kubernetes client: JSON over one aiohttp session.

Why not kubernetes_asyncio: the operator sends and reads plain JSON documents
(its builders make manifests as dicts, its policies read dicts), so the
generated client's models were only ever bypassed (raw responses) or converted
back. Importing it loads about a thousand model modules: about 35 MB of the
process's memory, an eighth of its peak at 1,000 workers. The few calls the
operator and the node agent make are paths and verbs here.

Errors, in one place:

- :class:`ApiError`: the apiserver answered with an error status (``status``,
  ``reason``, and the ``Status`` document's message). A watch's ``ERROR``
  event raises it too (410 when the resourceVersion is too old). Callers
  catch the status they expect by its class, not by comparing numbers:
  :class:`NotFound` (404), :class:`Conflict` (409), :class:`Gone` (410),
  :class:`Forbidden` (403), :class:`Unavailable` (429, 5xx: ``transient``,
  the next try may succeed). ``ApiError(status, ...)`` itself builds the
  subclass its status names, so fakes and real answers are caught alike.
- ``aiohttp.ClientError``, ``OSError``, ``asyncio.TimeoutError``: no answer
  (apiserver down, restarting, or too slow): see ``handlers/retry.py``.
- :class:`~.kubeconfig.KubeconfigError`: no connection can be built (startup).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from cocoon_operator import __version__
from cocoon_operator.k8s.kubeconfig import Connection

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
USER_AGENT = f"cocoon-operator/{__version__}"


class ApiError(Exception):
    """An error status from the apiserver; constructed, it is the subclass for ``status``."""

    #: Whether the same request may succeed later unchanged (the apiserver was
    #: busy or away), as ``ton.errors``' ``transient`` says of a TON API's errors.
    transient: ClassVar[bool] = False

    def __new__(cls, status: int, reason: str, body: str = "") -> ApiError:
        kind = _error_class(status) if cls is ApiError else cls
        return super().__new__(kind)

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(status, reason)

    @property
    def message(self) -> str:
        """The ``Status`` document's message, or the start of the body when it is not one."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return self.body[:300]
        message = doc.get("message") if isinstance(doc, dict) else None
        return str(message) if message else self.body[:300]

    def __str__(self) -> str:
        message = self.message
        return f"{self.status} {self.reason}" + (f": {message}" if message else "")


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: the object exists already, or changed since the version sent."""


class Gone(ApiError):
    """410: a watch's or list's resourceVersion is too old; list again."""


class Forbidden(ApiError):
    """403: RBAC refuses, or a terminating namespace takes no new objects."""


class Unavailable(ApiError):
    """429 or 5xx (or 0, no status): the apiserver is busy or away for now."""

    transient = True


_BY_STATUS: dict[int, type[ApiError]] = {
    404: NotFound,
    409: Conflict,
    410: Gone,
    403: Forbidden,
}


def _error_class(status: int) -> type[ApiError]:
    if status in (0, 429) or status >= 500:
        return Unavailable
    return _BY_STATUS.get(status, ApiError)


def path(
    api_version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The URL path of a collection or an object: ``v1`` is the core group (``/api``)."""
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace is not None:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


class Kube:
    """One session to the apiserver, opened on first use and closed by :meth:`close`.

    Created at startup (never at import), one per process; every request is a
    method, a path and an optional JSON body, and answers the decoded JSON.
    """

    def __init__(
        self, connection: Connection, *, timeout: float = 60.0, connections: int = 100
    ) -> None:
        self.connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10.0)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Kube({self.connection.server!r})"

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self.connection.ssl if self.connection.ssl is not None else False,
                    limit=self._connections,
                ),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {}
        authorization = self.connection.authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    def _options(self) -> dict[str, Any]:
        hostname = self.connection.server_hostname
        return {"server_hostname": hostname} if hostname else {}

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``method`` on ``url_path``; the answer's JSON, :class:`ApiError` on an error status.

        ``content_type`` is the body's: a patch says which kind it is
        (:data:`MERGE_PATCH`, :data:`STRATEGIC_PATCH`).
        """
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        async with self._open().request(
            method,
            self.connection.server + url_path,
            params=query,
            data=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=self._timeout,
            **self._options(),
        ) as response:
            raw = await response.read()
            if not 200 <= response.status <= 299:
                raise ApiError(response.status, response.reason or "", raw.decode(errors="replace"))
        out: dict[str, Any] = json.loads(raw) if raw else {}
        return out

    async def request_unless_gone(
        self, method: str, url_path: str, **kwargs: Any
    ) -> dict[str, Any] | None:
        """:meth:`request`, with None for 404 Not Found: a read of an object that
        does not exist, or a write or delete of one that vanished, which needs none."""
        try:
            return await self.request(method, url_path, **kwargs)
        except NotFound:
            return None

    async def watch(
        self, url_path: str, *, query: Mapping[str, str], timeout_seconds: int = 300
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of a watch (``{"type", "object"}``) until the server ends it.

        Lines are split here rather than by aiohttp's line reader, whose limit
        (128 KiB) a large object's event can pass.
        """
        params = {**query, "watch": "1", "timeoutSeconds": str(timeout_seconds)}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10.0, sock_read=timeout_seconds + 30
        )
        async with self._open().get(
            self.connection.server + url_path,
            params=params,
            headers=self._headers(None),
            timeout=timeout,
            **self._options(),
        ) as response:
            if not 200 <= response.status <= 299:
                raw = await response.read()
                raise ApiError(response.status, response.reason or "", raw.decode(errors="replace"))
            # The pieces of the line not yet ended: joined once it ends, not at
            # each chunk (a node report's event is about 60 KB, many chunks).
            pending: list[bytes] = []
            async for chunk in response.content.iter_any():
                pending.append(chunk)
                if b"\n" not in chunk:
                    continue
                *lines, rest = b"".join(pending).split(b"\n")
                pending = [rest]
                for line in lines:
                    if line.strip():
                        yield _event(line)
            last = b"".join(pending)
            if last.strip():
                yield _event(last)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            # aiohttp's advice: let the connector's transports finish closing.
            await asyncio.sleep(0)


def _event(line: bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(line)
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise ApiError(
            int(status.get("code") or 500), str(status.get("reason") or "Error"), json.dumps(status)
        )
    return event
