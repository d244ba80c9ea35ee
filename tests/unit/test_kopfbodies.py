"""handlers/kopfbodies.py: kopf's bodies and patches, freed by reference counting.

Each test runs with the collector off where it matters: an object freed there
was freed by its reference count, the way the operator now frees each event."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest

from cocoon_operator.handlers import kopfbodies


@pytest.fixture(autouse=True)
def kopfs_own_afterwards() -> Iterator[None]:
    yield
    kopfbodies.uninstall()


def freed_without_the_collector(make: Callable[[], object]) -> bool:
    gc.disable()
    try:
        ref = weakref.ref(make())
        return ref() is None
    finally:
        gc.enable()


def body() -> kopf.Body:
    return kopf.Body(
        {
            "metadata": {"name": "w0", "namespace": "n", "labels": {"a": "1"}},
            "spec": {"model": "m"},
            "status": {"phase": "Ready"},
        }
    )


def event_patch() -> kopf.Patch:
    """A patch as kopf makes one per event: holding the event's body."""
    return kopf.Patch(body=body())


def test_kopfs_own_bodies_and_patches_are_left_to_the_collector() -> None:
    # What the module is for: without it each event leaves a cycle.
    assert not freed_without_the_collector(body)
    assert not freed_without_the_collector(event_patch)


def test_once_installed_a_body_and_a_patch_are_freed_when_dropped() -> None:
    assert kopfbodies.install()
    assert freed_without_the_collector(body)
    assert freed_without_the_collector(event_patch)


def snapshot(b: kopf.Body) -> tuple[Any, ...]:
    return (
        dict(b),
        dict(b.meta),
        dict(b.metadata.labels),
        dict(b.meta.annotations),
        b.meta.name,
        b.meta.namespace,
        dict(b.spec),
        dict(b.status),
        b.spec.get("missing", "default"),
    )


def edited(p: kopf.Patch) -> tuple[Any, ...]:
    p.status["phase"] = "Attesting"
    p.meta.labels["l"] = "v"
    p.metadata.annotations["gone"] = None
    p.spec["model"] = "n"
    del p.spec["model"]
    return dict(p), p.as_json_patch(), bool(p)


def test_bodies_and_patches_read_and_write_as_kopfs_own() -> None:
    theirs = snapshot(body()), edited(event_patch())
    assert kopfbodies.install()
    assert (snapshot(body()), edited(event_patch())) == theirs


def test_a_replaced_body_and_its_views_read_the_new_source() -> None:
    """kopf's live bodies (daemons, timers) are replaced at each event; views taken
    before see the new object."""
    assert kopfbodies.install()
    live = kopf.Body({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}})
    labels, spec = live.meta.labels, live.spec
    live._replace_with({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 2}})
    assert (labels["a"], spec["x"], live.status.get("phase")) == ("2", 2, None)
    live._replace_from(kopf.Body({"metadata": {"labels": {"a": "3"}}}))
    assert (labels["a"], live.meta.labels["a"], dict(spec)) == ("3", "3", {})


def test_a_kopf_whose_bodies_differ_keeps_its_own_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def misread(self: kopf.Body, src: Any) -> None:  # views that read the wrong stanza
        kopfbodies._body_init(self, src)
        kopfbodies._view(self._spec, src, ("status",))

    monkeypatch.setitem(kopfbodies._ACYCLIC, (kopf.Body, "__init__"), misread)
    assert not kopfbodies.install()
    assert dict(body().spec) == {"model": "m"}
    assert not freed_without_the_collector(body)  # kopf's own, as they were
    assert "kopf's bodies differ" in caplog.text
