"""How the operator's handlers are registered with kopf."""

from __future__ import annotations

import functools
import inspect

from tests.unit.helpers import operator_registry, per_object_handlers


def test_every_per_object_handler_runs_on_the_event_loop() -> None:
    """kopf runs a sync handler in a thread pool: a thread hop for every index
    function on every event. None of ours does I/O, so none needs a thread."""
    handlers = per_object_handlers(operator_registry())
    ids = {h.id for h in handlers}
    assert {"launcher_pods", "workers", "pool_members", "reconcile_worker"} <= ids, ids
    in_threads = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert in_threads == []


def test_node_events_run_the_node_handler_only_for_a_node_being_drained() -> None:
    """A node's heartbeats change its status every few seconds; only a cordon or a
    NoExecute taint is the handler's business, and kopf's filter decides in line."""
    (handler,) = [
        h for h in operator_registry()._watching.get_all_handlers() if h.id == "node_changed"
    ]
    assert handler.when is not None
    assert handler.when(spec={}) is False
    assert handler.when(spec={"taints": [{"key": "x", "effect": "NoSchedule"}]}) is False
    assert handler.when(spec={"unschedulable": True}) is True
    assert handler.when(spec={"taints": [{"key": "drain", "effect": "NoExecute"}]}) is True


# What kopf passes every handler by keyword (kopf/_core/actions/invocation.py and
# the causes' kwargs): a parameter a handler binds itself must not share a name.
KOPF_KWARGS = frozenset(
    {
        "annotations",
        "body",
        "diff",
        "event",
        "labels",
        "logger",
        "memo",
        "meta",
        "name",
        "namespace",
        "new",
        "old",
        "param",
        "patch",
        "reason",
        "resource",
        "retry",
        "runtime",
        "settings",
        "spec",
        "started",
        "status",
        "stopped",
        "type",
        "uid",
    }
)


def test_no_handler_binds_a_parameter_that_kopf_also_passes() -> None:
    """Handlers get the operator's state bound positionally (functools.partial); kopf
    passes ``runtime`` (how long a handler has run) among others, and a bound
    parameter of that name fails every call with "got multiple values"."""
    registry = operator_registry()
    handlers = [
        *per_object_handlers(registry),
        *registry._activities.get_all_handlers(),
    ]
    bound = 0
    for handler in handlers:
        fn = handler.fn
        while not isinstance(fn, functools.partial) and hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        if not isinstance(fn, functools.partial):
            continue
        names = list(inspect.signature(fn.func).parameters)[: len(fn.args)]
        assert not set(names) & KOPF_KWARGS, (handler.id, names)
        bound += 1
    assert bound >= 8  # the worker's, the pools', the cordon's and the process's
