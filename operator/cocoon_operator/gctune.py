"""CPython's cyclic garbage collector, told what the operator's heap is like.

Nearly every object the operator makes is freed by its reference count the
moment it is dropped: a watch event's decoded body once it is handled, a
response once read. The cyclic collector exists for the rest (reference
cycles: an exception and its frames, asyncio's futures and callbacks), and
CPython's default thresholds (700, 10, 10) run it as if most objects might
be: a young collection every 700 container objects made and not yet freed,
and a full one, over every object of the process, each time the objects that
survived two young collections grew by a quarter.

The operator is one long-lived process whose live data grows with the fleet
and is replaced piece by piece (a worker's snapshot at each of its events, a
node's report at each heartbeat). Under the defaults each of those pieces is
examined at every young collection it survives, promoted, and then scanned by
every full collection until it is replaced, and so is everything imported at
startup. Timed on the fleet benchmark at 1,000 workers (docs/bench.md, run
h3, ``COCOON_MEMHOOK_GC``): the collector took 43% of the operator's CPU to
Ready (62 full collections of about 0.45 s each, 28 s; the young ones 14 s)
and 14% of it at rest, a full collection about every 25 s, each holding up
the event loop that long.

The garbage it found was nearly all kopf's per-event bodies, now freed by
their reference counts instead (handlers/kopfbodies.py); what is left for it
is a few thousand objects a minute (asyncio's closed socket transports).

So, once, just before the operator's event loop starts (:func:`tune_collector`):

- ``gc.freeze()``, after a collection: what exists then (modules, classes,
  kopf's registry, pydantic's validators; about 82,000 objects) lives as long
  as the process and is never scanned again;
- a young collection once :data:`YOUNG` more container objects are alive
  than at the last one, instead of 700: what lives a short while (an
  event's body while it is handled, a check's temporaries) is mostly gone
  before one runs, so fewer objects are examined and promoted;
- full collections as CPython's defaults have them (every :data:`FULL`
  middle ones, and only once the objects promoted since the last grew the
  old generation by a quarter), each now skipping what was frozen. With
  kopf's bodies no longer cycles they come seldom (two after startup at
  1,000 workers, run h5). Considering them only every 20 middle ones
  (runs h4, h5, d10) left what reached the old generation there for the
  whole ramp: 60 MB more at 1,000 workers while kopf's bodies were cycles
  (h4), and a peak of 474 MB at 3,000 (d10) against 424 before.

CPython's ``gc.set_threshold`` and ``gc.freeze`` are documented for exactly
this; nothing else about the collector changes, and ``gc.collect()`` still
collects everything that is not frozen.
"""

from __future__ import annotations

import gc

#: Container objects made (and not yet freed) between young collections.
YOUNG = 10_000
#: Young collections between middle ones (CPython's default).
MIDDLE = 10
#: Middle collections before a full one is considered (CPython's default).
FULL = 10


def tune_collector() -> tuple[int, tuple[int, int, int]]:
    """Collect once, freeze what is left (see the module), set the thresholds;
    returns the number of objects frozen and the thresholds (for the startup log)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, FULL)
    return gc.get_freeze_count(), gc.get_threshold()
