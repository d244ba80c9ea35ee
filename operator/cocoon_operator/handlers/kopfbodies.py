"""kopf's bodies and patches without reference cycles: freed when dropped.

kopf wraps every watch event it processes in a ``Body`` and starts a
``Patch`` for it. Each builds views of itself (``meta``, ``spec``, ``status``,
and under ``meta`` the ``labels`` and ``annotations``) that point back at it,
and the patch also holds the body. So each event leaves a reference cycle
holding the whole decoded object, which reference counting never frees: only
CPython's cyclic collector does, after examining it (and everything else
young) at least once, often after promoting it to an older generation first.
Timed on the fleet benchmark at 1,000 workers (docs/bench.md), the collector
took 43% of the operator's CPU to Ready; a collection that kept what it found
(hack/memhook, ``COCOON_MEMHOOK_GARBAGE``) found kopf's bodies, their views
and patches, and the dicts and lists of the objects they held, and almost
nothing else. The operator's own ``kopf.Body`` wrappers (a check's snapshot,
a pod event's worker) made the same cycle.

:func:`install` rebinds the constructors of those four classes so that:

- a ``Body``'s views read its source directly (``metadata``, ``spec``,
  ``status``, ``metadata.labels``, ``metadata.annotations``), and replacing
  the body's source (kopf's live bodies of daemons and timers) re-points
  them;
- a ``Patch``'s views hold a weak proxy of the patch, which is the dict they
  edit (no view of a patch is used after kopf drops the patch: it is built
  per event and applied before the event's processing ends).

The classes, their attributes and what each view reads and writes are
kopf's. :func:`install` checks that on a sample and keeps kopf's own
constructors when anything differs (a kopf release that changed them), with
a warning; ``tests/unit/test_kopfbodies.py`` holds both to kopf's behaviour.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from kopf._cogs.structs import bodies, dicts, patches

_LOG = logging.getLogger("cocoon_operator.kopfbodies")

_ORIGINAL: dict[tuple[type, str], Callable[..., Any]] = {
    (bodies.Body, "__init__"): bodies.Body.__init__,
    (bodies.Body, "_replace_with"): bodies.Body._replace_with,
    (bodies.Body, "_replace_from"): bodies.Body._replace_from,
    (bodies.Meta, "__init__"): bodies.Meta.__init__,
    (patches.Patch, "__init__"): patches.Patch.__init__,
    (patches.MetaPatch, "__init__"): patches.MetaPatch.__init__,
}


def _view(view: dicts.MappingView[Any, Any], src: Mapping[Any, Any], path: tuple[str, ...]) -> None:
    """Point ``view`` at ``path`` in ``src`` (MappingView's own two attributes)."""
    view._src = src
    view._path = path


def _meta_init(self: bodies.Meta, src: Mapping[Any, Any]) -> None:
    """kopf's Meta (a body's, or one made on its own), its views pointing at ``src``."""
    _view(self, src, ("metadata",))
    self._labels = dicts.MappingView(src, ("metadata", "labels"))
    self._annotations = dicts.MappingView(src, ("metadata", "annotations"))


def _meta_of(src: Mapping[Any, Any]) -> bodies.Meta:
    meta = bodies.Meta.__new__(bodies.Meta)
    _meta_init(meta, src)
    return meta


def _body_init(self: bodies.Body, src: Any) -> None:
    dicts.MappingView.__init__(self, src)
    self._meta = _meta_of(src)
    self._spec = bodies.Spec.__new__(bodies.Spec)
    _view(self._spec, src, ("spec",))
    self._status = bodies.Status.__new__(bodies.Status)
    _view(self._status, src, ("status",))


def _repoint(body: bodies.Body, src: Mapping[Any, Any]) -> None:
    body._src = src
    for view in (body._meta, body._meta._labels, body._meta._annotations):
        view._src = src
    body._spec._src = src
    body._status._src = src


def _body_replace_with(self: bodies.Body, src: Mapping[Any, Any]) -> None:
    _repoint(self, src)


def _body_replace_from(self: bodies.Body, src: dicts.MappingView[Any, Any]) -> None:
    _repoint(self, src._src)


def _patch_init(
    self: patches.Patch,
    src: dict[str, Any] | None = None,
    /,
    body: bodies.Body | None = None,
    fns: Any = (),
) -> None:
    dict.__init__(self, src or {})
    me = weakref.proxy(self)
    self._meta = patches.MetaPatch(me)
    self._spec = patches.SpecPatch(me)
    self._status = patches.StatusPatch(me)
    self._original = body
    self._fns = (src.fns if isinstance(src, patches.Patch) else []) + list(fns)


def _meta_patch_init(self: patches.MetaPatch, src: Any) -> None:
    dicts.MutableMappingView.__init__(self, src, "metadata")
    self._labels = dicts.MutableMappingView(src, ("metadata", "labels"))
    self._annotations = dicts.MutableMappingView(src, ("metadata", "annotations"))


_ACYCLIC: dict[tuple[type, str], Callable[..., Any]] = {
    (bodies.Body, "__init__"): _body_init,
    (bodies.Body, "_replace_with"): _body_replace_with,
    (bodies.Body, "_replace_from"): _body_replace_from,
    (bodies.Meta, "__init__"): _meta_init,
    (patches.Patch, "__init__"): _patch_init,
    (patches.MetaPatch, "__init__"): _meta_patch_init,
}


def _bind(table: Mapping[tuple[type, str], Callable[..., Any]]) -> None:
    for (cls, name), fn in table.items():
        setattr(cls, name, fn)


SAMPLE: bodies.RawBody = {
    "metadata": {"name": "w", "labels": {"a": "1"}, "annotations": {"b": "2"}},
    "spec": {"x": 1},
    "status": {"phase": "Ready"},
}


def _reads(body: bodies.Body) -> tuple[Any, ...]:
    return (
        dict(body.meta),
        dict(body.meta.labels),
        dict(body.metadata.annotations),
        body.meta.name,
        dict(body.spec),
        dict(body.status),
    )


def _edits(patch: patches.Patch) -> dict[str, Any]:
    patch.meta.labels["l"] = "v"
    patch.metadata.annotations["n"] = None
    patch.spec["s"] = 1
    patch.status["phase"] = "Ready"
    return dict(patch)


def _freed_alone(make: Callable[[], object]) -> bool:
    """Whether the object ``make`` returns is freed when dropped, with the collector off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        ref = weakref.ref(make())
        return ref() is None
    finally:
        if enabled:
            gc.enable()


def _behaviour() -> tuple[Any, ...]:
    """What a body and a patch of :data:`SAMPLE` read and write, and a replaced body reads."""
    body = bodies.Body(SAMPLE)
    replaced = bodies.Body(bodies.RawBody())
    replaced._replace_with(SAMPLE)
    return _reads(body), _reads(replaced), _edits(patches.Patch(body=body))


def install() -> bool:
    """Make kopf's bodies and patches acyclic (see the module); True when done, False
    (kopf's own constructors kept, with a warning) when this kopf's differ."""
    _bind(_ORIGINAL)
    expected = _behaviour()
    _bind(_ACYCLIC)
    try:
        same = _behaviour() == expected
        acyclic = _freed_alone(lambda: bodies.Body(SAMPLE)) and _freed_alone(
            lambda: patches.Patch(body=bodies.Body(SAMPLE))
        )
    except Exception:  # a kopf whose views differ in shape
        same = acyclic = False
    if same and acyclic:
        return True
    _bind(_ORIGINAL)
    _LOG.warning(
        "kopf's bodies differ from those this operator knows (kopf upgraded?): each event's"
        " body is left to the garbage collector (see handlers/kopfbodies.py)"
    )
    return False


def uninstall() -> None:
    """kopf's own constructors back (for tests)."""
    _bind(_ORIGINAL)
