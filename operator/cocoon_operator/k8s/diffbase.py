"""kopf's diff base (the last handled spec of each object), kept in the process.

kopf decides between "created", "updated" and "nothing of interest" by
comparing an object with the essence it stored after the last successful
handling. Its default storage is an annotation on the object, which costs a
metadata patch per handled change (at 1,000 workers, one write per worker in
thirteen on the way to Ready, and one more watch event for every component
that watches workers), and every later copy of the object carries the
essence again (a fifth of a worker's JSON).

The operator does not need the essence to survive a restart: every worker and
pool handler is level-based (create, update and resume all run the same
reconcile of the whole object), so an object seen for the first time by a
process is simply handled as created. That is what this storage gives a new
process, or a new leader: nothing stored, so each object is reconciled once,
then changes are detected against what this process handled.

The essence kept is the same as kopf's (spec, labels, annotations other than
kopf's and ``kubectl apply``'s); :meth:`MemoryDiffBaseStorage.build` only
avoids deep-copying the status on every event to build it. Essences are kept
as compact JSON, as the annotation would have held them, and forgotten when
their object is deleted (:meth:`forget`).

kopf builds an essence for every event of every watched resource, and its
progress storage deep-copies it (and the stored one) again to strip its own
annotations, whether or not any handler will look at them: only create, update
and resume handlers (a diff) and timers (whether a change resets their idle
time) do. Pods, nodes and ConfigMaps have neither here, and a launcher pod's
spec is the largest body the operator watches; so the essence is built only for
the API groups given (the operator's own, whose kinds have both), and
:class:`LeanAnnotationsProgressStorage` copies an essence only when it has
something to strip. Three deep copies per event were 9% of the operator's CPU on
the way to Ready at 1,000 workers (docs/bench.md).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any, cast

import kopf

# The essence never includes these top-level stanzas (kopf's build() drops them).
_SYSTEM = frozenset({"apiVersion", "kind", "metadata", "status"})


def _uid(body: Mapping[str, Any]) -> str | None:
    uid = (body.get("metadata") or {}).get("uid")
    return uid if isinstance(uid, str) and uid else None


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """Diff bases by object uid, for this process's lifetime (see the module docstring)."""

    def __init__(self, groups: Collection[str] | None = None) -> None:
        """``groups``: the API groups whose objects get an essence (None: every object).
        An object of another group gets an empty one: no handler of this operator
        diffs it (``tests/unit/test_diffbase.py`` checks the registry)."""
        super().__init__()
        self._essences: dict[str, str] = {}
        self._groups = frozenset(groups) if groups is not None else None

    def tracks(self, body: Mapping[str, Any]) -> bool:
        """Whether objects like ``body`` get an essence (their API group is tracked)."""
        if self._groups is None:
            return True
        group, _, _version = str(body.get("apiVersion") or "").rpartition("/")
        return group in self._groups

    def __len__(self) -> int:
        return len(self._essences)

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        if not self.tracks(body):
            return cast(kopf.BodyEssence, {})
        fields = list(extra_fields or [])
        # kopf deep-copies the whole body and then drops the status and most of the
        # metadata; hand it only the parts an essence is made of (and those of the
        # tracked extra fields). The result is the same essence.
        paths = [_path(field) for field in fields]
        meta = body.get("metadata") or {}
        kept = {"labels", "annotations"} | {
            p[1] for p in paths if len(p) > 1 and p[0] == "metadata"
        }
        trimmed: dict[str, Any] = {k: v for k, v in body.items() if k not in _SYSTEM}
        trimmed["metadata"] = {k: meta[k] for k in kept if k in meta}
        if "status" in body and any(p[:1] == ("status",) for p in paths):
            trimmed["status"] = body["status"]
        return super().build(body=kopf.Body(cast(kopf.RawBody, trimmed)), extra_fields=fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        uid = _uid(body)
        stored = self._essences.get(uid) if uid is not None else None
        return None if stored is None else cast(kopf.BodyEssence, json.loads(stored))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        uid = _uid(body)
        if uid is not None:
            self._essences[uid] = json.dumps(essence, separators=(",", ":"), sort_keys=True)

    def forget(self, body: Mapping[str, Any]) -> None:
        """The object is gone: drop its essence."""
        uid = _uid(body)
        if uid is not None:
            self._essences.pop(uid, None)


class LeanAnnotationsProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage, whose ``clear`` copies an essence only to
    change it.

    kopf calls ``clear`` on the essence it has just built and on the one the diff
    base has just decoded, both fresh objects, and its own ``clear`` deep-copies
    each before stripping the storage's annotations; an essence without any (they
    are there only while a handler is being retried) is returned as it is, the
    same value kopf's would return."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return (
            super().clear(essence=essence) if _clearing_changes(essence, self.prefix) else essence
        )


def _clearing_changes(essence: Mapping[str, Any], prefix: str | None) -> bool:
    """Whether kopf's ``clear`` would change ``essence``: an annotation under the
    storage's prefix to strip, or an empty stanza to drop."""
    if any(key in essence and not essence[key] for key in ("metadata", "status")):
        return True
    meta = essence.get("metadata") or {}
    if any(key in meta and not meta[key] for key in ("annotations", "labels")):
        return True
    return bool(prefix) and any(
        key.startswith(f"{prefix}/") for key in meta.get("annotations") or ()
    )


def _path(field: kopf.FieldSpec) -> tuple[str, ...]:
    """A kopf field spec (a dotted string or a sequence of keys) as a tuple of keys."""
    if field is None:
        return ()
    if isinstance(field, str):
        return tuple(field.split("."))
    return tuple(str(part) for part in field)
