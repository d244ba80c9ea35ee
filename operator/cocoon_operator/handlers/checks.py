"""One scheduler, owned by the operator, runs every worker's periodic checks.

The attestation, chain, coefficient, model and resync checks of a worker were
first a kopf timer each, then one kopf timer per worker ticking at the
shortest interval. Profiling the fleet benchmark at 1,000 workers still put
14% of the steady state's CPU in kopf's timer machinery (each run's kwargs,
logger, outcome and patch; a task, its coroutines, a stopper and the live body
kept per worker) and another 16% in the event loop's ``select``, woken by a
thousand timers that each sleep on their own (docs/bench.md). This module
keeps one heap of the workers' next due times and one task that sleeps until
the soonest: a worker costs a heap entry and its due times between checks.

Which workers: every worker kopf has handled once (its create or resume
handler calls :meth:`Schedule.track`; kopf runs those only after its indexes
are complete, as it spawned its timers), until the ``workers`` index no
longer has it or shows it being deleted (kopf stopped a timer then too). Each
tick of a worker takes its newest snapshot from that index.

Each check gets up to a tick before the next one starts. One that takes longer
(a top-up awaiting its confirmation, a verification fetching collateral) goes
on by itself, so it holds up neither the worker's other checks nor its next
ticks, and is not started again until it is done. Such a check outlives the
scheduler when the operator stops only until its own timeouts end it.

A check that fails does not hold up the others. An apiserver outage
(:func:`~cocoon_operator.handlers.retry.transient_api_error`) is one warning
line and the check is due again next tick; a step's ``kopf.TemporaryError`` is
one line and its own delay; a ``kopf.PermanentError`` one line and
:data:`BACKOFF_SECONDS`; any other exception is logged with its traceback and
the check backs off for :data:`BACKOFF_SECONDS` (kopf's own default for a
failing handler). The worker's other checks go on meanwhile. The lines are the
worker's log (kopf's per-object format) and are not posted as Events: what a
user must see, the steps record themselves, once per change.

A check that succeeds is due again after its interval times ``stretch(body)``:
1 unless the operator is overloaded and the worker is Ready (see
policy/backpressure.py), so routine re-checks give way to workers on their way
to Ready. Once a tick the scheduler asks ``hurry(body)`` of each stretched
worker; one that needs its checks at their own pace again (it left Ready: its
pod lost, say) has its due times pulled back to one interval after each
check's last run.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from cocoon_operator.handlers.retry import outage_message, transient_api_error
from cocoon_operator.handlers.runtime import (
    CheckFn,
    Indexes,
    Logger,
    Runtime,
    Tick,
    WorkerIndex,
)

BACKOFF_SECONDS = 60.0
# A wake also starts the workers due within this share of a tick, at most this
# many of them ahead of their time.
GATHER = 1 / 20
GATHER_MAX = 64
# A watch's timer that fires this share of a tick early or less is on time (the
# event loop runs a timer up to its clock's resolution early).
_EARLY = 1 / 1000
_LOG = logging.getLogger("cocoon_operator.checks")

# How many intervals a worker's next check waits after a success: (body).
Stretch = Callable[[Mapping[str, Any]], float]
# Whether a worker's checks must not stay stretched any longer: (body).
Hurry = Callable[[Mapping[str, Any]], bool]
WorkerKey = tuple[str, str]


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def no_stretch(body: Mapping[str, Any]) -> float:
    return 1.0


def no_hurry(body: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class Check:
    """A periodic step: ``fn`` checks one worker (its :class:`Tick`) every ``every`` s."""

    id: str
    fn: CheckFn
    every: float
    # Run on a worker's first tick (False: first after ``every``, as a resync).
    at_start: bool = True


def tick_of(checks: Sequence[Check]) -> float:
    """The scheduler's tick: the shortest interval among ``checks``."""
    return min(check.every for check in checks)


def due(
    checks: Sequence[Check], next_at: Mapping[str, float], now: float, tick: float
) -> list[Check]:
    """The checks to run at ``now``, in order: never run, or due within half a tick.

    A worker wakes when its soonest check is due; the half tick of slack lets the
    checks due shortly after run in the same wake, rather than each wake alone.
    """
    return [c for c in checks if next_at.get(c.id, now) <= now + tick / 2]


def wake_at(checks: Sequence[Check], next_at: Mapping[str, float], now: float) -> float:
    """When a worker is next woken: when its soonest check is due (``now`` for a check
    that never ran)."""
    return min(next_at.get(c.id, now) for c in checks)


def unstretch(next_at: MutableMapping[str, float], plain_at: Mapping[str, float]) -> None:
    """Pull each check's due time back to where its interval alone would put it."""
    for key, plain in plain_at.items():
        if plain < next_at.get(key, plain):
            next_at[key] = plain


@dataclass
class _Worker:
    """One worker's place in the schedule."""

    key: WorkerKey
    uid: str
    next_at: dict[str, float] = field(default_factory=dict)  # when each check is due
    plain_at: dict[str, float] = field(default_factory=dict)  # ... had it not been stretched
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # gone on alone
    wake: float | None = None  # its valid entry in the heap; None: not in it
    ticking: bool = False
    # The snapshot its last tick started from and that tick's view of it, kept while
    # the workers index holds that very snapshot (a worker at rest is not written).
    seen: tuple[Mapping[str, Any], Tick] | None = None


@dataclass(frozen=True)
class _Turns:
    """One tick of one worker: its checks take their turns from ``one``; ``over``, when
    asked for, is done once each has had its turn. ``raw`` is the snapshot ``one`` views: the
    scheduler's own reads (``stretch``, ``hurry``) take it as it is, without going
    through a kopf view (docs/bench.md)."""

    worker: _Worker
    one: Tick
    raw: Mapping[str, Any]
    over: asyncio.Future[None] | None


@dataclass(slots=True)
class _Watch:
    """The check at work in a sequence of turns, since when, and the checks after it."""

    check: Check | None = None
    started: float = 0.0
    rest: list[Check] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Schedule:
    """Every worker's periodic checks, on one heap and one task (see the module)."""

    def __init__(
        self,
        runtime: Runtime,
        checks: Sequence[Check],
        *,
        clock: Callable[[], float] = time.monotonic,
        stretch: Stretch = no_stretch,
        hurry: Hurry = no_hurry,
    ) -> None:
        self.runtime = runtime
        self.checks = tuple(checks)
        self.tick = tick_of(self.checks)
        # Workers due close together start in one wake, so their steps share the
        # event loop's rounds: at 1,000 workers and the chart's 10 s, 130 wakes a
        # second would otherwise each cost the loop its own rounds and ``select``
        # (docs/bench.md). Each check's own slack (:func:`due`) is half a tick. At
        # most GATHER_MAX go early, so a wake's burst does not grow with the fleet
        # (at 10,000 workers a twentieth of a tick holds some 700 of them).
        self.gather = self.tick * GATHER
        self._later = [check for check in self.checks if not check.at_start]
        self._clock = clock
        self._stretch = stretch
        self._hurry = hurry
        self._workers: dict[WorkerKey, _Worker] = {}
        self._heap: list[tuple[float, int, WorkerKey]] = []
        self._order = itertools.count()
        self._stretched: set[WorkerKey] = set()
        self._ticks: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()
        self._indexes: Indexes | None = None
        self._snapshots: WorkerIndex | None = None
        self._settings = kopf.OperatorSettings()

    def __len__(self) -> int:
        return len(self._workers)

    def track(self, body: Mapping[str, Any]) -> None:
        """Check this worker from now on (kopf has handled it once). Idempotent: called
        by each of its create, resume and update handlers."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self._workers.get(key)
        if known is not None and known.uid == meta.get("uid", ""):
            return
        worker = self._workers[key] = _Worker(key, meta.get("uid", ""))
        now = self._clock()
        for check in self._later:
            worker.next_at[check.id] = now + check.every
        self._push(worker, now)
        self._woken.set()

    def attach(
        self, indexes: Indexes, snapshots: WorkerIndex, settings: kopf.OperatorSettings
    ) -> None:
        """kopf's indexes (what each :class:`Tick` reads) and its settings (for each
        worker's log lines), from the startup handler."""
        self._indexes, self._snapshots, self._settings = indexes, snapshots, settings

    # --- the heap ---------------------------------------------------------------------

    def _push(self, worker: _Worker, when: float) -> None:
        worker.wake = when
        heapq.heappush(self._heap, (when, next(self._order), worker.key))

    def _reschedule(self, worker: _Worker) -> None:
        """Put ``worker`` back in the heap at its soonest check not at work (a check
        gone on alone puts it back when done)."""
        if self._workers.get(worker.key) is not worker or worker.ticking:
            return
        idle = [check for check in self.checks if check.id not in worker.running]
        if not idle:
            worker.wake = None
            return
        when = wake_at(idle, worker.next_at, self._clock())
        if worker.wake != when:
            self._push(worker, when)
            self._woken.set()

    def _pop_due(self, now: float) -> list[_Worker]:
        """The workers due by ``now``, and up to :data:`GATHER_MAX` more due within
        :attr:`gather` after it."""
        out = []
        until, early = now + self.gather, 0
        while self._heap and self._heap[0][0] <= until:
            if self._heap[0][0] > now:
                if early == GATHER_MAX:
                    break
                early += 1
            when, _, key = heapq.heappop(self._heap)
            worker = self._workers.get(key)
            if worker is None or worker.wake != when:
                continue  # gone, or moved since
            worker.wake = None
            out.append(worker)
        return out

    def next_wake(self) -> float | None:
        """When the soonest worker is due (None: no worker is)."""
        while self._heap:
            when, _, key = self._heap[0]
            worker = self._workers.get(key)
            if worker is not None and worker.wake == when:
                return when
            heapq.heappop(self._heap)  # superseded
        return None

    # --- running ----------------------------------------------------------------------

    def start_due(self, *, turns_over: bool = False) -> list[asyncio.Future[None]]:
        """Start a tick of each worker due now (and of some due within :attr:`gather`).
        With ``turns_over``, for each a future done once every check due has had its
        turn (a check gone on alone may still be at work then); the scheduler's own
        loop asks for none, so none is made for it (a hundred a second per 1,000
        workers)."""
        loop = asyncio.get_running_loop()
        turns = []
        for worker in self._pop_due(self._clock()):
            over = loop.create_future() if turns_over else None
            self._spawn(self._tick(worker, over), worker)
            if over is not None:
                turns.append(over)
        return turns

    def _spawn(self, coro: Coroutine[Any, Any, None], worker: _Worker) -> None:
        task = asyncio.create_task(coro, name=f"checks {worker.key[1]}")
        self._ticks.add(task)  # held until done
        task.add_done_callback(self._ticks.discard)

    def hurry_stretched(self) -> None:
        """Pull back the stretched due times of workers that must keep their own pace."""
        for key in list(self._stretched):
            worker = self._workers.get(key)
            body = self._raw(key)  # a dict read per worker: no kopf view built
            if worker is None or body is None:
                self._stretched.discard(key)
            else:
                self._hurry_back(worker, body)

    def _hurry_back(self, worker: _Worker, body: Mapping[str, Any]) -> None:
        """A stretched worker that ``hurry`` says must keep its own pace: its due times
        pulled back, and the worker woken by them (by its tick's end, when one is at work)."""
        if worker.key in self._stretched and self._hurried(body):
            self._stretched.discard(worker.key)
            unstretch(worker.next_at, worker.plain_at)
            self._reschedule(worker)  # a tick at work reschedules it when done

    def _hurried(self, body: Mapping[str, Any]) -> bool:
        """``hurry(body)``; True when it fails on a body it did not expect (the checks at
        their own pace are the safe side), so the scheduler's task never dies of it."""
        try:
            return self._hurry(body)
        except Exception:
            _LOG.exception("hurry failed on %s; its checks keep their own pace", _name(body))
            return True

    async def run(self) -> None:
        """The scheduler's task: wake each worker when due, and once a tick the
        stretched ones' hurry; until cancelled (the operator's cleanup)."""
        sweep_at = self._clock()
        while True:
            now = self._clock()
            if now >= sweep_at:
                self.hurry_stretched()
                sweep_at = now + self.tick
            self.start_due()
            soonest = self.next_wake()
            wait = min(sweep_at, soonest if soonest is not None else sweep_at) - self._clock()
            if wait <= 0:
                await asyncio.sleep(0)
                continue
            self._woken.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._woken.wait()
            except TimeoutError:
                pass

    def _raw(self, key: WorkerKey) -> Mapping[str, Any] | None:
        """The worker as the ``workers`` index has it now; None once it is gone."""
        if self._snapshots is None:
            return None
        return next(iter(self._snapshots.get(key, [])), None)

    async def _tick(self, worker: _Worker, over: asyncio.Future[None] | None) -> None:
        raw = self._raw(worker.key)
        meta = raw["metadata"] if raw is not None else {}
        if raw is None or meta.get("deletionTimestamp") or meta.get("uid", "") != worker.uid:
            # Gone, being deleted, or another object by that name (tracked anew by
            # its own create handler): no more checks of this one.
            if self._workers.get(worker.key) is worker:
                del self._workers[worker.key]
                self._stretched.discard(worker.key)
            if over is not None:
                over.set_result(None)
            return
        turns = _Turns(worker, self._tick_of(worker, raw), raw, over)
        worker.ticking = True
        try:
            self._hurry_back(worker, raw)
            # Those still at work from an earlier tick are left to it.
            now = self._clock()
            checks = [
                c
                for c in due(self.checks, worker.next_at, now, self.tick)
                if c.id not in worker.running
            ]
        except BaseException:
            self._turns_over(turns)
            raise
        await self._take_turns(turns, checks)

    async def _take_turns(self, turns: _Turns, checks: list[Check]) -> None:
        """Run ``checks`` one after the other in this task, each given up to a tick.

        A check still at work a tick after it started goes on alone in this very task
        (:meth:`_overdue` starts the rest in another), so its timeouts and its
        cancellation stay its own. A task of its own per check, waited for by the
        tick, cost a task, a future, a timer and three rounds of the event loop a
        check (docs/bench.md), and nearly every check at rest waits for nothing. One
        timer watches the whole sequence: set for the first check's tick, and set
        again only if it fires while a later check is at work.
        """
        task = asyncio.current_task()
        assert task is not None  # the tick's task, or the one a hand-over started
        loop, worker = asyncio.get_running_loop(), turns.worker
        watch = _Watch()
        handed = False
        try:
            for at, check in enumerate(checks):
                watch.check, watch.started, watch.rest = check, loop.time(), checks[at + 1 :]
                if watch.timer is None:
                    when = watch.started + self.tick
                    watch.timer = loop.call_at(when, self._overdue, turns, watch, task)
                await self._run_one(check, turns)
                if worker.running.get(check.id) is task:
                    handed = True  # the rest went on elsewhere; this task ends with its check
                    return
        finally:
            if watch.timer is not None:
                watch.timer.cancel()
            if not handed:
                self._turns_over(turns)

    def _turns_over(self, turns: _Turns) -> None:
        """Every check due at this tick has had its turn: the worker back in the heap."""
        turns.worker.ticking = False
        self._reschedule(turns.worker)
        if turns.over is not None and not turns.over.done():
            turns.over.set_result(None)

    def _overdue(self, turns: _Turns, watch: _Watch, task: asyncio.Task[Any]) -> None:
        """The watch's timer: the check at work in ``task`` has been at it for a tick, so
        it goes on alone there (and is not started again until it is done) and the rest
        take their turns in a new task; or it started later than the first, and the
        timer is set for its own tick."""
        loop = asyncio.get_running_loop()
        when = watch.started + self.tick
        if when - loop.time() > self.tick * _EARLY:
            watch.timer = loop.call_at(when, self._overdue, turns, watch, task)
            return
        watch.timer = None
        worker, check = turns.worker, watch.check
        assert check is not None  # set before the timer is
        worker.running[check.id] = task
        task.add_done_callback(functools.partial(self._gone_alone_done, worker, check))
        self._spawn(self._take_turns(turns, watch.rest), worker)

    def _tick_of(self, worker: _Worker, raw: Mapping[str, Any]) -> Tick:
        """The :class:`Tick` of ``worker`` at its snapshot ``raw``: the last tick's while
        the index still holds that snapshot. A kopf body and its logger cost a tick more
        than a check of a worker at rest does (docs/bench.md); the index replaces the
        snapshot, never edits it, so the same object is the same worker."""
        if worker.seen is not None and worker.seen[0] is raw:
            return worker.seen[1]
        assert self._indexes is not None  # attached before any worker is tracked
        body = kopf.Body(cast(kopf.RawBody, raw))
        logger = kopf.LocalObjectLogger(body=body, settings=self._settings)
        one = Tick(self.runtime, body, logger, self._indexes)
        worker.seen = (raw, one)
        return one

    def _gone_alone_done(self, worker: _Worker, check: Check, _: object) -> None:
        worker.running.pop(check.id, None)
        self._reschedule(worker)

    async def _run_one(self, check: Check, turns: _Turns) -> None:
        worker, one = turns.worker, turns.one
        logger: Logger = one.logger
        clock, tick = self._clock, self.tick
        try:
            await check.fn(one)
        except kopf.TemporaryError as exc:
            # A step's own "not yet", with its delay: no traceback.
            delay = exc.delay if exc.delay is not None else tick
            logger.warning("Check %r: %s; retrying in %gs", check.id, exc, delay)
            worker.next_at[check.id] = clock() + delay
        except kopf.PermanentError as exc:
            # Nothing a retry fixes soon (an unparseable spec): said once a backoff.
            logger.error("Check %r: %s; retrying in %gs", check.id, exc, BACKOFF_SECONDS)
            worker.next_at[check.id] = clock() + BACKOFF_SECONDS
        except Exception as exc:
            if transient_api_error(exc):
                logger.warning("Check %r: %s; retrying in %gs", check.id, outage_message(exc), tick)
                worker.next_at[check.id] = clock() + tick
            else:
                logger.exception("Check %r failed; retrying in %gs", check.id, BACKOFF_SECONDS)
                worker.next_at[check.id] = clock() + BACKOFF_SECONDS
        else:
            done = clock()
            factor = self._stretch(turns.raw)
            worker.plain_at[check.id] = done + check.every
            worker.next_at[check.id] = done + check.every * factor
            if factor > 1:
                self._stretched.add(worker.key)
            return
        worker.plain_at[check.id] = worker.next_at[check.id]  # a retry's delay is never stretched


def register(
    registry: kopf.OperatorRegistry,
    runtime: Runtime,
    checks: Sequence[Check],
    *,
    clock: Callable[[], float] = time.monotonic,
    stretch: Stretch = no_stretch,
    hurry: Hurry = no_hurry,
) -> Schedule | None:
    """Run ``checks`` on every worker: the schedule, set on ``runtime`` for the workers'
    handlers to track them, started by a startup handler added to ``registry``."""
    if not checks:
        return None
    schedule = Schedule(runtime, checks, clock=clock, stretch=stretch, hurry=hurry)
    runtime.checks = schedule

    async def start(*, settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        schedule.attach(Indexes.of(kwargs), kwargs["workers"], settings)
        runtime.tasks.append(asyncio.create_task(schedule.run(), name="checks"))

    kopf.on.startup(id="checks-start", registry=registry)(start)
    return schedule


__all__ = [
    "BACKOFF_SECONDS",
    "Check",
    "Hurry",
    "Schedule",
    "Stretch",
    "due",
    "no_hurry",
    "no_stretch",
    "register",
    "tick_of",
    "unstretch",
    "wake_at",
]
