"""The fleet's balance book: every node wallet's balance, read in batches (no Kubernetes).

Why: each worker's chain check needs its node wallet's balance, to see it fall
below the worker's minimum. Read one wallet per check, a fleet of 1,000 at 30 s
checks asks the TON API 2,000 times a minute; the back-off it had instead (read a
balance that holds less and less often) let a falling balance go unseen for up
to ten checks, and still cost about half a read per worker per minute
(docs/bench.md). toncenter's v3 index answers many accounts in one
request (``GET /api/v3/accountStates``, :meth:`TonClient.get_account_states`),
so the book reads every wallet the fleet's checks ask about in one sweep per
check interval, and serves each check from that sweep.

The rule a check relies on: :meth:`BalanceBook.balance` never answers with a
reading older than one check interval. A check that finds none that young (a
new worker, a sweep that failed, an address the index does not hold) waits
for a read, which the book batches with every other address due within half an
interval: readings stay in step, and the fleet costs about one sweep (a few
requests) per interval. So a wallet below its minimum is seen at most one
interval later than a per-check read would see it: the reading is at most one
interval old, and the check that uses it comes at most one interval after the
fall, as before.

What the book is not for: money. The treasury re-reads every balance itself,
from the v2 API, right before it signs (``_treasury.py``, ``Treasury._fresh``),
and decides whether a top-up landed by the chain's own record; a book reading
that lags (an index a few blocks behind) can cost a treasury cycle that pays
nothing, never a second payment.

A server without the v3 endpoint (it answers 404, or the client knows no v3
URL) is read one address at a time with the v2 ``getAddressBalance``, as before;
an address the index does not hold (never touched on chain, or not indexed
yet) is read that way too, since the index cannot tell "no account" from "not
seen yet".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from cocoon_operator.ton.address import normalize_address
from cocoon_operator.ton.amounts import Nanoton
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.errors import TonError, TonNotFoundError

log = logging.getLogger(__name__)

#: An address no check asked about for this many intervals leaves the book (its
#: worker was deleted, or its wallet changed): sweeps read only what is in use.
IDLE_INTERVALS = 2.0

#: With the book's own sweep running (:meth:`BalanceBook.sweep_forever`), every
#: wallet in use is read this share of a check interval after the last sweep: its
#: reading is renewed before any check could find it a whole interval old, so the
#: fleet's checks cost one sweep a period and read on demand only a new wallet (or
#: one a failed sweep left behind).
SWEEP_SHARE = 0.8

#: How long a read waits for more checks to join it before it goes out: the
#: fleet's checks are spread over the interval, and a moment gathers the ones
#: that start together (a burst of new workers) into one request.
DEFAULT_WINDOW_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class BookReading:
    """One wallet's balance as the book read it, at ``read_at`` on the book's clock
    (the time the request was sent: the state is at least that recent)."""

    address: str
    balance: Nanoton
    read_at: float


@dataclass(frozen=True, slots=True)
class Seen:
    """What a check gets: the balance, and how many seconds ago it was read."""

    balance: Nanoton
    age: float


def fresh(reading: BookReading | None, *, now: float, interval: float) -> bool:
    """Whether ``reading`` may serve a check at ``now``: at most one interval old."""
    return reading is not None and now - reading.read_at <= interval


def in_use(
    asked: Mapping[str, float], *, now: float, interval: float, stretch: float = 1.0
) -> frozenset[str]:
    """The addresses some check asked about within the last :data:`IDLE_INTERVALS`
    intervals, each interval ``stretch`` times as long: a Ready worker's checks may be
    spaced out that far while the operator is overloaded (policy/backpressure.py),
    and a wallet dropped between two of its checks would be read on its own at each."""
    horizon = IDLE_INTERVALS * interval * stretch
    return frozenset(a for a, at in asked.items() if now - at <= horizon)


def plan_reads(
    readings: Mapping[str, BookReading],
    asked: Mapping[str, float],
    wanted: Collection[str],
    *,
    now: float,
    interval: float,
    swept: bool = False,
) -> tuple[str, ...]:
    """The addresses one batched read covers now (pure).

    Nothing unless a check waits (``wanted``): the book reads on demand, and a
    fleet with no checks running costs nothing. When one does, the read covers
    every wanted address without a fresh reading, and with them every address in
    use whose reading is at least half an interval old or missing: it would
    expire before the next interval anyway, and reading it now, in the same
    request, keeps the fleet's readings in step so that one sweep per interval
    serves every check. ``swept``: the book's own sweep keeps the fleet in step
    (:data:`SWEEP_SHARE`), so the read covers the wanted addresses alone.
    Sorted, so a plan is the same whatever the order of asks.
    """
    due = {a for a in wanted if not fresh(readings.get(a), now=now, interval=interval)}
    if not due or swept:
        return tuple(sorted(due))
    for address in in_use(asked, now=now, interval=interval):
        reading = readings.get(address)
        if reading is None or now - reading.read_at >= interval / 2:
            due.add(address)
    return tuple(sorted(due))


@dataclass
class BalanceBook:
    """Node wallet balances for the fleet's chain checks, read in batches.

    ``clock`` is monotonic seconds (injected: tests step it); ``interval`` is the
    chain check interval, the oldest a reading served may be.
    """

    ton: TonClient
    interval: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    window: float = DEFAULT_WINDOW_SECONDS
    #: How far the checks' intervals may be stretched (the operator's
    #: --max-recheck-stretch): a wallet stays in the sweeps that long between asks.
    stretch: float = 1.0
    _readings: dict[str, BookReading] = field(default_factory=dict)
    _asked: dict[str, float] = field(default_factory=dict)
    _waiting: dict[str, asyncio.Future[BookReading]] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Future[BookReading]] = field(default_factory=dict)
    _flusher: asyncio.Task[None] | None = None
    _batched: bool = True
    _sweeping: bool = False
    # The sweep under way: the wallets it reads, and its end.
    _sweep: tuple[frozenset[str], asyncio.Future[None]] | None = None

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be > 0")
        if self.ton.v3_url is None:
            self._batched = False

    async def balance(self, address: str) -> Seen:
        """``address``'s balance, read at most one interval ago; raises what the TON
        client raises (:class:`~cocoon_operator.ton.errors.TonError`) when a read
        this call waited on failed."""
        address = normalize_address(address)
        now = self.clock()
        self._asked[address] = now
        reading = self._readings.get(address)
        if (reading is None or not fresh(reading, now=now, interval=self.interval)) and (
            self._sweep is not None and address in self._sweep[0]
        ):
            # The sweep under way reads this wallet: its reading is the one to wait for
            # (a read of its own would be one more request for the same answer).
            await asyncio.shield(self._sweep[1])
            reading = self._readings.get(address)
            now = self.clock()
        if reading is None or not fresh(reading, now=now, interval=self.interval):
            future = self._waiting.get(address) or self._inflight.get(address)
            if future is None:
                future = self._waiting[address] = asyncio.get_running_loop().create_future()
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
            reading = await asyncio.shield(future)
        return Seen(reading.balance, max(0.0, self.clock() - reading.read_at))

    def reading(self, address: str) -> BookReading | None:
        """The book's last reading of ``address``, however old (for tests and status)."""
        return self._readings.get(normalize_address(address))

    async def _flush(self) -> None:
        # Checks that ask while a read is out are taken by the next pass of this
        # loop; the task ends, with no await after it, once nobody waits.
        while True:
            await self.sleep(self.window)
            waiting, self._waiting = self._waiting, {}
            if not waiting:
                return
            self._inflight = waiting
            try:
                await self._read(waiting)
            except Exception as exc:  # every waiter gets an answer, whatever failed
                for future in waiting.values():
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: its check may have gone meanwhile
            finally:
                self._inflight = {}

    async def sweep_forever(self) -> None:
        """Read every wallet in use, in batches, each :data:`SWEEP_SHARE` of an interval,
        until cancelled: the fleet's checks are then served from the sweeps, and a
        check reads on demand only a wallet the sweeps do not cover yet. A sweep that
        fails is said in one line; the checks whose readings age past an interval
        meanwhile read on demand, as without a sweep."""
        self._sweeping = True
        period = self.interval * SWEEP_SHARE
        try:
            while True:
                started = self.clock()
                try:
                    await self.sweep()
                except Exception:  # a bug, not the TON API: the next sweep tries again
                    log.exception("balance sweep failed; the checks read on demand meanwhile")
                # A period from one sweep's start to the next: the readings are
                # stamped with the start, so a slow sweep does not age them further.
                await self.sleep(max(0.0, period - (self.clock() - started)))
        finally:
            self._sweeping = False

    async def sweep(self) -> None:
        """One read of every wallet in use (nothing without a v3 index: then each
        check reads its own wallet, one at a time). Checks that find their reading
        too old while it is out wait for it rather than read on their own."""
        now = self.clock()
        self._forget_idle(now)
        if not (self._batched and self._asked):
            return
        plan = tuple(sorted(self._asked))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sweep = (frozenset(plan), done)
        try:
            await self._read_batch(plan, now)
        finally:
            self._sweep = None
            done.set_result(None)

    def _forget_idle(self, now: float, keep: Collection[str] = ()) -> None:
        kept = self._in_use(now) | set(keep)
        self._asked = {a: at for a, at in self._asked.items() if a in kept}
        self._readings = {a: r for a, r in self._readings.items() if a in kept}

    async def _read_batch(self, plan: Sequence[str], now: float) -> None:
        """``plan``'s balances by one batched v3 read (a few requests), kept as read at
        ``now``; on failure nothing is kept, and the v2 path stands in."""
        try:
            states = await self.ton.get_account_states(plan)
        except TonNotFoundError:
            self._batched = False
            log.warning(
                "the TON API at %s serves no /api/v3/accountStates: node wallet"
                " balances are read one at a time (getAddressBalance)",
                self.ton.base_url,
            )
            return
        except TonError as exc:
            # The index is down or refuses: the waiting checks read v2 this time.
            log.warning("batched balance read failed (%s); reading one at a time", exc)
            return
        for address, state in states.items():
            self._readings[address] = BookReading(address, state.balance, now)

    async def _read(self, waiting: Mapping[str, asyncio.Future[BookReading]]) -> None:
        now = self.clock()
        self._forget_idle(now, waiting.keys())
        plan = plan_reads(
            self._readings,
            self._asked,
            waiting.keys(),
            now=now,
            interval=self.interval,
            swept=self._sweeping,
        )
        if self._batched and plan:
            await self._read_batch(plan, now)
        # A waiter whose wallet a read just before this one covered needs nothing more;
        # one the index does not hold (or no index) is read from v2.
        missing = [
            a for a in waiting if not fresh(self._readings.get(a), now=now, interval=self.interval)
        ]
        answers = await asyncio.gather(*(self._read_one(a) for a in missing))
        failed = dict(zip(missing, answers, strict=True))
        for address, future in waiting.items():
            error = failed.get(address)
            if error is not None:
                future.set_exception(error)
                future.exception()  # retrieved: its check may have gone meanwhile
            else:
                future.set_result(self._readings[address])

    async def _read_one(self, address: str) -> TonError | None:
        """One address by the v2 API (authoritative); the error, if it failed."""
        started = self.clock()
        try:
            balance = await self.ton.get_address_balance(address)
        except TonError as exc:
            return exc
        self._readings[address] = BookReading(address, balance, started)
        return None

    def _in_use(self, now: float) -> frozenset[str]:
        return in_use(self._asked, now=now, interval=self.interval, stretch=self.stretch)
