"""Frozen models that share one copy of each set of fields their inputs named.

pydantic keeps on every model instance the set of the fields its input gave
(``__pydantic_fields_set__``, read by ``model_dump(exclude_unset=True)`` and
``model_fields_set``). A set of six names takes 728 bytes, more than the
model's own values: of a Ready worker's parse (23 models), 11 KB of about 19
were these sets, and the operator keeps the parse of every worker
(handlers/parsed.py) and every node's report (handlers/nodetracker.py). Yet a
fleet's models name the same few sets of fields again and again: every
condition gives the same six.

So the models of ``api/`` call :func:`share_fields_set` after validation (their
``model_post_init``): each points at one shared set per distinct content.
That is safe only because they are frozen (``api/v1alpha1.py`` ``Model``,
``api/nodereport.py`` ``_Model``): pydantic adds to the set only in
``__setattr__``, which a frozen model refuses, and ``model_copy`` copies the set
before it updates the copy (tests/unit/test_fieldsets.py holds pydantic to both).
It costs about 1 µs a model.
"""

from __future__ import annotations

from pydantic import BaseModel

# Distinct sets seen so far: bounded by the schema in practice, capped in case.
MAX_SHARED = 4096
_shared: dict[frozenset[str], set[str]] = {}


def share_fields_set(model: BaseModel) -> None:
    """Point ``model`` at the shared copy of its fields set, if it is frozen (a model
    that may be assigned to keeps its own: pydantic adds to it then)."""
    if not type(model).model_config.get("frozen"):
        return
    own = model.__pydantic_fields_set__
    key = frozenset(own)
    shared = _shared.get(key)
    if shared is None:
        if len(_shared) >= MAX_SHARED:
            return
        shared = _shared[key] = set(key)
    if shared is not own:
        object.__setattr__(model, "__pydantic_fields_set__", shared)


__all__ = ["MAX_SHARED", "share_fields_set"]
