"""Async client for a toncenter-compatible HTTP API v2 (and v3's multi-account read).

One client talks to mainnet, testnet (toncenter or any compatible server) and the
project's local chain (:mod:`cocoon_operator.ton.localchain`) alike.

Design points

* **Transport is injected.** :class:`TonClient` builds :class:`HttpRequest`
  values and hands them to a :class:`Transport`. Production uses
  :class:`AiohttpTransport`; tests pass ``tests.support.ton.MockTransport``,
  which calls a plain function with each request, the same idea as
  ``httpx.MockTransport``.
* **Per-call timeout.** Every HTTP attempt runs under ``asyncio.timeout``;
  expiry becomes :class:`~cocoon_operator.ton.errors.TonTimeoutError`.
* **Bounded retries.** :class:`RetryPolicy` retries *transient* failures
  (transport errors, timeouts, HTTP 429 and 5xx) at most ``max_attempts`` times
  in total, sleeping ``uniform(0, min(max_delay, base_delay * 2**n))`` ("full
  jitter") between attempts, or the server's ``Retry-After`` (capped at
  ``max_delay``) for 429. Other errors are raised at once.
* **Which calls are retried.** All read methods are idempotent and retried.
  ``sendBoc`` is retried too, by default, because re-sending the *same signed
  BOC* is idempotent on TON for replay-protected contracts such as wallets:
  the wallet checks ``seqno`` (and ``valid_until``) before accepting, so once
  one copy has been applied every further copy is rejected without being
  accepted and pays nothing. Callers that send messages to contracts without
  such protection pass ``retry=False``.
* **Client-side rate limit.** A :class:`TokenBucket` spaces requests (every
  HTTP attempt, retries included, takes one token). toncenter allows 1 rps
  without a key and ~10 rps with one.
* **v3, for one thing.** toncenter's v3 index answers many accounts per request
  (:meth:`TonClient.get_account_states`); everything else is v2, which reads
  the chain through a liteserver rather than an index.
* **API key.** Sent only as the ``X-API-Key`` header. It is never part of a
  URL, and never appears in ``repr`` of the client or of a request, in log
  lines or in exception messages: any foreign text (transport exceptions,
  server error bodies) is passed through :meth:`TonClient._redact` first.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

import aiohttp

from cocoon_operator import jsondoc
from cocoon_operator.httpbody import BodyTooLargeError, read_capped

from .address import Address, normalize_address
from .amounts import Nanoton, parse_nanoton
from .errors import (
    TonApiError,
    TonAuthError,
    TonBadRequestError,
    TonClientError,
    TonError,
    TonGetMethodError,
    TonMessageRejectedError,
    TonNotFoundError,
    TonRateLimitedError,
    TonResponseError,
    TonServerError,
    TonTimeoutError,
    TonTransportError,
)

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
MAINNET_URL = "https://toncenter.com/api/v2"
TESTNET_URL = "https://testnet.toncenter.com/api/v2"

#: toncenter v3's ``GET /api/v3/accountStates`` takes at most 1,000 addresses
#: ("Maximum 1000 addresses allowed", https://docs.ton.org/ecosystem/api/toncenter/v3/accounts/get-account-states;
#: the index's query ends in ``limit 1000``, toncenter/ton-indexer
#: ton-index-go/index/crud/crud_accounts.go).
MAX_ACCOUNTS_PER_REQUEST = 1000
#: ... but the URL runs out first: toncenter's maintainers say 1,024 addresses do
#: not fit in its maximal URL length (https://github.com/toncenter/ton-indexer/issues/110)
#: without saying what that length is. 8 KiB is the common default limit of a
#: request line (nginx's ``large_client_header_buffers``, aiohttp's 8190), so a
#: request is cut there: about 100 raw addresses each.
MAX_URL_BYTES = 8000

Json: TypeAlias = Any
AccountStatus = Literal["active", "uninitialized", "frozen"]
_ACCOUNT_STATES: tuple[AccountStatus, ...] = ("active", "uninitialized", "frozen")


# --------------------------------------------------------------------------- transport


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request. ``headers`` are hidden from ``repr`` (they carry the key)."""

    method: Literal["GET", "POST"]
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    json_body: Json = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Repeated query parameters (v3's ``address=..&address=..``), sent after ``params``.
    query: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: Json, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))


class Transport(Protocol):
    """Sends one request. Raises only :class:`TonTransportError` (or its subclass)."""

    async def send(self, request: HttpRequest, time_limit: float) -> HttpResponse: ...

    async def close(self) -> None: ...


#: The largest TON API answer read. The largest the operator asks for, a page of
#: ``getTransactions`` with each transaction's BOC and messages, is far below it;
#: a provider does not get to fill the operator's memory.
MAX_RESPONSE_BYTES = 8 << 20


class AiohttpTransport:
    """Production transport on one lazily created :class:`aiohttp.ClientSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        max_body_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self.max_body_bytes = max_body_bytes

    async def send(self, request: HttpRequest, time_limit: float) -> HttpResponse:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        try:
            async with self._session.request(
                request.method,
                request.url,
                params=[*request.params.items(), *request.query] or None,
                json=request.json_body if request.method == "POST" else None,
                headers=dict(request.headers),
                timeout=aiohttp.ClientTimeout(total=time_limit),
                allow_redirects=False,
            ) as resp:
                try:
                    body = await read_capped(resp, self.max_body_bytes, what=request.url)
                except BodyTooLargeError as exc:
                    # Not retried: the provider would send the same again.
                    raise TonResponseError(f"{request.method} {exc}") from None
                return HttpResponse(resp.status, body, dict(resp.headers))
        except TimeoutError as exc:
            raise TonTimeoutError(f"{request.method} {request.url}: timed out") from exc
        except aiohttp.ClientError as exc:
            # The client redacts the message again; the cause is dropped so no
            # request metadata (headers) travels along with the exception.
            raise TonTransportError(
                f"{request.method} {request.url}: {type(exc).__name__}: {exc}"
            ) from None

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    ``max_attempts`` counts the first try: 4 means at most 3 retries. The delay
    before retry ``n`` (0-based) is ``uniform(0, min(max_delay, base_delay * 2**n))``.
    """

    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def delay(self, retry_index: int, rng: random.Random) -> float:
        cap = min(self.max_delay, self.base_delay * (2**retry_index))
        return rng.uniform(0.0, cap)


class TokenBucket:
    """Client-side rate limiter: ``rate`` tokens per second, bucket of ``burst``.

    ``clock`` and ``sleep`` are injectable so tests run without real time.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await self._sleep((1.0 - self._tokens) / self.rate)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TransactionId:
    lt: int
    hash: str  # base64 of the 32-byte transaction hash, as the v2 API returns it

    @property
    def hash_bytes(self) -> bytes:
        return base64.b64decode(self.hash)


@dataclass(frozen=True, slots=True)
class AddressInformation:
    balance: Nanoton
    state: AccountStatus
    code: bytes | None  # BOC, None when the account has no code
    data: bytes | None
    last_transaction_id: TransactionId | None
    frozen_hash: str | None
    sync_utime: int | None


@dataclass(frozen=True, slots=True)
class AccountState:
    """One account as toncenter v3's ``accountStates`` reports it (BOCs not asked for)."""

    address: str  # raw, as :func:`normalize_address` writes it (``wc:lowerhex``)
    balance: Nanoton
    status: AccountStatus
    last_transaction_lt: int | None
    code_hash: str | None  # base64, as the index reports it


@dataclass(frozen=True, slots=True)
class WalletInformation:
    wallet: bool
    balance: Nanoton
    account_state: AccountStatus
    wallet_type: str | None
    seqno: int | None
    wallet_id: int | None
    last_transaction_id: TransactionId | None


@dataclass(frozen=True, slots=True)
class StackNum:
    value: int


@dataclass(frozen=True, slots=True)
class StackCell:
    boc: bytes


@dataclass(frozen=True, slots=True)
class StackSlice:
    boc: bytes


@dataclass(frozen=True, slots=True)
class StackTuple:
    items: tuple[StackValue, ...]


@dataclass(frozen=True, slots=True)
class StackNull:
    pass


StackValue: TypeAlias = StackNum | StackCell | StackSlice | StackTuple | StackNull


@dataclass(frozen=True, slots=True)
class GetMethodResult:
    exit_code: int
    gas_used: int
    stack: tuple[StackValue, ...]

    def num(self, index: int) -> int:
        """The integer at ``index`` of the result stack (TonResponseError if it is not one)."""
        value = self.stack[index]
        if not isinstance(value, StackNum):
            raise TonResponseError(f"stack[{index}] is {type(value).__name__}, not a number")
        return value.value


@dataclass(frozen=True, slots=True)
class MessageInfo:
    source: str  # "" for external-in
    destination: str  # "" for external-out
    value: Nanoton
    fwd_fee: Nanoton
    ihr_fee: Nanoton
    created_lt: int
    body_hash: str
    hash: str | None  # base64 message hash when the server reports it
    body: bytes | None  # body BOC (msg_data.body) when present
    init_state: bytes | None


@dataclass(frozen=True, slots=True)
class TransactionInfo:
    account: str
    utime: int
    transaction_id: TransactionId
    fee: Nanoton
    storage_fee: Nanoton
    other_fee: Nanoton
    data: bytes  # full Transaction BOC
    in_msg: MessageInfo | None
    out_msgs: tuple[MessageInfo, ...]


@dataclass(frozen=True, slots=True)
class SentMessage:
    hash: str | None  # base64 of the external message hash (sendBocReturnHash)


# --------------------------------------------------------------------------- parsing helpers


def _obj(value: Json, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TonResponseError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _int(value: Json, what: str) -> int:
    if isinstance(value, bool):
        raise TonResponseError(f"{what}: expected an integer, got a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0) if value.lower().lstrip("-").startswith("0x") else int(value)
        except ValueError:
            pass
    raise TonResponseError(f"{what}: expected an integer, got {value!r}")


def _nano(value: Json, what: str) -> Nanoton:
    try:
        return parse_nanoton(value)
    except ValueError as exc:
        raise TonResponseError(f"{what}: {exc}") from None


def _b64_or_none(value: Json, what: str) -> bytes | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise TonResponseError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(value, validate=False)
    except ValueError as exc:
        raise TonResponseError(f"{what}: not base64") from exc


def _state(value: Json, what: str) -> AccountStatus:
    for state in _ACCOUNT_STATES:
        if value == state:
            return state
    # toncenter reports never-deployed accounts as "uninitialized"; some servers say "uninit"
    if value in ("uninit", "nonexist", "nonexistent"):
        return "uninitialized"
    raise TonResponseError(f"{what}: unknown account state {value!r}")


def _tx_id(value: Json, what: str) -> TransactionId | None:
    if value is None:
        return None
    obj = _obj(value, what)
    lt = _int(obj.get("lt", "0"), f"{what}.lt")
    tx_hash = obj.get("hash", "")
    if not isinstance(tx_hash, str):
        raise TonResponseError(f"{what}.hash: expected text")
    if lt == 0 and tx_hash in ("", base64.b64encode(bytes(32)).decode()):
        return None
    return TransactionId(lt, tx_hash)


def _stack_entry(entry: Json, what: str) -> StackValue:
    """Parse one top-level v2 stack entry: ``["num", "0x5"]``, ``["cell", {"bytes": ...}]``."""
    if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
        raise TonResponseError(f"{what}: malformed stack entry {entry!r}")
    kind, value = entry
    if kind == "num":
        return StackNum(_int(value, what))
    if kind in ("cell", "slice"):
        boc = _b64_or_none(_obj(value, what).get("bytes"), what) or b""
        return StackCell(boc) if kind == "cell" else StackSlice(boc)
    if kind in ("tuple", "list"):
        elements = _obj(value, what).get("elements", [])
        if not isinstance(elements, list):
            raise TonResponseError(f"{what}: tuple elements must be a list")
        return StackTuple(tuple(_tvm_entry(e, f"{what}[{i}]") for i, e in enumerate(elements)))
    if kind == "null":
        return StackNull()
    raise TonResponseError(f"{what}: unsupported stack entry type {kind!r}")


def _tvm_entry(entry: Json, what: str) -> StackValue:
    """Parse a nested ``tvm.stackEntry*`` object (inside tuples and lists)."""
    obj = _obj(entry, what)
    kind = obj.get("@type")
    if kind == "tvm.stackEntryNumber":
        return StackNum(_int(_obj(obj.get("number"), what).get("number"), what))
    if kind == "tvm.stackEntryCell":
        return StackCell(_b64_or_none(_obj(obj.get("cell"), what).get("bytes"), what) or b"")
    if kind == "tvm.stackEntrySlice":
        return StackSlice(_b64_or_none(_obj(obj.get("slice"), what).get("bytes"), what) or b"")
    if kind in ("tvm.stackEntryTuple", "tvm.stackEntryList"):
        inner = obj.get("tuple") if kind == "tvm.stackEntryTuple" else obj.get("list")
        elements = _obj(inner, what).get("elements", [])
        if not isinstance(elements, list):
            raise TonResponseError(f"{what}: elements must be a list")
        return StackTuple(tuple(_tvm_entry(e, f"{what}[{i}]") for i, e in enumerate(elements)))
    if kind == "tvm.stackEntryNull" or entry == {}:
        return StackNull()
    raise TonResponseError(f"{what}: unsupported nested stack entry {kind!r}")


def _encode_stack_arg(value: StackValue) -> list[Any]:
    if isinstance(value, StackNum):
        return ["num", hex(value.value)]
    if isinstance(value, StackCell):
        return ["tvm.Cell", base64.b64encode(value.boc).decode()]
    if isinstance(value, StackSlice):
        return ["tvm.Slice", base64.b64encode(value.boc).decode()]
    raise TonClientError(f"get-method arguments of type {type(value).__name__} are not supported")


def _message(value: Json, what: str) -> MessageInfo:
    obj = _obj(value, what)
    msg_data = obj.get("msg_data") or {}
    msg_data = _obj(msg_data, f"{what}.msg_data")

    def addr(v: Json) -> str:
        if isinstance(v, dict):  # getTransactionsStd-style {"account_address": ...}
            v = v.get("account_address", "")
        return v if isinstance(v, str) else ""

    msg_hash = obj.get("hash")
    return MessageInfo(
        source=addr(obj.get("source", "")),
        destination=addr(obj.get("destination", "")),
        value=_nano(obj.get("value", "0") or "0", f"{what}.value"),
        fwd_fee=_nano(obj.get("fwd_fee", "0") or "0", f"{what}.fwd_fee"),
        ihr_fee=_nano(obj.get("ihr_fee", "0") or "0", f"{what}.ihr_fee"),
        created_lt=_int(obj.get("created_lt", "0") or "0", f"{what}.created_lt"),
        body_hash=str(obj.get("body_hash", "")),
        hash=msg_hash if isinstance(msg_hash, str) and msg_hash else None,
        body=_b64_or_none(msg_data.get("body"), f"{what}.msg_data.body"),
        init_state=_b64_or_none(msg_data.get("init_state"), f"{what}.msg_data.init_state"),
    )


def _transaction(value: Json, what: str) -> TransactionInfo:
    obj = _obj(value, what)
    tx_id = _tx_id(obj.get("transaction_id"), f"{what}.transaction_id")
    if tx_id is None:
        raise TonResponseError(f"{what}: transaction without id")
    account = obj.get("address", {})
    account_text = account.get("account_address", "") if isinstance(account, dict) else ""
    in_msg = obj.get("in_msg")
    out_msgs = obj.get("out_msgs", [])
    if not isinstance(out_msgs, list):
        raise TonResponseError(f"{what}.out_msgs: expected a list")
    return TransactionInfo(
        account=str(account_text),
        utime=_int(obj.get("utime", 0), f"{what}.utime"),
        transaction_id=tx_id,
        fee=_nano(obj.get("fee", "0"), f"{what}.fee"),
        storage_fee=_nano(obj.get("storage_fee", "0"), f"{what}.storage_fee"),
        other_fee=_nano(obj.get("other_fee", "0"), f"{what}.other_fee"),
        data=_b64_or_none(obj.get("data"), f"{what}.data") or b"",
        in_msg=_message(in_msg, f"{what}.in_msg") if in_msg else None,
        out_msgs=tuple(_message(m, f"{what}.out_msgs[{i}]") for i, m in enumerate(out_msgs)),
    )


def _account_state(value: Json, what: str) -> AccountState:
    obj = _obj(value, what)
    raw = obj.get("address")
    if not isinstance(raw, str):
        raise TonResponseError(f"{what}.address: expected text")
    try:
        address = normalize_address(raw)
    except TonError as exc:
        raise TonResponseError(f"{what}.address: {exc}") from None
    lt = obj.get("last_transaction_lt")
    code_hash = obj.get("code_hash")
    return AccountState(
        address=address,
        balance=_nano(obj.get("balance") or "0", f"{what}.balance"),
        status=_state(obj.get("status"), f"{what}.status"),
        last_transaction_lt=_int(lt, f"{what}.last_transaction_lt") if lt is not None else None,
        code_hash=code_hash if isinstance(code_hash, str) and code_hash else None,
    )


def _v3_of(v2_url: str) -> str | None:
    """toncenter serves v3 beside v2 (``/api/v2`` and ``/api/v3``)."""
    return v2_url[: -len("/api/v2")] + "/api/v3" if v2_url.endswith("/api/v2") else None


def _chunks(addresses: Sequence[str], fixed: int, max_url_bytes: int) -> list[list[str]]:
    """``addresses`` cut into requests of at most :data:`MAX_ACCOUNTS_PER_REQUEST`
    whose URL (``fixed`` bytes, plus ``&address=`` and the address, its ``:``
    percent-encoded, for each) stays within ``max_url_bytes``."""
    chunks: list[list[str]] = []
    size = fixed
    for address in addresses:
        cost = len("&address=") + len(address) + 2  # ':' may travel as %3A
        if not chunks or len(chunks[-1]) >= MAX_ACCOUNTS_PER_REQUEST or size + cost > max_url_bytes:
            chunks.append([])
            size = fixed
        chunks[-1].append(address)
        size += cost
    return chunks


# --------------------------------------------------------------------------- client


class TonClient:
    """Async client for one toncenter-compatible v2 endpoint.

    ``base_url`` ends in ``/api/v2`` (or whatever prefix the server uses); method
    names are appended (``{base_url}/getAddressInformation``). Use as an async
    context manager or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        transport: Transport | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        rate_limiter: TokenBucket | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        v3_url: str | None = None,
        max_url_bytes: int = MAX_URL_BYTES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self._base_url = base_url.rstrip("/")
        self._v3_url = (v3_url or _v3_of(self._base_url) or "").rstrip("/") or None
        self._max_url_bytes = max_url_bytes
        self._api_key = api_key or None
        self._transport: Transport = transport or AiohttpTransport()
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._limiter = rate_limiter
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"TonClient(base_url={self._base_url!r}, api_key=<{key}>)"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def v3_url(self) -> str | None:
        """toncenter v3's base (``.../api/v3``): given, or the v2 base's sibling; None
        when the v2 base is not ``.../api/v2`` and none was given."""
        return self._v3_url

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> TonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing

    def _redact(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers[API_KEY_HEADER] = self._api_key
        return headers

    def _error_for(self, status: int, body: Json, api_method: str) -> TonApiError:
        message = ""
        code: int | None = None
        if isinstance(body, dict):
            raw_error = body.get("error", body.get("result", ""))
            message = raw_error if isinstance(raw_error, str) else json.dumps(raw_error)
            raw_code = body.get("code")
            code = (
                raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
            )
        effective = status if status >= 400 else (code or 500)
        text = self._redact(f"{api_method}: HTTP {status}" + (f": {message}" if message else ""))
        lowered = message.lower()
        cls: type[TonApiError]
        if api_method.startswith("sendBoc") and (
            "cannot apply external message" in lowered or "not accepted" in lowered
        ):
            cls = TonMessageRejectedError
        elif effective in (401, 403):
            cls = TonAuthError
        elif effective == 404:
            cls = TonNotFoundError
        elif effective == 429:
            cls = TonRateLimitedError
        elif effective >= 500:
            cls = TonServerError
        else:
            cls = TonBadRequestError
        return cls(text, status=status, code=code, method=api_method)

    async def _attempt(
        self, request: HttpRequest, api_method: str, *, envelope: bool = True
    ) -> Json:
        """One HTTP attempt. Returns the ``result`` field (v2's envelope) or, with
        ``envelope=False`` (v3), the whole JSON object; or raises a TonClientError."""
        if self._limiter is not None:
            await self._limiter.acquire()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._transport.send(request, self._timeout)
        except TimeoutError:
            raise TonTimeoutError(f"{api_method}: no response within {self._timeout:g}s") from None
        except (TonTransportError, TonResponseError) as exc:
            raise type(exc)(self._redact(str(exc))) from None
        except TonClientError:
            raise
        except Exception as exc:  # any other transport failure is a transport error
            raise TonTransportError(
                self._redact(f"{api_method}: {type(exc).__name__}: {exc}")
            ) from None

        try:
            body: Json = jsondoc.loads(response.body) if response.body else None
        except (ValueError, UnicodeDecodeError):
            body = None
        if response.status >= 400 or (isinstance(body, dict) and body.get("ok") is False):
            error = self._error_for(response.status, body, api_method)
            if isinstance(error, TonRateLimitedError):
                retry_after = response.headers.get("Retry-After") or response.headers.get(
                    "retry-after"
                )
                try:
                    delay = float(retry_after) if retry_after else None
                except ValueError:
                    delay = None
                error.retry_after = delay
            raise error
        if not envelope:
            if not isinstance(body, dict):
                raise TonResponseError(
                    self._redact(f"{api_method}: HTTP {response.status} without a JSON object")
                )
            return body
        if not isinstance(body, dict) or "result" not in body:
            raise TonResponseError(
                self._redact(f"{api_method}: HTTP {response.status} without a JSON 'result'")
            )
        return body["result"]

    async def _call(
        self,
        api_method: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Json = None,
        retry: bool = True,
        base: str | None = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> Json:
        """One API method, retried on transient errors. ``base`` (v3's) means the
        answer is a plain JSON object, not v2's ``{"ok", "result"}`` envelope."""
        request = HttpRequest(
            method="POST" if json_body is not None else "GET",
            url=f"{base or self._base_url}/{api_method}",
            params=dict(params or {}),
            json_body=json_body,
            headers=self._headers(),
            query=tuple(query),
        )
        attempts = self._retry.max_attempts if retry else 1
        for attempt in range(attempts):
            try:
                return await self._attempt(request, api_method, envelope=base is None)
            except TonClientError as exc:
                if not exc.transient or attempt + 1 >= attempts:
                    raise
                delay = self._retry.delay(attempt, self._rng)
                if isinstance(exc, TonRateLimitedError) and exc.retry_after is not None:
                    delay = min(self._retry.max_delay, max(delay, exc.retry_after))
                log.info(
                    "TON API %s failed (%s), retry %d/%d in %.2fs",
                    api_method,
                    type(exc).__name__,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ API methods

    async def get_address_information(self, address: str | Address) -> AddressInformation:
        raw = normalize_address(address)
        obj = _obj(
            await self._call("getAddressInformation", params={"address": raw}),
            "getAddressInformation",
        )
        return AddressInformation(
            balance=_nano(obj.get("balance", "0"), "balance"),
            state=_state(obj.get("state"), "state"),
            code=_b64_or_none(obj.get("code"), "code"),
            data=_b64_or_none(obj.get("data"), "data"),
            last_transaction_id=_tx_id(obj.get("last_transaction_id"), "last_transaction_id"),
            frozen_hash=obj.get("frozen_hash") or None,
            sync_utime=_int(obj["sync_utime"], "sync_utime") if "sync_utime" in obj else None,
        )

    async def get_account_states(
        self, addresses: Iterable[str | Address]
    ) -> dict[str, AccountState]:
        """Many accounts' balances and states: toncenter v3's
        ``GET /api/v3/accountStates?address=A&address=B&include_boc=false``
        (https://docs.ton.org/ecosystem/api/toncenter/v3/accounts/get-account-states).

        Keyed by the raw address (``wc:lowerhex``) of each account the index holds;
        an address it does not hold is absent (the index has no row for an account
        never touched on chain, or not indexed yet), so absence says nothing about
        the balance. The index answers addresses as raw upper-case hex
        (``0:ABC...``), matched here through :func:`normalize_address`.

        Sent in as few requests as fit :data:`MAX_ACCOUNTS_PER_REQUEST` and the URL
        budget (``max_url_bytes``, :data:`MAX_URL_BYTES`), one after the other; errors
        as every method's (:class:`~cocoon_operator.ton.errors.TonClientError`),
        :class:`~cocoon_operator.ton.errors.TonNotFoundError` when the server has no
        such endpoint, :class:`TonClientError` at once when no v3 URL is known.
        """
        if self._v3_url is None:
            raise TonClientError(f"no toncenter v3 URL known for {self._base_url}")
        wanted = list(dict.fromkeys(normalize_address(a) for a in addresses))
        found: dict[str, AccountState] = {}
        for chunk in _chunks(
            wanted, len(f"{self._v3_url}/accountStates?include_boc=false"), self._max_url_bytes
        ):
            body = await self._call(
                "accountStates",
                params={"include_boc": "false"},
                base=self._v3_url,
                query=[("address", a) for a in chunk],
            )
            accounts = body.get("accounts")
            if not isinstance(accounts, list):
                raise TonResponseError("accountStates: 'accounts' must be a list")
            asked = set(chunk)
            for i, entry in enumerate(accounts):
                state = _account_state(entry, f"accounts[{i}]")
                if state.address in asked:
                    found[state.address] = state
        return found

    async def get_address_balance(self, address: str | Address) -> Nanoton:
        raw = normalize_address(address)
        return _nano(await self._call("getAddressBalance", params={"address": raw}), "balance")

    async def get_address_state(self, address: str | Address) -> AccountStatus:
        raw = normalize_address(address)
        return _state(await self._call("getAddressState", params={"address": raw}), "state")

    async def get_wallet_information(self, address: str | Address) -> WalletInformation:
        raw = normalize_address(address)
        obj = _obj(
            await self._call("getWalletInformation", params={"address": raw}),
            "getWalletInformation",
        )
        seqno = obj.get("seqno")
        wallet_id = obj.get("wallet_id")
        wallet_type = obj.get("wallet_type")
        return WalletInformation(
            wallet=bool(obj.get("wallet", False)),
            balance=_nano(obj.get("balance", "0"), "balance"),
            account_state=_state(obj.get("account_state"), "account_state"),
            wallet_type=wallet_type if isinstance(wallet_type, str) else None,
            seqno=_int(seqno, "seqno") if seqno is not None else None,
            wallet_id=_int(wallet_id, "wallet_id") if wallet_id is not None else None,
            last_transaction_id=_tx_id(obj.get("last_transaction_id"), "last_transaction_id"),
        )

    async def run_get_method(
        self,
        address: str | Address,
        method: str,
        stack: Sequence[StackValue] = (),
        *,
        check: bool = True,
    ) -> GetMethodResult:
        """Run a get-method. With ``check`` (default), exit codes other than 0 and 1 raise
        :class:`TonGetMethodError`."""
        raw = normalize_address(address)
        obj = _obj(
            await self._call(
                "runGetMethod",
                json_body={
                    "address": raw,
                    "method": method,
                    "stack": [_encode_stack_arg(v) for v in stack],
                },
            ),
            "runGetMethod",
        )
        exit_code = _int(obj.get("exit_code", 0), "exit_code")
        if check and exit_code not in (0, 1):
            raise TonGetMethodError(method, exit_code)
        entries = obj.get("stack", [])
        if not isinstance(entries, list):
            raise TonResponseError("runGetMethod: stack must be a list")
        return GetMethodResult(
            exit_code=exit_code,
            gas_used=_int(obj.get("gas_used", 0), "gas_used"),
            stack=tuple(_stack_entry(e, f"stack[{i}]") for i, e in enumerate(entries)),
        )

    async def send_boc(self, boc: bytes, *, retry: bool = True) -> None:
        """Send a serialised external message.

        Retried on transient errors by default: re-sending the same signed BOC
        to a replay-protected contract (wallets: seqno/valid_until) is
        idempotent. Pass ``retry=False`` for contracts without such protection.
        """
        await self._call("sendBoc", json_body={"boc": base64.b64encode(boc).decode()}, retry=retry)

    async def send_boc_return_hash(self, boc: bytes, *, retry: bool = True) -> SentMessage:
        """Like :meth:`send_boc`, returning the message hash the server computed."""
        result = await self._call(
            "sendBocReturnHash", json_body={"boc": base64.b64encode(boc).decode()}, retry=retry
        )
        msg_hash = result.get("hash") if isinstance(result, dict) else None
        return SentMessage(hash=msg_hash if isinstance(msg_hash, str) else None)

    async def get_transactions(
        self,
        address: str | Address,
        *,
        limit: int = 10,
        lt: int | None = None,
        tx_hash: str | None = None,
        to_lt: int | None = None,
        archival: bool = False,
    ) -> list[TransactionInfo]:
        """Transactions of an account, newest first (v2 ``getTransactions``)."""
        params = {"address": normalize_address(address), "limit": str(limit)}
        if lt is not None:
            params["lt"] = str(lt)
        if tx_hash is not None:
            params["hash"] = tx_hash
        if to_lt is not None:
            params["to_lt"] = str(to_lt)
        if archival:
            params["archival"] = "true"
        result = await self._call("getTransactions", params=params)
        if not isinstance(result, list):
            raise TonResponseError("getTransactions: expected a list")
        return [_transaction(t, f"transactions[{i}]") for i, t in enumerate(result)]
