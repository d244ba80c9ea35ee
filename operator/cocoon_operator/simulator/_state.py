"""The simulated worker's state: a pure object driven by an injected clock.

Nothing here does I/O or reads the time itself: every method takes ``now``
(Unix seconds, float) and the state advances lazily to it. The load model is
deliberately simple and deterministic:

- while enabled, ``load`` requests are in flight and requests complete at
  ``requests_per_second``, each earning ``tokens_per_request`` tokens, spread
  round-robin over the proxies;
- after a disable, the requests that were in flight drain linearly to zero in
  ``drain_seconds`` (each one that finishes still counts and earns);
- a payout is sent whatever is owed, as COCOON's ``/request/payout`` does
  (WorkerRunner.cpp:732-755): the proxy's expected cash-out jumps at once to
  the tokens committed then (``run_payout``, WorkerProxyInfo.h:84-86), it runs
  for ``payout_seconds`` (``running_request``), then those tokens are cashed
  out; the wallet pays a fee and its seqno advances.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections import deque
from dataclasses import dataclass, field

NANO = 1_000_000_000
#: Rate windows COCOON's counters report after the total: 1s, 10s, 1m, 10m, 1h, 1d.
STAT_WINDOWS = (1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)
_COMMIT_BATCH = 1000  # tokens the proxy commits to the blockchain at a time


def friendly_address(account: bytes, *, workchain: int = 0, bounceable: bool = False) -> str:
    """A TON user-friendly address (base64url, 48 characters) for a 32-byte account id."""
    if len(account) != 32:
        raise ValueError("a TON account id is 32 bytes")
    tag = 0x11 if bounceable else 0x51
    body = bytes([tag, workchain & 0xFF]) + account
    crc = binascii.crc_hqx(body, 0)  # CRC-16/XMODEM
    return base64.urlsafe_b64encode(body + crc.to_bytes(2, "big")).decode("ascii")


def derived_address(*parts: str | bytes | int) -> str:
    """A deterministic fake address named by ``parts`` (the simulator has no chain)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode("utf-8")
        h.update(len(raw).to_bytes(4, "big") + raw)
    return friendly_address(h.digest())


@dataclass(frozen=True)
class LoadModel:
    """How the simulated worker behaves over time."""

    load: int = 2  # requests in flight while enabled
    max_active_requests: int = 16
    requests_per_second: float = 1.0
    tokens_per_request: int = 120
    drain_seconds: float = 5.0
    payout_seconds: float = 1.0
    payout_fee_nano: int = 10_000_000  # 0.01 TON of gas per forced payout

    def __post_init__(self) -> None:
        if self.load < 0 or self.max_active_requests < 1:
            raise ValueError("load must be >= 0 and max_active_requests >= 1")
        if self.requests_per_second < 0 or self.tokens_per_request < 0:
            raise ValueError("request rate and tokens per request must be >= 0")
        if self.drain_seconds < 0 or self.payout_seconds < 0 or self.payout_fee_nano < 0:
            raise ValueError("durations and fees must be >= 0")


@dataclass
class ProxyState:
    """One proxy this worker serves, with COCOON's earned / committed token counters."""

    proxy_sc_address: str
    worker_sc_address: str
    proxy_public_key: str
    earned: float = 0.0  # tokens (fractional while accruing)
    cashed_out: int = 0
    payout_running_until: float | None = None
    payout_amount: int = 0
    # exp_tokens_processed_ (WorkerProxyInfo.h:145), set when a payout is sent (:86).
    expected_processed: int = 0
    payouts: int = 0  # the harness's count (/simulator/state); COCOON reports none

    @property
    def earned_tokens(self) -> int:
        return int(self.earned)

    @property
    def committed_to_blockchain(self) -> int:
        return self.earned_tokens // _COMMIT_BATCH * _COMMIT_BATCH

    @property
    def expected_cashed_out(self) -> int:
        """``exp_tokens_cashed_out()`` (WorkerProxyInfo.h:56-58)."""
        return max(self.cashed_out, self.expected_processed)


@dataclass
class WorkerState:
    """Everything ``/jsonstats`` reports, advanced lazily to the ``now`` each call passes."""

    model: LoadModel
    wallet_address: str
    wallet_balance: int
    coefficient: int
    enabled: bool
    proxies: list[ProxyState]
    started_at: float
    wallet_seqno: int = 1
    completed: float = 0.0
    failed: int = 0
    updated_at: float = field(init=False)
    _drain_from: int = field(default=0, init=False)
    _disabled_at: float | None = field(default=None, init=False)
    _next_proxy: int = field(default=0, init=False)
    _unspread: float = field(default=0.0, init=False)  # a request's part not yet credited
    _samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=4096))

    def __post_init__(self) -> None:
        self.updated_at = self.started_at
        self._samples.append((self.started_at, 0.0))

    # ------------------------------------------------------------------ time

    def _in_flight_at(self, now: float) -> int:
        if self.enabled:
            return min(self.model.load, self.model.max_active_requests)
        if self._disabled_at is None or self._drain_from == 0:
            return 0
        if self.model.drain_seconds <= 0:
            return 0
        left = 1.0 - (now - self._disabled_at) / self.model.drain_seconds
        return max(0, math.ceil(self._drain_from * left - 1e-9))

    def _earn(self, requests: float) -> None:
        if requests <= 0 or not self.proxies:
            return
        self.completed += requests
        # Whole requests go round-robin, however finely the time is sliced: a
        # worker read every fraction of a second still earns from every proxy.
        self._unspread += requests
        whole = int(self._unspread + 1e-9)
        self._unspread = max(0.0, self._unspread - whole)
        for _ in range(whole):
            self.proxies[self._next_proxy].earned += self.model.tokens_per_request
            self._next_proxy = (self._next_proxy + 1) % len(self.proxies)

    def advance(self, now: float) -> None:
        """Bring counters, draining and payouts forward to ``now`` (never backwards)."""
        if now > self.updated_at:
            before = self._in_flight_at(self.updated_at)
            if self.enabled:
                self._earn(self.model.requests_per_second * (now - self.updated_at))
            else:
                self._earn(float(before - self._in_flight_at(now)))
            self.updated_at = now
            last_t, _ = self._samples[-1]
            if now - last_t >= 1.0:
                self._samples.append((now, self.completed))
        self._finish_payouts(now)

    def _finish_payouts(self, now: float) -> None:
        for proxy in self.proxies:
            until = proxy.payout_running_until
            if until is not None and until <= now:
                proxy.cashed_out = max(proxy.cashed_out, proxy.payout_amount)
                proxy.payout_running_until = None
                proxy.payouts += 1

    def in_flight(self, now: float) -> int:
        self.advance(now)
        return self._in_flight_at(now)

    def window_counts(self, now: float) -> list[float]:
        """Requests completed within each of :data:`STAT_WINDOWS` before ``now`` (approximate)."""
        self.advance(now)
        out: list[float] = []
        for width in STAT_WINDOWS:
            start = now - width
            base = 0.0
            for t, value in self._samples:
                if t > start:
                    break
                base = value
            out.append(round(self.completed - base, 3))
        return out

    # ------------------------------------------------------------------ control

    def set_enabled(self, value: bool, now: float) -> None:
        self.advance(now)
        if value == self.enabled:
            return
        if value:
            self.enabled = True
            self._disabled_at = None
            self._drain_from = 0
        else:
            self._drain_from = self._in_flight_at(now)
            self.enabled = False
            self._disabled_at = now

    def set_coefficient(self, per_mille: int, now: float) -> None:
        self.advance(now)
        self.coefficient = per_mille

    def proxy(self, address: str) -> ProxyState | None:
        for proxy in self.proxies:
            if proxy.proxy_sc_address == address:
                return proxy
        return None

    def request_payout(self, address: str, now: float) -> str:
        """Start a forced payout for the proxy; the answer is COCOON's short status text."""
        self.advance(now)
        proxy = self.proxy(address)
        if proxy is None:
            return "proxy not found"
        if proxy.payout_running_until is not None:
            return "request is already running"
        proxy.payout_amount = proxy.committed_to_blockchain
        proxy.expected_processed = proxy.payout_amount
        proxy.payout_running_until = now + self.model.payout_seconds
        self.wallet_seqno += 1
        self.wallet_balance = max(0, self.wallet_balance - self.model.payout_fee_nano)
        self._finish_payouts(now)
        return "request sent"

    def set_wallet_balance(self, nano: int, now: float) -> None:
        self.advance(now)
        if nano < 0:
            raise ValueError("a wallet balance is >= 0 nanoTON")
        self.wallet_balance = nano

    @property
    def payouts(self) -> int:
        return sum(p.payouts for p in self.proxies)
