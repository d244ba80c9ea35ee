"""Back-pressure: the event loop's lag measured (handlers/looplag.py), and a Ready
worker's routine re-checks spaced out by it (policy/backpressure.py,
handlers/process.py: routine_stretch); a worker not yet Ready is never slowed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from cocoon_operator.cli import build_parser
from cocoon_operator.handlers.looplag import LoopLag, OverloadNotice
from cocoon_operator.handlers.process import routine_stretch
from cocoon_operator.handlers.runtime import Deps, Runtime
from cocoon_operator.policy.backpressure import MAX_STRETCH, TOLERATED_LAG_SECONDS, stretch


def test_no_stretch_up_to_the_tolerated_lag() -> None:
    assert stretch(0.0) == 1.0
    assert stretch(TOLERATED_LAG_SECONDS) == 1.0


def test_stretch_grows_with_the_lag_up_to_the_ceiling() -> None:
    assert stretch(0.2, tolerated=0.1, ceiling=4.0) == pytest.approx(2.0)
    assert stretch(0.35, tolerated=0.1, ceiling=4.0) == pytest.approx(3.5)
    assert stretch(0.4, tolerated=0.1, ceiling=4.0) == pytest.approx(4.0)
    assert stretch(30.0) == MAX_STRETCH
    lags = [0.05, 0.1, 0.15, 0.2, 0.3, 1.0, 10.0]
    factors = [stretch(lag) for lag in lags]
    assert factors == sorted(factors)


@pytest.mark.parametrize(("tolerated", "ceiling"), [(0.0, 4.0), (-1.0, 4.0), (0.1, 0.5)])
def test_stretch_refuses_meaningless_limits(tolerated: float, ceiling: float) -> None:
    with pytest.raises(ValueError, match="tolerated"):
        stretch(1.0, tolerated=tolerated, ceiling=ceiling)


def test_the_lag_rises_at_once_and_falls_off_gradually() -> None:
    heard: list[float] = []
    lag = LoopLag(period=0.5, decay=0.5, on_change=heard.append)
    lag.sample(0.8)
    assert lag.seconds == pytest.approx(0.8)
    lag.sample(0.0)
    assert lag.seconds == pytest.approx(0.4)  # one quiet sample is not recovery
    lag.sample(-0.001)  # a timer that fired a hair early is no lag
    assert lag.seconds == pytest.approx(0.2)
    lag.sample(0.5)
    assert lag.seconds == pytest.approx(0.5)
    assert heard == pytest.approx([0.8, 0.4, 0.2, 0.5])


@pytest.mark.parametrize(("period", "decay"), [(0.0, 0.5), (0.5, 1.0), (0.5, -0.1)])
def test_the_lag_refuses_meaningless_settings(period: float, decay: float) -> None:
    with pytest.raises(ValueError, match="period"):
        LoopLag(period=period, decay=decay)


async def test_the_lag_measures_a_loop_that_is_held_up() -> None:
    lag = LoopLag(period=0.05, decay=0.9)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.01)  # the task is asleep in its period now
        time.sleep(0.4)  # noqa: ASYNC251 - the point: a callback that holds the loop
        for _ in range(100):
            if lag.seconds > 0:
                break
            await asyncio.sleep(0.01)
        # Woken at least 0.4 s after it went to sleep for 0.05 s.
        assert lag.seconds >= 0.3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_overload_is_logged_when_it_starts_and_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.backpressure")
    notice = OverloadNotice(0.1, log, "re-checks spaced out")
    with caplog.at_level(logging.INFO, logger=log.name):
        for seconds in (0.05, 0.3, 0.6, 0.2, 0.08, 0.06, 0.04, 0.2):
            notice(seconds)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Operator overloaded: its event loop runs 0.30s late; re-checks spaced out",
        "Operator no longer overloaded (event loop 0.04s late)",
        "Operator overloaded: its event loop runs 0.20s late; re-checks spaced out",
    ]
    assert caplog.records[0].levelno == logging.WARNING


def _deps(lag_seconds: float, max_stretch: float = MAX_STRETCH) -> Deps:
    deps = Deps(api=Any, clock=Any, max_stretch=max_stretch)  # type: ignore[arg-type]
    deps.lag.sample(lag_seconds)
    return deps


@pytest.mark.parametrize(
    "phase", ["Pending", "Starting", "Attesting", "Registering", "Failed", "Paused", None]
)
def test_a_worker_on_its_way_to_ready_is_never_slowed(phase: str | None) -> None:
    body: dict[str, Any] = {"status": {"phase": phase}} if phase else {}
    assert routine_stretch(Runtime(started=_deps(2.0)), body) == 1.0


def test_a_ready_workers_rechecks_give_way_while_the_loop_lags() -> None:
    ready = {"status": {"phase": "Ready"}}
    assert routine_stretch(Runtime(started=_deps(0.0)), ready) == 1.0
    assert routine_stretch(Runtime(started=_deps(0.25)), ready) == pytest.approx(2.5)
    assert routine_stretch(Runtime(started=_deps(5.0)), ready) == MAX_STRETCH
    assert routine_stretch(Runtime(), ready) == 1.0  # before startup made the deps


def test_the_ceiling_is_the_operators_flag_and_1_turns_it_off() -> None:
    ready = {"status": {"phase": "Ready"}}
    assert routine_stretch(Runtime(started=_deps(5.0, max_stretch=2.0)), ready) == 2.0
    assert routine_stretch(Runtime(started=_deps(5.0, max_stretch=1.0)), ready) == 1.0
    args = build_parser().parse_args(["run"])
    assert args.max_recheck_stretch == MAX_STRETCH
    args = build_parser().parse_args(["run", "--max-recheck-stretch", "1"])
    assert args.max_recheck_stretch == 1.0


@pytest.mark.parametrize("value", ["0.5", "0", "-2", "nan"])
def test_a_ceiling_below_one_is_refused_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--max-recheck-stretch", value])
    err = capsys.readouterr().err
    assert "--max-recheck-stretch" in err and "must be at least 1" in err
