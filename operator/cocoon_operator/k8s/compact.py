"""Decoded objects held for long, made smaller in place by sharing their strings.

kopf keeps the last body of every worker for its timer, decoded from the watch's
JSON; the decoder makes a new string for every key and value of every event,
so a thousand workers hold a thousand copies of ``"lastTransitionTime"``,
``"True"`` and their condition types. A worker's body decoded (without
``managedFields``) is about 17 KB, its JSON 4 KB: keys are 7 KB of it (127
keys), short values most of the rest (docs/bench.md, "Where the operator's
memory goes"). Interning both shares one copy of each across the fleet: the
same body then takes about 8 KB.

Only strings up to :data:`MAX_INTERNED` characters are interned: the repeated
ones are short (names, reasons, timestamps, types); the long ones (messages,
hashes, quotes) are mostly unique, and an interned string that is unique only
costs a slot in the interpreter's table. Interned strings are freed when no
object holds them any more, as any other.
"""

from __future__ import annotations

import sys
from typing import Any

#: Longer strings are left as they are (see the module docstring).
MAX_INTERNED = 64


def intern_strings(obj: Any) -> Any:
    """``obj`` with every dict key and every short string value interned, dicts and
    lists changed in place (kopf holds the very body); returns ``obj`` (or, for a
    string, its interned copy). Key order is kept; nothing else changes."""
    if isinstance(obj, dict):
        items = [
            (sys.intern(k) if type(k) is str else k, intern_strings(v)) for k, v in obj.items()
        ]
        obj.clear()
        obj.update(items)
        return obj
    if isinstance(obj, list):
        for i, value in enumerate(obj):
            obj[i] = intern_strings(value)
        return obj
    if type(obj) is str and len(obj) <= MAX_INTERNED:
        return sys.intern(obj)
    return obj


def _key(key: Any) -> Any:
    return sys.intern(key) if type(key) is str else key
