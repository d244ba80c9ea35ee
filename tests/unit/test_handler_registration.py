"""How the operator's handlers are registered with kopf."""

from __future__ import annotations

import inspect

import kopf

import cocoon_operator.handlers.pool
import cocoon_operator.handlers.worker


def test_every_per_object_handler_runs_on_the_event_loop() -> None:
    """kopf runs a sync handler in a thread pool: a thread hop for every index
    function on every event. None of ours does I/O, so none needs a thread."""
    assert cocoon_operator.handlers.worker.launcher_pods is not None
    assert cocoon_operator.handlers.pool.pool_members is not None
    registry = kopf.get_default_registry()
    handlers = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]
    ids = {h.id for h in handlers}
    assert {"launcher_pods", "workers", "pool_members", "reconcile_worker"} <= ids, ids
    in_threads = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert in_threads == []
