"""How the operator's handlers are registered with kopf."""

from __future__ import annotations

import inspect
from typing import Any

import kopf

import cocoon_operator.handlers.pool
import cocoon_operator.handlers.worker


def per_object_handlers(registry: kopf.OperatorRegistry) -> list[Any]:
    """Every handler kopf runs for an object's events (indexes, watches, changes,
    daemons and timers) in ``registry``."""
    return [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]


def test_every_per_object_handler_runs_on_the_event_loop() -> None:
    """kopf runs a sync handler in a thread pool: a thread hop for every index
    function on every event. None of ours does I/O, so none needs a thread."""
    assert cocoon_operator.handlers.worker.launcher_pods is not None
    assert cocoon_operator.handlers.pool.pool_members is not None
    handlers = per_object_handlers(kopf.get_default_registry())
    ids = {h.id for h in handlers}
    assert {"launcher_pods", "workers", "pool_members", "reconcile_worker"} <= ids, ids
    in_threads = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert in_threads == []


def test_node_events_run_the_node_handler_only_for_a_node_being_drained() -> None:
    """A node's heartbeats change its status every few seconds; only a cordon or a
    NoExecute taint is the handler's business, and kopf's filter decides in line."""
    assert cocoon_operator.handlers.worker.node_changed is not None
    (handler,) = [
        h
        for h in kopf.get_default_registry()._watching.get_all_handlers()
        if h.id == "node_changed"
    ]
    assert handler.when is not None
    assert handler.when(spec={}) is False
    assert handler.when(spec={"taints": [{"key": "x", "effect": "NoSchedule"}]}) is False
    assert handler.when(spec={"unschedulable": True}) is True
    assert handler.when(spec={"taints": [{"key": "drain", "effect": "NoExecute"}]}) is True
