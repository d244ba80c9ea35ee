"""One kopf timer per worker for every periodic check.

The attestation, chain and coefficient checks each had a kopf timer of their
own: at 1,000 workers and 5 s intervals that is 36,000 timer runs a minute, and
profiling the fleet benchmark put much of the event loop in kopf's timer
machinery (building each run's kwargs, its logger, its outcome) rather than in
the checks (docs/bench.md). One timer per worker ticks at the shortest interval and runs, in
the order given, the checks that are due; what each step decides is unchanged.
The slow resync of each worker (every 10 minutes) is one of them too: a kopf
timer of its own cost a task, its coroutines and a handful of events and
flags per worker, sleeping.

Each check gets up to a tick before the next one starts. One that takes longer
(a top-up awaiting its confirmation, a verification fetching collateral) goes
on by itself, so it holds up neither the worker's other checks nor its next
ticks, and is not started again until it is done. Such a check outlives the
timer when kopf stops it (the worker deleted, the operator stopping) only
until its own timeouts end it.

A check that fails does not hold up the others. An apiserver outage
(:func:`~cocoon_operator.handlers.retry.transient_api_error`) is one warning
line and the check is due again next tick; a step's ``kopf.TemporaryError`` is
one line and its own delay; a ``kopf.PermanentError`` one line and
:data:`BACKOFF_SECONDS` (a timer kopf stopped for good would never see the
spec fixed); any other exception is logged with its traceback and the check
backs off for :data:`BACKOFF_SECONDS` (kopf's own default for a failing
handler). The worker's other checks go on meanwhile.

A check that succeeds is due again after its interval times ``stretch(body)``:
1 unless the operator is overloaded and the worker is Ready (see
policy/backpressure.py), so routine re-checks give way to workers on their
way to Ready. While every check of a worker is due more than a tick away
(stretched so), its timer waits in place until the soonest, rather than be
woken by kopf every tick for nothing: each kopf timer run costs about a
millisecond of the event loop (its kwargs, logger, outcome and patch),
thousands a minute across a fleet, at the very moment the loop is short.
The wait ends at once when kopf stops the timer (the worker deleted, the
operator stopping), and within a tick when ``hurry(body)`` says the worker
needs its checks at their own pace again (it left Ready: its pod lost, say):
its stretched due times are then pulled back to one interval after each
check's last run. kopf's ``body`` of a timer is live (replaced in place by
each watch event), so looking at it once a tick costs a dict read, not a
kopf timer run.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from logging import Logger
from typing import Any

import kopf

from cocoon_operator.handlers.retry import outage_message, transient_api_error
from cocoon_operator.handlers.runtime import WORKERS, CheckFn, Runtime, Tick

BACKOFF_SECONDS = 60.0
# Where each worker's next due times live: kopf gives every object a memo of its
# own, kept until the object is gone (per-worker state; no wiring is kept there).
_DUE_KEY = "checks_due"
# The checks of the worker still at work from an earlier tick (see _timer).
_RUNNING_KEY = "checks_running"
# When each check would be due again had it not been stretched.
_PLAIN_KEY = "checks_plain_due"

Handler = Callable[..., Awaitable[Any]]
# How many intervals a worker's next check waits after a success: (body).
Stretch = Callable[[Mapping[str, Any]], float]


# Whether a worker's checks must not stay stretched any longer: (body).
Hurry = Callable[[Mapping[str, Any]], bool]


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
    """How often the shared timer fires: the shortest interval among ``checks``."""
    return min(check.every for check in checks)


def due(
    checks: Sequence[Check], next_at: Mapping[str, float], now: float, tick: float
) -> list[Check]:
    """The checks to run at ``now``, in order: never run, or due within half a tick.

    Half a tick of slack keeps a check whose interval is a multiple of the tick
    from slipping a whole tick each time (a timer fires a little late, never early).
    """
    return [c for c in checks if next_at.get(c.id, now) <= now + tick / 2]


def idle_for(
    checks: Sequence[Check], next_at: Mapping[str, float], now: float, tick: float
) -> float:
    """How long the timer can wait before its next tick for nothing to be missed:
    positive only while every check is due more than a tick from ``now``."""
    soonest = min(next_at.get(c.id, now) for c in checks)
    return max(0.0, soonest - now - tick)


def unstretch(next_at: MutableMapping[str, float], plain_at: Mapping[str, float]) -> None:
    """Pull each check's due time back to where its interval alone would put it."""
    for key, plain in plain_at.items():
        if plain < next_at.get(key, plain):
            next_at[key] = plain


async def _wait_in_place(
    checks: Sequence[Check],
    next_at: Mapping[str, float],
    stopped: Any,
    hurried: Callable[[], bool],
    *,
    clock: Callable[[], float],
    tick: float,
) -> None:
    """Wait until a tick before the soonest check. kopf's stopper ends the wait at
    once; ``hurried()`` (asked once a tick) within a tick."""
    rest = idle_for(checks, next_at, clock(), tick)
    while rest > 0 and not hurried():
        await stopped.wait(min(rest, tick))  # returns early when kopf stops the timer
        if stopped.is_set():
            return
        rest = idle_for(checks, next_at, clock(), tick)


def _forget(running: dict[str, asyncio.Task[None]], key: str, _: object) -> None:
    running.pop(key, None)


def _timer(
    runtime: Runtime,
    checks: Sequence[Check],
    *,
    tick: float,
    clock: Callable[[], float],
    stretch: Stretch,
    hurry: Hurry,
) -> Handler:
    later = [check for check in checks if not check.at_start]

    async def run_checks(*, memo: Any, logger: Logger, stopped: Any = None, **kwargs: Any) -> None:
        next_at: MutableMapping[str, float] = memo.setdefault(_DUE_KEY, {})
        plain_at: MutableMapping[str, float] = memo.setdefault(_PLAIN_KEY, {})
        running: dict[str, asyncio.Task[None]] = memo.setdefault(_RUNNING_KEY, {})
        # One worker's context for every check of this tick (the body in it is kopf's
        # live one: each check takes the newest copy of it through Tick.current).
        tick_of_worker = Tick.of(runtime, logger, kwargs)
        body = tick_of_worker.body
        if hurry(body):
            unstretch(next_at, plain_at)
        now = clock()
        for check in later:
            next_at.setdefault(check.id, now + check.every)
        for check in due(checks, next_at, now, tick):
            if check.id in running:
                continue  # still at work from an earlier tick
            task = asyncio.create_task(run_one(check, next_at, plain_at, tick_of_worker))
            try:
                done, _ = await asyncio.wait({task}, timeout=tick)
            except asyncio.CancelledError:
                task.cancel()
                raise
            if not done:
                # A slow step (a top-up awaiting its confirmation, a verification
                # fetching collateral) goes on alone; the next checks do not wait.
                running[check.id] = task
                task.add_done_callback(functools.partial(_forget, running, check.id))
        if stopped is not None and not running:
            await _wait_in_place(
                checks, next_at, stopped, lambda: hurry(body), clock=clock, tick=tick
            )

    async def run_one(
        check: Check,
        next_at: MutableMapping[str, float],
        plain_at: MutableMapping[str, float],
        tick_of_worker: Tick,
    ) -> None:
        logger = tick_of_worker.logger
        try:
            await check.fn(tick_of_worker)
        except kopf.TemporaryError as exc:
            # A step's own "not yet", with its delay: no traceback.
            delay = exc.delay if exc.delay is not None else tick
            logger.warning("Check %r: %s; retrying in %gs", check.id, exc, delay)
            next_at[check.id] = clock() + delay
        except kopf.PermanentError as exc:
            # Nothing a retry fixes soon (an unparseable spec): said once a backoff.
            logger.error("Check %r: %s; retrying in %gs", check.id, exc, BACKOFF_SECONDS)
            next_at[check.id] = clock() + BACKOFF_SECONDS
        except Exception as exc:
            if transient_api_error(exc):
                logger.warning("Check %r: %s; retrying in %gs", check.id, outage_message(exc), tick)
                next_at[check.id] = clock() + tick
            else:
                logger.exception("Check %r failed; retrying in %gs", check.id, BACKOFF_SECONDS)
                next_at[check.id] = clock() + BACKOFF_SECONDS
        else:
            done = clock()
            plain_at[check.id] = done + check.every
            next_at[check.id] = done + check.every * stretch(tick_of_worker.body)
            return
        plain_at[check.id] = next_at[check.id]  # a retry's delay is never stretched

    return run_checks


def register(
    registry: kopf.OperatorRegistry,
    runtime: Runtime,
    checks: Sequence[Check],
    *,
    clock: Callable[[], float] = time.monotonic,
    stretch: Stretch = no_stretch,
    hurry: Hurry = no_hurry,
) -> None:
    """Add the one timer that runs ``checks`` on every worker to ``registry``."""
    if not checks:
        return
    tick = tick_of(checks)
    kopf.timer(*WORKERS, interval=tick, id="checks", registry=registry)(
        _timer(runtime, tuple(checks), tick=tick, clock=clock, stretch=stretch, hurry=hurry)
    )


__all__ = [
    "BACKOFF_SECONDS",
    "Check",
    "Hurry",
    "Stretch",
    "due",
    "idle_for",
    "no_hurry",
    "no_stretch",
    "register",
    "tick_of",
    "unstretch",
]
