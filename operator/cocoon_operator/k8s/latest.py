"""The newest copy of each object the operator knows: kopf's body or its own write's answer.

kopf hands every handler the object as its watch last delivered it. When the
operator is busy, that copy lags the operator's own writes: a status patch
made a moment ago by one step is not yet in the body the next step (or the
next timer of the same worker) decides on. Deciding on the older copy undoes
the newer write (a merge patch of "what changed" against a stale base writes
the stale values back) and the two copies then chase each other: at 1,000
workers this made workers flap between Ready and Registering in steady state.

:class:`LatestObjects` keeps the apiserver's answer to each of the operator's
own writes until the watch catches up with it; :meth:`LatestObjects.freshest`
returns whichever copy is newer.

Newer means a higher ``metadata.resourceVersion``. Kubernetes documents
resource versions as opaque, but every etcd-backed apiserver issues them as
the etcd revision, a decimal integer that only grows; when either side is not
a decimal integer the body kopf gave is trusted (the behaviour without this
module), never a guess.

The copy is kept without ``metadata.managedFields``: nothing here decides on
them, and they are over half of a worker's decoded body (20 of 37 KB) and of
a launcher pod's, held for every worker at once while the watch lags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]  # namespace, name


def resource_version(obj: Mapping[str, Any]) -> int | None:
    """``metadata.resourceVersion`` as an integer, or None when it is not one."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def newer(candidate: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` is certainly a later state of the object than ``than``."""
    a, b = resource_version(candidate), resource_version(than)
    if a is None or b is None:
        return False
    same_uid = (candidate.get("metadata") or {}).get("uid") == (than.get("metadata") or {}).get(
        "uid"
    )
    return same_uid and a > b


def without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``obj`` whose metadata has no ``managedFields``."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


class LatestObjects:
    """Per (namespace, name): the operator's own last write, while the watch lags it."""

    def __init__(self) -> None:
        self._ahead: dict[Key, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._ahead)

    @staticmethod
    def key(obj: Mapping[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") or "", meta.get("name") or "")

    def wrote(self, obj: Mapping[str, Any] | None) -> None:
        """Remember the apiserver's answer to a write of ours (None: the object is gone)."""
        if obj is None:
            return
        key = self.key(obj)
        held = self._ahead.get(key)
        if held is None or newer(obj, held):
            self._ahead[key] = without_managed_fields(obj)

    def freshest(self, body: Mapping[str, Any], *, delivered: bool = True) -> Mapping[str, Any]:
        """``body``, or our newer copy; a copy the watch caught up with is dropped.

        ``delivered``: ``body`` came from kopf (a watch event, an index), so
        kopf's copy is at least this new. False for a copy a step already got
        from here and hands on: at the same version it is our own copy, not
        proof that the watch delivered it, and dropping it then would leave
        the next step with kopf's body, however far behind (minutes, under load:
        workers re-announced their attestation and their Ready phase; docs/bench.md).
        """
        key = self.key(body)
        held = self._ahead.get(key)
        if held is None:
            return body
        if newer(held, body):
            return held
        if delivered or newer(body, held):
            # The watch delivered it (or something newer), or it is another uid.
            del self._ahead[key]
        return body

    def ahead_of(self, key: Key, version: int | None) -> Mapping[str, Any] | None:
        """Our copy of ``key`` if it is certainly newer than ``version``, else None.

        For what an index recorded of an object (its resource version), not a
        body a handler decides on: nothing is dropped. Resource versions are
        the store's one growing revision, so a higher one is the later state
        of whatever object now bears the name.
        """
        held = self._ahead.get(key)
        if held is None or version is None:
            return None
        mine = resource_version(held)
        return held if mine is not None and mine > version else None

    def forget(self, key: Key) -> None:
        self._ahead.pop(key, None)
