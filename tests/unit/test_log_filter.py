"""kopf's per-tick timer successes are dropped from the operator's log; nothing else is."""

from __future__ import annotations

import logging

import kopf
import pytest

from cocoon_operator.cli import RoutineTimerSuccesses

BODY = {"metadata": {"namespace": "fleet", "name": "w0001", "uid": "u1"}}


def _timer_handler() -> object:
    # A real kopf timer handler: the filter keys on kopf's own text for it.
    registry = kopf.OperatorRegistry()
    kopf.timer("cocoon.network", "v1alpha1", "cocoonworkers", id="chain", registry=registry)(
        lambda **_: None
    )
    (handler,) = registry._spawning.get_all_handlers()
    return handler


def test_only_timer_successes_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    objects = logging.getLogger("kopf.objects")
    routine = RoutineTimerSuccesses()
    objects.addFilter(routine)
    try:
        logger = kopf.LocalObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())
        handler = _timer_handler()
        with caplog.at_level(logging.DEBUG, logger="kopf.objects"):
            # As kopf words them (kopf/_core/actions/execution.py).
            logger.info(f"{handler} succeeded.")
            logger.error(f"{handler} failed with an exception and will try again in 5 seconds: x")
            logger.info("Handler 'reconcile_worker' succeeded.")
            logger.info("phase Registering -> Ready")
    finally:
        objects.removeFilter(routine)
    assert [r.getMessage() for r in caplog.records] == [
        "Timer 'chain' failed with an exception and will try again in 5 seconds: x",
        "Handler 'reconcile_worker' succeeded.",
        "phase Registering -> Ready",
    ]
