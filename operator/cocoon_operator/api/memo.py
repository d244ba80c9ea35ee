"""A value computed from a frozen object, kept while that object lives.

Every check of every worker reads the same parsed objects again: the worker's
spec (handlers/parsed.py keeps one parse per resourceVersion) and its node's
report (handlers/nodetracker.py, one per write of the report). Some of what the
checks derive from them costs more than the rest of the check: a spec's
revision and its attestation policy's digest are JSON dumps, a relayed quote's
fingerprint a base64 decode and a SHA-256 of about 5 KB (docs/bench.md, the
steady profile at 1,000 workers). :class:`PerObject` computes such a value once
per object.

The key is the object itself, not its content: hashing a model's content would
cost what it saves. An entry is found by the object's ``id`` and holds a weak
reference that says it is that very object; it goes when the object dies, before
its ``id`` can be reused. Only for frozen objects (the models of ``api/`` are:
tests/unit/test_fieldsets.py): a copy with changes is another object, so a kept
value is never stale. A value that raises is not kept.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class PerObject(Generic[T, R]):
    """``fn(obj)``, computed once for each live ``obj``."""

    def __init__(self, fn: Callable[[T], R]) -> None:
        self.fn = fn
        self.kept: dict[int, tuple[weakref.ref[T], R]] = {}
        self.__doc__ = fn.__doc__

    def __call__(self, obj: T) -> R:
        key = id(obj)
        hit = self.kept.get(key)
        if hit is not None and hit[0]() is obj:
            return hit[1]
        value = self.fn(obj)
        kept = self.kept

        def forget(ref: weakref.ref[T]) -> None:
            # Called as the object dies; drops only its own entry.
            entry = kept.get(key)
            if entry is not None and entry[0] is ref:
                del kept[key]

        kept[key] = (weakref.ref(obj, forget), value)
        return value
