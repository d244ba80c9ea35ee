"""The workers' one shared timer (handlers/checks.py): it runs each check when due,
rides out an apiserver outage in one line and the check's own tick (kopf's default
is a traceback and 60 s of backoff; found by the apiserver-restart fault test,
tests/cluster/test_faults.py), backs a failing check off without holding up the
others, and is the only per-worker timer the three periodic steps register."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import aiohttp
import kopf
import pytest
from kopf._core.intents.stoppers import DaemonStopper, DaemonStoppingReason

from cocoon_operator.handlers import attestation, chain, checks, control, process
from cocoon_operator.handlers.retry import quiet_outages, transient_api_error
from cocoon_operator.handlers.runtime import Runtime, Tick
from cocoon_operator.k8s.rest import ApiError
from tests.unit.clocks import FakeClock
from tests.unit.helpers import operator_registry

LOG = logging.getLogger("test.checks")


def refused() -> aiohttp.ClientConnectorError:
    key: Any = type("Key", (), {"ssl": True, "host": "127.0.0.1", "port": 6443})()
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


class Step:
    """A check that records its runs and raises what it is told to."""

    def __init__(self, name: str, runs: list[str]) -> None:
        self.name, self.runs = name, runs
        self.raises: Exception | None = None

    async def __call__(self, tick: Tick) -> None:
        assert tick.logger is LOG and tick.body["x"] == 1
        self.runs.append(self.name)
        if self.raises is not None:
            raise self.raises


def timer(
    steps: list[checks.Check],
    clock: FakeClock,
    stretch: checks.Stretch = checks.no_stretch,
    hurry: checks.Hurry = checks.no_hurry,
) -> Any:
    registry = kopf.OperatorRegistry()
    checks.register(registry, Runtime(), steps, clock=clock, stretch=stretch, hurry=hurry)
    (handler,) = registry._spawning.get_all_handlers()

    async def run(**kwargs: Any) -> Any:
        # kopf hands every handler its indexes, as keyword arguments.
        return await handler.fn(**INDEXES, **kwargs)

    return run


INDEXES: dict[str, Any] = {
    "launcher_pods": {},
    "launcher_instances": {},
    "cc_nodes": {},
    "workers": {},
}


def failing_first(
    exc: Exception, first: tuple[str, float], second: tuple[str, float]
) -> tuple[Any, list[str], FakeClock, Step]:
    """A timer of two checks (id, interval), the first raising ``exc``: the timer,
    the runs it records, its clock and the failing step."""
    runs: list[str] = []
    clock = FakeClock()
    failing, other = Step(first[0], runs), Step(second[0], runs)
    failing.raises = exc
    fn = timer(
        [checks.Check(first[0], failing, first[1]), checks.Check(second[0], other, second[1])],
        clock,
    )
    return fn, runs, clock, failing


async def tick(fn: Any, memo: dict[str, Any], clock: FakeClock, seconds: float) -> None:
    await fn(memo=memo, logger=LOG, body={"x": 1})
    clock.t += seconds


def test_due_keeps_order_and_runs_what_never_ran() -> None:
    async def nothing(**_: Any) -> None: ...

    a, b, c = (checks.Check(n, nothing, e) for n, e in (("a", 5.0), ("b", 10.0), ("c", 5.0)))
    assert checks.tick_of([a, b, c]) == 5.0
    assert checks.due([a, b, c], {}, 0.0, 5.0) == [a, b, c]
    # b next due at 10; at 7.4 it is more than half a tick away, at 7.6 it is not.
    assert checks.due([a, b, c], {"a": 5.0, "b": 10.0, "c": 5.0}, 7.4, 5.0) == [a, c]
    assert checks.due([a, b, c], {"a": 5.0, "b": 10.0, "c": 5.0}, 7.6, 5.0) == [a, b, c]


async def test_each_check_runs_at_its_own_interval_in_order(clock: FakeClock) -> None:
    runs: list[str] = []
    fn = timer(
        [
            checks.Check("attestation", Step("attestation", runs), 5.0),
            checks.Check("chain", Step("chain", runs), 15.0),
            checks.Check("coefficient", Step("coefficient", runs), 5.0),
        ],
        clock,
    )
    memo: dict[str, Any] = {}
    for _ in range(6):  # a timer fires a little after its interval
        await tick(fn, memo, clock, 5.1)
    assert runs.count("attestation") == 6 and runs.count("coefficient") == 6
    assert runs.count("chain") == 2
    assert runs[:3] == ["attestation", "chain", "coefficient"]


@pytest.mark.parametrize(
    "exc",
    [refused(), ApiError(503, "x"), ApiError(429, "x"), ConnectionResetError()],
    ids=["refused", "503", "429", "reset"],
)
async def test_an_unavailable_apiserver_is_retried_next_tick_in_one_line(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    assert transient_api_error(exc)
    fn, runs, clock, failing = failing_first(exc, ("attestation", 2.0), ("chain", 30.0))
    memo: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        await tick(fn, memo, clock, 2.1)
    assert runs == ["attestation", "chain"]  # the outage held up nothing else
    (record,) = caplog.records
    assert "Kubernetes API unavailable" in record.getMessage()
    assert "retrying in 2s" in record.getMessage()
    assert record.exc_info is None  # one line, no traceback
    failing.raises = None
    await tick(fn, memo, clock, 2.1)
    assert runs == ["attestation", "chain", "attestation"]  # again one tick later


@pytest.mark.parametrize("exc", [ApiError(404, "x"), ApiError(422, "x"), ValueError("bug")])
async def test_other_errors_back_off_that_check_alone_with_a_traceback(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    assert not transient_api_error(exc)
    fn, runs, clock, failing = failing_first(exc, ("chain", 5.0), ("coefficient", 5.0))
    memo: dict[str, Any] = {}
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        await tick(fn, memo, clock, 5.1)
    (record,) = caplog.records
    assert "'chain' failed" in record.getMessage() and record.exc_info is not None
    failing.raises = None
    for _ in range(10):  # 51 s: still within the backoff
        await tick(fn, memo, clock, 5.1)
    assert runs.count("chain") == 1 and runs.count("coefficient") == 11
    await tick(fn, memo, clock, 5.1)  # at 56.1 s, within half a tick of 60
    await tick(fn, memo, clock, 5.1)
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
    fn = timer([checks.Check("chain", failing, 5.0)], clock)
    memo: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        await fn(memo=memo, logger=LOG, body={"x": 1})
    (record,) = caplog.records
    assert record.levelno == level and record.exc_info is None
    assert str(exc) in record.getMessage()
    failing.raises = None
    clock.t += retry_after - 5.0 / 2 - 0.1  # not yet due
    await fn(memo=memo, logger=LOG, body={"x": 1})
    clock.t += 0.2
    await fn(memo=memo, logger=LOG, body={"x": 1})
    assert runs == ["chain", "chain"]


async def test_due_times_are_kept_per_worker(clock: FakeClock) -> None:
    runs: list[str] = []
    fn = timer([checks.Check("chain", Step("chain", runs), 30.0)], clock)
    first: dict[str, Any] = {}
    await tick(fn, first, clock, 5.0)
    await tick(fn, first, clock, 5.0)  # not due for this worker yet
    await tick(fn, {}, clock, 5.0)  # another worker's memo: its own due times
    assert runs == ["chain", "chain"]


def test_the_periodic_steps_share_one_worker_timer() -> None:
    registry = kopf.OperatorRegistry()
    runtime = Runtime()
    steps = [
        attestation.register(registry, runtime, attestation.AttestationOptions(check_seconds=5.0)),
        chain.register(registry, runtime, cast(Any, None), 15.0),  # options are read at start
        control.register(registry, runtime, 5.0),
    ]
    checks.register(registry, runtime, steps)
    timers: list[Any] = list(registry._spawning.get_all_handlers())
    assert [t.id for t in timers] == ["checks"]
    assert timers[0].interval == 5.0  # the shortest of the three
    assert [(s.id, s.every) for s in steps] == [
        ("attestation", 5.0),
        ("chain", 15.0),
        ("coefficient", 5.0),
    ]
    assert steps[2].fn is control.sync_coefficient


async def test_a_resync_check_waits_its_interval_before_its_first_run(clock: FakeClock) -> None:
    runs: list[str] = []
    fn = timer(
        [
            checks.Check("attestation", Step("attestation", runs), 5.0),
            checks.Check("resync", Step("resync", runs), 20.0, at_start=False),
        ],
        clock,
    )
    memo: dict[str, Any] = {}
    for _ in range(9):
        await tick(fn, memo, clock, 5.0)
    # Ticks at 0, 5, ... 40: the resync at 20 and 40, never at the worker's first tick.
    assert runs.count("attestation") == 9
    assert runs.count("resync") == 2
    assert runs[:2] == ["attestation", "attestation"]


def test_workers_have_no_kopf_timer_of_their_own_but_the_shared_one() -> None:
    """The module-level handlers register no per-worker timer (each is a task and
    its coroutines per worker, sleeping); the resync is a check of the shared one."""
    registry = operator_registry()
    timers = [h.id for h in registry._spawning.get_all_handlers()]
    assert "resync_pool" in timers
    assert "resync_worker" not in timers
    assert set(timers) <= {"resync_pool", "checks"}, timers


async def test_a_slow_check_goes_on_alone_and_is_not_started_twice(clock: FakeClock) -> None:
    """A top-up awaiting its confirmation must not hold up the worker's attestation
    check: after a tick the slow check goes on by itself, and later ticks leave it
    be until it is done."""
    runs: list[str] = []
    release = asyncio.Event()

    async def slow(*_: Any) -> None:
        runs.append("chain")
        await release.wait()
        runs.append("chain done")

    tick_seconds = 0.05  # asyncio.wait's timeout is real time
    fn = timer(
        [
            checks.Check("chain", slow, tick_seconds),
            checks.Check("attestation", Step("attestation", runs), tick_seconds),
        ],
        clock,
    )
    memo: dict[str, Any] = {}
    # Bounded: a timer that waited for the slow check would never return.
    await asyncio.wait_for(tick(fn, memo, clock, tick_seconds), timeout=2)
    await asyncio.wait_for(tick(fn, memo, clock, tick_seconds), timeout=2)
    assert runs == ["chain", "attestation", "attestation"]  # never started twice
    release.set()
    await asyncio.sleep(0)  # the slow check finishes: due again an interval later
    assert runs[-1] == "chain done"
    await tick(fn, memo, clock, tick_seconds)
    await tick(fn, memo, clock, tick_seconds)
    assert runs.count("chain") == 2  # started again an interval after it was done


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


async def test_a_stretched_check_waits_that_many_intervals_after_a_success(
    clock: FakeClock,
) -> None:
    """Back-pressure (policy/backpressure.py): the stretch the timer is given spaces
    out a check after it succeeds, per worker body; a check that fails keeps its
    own retry delay."""
    runs: list[str] = []
    factors = {1: 3.0, 2: 1.0}
    fn = timer(
        [checks.Check("attestation", Step("attestation", runs), 5.0)],
        clock,
        lambda body: factors[body["worker"]],
    )
    stretched: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for _ in range(6):  # ticks at 0, 5.1, ... 25.5
        await fn(memo=stretched, logger=LOG, body={"x": 1, "worker": 1})
        await fn(memo=plain, logger=LOG, body={"x": 1, "worker": 2})
        clock.t += 5.1
    # Stretched 3x: at 0, then due at 15 (run at 15.3 within half a tick), not before.
    assert runs.count("attestation") == 6 + 2
    assert stretched[checks._DUE_KEY]["attestation"] == pytest.approx(1015.3 + 15.0)

    failing = Step("chain", runs)
    failing.raises = kopf.TemporaryError("not yet", delay=2.0)
    fn = timer([checks.Check("chain", failing, 5.0)], clock, lambda body: 4.0)
    memo: dict[str, Any] = {}
    await fn(memo=memo, logger=LOG, body={"x": 1})
    assert memo[checks._DUE_KEY]["chain"] == pytest.approx(clock.t + 2.0)


def test_idle_for_is_the_time_until_the_soonest_check_beyond_a_tick() -> None:
    async def nothing(**_: Any) -> None: ...

    a, b = checks.Check("a", nothing, 5.0), checks.Check("b", nothing, 30.0)
    assert checks.idle_for([a, b], {"a": 1020.0, "b": 1030.0}, 1000.0, 5.0) == 15.0
    assert checks.idle_for([a, b], {"a": 1005.0, "b": 1030.0}, 1000.0, 5.0) == 0.0
    assert checks.idle_for([a, b], {"b": 1030.0}, 1000.0, 5.0) == 0.0  # a never ran


class Stopped:
    """kopf's ``stopped`` kwarg as the timer uses it: records how long it was asked to
    wait, lets that time pass on ``clock``, and runs ``during`` (once) in the wait."""

    def __init__(self, clock: FakeClock, during: Any = None) -> None:
        self.waits: list[float] = []
        self.clock, self.during = clock, during

    async def wait(self, seconds: float) -> None:  # kopf's parameter is positional here
        self.waits.append(seconds)
        self.clock.t += seconds
        if self.during is not None:
            self.during, during = None, self.during
            during()

    def is_set(self) -> bool:
        return False


def attestation_and_chain(
    runs: list[str],
    clock: FakeClock,
    stretch: checks.Stretch,
    hurry: checks.Hurry = checks.no_hurry,
) -> Any:
    """A timer of two recording checks, every 5 s and every 30 s."""
    return timer(
        [
            checks.Check("attestation", Step("attestation", runs), 5.0),
            checks.Check("chain", Step("chain", runs), 30.0),
        ],
        clock,
        stretch,
        hurry,
    )


async def test_a_stretched_worker_waits_in_its_timer_instead_of_idle_ticks(
    clock: FakeClock,
) -> None:
    """kopf's timer run is not free: a worker whose checks are all stretched beyond
    the next tick waits in place until the soonest is due; an unstretched one does
    not wait at all."""
    runs: list[str] = []
    fn = attestation_and_chain(runs, clock, lambda body: body["factor"])
    stretched, plain = Stopped(clock), Stopped(clock)
    await fn(memo={}, logger=LOG, body={"x": 1, "factor": 4.0}, stopped=stretched)
    await fn(memo={}, logger=LOG, body={"x": 1, "factor": 1.0}, stopped=plain)
    # Attestation due again in 4 x 5 s: 15 s in place (a tick at a time, to look at
    # the worker), then kopf's own 5 s tick.
    assert stretched.waits == [pytest.approx(5.0)] * 3
    assert plain.waits == []
    assert runs == ["attestation", "chain", "attestation", "chain"]


async def test_a_worker_that_leaves_ready_gets_its_checks_back_within_a_tick(
    clock: FakeClock,
) -> None:
    """Stretched while Ready, a worker whose pod is lost must not wait out the stretch:
    the wait in place ends within a tick of kopf's live body showing it not Ready, and
    its next run finds each check due one interval after its last run."""
    runs: list[str] = []
    fn = attestation_and_chain(
        runs,
        clock,
        lambda body: 1.0 if body["status"]["phase"] != "Ready" else 4.0,
        hurry=process.not_ready,
    )
    body: dict[str, Any] = {"x": 1, "status": {"phase": "Ready"}}

    def pod_lost() -> None:
        body["status"] = {"phase": "Pending"}  # kopf replaces the live body in place

    stopped = Stopped(clock, during=pod_lost)
    memo: dict[str, Any] = {}
    await fn(memo=memo, logger=LOG, body=body, stopped=stopped)
    assert stopped.waits == [pytest.approx(5.0)]  # not the 15 s the stretch asked for
    assert memo[checks._DUE_KEY] == {"attestation": 1020.0, "chain": 1120.0}  # stretched 4x
    clock.t += 5.0  # kopf's tick
    await fn(memo=memo, logger=LOG, body=body, stopped=stopped)
    assert runs == ["attestation", "chain", "attestation"]  # due at 1005, run at 1010
    assert memo[checks._DUE_KEY] == {"attestation": 1015.0, "chain": 1030.0}


async def test_a_timer_waiting_in_place_ends_at_once_when_kopf_stops_it(clock: FakeClock) -> None:
    """The worker deleted or the operator stopping: kopf sets the timer's stopper, and
    a wait of minutes must not hold up the deletion."""
    fn = timer(
        [checks.Check("attestation", Step("attestation", []), 60.0)], clock, lambda body: 4.0
    )
    stopper: DaemonStopper = DaemonStopper()
    run = asyncio.create_task(fn(memo={}, logger=LOG, body={"x": 1}, stopped=stopper.async_waiter))
    await asyncio.sleep(0.05)
    assert not run.done()  # waiting 180 s in place
    stopper.set(DaemonStoppingReason.RESOURCE_DELETED)
    await asyncio.wait_for(run, timeout=5)


async def test_a_timer_with_a_check_still_at_work_does_not_wait_in_place(clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def slow(*_: Any) -> None:
        await gate.wait()

    fn = timer([checks.Check("chain", slow, 0.05)], clock, lambda body: 4.0)
    stopped = Stopped(clock)
    memo: dict[str, Any] = {}
    await fn(memo=memo, logger=LOG, body={"x": 1}, stopped=stopped)
    assert stopped.waits == []  # its next tick must look at the slow check again
    gate.set()
    await asyncio.sleep(0)
