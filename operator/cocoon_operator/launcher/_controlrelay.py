"""The control relay: the only published way to the worker's port, and only for the operator.

COCOON's worker serves its stats and controls (``/request/enable|disable|
change_coefficient|payout``) on plain, unauthenticated HTTP at 12000+10i
(``scripts/cocoon-launch:293,568-569``; ``BaseRunner.cpp:735-790``;
``WorkerRunner.cpp:179-228``): whoever reaches that port can disable the
worker or trigger its payouts. The launcher therefore has QEMU forward it to
the pod's loopback only (``launcher/_plan.py``, difference 5) and publishes
this relay instead, on 12002+10i (COCOON uses 12000 for HTTP, 12001 as the
runner's rpc_port in ``spec/spec-worker/worker-config.json:4-5`` and 12005 for
SSH, ``cocoon-launch:294``; 12002 is nobody's).

A request is forwarded, unchanged, to the loopback port only when all of this
holds; otherwise it is refused with the status named, a stable code in the
``X-Cocoon-Control-Refusal`` header and a one-line text body, and the next
request is served afresh:

- ``GET`` (405 ``method``), one of COCOON's worker paths the operator uses
  (404 ``unknown-path``), no body over :attr:`ControlLimits.max_body` (413
  ``too-large``) and a target no longer than :attr:`ControlLimits.max_target`
  (414 ``too-large``);
- the three signature headers (401 ``unsigned``), a timestamp within
  :attr:`ControlLimits.window_seconds` of the relay's clock (401 ``stale``),
  the operator's Ed25519 signature over this pod's UID, the method, the
  target, the body's hash, the timestamp and the nonce (403
  ``bad-signature``; ``workerapi/_signing.py``), a nonce not seen within the
  window (409 ``replayed``);
- room: at most :attr:`ControlLimits.max_in_flight` requests at once and
  :attr:`ControlLimits.max_nonces` remembered nonces (503 ``busy``).

Every path is signed, reads included: ``/jsonstats`` and ``/stats`` hold no
secret, but they show the wallet, its balance and the earnings to whoever
asks, and one rule for every path leaves nothing to misclassify. A person
debugging on the node reads them as COCOON's docs say
(``docs/deployment.md:133``, ``curl http://localhost:12000/jsonstats``) from
inside the launcher pod (``kubectl exec``), where the forward listens.

The worker's own answers pass through as they are (status, reason, body):
COCOON's 400 "not found" before its runner initialised
(``WorkerRunner.cpp:381-386``) stays what the operator's client reads. When
the worker does not answer the relay says so: 502 ``upstream-unreachable``,
504 ``upstream-timeout``, 502 ``upstream-too-large`` (an answer over
:attr:`ControlLimits.max_answer`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from yarl import URL

from cocoon_operator.launcher._quoterelay import InetAddress
from cocoon_operator.workerapi._signing import (
    HEADER_NONCE,
    HEADER_REFUSAL,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NONCE_BYTES,
    signed_message,
    verify,
)

log = logging.getLogger("cocoon_operator.launcher.controlrelay")

# The worker paths the operator uses (WorkerRunner.cpp:179-228). /perf
# (BaseRunner.cpp:580-583) and anything else are not forwarded.
WORKER_PATHS: Final = frozenset(
    {
        "/jsonstats",
        "/stats",
        "/request/enable",
        "/request/disable",
        "/request/change_coefficient",
        "/request/payout",
    }
)


@dataclass(frozen=True)
class ControlLimits:
    """Bounds on one request. The window allows for clock skew between the operator and
    the node; the operator's own client gives up on a request after 5 s."""

    window_seconds: float = 30.0
    max_body: int = 4096  # COCOON's controls take no body at all
    max_target: int = 1024  # a payout's proxy address is 48 characters
    max_answer: int = 1 << 20  # workerapi.MAX_BODY_BYTES: what the operator would read
    connect_timeout: float = 2.0
    upstream_timeout: float = 10.0
    max_in_flight: int = 16
    max_nonces: int = 4096


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ControlRelay:
    """One VM's control relay: listens on ``listen``, forwards to ``upstream`` (the
    forward on the pod's loopback) what ``public_key`` signed for ``audience``.

    :attr:`outcomes` counts what happened to each request (stable keys: ``forwarded``
    and the refusal codes of the module docstring).
    """

    def __init__(
        self,
        *,
        vm: str,
        listen: InetAddress,
        upstream: InetAddress,
        public_key: Ed25519PublicKey,
        audience: str,
        limits: ControlLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience:
            raise ValueError("a control relay needs its pod's UID (the audience)")
        self.vm = vm
        self.listen = listen
        self.upstream = upstream
        self.limits = limits or ControlLimits()
        self._public_key = public_key
        self._audience = audience
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = listen.port
        self._in_flight = 0
        self._nonces: dict[str, float] = {}  # nonce -> when it may be forgotten
        self._outcomes: Counter[str] = Counter()

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(self._outcomes)

    @property
    def address(self) -> InetAddress:
        """Where the relay listens (for port 0: the port bound)."""
        return InetAddress(self.listen.host, self._port)

    async def start(self) -> InetAddress:
        app = web.Application(client_max_size=self.limits.max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.listen.host, self.listen.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[-1][1])
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=self.limits.upstream_timeout, sock_connect=self.limits.connect_timeout
            ),
            # COCOON answers HTTP/1.0 and closes (BaseRunner.cpp:743).
            connector=aiohttp.TCPConnector(force_close=True),
            auto_decompress=False,
        )
        log.info("control relay for %s: %s -> %s", self.vm, self.address, self.upstream)
        return self.address

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ControlRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._in_flight >= self.limits.max_in_flight:
            return self._refusal(_Refused(503, "busy", "too many requests at once"))
        self._in_flight += 1
        try:
            body = await self._admit(request)
            response = await self._forward(request.rel_url.raw_path_qs, body)
        except _Refused as refused:
            return self._refusal(refused)
        finally:
            self._in_flight -= 1
        self._outcomes["forwarded"] += 1
        return response

    def _refusal(self, refused: _Refused) -> web.Response:
        self._outcomes[refused.code] += 1
        log.warning("control relay for %s: refused (%s): %s", self.vm, refused.code, refused)
        return web.Response(
            status=refused.status,
            text=f"control relay: {refused.code}: {refused}\n",
            headers={HEADER_REFUSAL: refused.code},
        )

    async def _admit(self, request: web.Request) -> bytes:
        """The request's body, if the request may be forwarded; else :class:`_Refused`."""
        limits = self.limits
        if request.method != "GET":
            raise _Refused(405, "method", f"{request.method} is not forwarded, only GET")
        target = request.rel_url.raw_path_qs
        if len(target) > limits.max_target:
            raise _Refused(414, "too-large", f"a target over {limits.max_target} characters")
        if request.rel_url.raw_path not in WORKER_PATHS:
            raise _Refused(
                404, "unknown-path", f"{request.rel_url.raw_path[:100]!r} is not forwarded"
            )
        if (request.content_length or 0) > limits.max_body:
            raise _Refused(413, "too-large", f"a body over {limits.max_body} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, "too-large", f"a body over {limits.max_body} bytes") from None
        stamp = request.headers.get(HEADER_TIMESTAMP)
        nonce = request.headers.get(HEADER_NONCE)
        signature = request.headers.get(HEADER_SIGNATURE)
        if not (stamp and nonce and signature):
            raise _Refused(401, "unsigned", "no operator signature")
        now = self._clock()
        if not stamp.isdigit() or abs(int(stamp) - now) > limits.window_seconds:
            raise _Refused(
                401, "stale", f"timestamp {stamp[:20]!r} is not within {limits.window_seconds:g} s"
            )
        if len(nonce) != 2 * NONCE_BYTES or any(c not in "0123456789abcdef" for c in nonce):
            raise _Refused(401, "unsigned", "the nonce is not 32 hex digits")
        message = signed_message(
            audience=self._audience,
            method=request.method,
            target=target,
            body=body,
            timestamp=int(stamp),
            nonce=nonce,
        )
        if not verify(self._public_key, signature, message):
            raise _Refused(403, "bad-signature", "not signed by the operator for this worker")
        self._remember(nonce, now)
        return body

    def _remember(self, nonce: str, now: float) -> None:
        """Record a verified request's nonce; refuse one seen within the window."""
        if len(self._nonces) >= self.limits.max_nonces:
            self._nonces = {n: until for n, until in self._nonces.items() if until > now}
        if nonce in self._nonces and self._nonces[nonce] > now:
            raise _Refused(409, "replayed", "this request was already served")
        if len(self._nonces) >= self.limits.max_nonces:
            raise _Refused(503, "busy", "too many requests within the window")
        # Forgotten only once its timestamp can no longer pass the window check.
        self._nonces[nonce] = now + 2 * self.limits.window_seconds

    async def _forward(self, target: str, body: bytes) -> web.Response:
        assert self._session is not None, "the relay is not started"
        url = URL(f"http://{self.upstream.host}:{self.upstream.port}{target}", encoded=True)
        limit = self.limits.max_answer
        try:
            async with self._session.get(url, data=body or None, allow_redirects=False) as answer:
                if (answer.content_length or 0) > limit:
                    raise _Refused(
                        502, "upstream-too-large", f"the worker's answer is over {limit} bytes"
                    )
                data = bytearray()
                async for chunk in answer.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        raise _Refused(
                            502, "upstream-too-large", f"the worker's answer is over {limit} bytes"
                        )
                status, reason = answer.status, answer.reason
                content_type = answer.headers.get("Content-Type")
        except TimeoutError:
            raise _Refused(504, "upstream-timeout", "the worker did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Refused(
                502, "upstream-unreachable", f"the worker's port: {type(exc).__name__}"
            ) from None
        headers = {"Content-Type": content_type} if content_type else {}
        return web.Response(status=status, reason=reason, body=bytes(data), headers=headers)
