"""The worker's one service port: plain, unauthenticated HTTP at ``12000 + 10*i``,
reached through the launcher's control relay.

``scripts/cocoon-launch`` forwards exactly one port of a worker VM, the
runner's ``http_port`` 12000 (cocoon-launch:293, hostfwd at :568-569;
spec/spec-worker/worker-config.json:4); COCOON's own docs read it with
``curl http://localhost:12000/jsonstats``. The worker serves no RA-TLS port to
the host (it uses RA-TLS on its outbound connections to proxies,
BaseRunner.cpp:295-314), so nothing here is pinned or encrypted: what a
stats reading is worth is what the host network is worth, and the
attestation step, not this client, vouches for the VM.

The operator's launcher publishes that port only through its control relay
(12002+10i, ``launcher/_controlrelay.py``), which forwards what the
operator signed for the pod and nothing else: given a ``signer`` and the
pod's UID, every request carries the signature headers
(``workerapi/_signing.py``); the relay's own refusals raise
:class:`ControlRefusedError` naming its code.

Errors: :class:`WorkerNotInitialisedError` for COCOON's 400 "not found"
before the runner initialised; :class:`WorkerStatsError` for any other
answer that is not what COCOON writes (HTTP status, non-JSON, a body over
:data:`MAX_BODY_BYTES`, an unexpected control answer); ``OSError`` /
``TimeoutError`` when nothing usable came back at all, so callers decide what
an unreachable worker means.
"""

from __future__ import annotations

import re
from typing import Final

import aiohttp
from yarl import URL

from cocoon_operator import jsondoc
from cocoon_operator.httpbody import BodyTooLargeError, read_capped
from cocoon_operator.workerapi._coefficient import wire_coefficient
from cocoon_operator.workerapi._signing import HEADER_REFUSAL, ControlSigner
from cocoon_operator.workerapi._stats import (
    StatusPage,
    WorkerNotInitialisedError,
    WorkerStats,
    WorkerStatsError,
    parse_stats,
    parse_status_page,
)

# A worker with a few proxies writes a few kilobytes; a body this large is not
# COCOON's, and reading it whole would let one VM hold the operator's memory.
MAX_BODY_BYTES: Final = 1 << 20

# COCOON splits the query string itself and never percent-decodes it
# (BaseRunner.cpp:758-790), so a value must go out as the worker will compare
# it: base64url addresses (rserialize(true), WorkerProxyInfo.cpp:76) and
# decimals need no escaping; anything else would be mangled on the way.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:+-]{1,100}")


class ControlRefusedError(WorkerStatsError):
    """The control relay refused the request (``code``: its stable reason, e.g.
    ``unsigned``, ``bad-signature``, ``upstream-unreachable``)."""

    def __init__(self, path: str, status: int, code: str) -> None:
        super().__init__(f"{path}: the control relay refused ({status} {code})")
        self.status = status
        self.code = code


class WorkerClient:
    """Stats and controls of one worker over plain HTTP.

    Use as ``async with WorkerClient(host, port, signer=s, audience=uid) as worker:``;
    one connection pool per use, closed on exit. Without a signer the requests go
    unsigned (a worker's port reached directly, as on the node itself).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        signer: ControlSigner | None = None,
        audience: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        if signer is not None and not audience:
            raise ValueError("a signed request names its audience (the launcher pod's UID)")
        self._signer, self._audience = signer, audience or ""
        self._base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            # COCOON answers HTTP/1.0 and closes (BaseRunner.cpp:743): nothing to keep alive.
            connector=aiohttp.TCPConnector(force_close=True),
        )

    async def __aenter__(self) -> WorkerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def _get(self, path: str, name: str | None = None, value: str | None = None) -> str:
        target = path
        if name is not None and value is not None:
            if not _PLAIN_VALUE.fullmatch(value):
                raise ValueError(f"{path}: {name} must be sent as-is, and {value!r} cannot")
            target += f"?{name}={value}"
        headers = (
            self._signer.headers(audience=self._audience, method="GET", target=target)
            if self._signer is not None
            else None
        )
        url = URL(self._base + target, encoded=True)
        try:
            async with self._session.get(url, allow_redirects=False, headers=headers) as resp:
                refusal = resp.headers.get(HEADER_REFUSAL)
                if refusal is not None:
                    raise ControlRefusedError(path, resp.status, refusal[:40])
                if resp.status == 400 and (resp.reason or "").lower() == "not found":
                    # WorkerRunner.cpp:381-386: the fallback of every path not registered.
                    raise WorkerNotInitialisedError(f"{path}: 400 not found (not initialised)")
                if resp.status != 200:
                    raise WorkerStatsError(f"{path}: HTTP {resp.status} {resp.reason or ''}")
                try:
                    body = await read_capped(resp, MAX_BODY_BYTES, what=path)
                except BodyTooLargeError as exc:
                    raise WorkerStatsError(str(exc)) from None
        except aiohttp.ClientError as exc:
            if isinstance(exc, OSError):
                raise
            # A dropped connection, a malformed status line: nothing usable came back.
            raise ConnectionError(f"{path}: {type(exc).__name__}: {exc}") from None
        return body.decode("utf-8", errors="replace")

    async def stats(self) -> WorkerStats:
        """``GET /jsonstats`` (WorkerRunner.cpp:186-193, the document at :663-730)."""
        text = await self._get("/jsonstats")
        try:
            doc = jsondoc.loads(text)
        except ValueError as exc:
            raise WorkerStatsError(f"jsonstats is not JSON: {exc}") from None
        return parse_stats(doc)

    async def status_page(self) -> StatusPage:
        """``GET /stats`` (WorkerRunner.cpp:179-184): the enabled state and requests in
        flight, which only this page shows (see :func:`parse_status_page`)."""
        return parse_status_page(await self._get("/stats"))

    async def set_coefficient(self, per_mille: int) -> None:
        """``/request/change_coefficient?coefficient=`` (WorkerRunner.cpp:216-228): a
        multiplier the worker truncates; sent so that it lands on ``per_mille``."""
        wire = wire_coefficient(per_mille)
        answer = short_answer(await self._get("/request/change_coefficient", "coefficient", wire))
        # WorkerRunner.h:182; a value it cannot parse is also a 200 (:176-177).
        if not answer.startswith("coefficient set to"):
            raise WorkerStatsError(f"change_coefficient: unexpected answer {answer!r}")

    async def disable(self) -> None:
        """``/request/disable`` (WorkerRunner.cpp:209-214): proxies send nothing new
        (WorkerRunner.cpp:459-482); asking twice is harmless (:460-462)."""
        await self._state("/request/disable")

    async def enable(self) -> None:
        """``/request/enable`` (WorkerRunner.cpp:202-207)."""
        await self._state("/request/enable")

    async def _state(self, path: str) -> None:
        answer = short_answer(await self._get(path))
        if answer != "state updated":  # WorkerRunner.h:168-171
            raise WorkerStatsError(f"{path}: unexpected answer {answer!r}")

    async def payout(self, proxy: str) -> str:
        """``/request/payout?proxy=`` (WorkerRunner.cpp:195-200): the worker's one-line
        answer, "request sent" when a payout went (WorkerRunner.cpp:732-755)."""
        return short_answer(await self._get("/request/payout", "proxy", proxy))


def short_answer(page: str) -> str:
    """The text of COCOON's answer page (``wrap_short_answer_to_http``, WorkerRunner.h:184-192)."""
    text = re.sub(r"<[^>]+>", " ", page).split("return to stats")[0]
    return " ".join(text.split())[:300]


async def fetch_stats(
    host: str,
    port: int,
    *,
    signer: ControlSigner | None = None,
    audience: str | None = None,
    timeout_seconds: float = 5.0,
) -> WorkerStats:
    """``GET /jsonstats`` from ``host:port`` (see :class:`WorkerClient`)."""
    async with WorkerClient(
        host, port, signer=signer, audience=audience, timeout_seconds=timeout_seconds
    ) as client:
        return await client.stats()
