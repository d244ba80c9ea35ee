"""The workers' checks' scheduler (handlers/checks.py): it runs each check of each
worker when due, rides out an apiserver outage in one line and the check's own
tick (kopf's default is a traceback and 60 s of backoff; found by the
apiserver-restart fault test, tests/cluster/test_faults.py), backs a failing
check off without holding up the others, wakes a worker only when a check of it
is due, and stops checking a worker once the index shows it gone. No worker
has a kopf timer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import aiohttp
import kopf
import pytest

from cocoon_operator.handlers import attestation, chain, checks, control, process
from cocoon_operator.handlers.retry import quiet_outages, transient_api_error
from cocoon_operator.handlers.runtime import Indexes, Runtime, Tick
from cocoon_operator.k8s.rest import ApiError
from tests.unit.clocks import FakeClock
from tests.unit.helpers import operator_registry

LOG = logging.getLogger("test.checks")
OBJECTS = "kopf.objects"  # the logger of kopf's per-object loggers
NS = "fleet"


def refused() -> aiohttp.ClientConnectorError:
    key: Any = type("Key", (), {"ssl": True, "host": "127.0.0.1", "port": 6443})()
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


class Step:
    """A check that records its runs (by worker when ``by_worker``) and raises what it
    is told to."""

    def __init__(self, name: str, runs: list[str], *, by_worker: bool = False) -> None:
        self.name, self.runs, self.by_worker = name, runs, by_worker
        self.raises: Exception | None = None

    async def __call__(self, tick: Tick) -> None:
        # The worker's own snapshot from the index, and a logger that names it.
        assert tick.body["metadata"]["name"] == tick.key[1]
        assert isinstance(tick.logger, kopf.LocalObjectLogger)
        assert tick.logger.extra is not None
        assert tick.logger.extra["k8s_ref"]["name"] == tick.key[1]
        self.runs.append(f"{self.name}:{tick.key[1]}" if self.by_worker else self.name)
        if self.raises is not None:
            raise self.raises


class Fleet:
    """A schedule of ``steps`` over a workers index that the test edits, as kopf's
    watch would."""

    def __init__(
        self,
        steps: list[checks.Check],
        clock: FakeClock,
        stretch: checks.Stretch = checks.no_stretch,
        hurry: checks.Hurry = checks.no_hurry,
    ) -> None:
        self.clock = clock
        self.index: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.schedule = checks.Schedule(Runtime(), steps, clock=clock, stretch=stretch, hurry=hurry)
        self.schedule.attach(
            Indexes(cast(Any, {}), cast(Any, {}), cast(Any, {})),
            cast(Any, self.index),
            kopf.OperatorSettings(),
        )

    def add(self, name: str = "w0", uid: str | None = None, **fields: Any) -> dict[str, Any]:
        """A worker kopf has handled: in the index, and tracked."""
        body = {"metadata": {"namespace": NS, "name": name, "uid": uid or f"u-{name}"}, **fields}
        self.index[NS, name] = [body]
        self.schedule.track(body)
        return body

    async def run_due(self) -> None:
        """Wake the workers due now and wait for their ticks."""
        await asyncio.gather(*self.schedule.start_due(turns_over=True))

    async def tick(self, seconds: float) -> None:
        await self.run_due()
        self.clock.t += seconds

    def due_at(self, name: str = "w0") -> dict[str, float]:
        return dict(self.schedule._workers[NS, name].next_at)


def chain_then_attestation(
    chain: checks.CheckFn, runs: list[str], tick_seconds: float, clock: FakeClock
) -> Fleet:
    """One worker with a ``chain`` check and a recording attestation check, both every
    ``tick_seconds``."""
    fleet = Fleet(
        [
            checks.Check("chain", chain, tick_seconds),
            checks.Check("attestation", Step("attestation", runs), tick_seconds),
        ],
        clock,
    )
    fleet.add()
    return fleet


def failing_first(
    exc: Exception, first: tuple[str, float], second: tuple[str, float], clock: FakeClock
) -> tuple[Fleet, list[str], Step]:
    """One worker with two checks (id, interval), the first raising ``exc``: the fleet,
    the runs it records and the failing step."""
    runs: list[str] = []
    failing, other = Step(first[0], runs), Step(second[0], runs)
    failing.raises = exc
    fleet = Fleet(
        [checks.Check(first[0], failing, first[1]), checks.Check(second[0], other, second[1])],
        clock,
    )
    fleet.add()
    return fleet, runs, failing


def test_due_keeps_order_and_runs_what_never_ran() -> None:
    async def nothing(**_: Any) -> None: ...

    a, b, c = (checks.Check(n, nothing, e) for n, e in (("a", 5.0), ("b", 10.0), ("c", 5.0)))
    assert checks.tick_of([a, b, c]) == 5.0
    assert checks.due([a, b, c], {}, 0.0, 5.0) == [a, b, c]
    # b next due at 10; at 7.4 it is more than half a tick away, at 7.6 it is not.
    assert checks.due([a, b, c], {"a": 5.0, "b": 10.0, "c": 5.0}, 7.4, 5.0) == [a, c]
    assert checks.due([a, b, c], {"a": 5.0, "b": 10.0, "c": 5.0}, 7.6, 5.0) == [a, b, c]


def test_a_worker_wakes_when_its_soonest_check_is_due() -> None:
    async def nothing(**_: Any) -> None: ...

    a, b = checks.Check("a", nothing, 5.0), checks.Check("b", nothing, 30.0)
    assert checks.wake_at([a, b], {"a": 1020.0, "b": 1030.0}, 1000.0) == 1020.0
    assert checks.wake_at([a, b], {"b": 1030.0}, 1000.0) == 1000.0  # a never ran


async def test_each_check_runs_at_its_own_interval_in_order(clock: FakeClock) -> None:
    runs: list[str] = []
    fleet = Fleet(
        [
            checks.Check("attestation", Step("attestation", runs), 5.0),
            checks.Check("chain", Step("chain", runs), 15.0),
            checks.Check("coefficient", Step("coefficient", runs), 5.0),
        ],
        clock,
    )
    fleet.add()
    for _ in range(6):
        await fleet.tick(5.1)
    assert runs.count("attestation") == 6 and runs.count("coefficient") == 6
    assert runs.count("chain") == 2
    assert runs[:3] == ["attestation", "chain", "coefficient"]


@pytest.mark.parametrize(
    "exc",
    [refused(), ApiError(503, "x"), ApiError(429, "x"), ConnectionResetError()],
    ids=["refused", "503", "429", "reset"],
)
async def test_an_unavailable_apiserver_is_retried_next_tick_in_one_line(
    exc: Exception, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    assert transient_api_error(exc)
    fleet, runs, failing = failing_first(exc, ("attestation", 2.0), ("chain", 30.0), clock)
    with caplog.at_level(logging.WARNING, logger=OBJECTS):
        await fleet.tick(2.1)
    assert runs == ["attestation", "chain"]  # the outage held up nothing else
    (record,) = caplog.records
    assert "Kubernetes API unavailable" in record.getMessage()
    assert "retrying in 2s" in record.getMessage()
    assert record.exc_info is None  # one line, no traceback
    failing.raises = None
    await fleet.tick(2.1)
    assert runs == ["attestation", "chain", "attestation"]  # again one tick later


@pytest.mark.parametrize("exc", [ApiError(404, "x"), ApiError(422, "x"), ValueError("bug")])
async def test_other_errors_back_off_that_check_alone_with_a_traceback(
    exc: Exception, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    assert not transient_api_error(exc)
    fleet, runs, failing = failing_first(exc, ("chain", 5.0), ("coefficient", 5.0), clock)
    with caplog.at_level(logging.ERROR, logger=OBJECTS):
        await fleet.tick(5.1)
    (record,) = caplog.records
    assert "'chain' failed" in record.getMessage() and record.exc_info is not None
    failing.raises = None
    for _ in range(10):  # 51 s: still within the backoff
        await fleet.tick(5.1)
    assert runs.count("chain") == 1 and runs.count("coefficient") == 11
    await fleet.tick(5.1)  # at 56.1 s: more than half a tick before 60
    assert runs.count("chain") == 1
    await fleet.tick(5.1)  # at 61.2 s
    assert runs.count("chain") == 2


@pytest.mark.parametrize(
    ("exc", "retry_after", "level"),
    [
        (kopf.TemporaryError("old pod still draining", delay=12), 12.0, logging.WARNING),
        (kopf.PermanentError("invalid spec fields: spec.model"), 60.0, logging.ERROR),
    ],
    ids=["temporary", "permanent"],
)
async def test_a_steps_own_kopf_errors_are_one_line_and_their_delay(
    exc: Exception,
    retry_after: float,
    level: int,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
) -> None:
    runs: list[str] = []
    failing = Step("chain", runs)
    failing.raises = exc
    fleet = Fleet([checks.Check("chain", failing, 5.0)], clock)
    fleet.add()
    with caplog.at_level(logging.WARNING, logger=OBJECTS):
        await fleet.run_due()
    (record,) = caplog.records
    assert record.levelno == level and record.exc_info is None
    assert str(exc) in record.getMessage()
    failing.raises = None
    clock.t += retry_after - 0.1
    await fleet.run_due()  # not yet due: not woken
    clock.t += 0.2
    await fleet.run_due()
    assert runs == ["chain", "chain"]


async def test_due_times_are_kept_per_worker(clock: FakeClock) -> None:
    runs: list[str] = []
    fleet = Fleet([checks.Check("chain", Step("chain", runs, by_worker=True), 30.0)], clock)
    fleet.add("a")
    await fleet.tick(5.0)
    fleet.add("b")  # tracked later: due at once, and then on its own 30 s
    await fleet.tick(5.0)
    await fleet.tick(21.0)
    await fleet.run_due()  # at 31 s: a due again (at 30), b not before 35
    assert runs == ["chain:a", "chain:b", "chain:a"]


async def test_a_worker_at_rest_is_ticked_from_the_same_body_and_logger(
    clock: FakeClock,
) -> None:
    """A kopf body and its logger are built once per snapshot of the worker: a tick of
    a worker nobody wrote reuses the last one's, and a new snapshot gets its own."""
    ticks: list[Tick] = []

    async def keep(tick: Tick) -> None:
        ticks.append(tick)

    fleet = Fleet([checks.Check("attestation", keep, 5.0)], clock)
    fleet.add()
    await fleet.tick(5.0)
    await fleet.tick(5.0)
    assert len(ticks) == 2 and ticks[1].body is ticks[0].body
    assert ticks[1].logger is ticks[0].logger
    # The watch delivers a new snapshot (a status write): a new body, naming it.
    fleet.index[NS, "w0"] = [{"metadata": {"namespace": NS, "name": "w0", "uid": "u-w0"}, "x": 1}]
    await fleet.tick(5.0)
    assert ticks[2].body is not ticks[1].body and ticks[2].body["x"] == 1
    assert ticks[2].logger is not ticks[1].logger


async def test_workers_due_within_a_twentieth_of_a_tick_start_in_one_wake(
    clock: FakeClock,
) -> None:
    runs: list[str] = []
    fleet = Fleet([checks.Check("attestation", Step("a", runs, by_worker=True), 10.0)], clock)
    for name, at in (("w0", 0.0), ("w1", 0.3), ("w2", 1.0)):
        clock.t = at
        fleet.add(name)
        await fleet.run_due()  # each due at once: next due 10 s later
    runs.clear()

    clock.t = 10.0
    await fleet.run_due()

    assert runs == ["a:w0", "a:w1"]  # w1, due at 10.3, within 0.5 s; w2, at 11, not
    assert fleet.schedule.next_wake() == 11.0


async def test_a_wake_starts_at_most_gather_max_workers_ahead_of_their_time(
    clock: FakeClock,
) -> None:
    runs: list[str] = []
    fleet = Fleet([checks.Check("attestation", Step("a", runs, by_worker=True), 10.0)], clock)
    count = checks.GATHER_MAX + 10
    for i in range(count):  # due 10 s after these, 1 ms apart: all within 0.5 s of w0
        clock.t = i / 1000
        fleet.add(f"w{i}")
        await fleet.run_due()
    runs.clear()

    clock.t = 10.0
    await fleet.run_due()

    # w0 due now, then GATHER_MAX of the others; the rest at the next wake.
    assert runs == [f"a:w{i}" for i in range(checks.GATHER_MAX + 1)]
    assert fleet.schedule.next_wake() == pytest.approx(10.0 + (checks.GATHER_MAX + 1) / 1000)


def test_the_periodic_steps_share_one_schedule_and_no_kopf_timer() -> None:
    registry = kopf.OperatorRegistry()
    runtime = Runtime()
    steps = [
        attestation.register(registry, runtime, attestation.AttestationOptions(check_seconds=5.0)),
        chain.register(registry, runtime, cast(Any, None), 15.0),  # options are read at start
        control.register(registry, runtime, 5.0),
    ]
    schedule = checks.register(registry, runtime, steps)
    assert schedule is not None and runtime.checks is schedule
    assert schedule.tick == 5.0  # the shortest of the three
    assert list(registry._spawning.get_all_handlers()) == []
    assert "checks-start" in {h.id for h in registry._activities.get_all_handlers()}
    assert [(s.id, s.every) for s in steps] == [
        ("attestation", 5.0),
        ("chain", 15.0),
        ("coefficient", 5.0),
    ]
    assert steps[2].fn is control.sync_coefficient


async def test_a_resync_check_waits_its_interval_before_its_first_run(clock: FakeClock) -> None:
    runs: list[str] = []
    fleet = Fleet(
        [
            checks.Check("attestation", Step("attestation", runs), 5.0),
            checks.Check("resync", Step("resync", runs), 20.0, at_start=False),
        ],
        clock,
    )
    fleet.add()
    for _ in range(9):
        await fleet.tick(5.0)
    # Ticks at 0, 5, ... 40: the resync at 20 and 40, never at the worker's first tick.
    assert runs.count("attestation") == 9
    assert runs.count("resync") == 2
    assert runs[:2] == ["attestation", "attestation"]


def test_workers_have_no_kopf_timer_and_their_handlers_track_them() -> None:
    """The module-level handlers register no per-worker timer (each was a task and its
    coroutines per worker, and kopf's machinery per run); the pool's resync is the one
    timer left."""
    registry = operator_registry()
    timers = [h.id for h in registry._spawning.get_all_handlers()]
    assert timers == ["resync_pool"]


async def test_the_reconcile_handler_tracks_each_worker_once(clock: FakeClock) -> None:
    from cocoon_operator.handlers import worker as worker_handlers  # noqa: PLC0415

    tracked: list[str] = []

    class Recording:
        def track(self, body: Any, /) -> None:
            tracked.append(body["metadata"]["name"])

    runtime = Runtime(checks=Recording())
    body = kopf.Body({"metadata": {"namespace": NS, "name": "w0", "uid": "u"}})  # type: ignore[typeddict-item]
    with pytest.raises(RuntimeError, match="has not started"):
        # It tracks before it reconciles (which needs the started process).
        await worker_handlers.reconcile_worker(
            runtime, body=body, logger=LOG, launcher_pods={}, launcher_instances={}, cc_nodes={}
        )
    assert tracked == ["w0"]


async def test_checks_that_wait_for_nothing_take_their_turns_in_their_ticks_task(
    clock: FakeClock,
) -> None:
    """A task per check, waited for by its tick, cost a task, a future, a timer and
    three rounds of the event loop a check; nearly every check at rest waits for
    nothing, so a tick's checks take their turns in the tick's own task."""
    ran_in: list[tuple[str, asyncio.Task[Any] | None]] = []

    def step(name: str) -> checks.CheckFn:
        async def fn(tick: Tick) -> None:
            ran_in.append((f"{name}:{tick.key[1]}", asyncio.current_task()))

        return fn

    fleet = Fleet(
        [
            checks.Check("attestation", step("attestation"), 10),
            checks.Check("model", step("model"), 10),
        ],
        clock,
    )
    fleet.add("w0")
    fleet.add("w1")
    await fleet.run_due()
    by_worker: dict[str, set[asyncio.Task[Any] | None]] = {}
    for name, task in ran_in:
        by_worker.setdefault(name.split(":")[1], set()).add(task)
    assert sorted(name for name, _ in ran_in) == [
        "attestation:w0",
        "attestation:w1",
        "model:w0",
        "model:w1",
    ]
    assert all(len(tasks) == 1 for tasks in by_worker.values())  # one task a tick
    assert by_worker["w0"] != by_worker["w1"]  # a task per worker's tick


async def test_a_tick_of_checks_that_wait_for_nothing_sets_one_timer(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One timer watches a tick's whole sequence of checks, not one per check."""
    runs: list[str] = []
    fleet = Fleet([checks.Check(name, Step(name, runs), 10) for name in ("a", "b", "c")], clock)
    fleet.add()
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counted(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counted)
    await fleet.run_due()
    monkeypatch.undo()
    assert runs == ["a", "b", "c"]
    assert len(timers) == 1


async def test_the_schedulers_own_wakes_make_no_future_per_tick_yet_run_every_check(
    clock: FakeClock,
) -> None:
    runs: list[str] = []
    fleet = Fleet([checks.Check(name, Step(name, runs), 10) for name in ("a", "b")], clock)
    fleet.add("w0")
    fleet.add("w1")
    assert fleet.schedule.start_due() == []  # as Schedule.run calls it
    await asyncio.gather(*fleet.schedule._ticks)  # the ticks' own tasks
    assert sorted(runs) == ["a", "a", "b", "b"]


async def test_a_later_check_is_given_a_whole_tick_of_its_own(clock: FakeClock) -> None:
    """The watch's timer is set for the first check's tick; a check that started later
    is not sent off alone when it fires, but a tick after its own start."""
    runs: list[str] = []
    release = asyncio.Event()

    async def first(*_: Any) -> None:
        runs.append("first")
        await asyncio.sleep(0.6)

    async def slow(*_: Any) -> None:
        runs.append("slow")
        await release.wait()

    tick_seconds = 1.0  # real time: the first ends 0.4 s before its tick would
    fleet = Fleet(
        [
            checks.Check("first", first, tick_seconds),
            checks.Check("slow", slow, tick_seconds),
            checks.Check("last", Step("last", runs), tick_seconds),
        ],
        clock,
    )
    fleet.add()
    turns = asyncio.ensure_future(fleet.run_due())
    await asyncio.sleep(1.3)  # past the first check's tick, within the slow one's
    assert runs == ["first", "slow"]
    await asyncio.wait_for(turns, timeout=2)  # then the slow one went on alone
    assert runs == ["first", "slow", "last"]
    assert "slow" in fleet.schedule._workers[NS, "w0"].running
    release.set()
    await asyncio.sleep(0.01)
    assert "slow" not in fleet.schedule._workers[NS, "w0"].running


async def test_a_check_gone_on_alone_keeps_its_own_timeout(clock: FakeClock) -> None:
    """A check that outlasts its tick goes on alone while the worker's next check
    takes its turn; a timeout inside it still ends that check, and only it."""
    runs: list[str] = []

    async def hangs(*_: Any) -> None:
        runs.append("chain")
        try:
            async with asyncio.timeout(0.2):
                await asyncio.Event().wait()
        except TimeoutError:
            runs.append("chain timed out")
            raise

    tick_seconds = 0.05  # the wait for a check is in real time
    fleet = chain_then_attestation(hangs, runs, tick_seconds, clock)
    await asyncio.wait_for(fleet.run_due(), timeout=2)  # bounded: it did not wait for the chain
    assert runs == ["chain", "attestation"]
    assert "chain" in fleet.schedule._workers[NS, "w0"].running
    await asyncio.sleep(0.3)
    assert runs == ["chain", "attestation", "chain timed out"]
    worker = fleet.schedule._workers[NS, "w0"]
    assert "chain" not in worker.running
    # Its failure was its own (a timeout reads as an outage: due again a tick later).
    assert worker.next_at["chain"] == pytest.approx(clock.t + tick_seconds)


async def test_a_slow_check_goes_on_alone_and_is_not_started_twice(clock: FakeClock) -> None:
    """A top-up awaiting its confirmation must not hold up the worker's attestation
    check: after a tick the slow check goes on by itself, and later ticks leave it
    be until it is done; then it is due again an interval later."""
    runs: list[str] = []
    release = asyncio.Event()

    async def slow(*_: Any) -> None:
        runs.append("chain")
        await release.wait()
        runs.append("chain done")

    tick_seconds = 0.05  # the wait for a check is in real time
    fleet = chain_then_attestation(slow, runs, tick_seconds, clock)
    # Bounded: a tick that waited for the slow check would never return.
    await asyncio.wait_for(fleet.tick(tick_seconds), timeout=2)
    await asyncio.wait_for(fleet.tick(tick_seconds), timeout=2)
    assert runs == ["chain", "attestation", "attestation"]  # never started twice
    release.set()
    await asyncio.sleep(0)  # the slow check finishes: due again an interval later
    assert runs[-1] == "chain done"
    await fleet.tick(tick_seconds)
    await fleet.tick(tick_seconds)
    assert runs.count("chain") == 2


async def test_a_worker_whose_checks_are_all_at_work_is_woken_when_one_is_done(
    clock: FakeClock,
) -> None:
    gate = asyncio.Event()

    async def slow(*_: Any) -> None:
        await gate.wait()

    fleet = Fleet([checks.Check("chain", slow, 0.05)], clock)
    fleet.add()
    await fleet.run_due()
    assert fleet.schedule.next_wake() is None  # nothing to wake it for
    gate.set()
    await asyncio.sleep(0.01)
    assert fleet.schedule.next_wake() == pytest.approx(clock.t + 0.05)


async def test_stretch_and_hurry_read_the_index_snapshot_itself(clock: FakeClock) -> None:
    """The scheduler asks both after each check and each tick: they get the workers
    index's dict as it is, not a kopf view of it to resolve key by key."""
    seen: list[object] = []

    def stretch(body: Any) -> float:
        seen.append(body)
        return 2.0  # stretched, so hurry is asked at the next tick

    def hurry(body: Any) -> bool:
        seen.append(body)
        return False

    fleet = Fleet([checks.Check("attestation", Step("attestation", []), 10)], clock, stretch, hurry)
    body = fleet.add()
    await fleet.tick(20)
    await fleet.run_due()
    assert seen and all(one is body for one in seen)


async def test_a_stretched_check_waits_that_many_intervals_after_a_success(
    clock: FakeClock,
) -> None:
    """Back-pressure (policy/backpressure.py): the stretch the schedule is given spaces
    out a check after it succeeds, per worker body; a check that fails keeps its own
    retry delay."""
    runs: list[str] = []
    fleet = Fleet(
        [checks.Check("attestation", Step("attestation", runs, by_worker=True), 5.0)],
        clock,
        lambda body: body["factor"],
    )
    fleet.add("stretched", factor=3.0)
    fleet.add("plain", factor=1.0)
    for _ in range(6):  # ticks at 0, 5.1, ... 25.5
        await fleet.tick(5.1)
    # Stretched 3x: at 0, then due at 15 (run at 15.3), not before.
    assert runs.count("attestation:plain") == 6
    assert runs.count("attestation:stretched") == 2
    assert fleet.due_at("stretched")["attestation"] == pytest.approx(1015.3 + 15.0)

    failing = Step("chain", runs)
    failing.raises = kopf.TemporaryError("not yet", delay=2.0)
    fleet = Fleet([checks.Check("chain", failing, 5.0)], clock, lambda body: 4.0)
    fleet.add()
    await fleet.run_due()
    assert fleet.due_at()["chain"] == pytest.approx(clock.t + 2.0)


async def test_a_stretched_worker_is_not_woken_before_its_soonest_check(
    clock: FakeClock,
) -> None:
    """A worker whose checks are all stretched is woken once, when the soonest is due;
    an unstretched one as often as its own checks."""
    runs: list[str] = []
    fleet = Fleet(
        [
            checks.Check("attestation", Step("attestation", runs, by_worker=True), 5.0),
            checks.Check("chain", Step("chain", runs, by_worker=True), 30.0),
        ],
        clock,
        lambda body: body["factor"],
    )
    fleet.add("stretched", factor=4.0)
    fleet.add("plain", factor=1.0)
    await fleet.run_due()
    woken: list[float] = []
    while (when := fleet.schedule.next_wake()) is not None and when <= 1020.0:
        woken.append(when)
        clock.t = when
        await fleet.run_due()
    assert runs.count("attestation:stretched") == 2  # at 1000 and at 1020
    assert runs.count("attestation:plain") == 5  # at 1000, 1005 ... 1020
    assert woken == [1005.0, 1010.0, 1015.0, 1020.0]  # the stretched one's due time among them


async def test_a_worker_that_leaves_ready_gets_its_checks_back_within_a_tick(
    clock: FakeClock,
) -> None:
    """Stretched while Ready, a worker whose pod is lost must not wait out the stretch:
    the next sweep of the stretched workers sees the index show it not Ready, and
    each check is due one interval after its last run."""
    runs: list[str] = []
    fleet = Fleet(
        [
            checks.Check("attestation", Step("attestation", runs), 5.0),
            checks.Check("chain", Step("chain", runs), 30.0),
        ],
        clock,
        lambda body: 1.0 if body["status"]["phase"] != "Ready" else 4.0,
        hurry=process.not_ready,
    )
    body = fleet.add(status={"phase": "Ready"})
    await fleet.run_due()
    assert fleet.due_at() == {"attestation": 1020.0, "chain": 1120.0}  # stretched 4x
    fleet.schedule.hurry_stretched()
    assert fleet.schedule.next_wake() == 1020.0  # still Ready: stays stretched
    body["status"] = {"phase": "Pending"}  # the watch's next snapshot: its pod is lost
    fleet.schedule.hurry_stretched()
    assert fleet.due_at() == {"attestation": 1005.0, "chain": 1030.0}
    assert fleet.schedule.next_wake() == 1005.0
    clock.t = 1005.0
    await fleet.run_due()
    assert runs == ["attestation", "chain", "attestation"]


async def test_a_hurry_that_fails_pulls_the_checks_back_and_the_schedule_goes_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def hurry(body: Any) -> bool:
        return bool(body["status"]["phase"] != "Ready")  # a KeyError on a body without it

    runs: list[str] = []
    fleet = Fleet(
        [checks.Check("attestation", Step("attestation", runs), 5.0)],
        clock,
        lambda body: 4.0,
        hurry=hurry,
    )
    body = fleet.add(status={"phase": "Ready"})
    await fleet.run_due()
    assert fleet.schedule.next_wake() == 1020.0
    del body["status"]
    with caplog.at_level(logging.ERROR, logger="cocoon_operator.checks"):
        fleet.schedule.hurry_stretched()
    assert "hurry failed on fleet/w0" in caplog.text
    assert fleet.schedule.next_wake() == 1005.0  # its own pace: the safe side


@pytest.mark.parametrize(
    "change",
    ["deleted", "being deleted", "recreated"],
)
async def test_a_worker_the_index_shows_gone_is_no_longer_checked(
    change: str, clock: FakeClock
) -> None:
    """kopf stopped a worker's timer when it was marked for deletion; the schedule
    drops a worker at its next wake once the index no longer has it, shows it being
    deleted, or has another object by its name (tracked anew by its own handler)."""
    runs: list[str] = []
    fleet = Fleet([checks.Check("attestation", Step("attestation", runs), 5.0)], clock)
    body = fleet.add()
    await fleet.tick(5.0)
    if change == "deleted":
        del fleet.index[NS, "w0"]
    elif change == "being deleted":
        body["metadata"]["deletionTimestamp"] = "2026-12-07T05:00:00Z"
    else:
        fleet.index[NS, "w0"] = [{"metadata": {"namespace": NS, "name": "w0", "uid": "new"}}]
    await fleet.tick(5.0)
    assert runs == ["attestation"] and len(fleet.schedule) == 0
    assert fleet.schedule.next_wake() is None
    if change == "recreated":
        fleet.add(uid="new")
        await fleet.run_due()
        assert runs == ["attestation", "attestation"] and len(fleet.schedule) == 1


async def test_the_scheduler_task_wakes_for_a_new_worker_and_stops_when_cancelled() -> None:
    """In real time: a worker tracked while the task sleeps (a long tick, no worker
    due) is checked at once, again after its interval, and cancelling the task (the
    operator's cleanup) ends it at once."""
    runs: list[str] = []
    fleet = Fleet([checks.Check("attestation", Step("attestation", runs), 0.2)], FakeClock())
    fleet.schedule._clock = asyncio.get_running_loop().time
    task = asyncio.create_task(fleet.schedule.run())
    await asyncio.sleep(0.05)
    assert runs == []
    fleet.add()
    await asyncio.sleep(0.05)
    assert runs == ["attestation"]  # not a tick later
    await asyncio.sleep(0.3)
    assert runs == ["attestation", "attestation"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)


async def test_event_handlers_log_an_outage_in_one_line_and_pass_other_errors_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kopf never retries an event handler and logs its exception with a traceback;
    the apiserver-restart fault test failed on one (a pod event mid-restart)."""
    raised: list[Exception] = [ConnectionResetError("reset by peer")]

    async def handler(**_: Any) -> None:
        raise raised[0]

    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert await quiet_outages(handler)(logger=LOG, type="MODIFIED") is None
    (record,) = caplog.records
    assert "Kubernetes API unavailable" in record.getMessage() and record.exc_info is None
    raised[0] = ValueError("a bug")
    with pytest.raises(ValueError, match="a bug"):
        await quiet_outages(handler)(logger=LOG, type="MODIFIED")


def test_the_event_handlers_are_registered_quiet() -> None:
    wanted = {"launcher_pod_changed", "node_changed", "pool_worker_changed"}
    handlers = [h for h in operator_registry()._watching.get_all_handlers() if h.id in wanted]
    assert {h.id for h in handlers} == wanted
    for handler in handlers:
        assert getattr(handler.fn, "__wrapped__", None) is not None, handler.id
