"""glibc's allocator, told to give memory back: the operator's steady-state RSS.

CPython takes objects up to 512 bytes from its own arenas and everything larger
from ``malloc``: the watch events' lines and decoded strings, response bodies,
the node reports' quotes. A fleet coming up makes many of those at once, and
glibc's defaults keep what they freed: a freed block of at least the mmap
threshold (128 KB at first) raises the threshold to its size, so later blocks
that large come from the heap; the heap's top is returned only past a trim
threshold that rises with it; and the holes left between blocks still in use
are never returned. Measured on the fleet benchmark at 100 workers
(docs/bench.md, "Where the operator's memory goes"): 29 of the heap's 50 MB
were free after the ramp and stayed resident, a fifth of the process's RSS.

Set here, once, before the operator's work starts (``mallopt`` applies to
later allocations):

- ``M_MMAP_THRESHOLD`` 64 KB, fixed: blocks that large (a pod's event line, a
  list response) are mapped and unmapped on their own, never left in the heap;
  a fixed value also stops the thresholds from rising;
- ``M_TRIM_THRESHOLD`` 128 KB, fixed: free space at the heap's top goes back
  at once;
- ``M_ARENA_MAX`` 2: the operator is one event loop plus asyncio's default
  executor (six threads on two cores: DNS lookups among others); an arena per
  thread (glibc's default allows eight per core) only spreads the free space
  over more heaps.

With them the same run's steady state was 115 MB instead of 141 (the heap 23
MB, 5 of them free); CPU to Ready the same within the machine's spread. A
variable of the same name in the environment (``MALLOC_MMAP_THRESHOLD_`` and
so on, glibc's own) wins: the setting it names is left alone. Not glibc (musl,
macOS): nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Mapping

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: (parameter, value, glibc's environment variable for the same setting).
SETTINGS: tuple[tuple[int, int, str], ...] = (
    (M_MMAP_THRESHOLD, 64 * 1024, "MALLOC_MMAP_THRESHOLD_"),
    (M_TRIM_THRESHOLD, 128 * 1024, "MALLOC_TRIM_THRESHOLD_"),
    (M_ARENA_MAX, 2, "MALLOC_ARENA_MAX"),
)

Mallopt = Callable[[int, int], int]


def _glibc_mallopt() -> Mallopt | None:
    """glibc's ``mallopt``, or None when this process's C library is not glibc."""
    if not hasattr(os, "confstr"):
        return None
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except (OSError, ValueError):
        return None
    mallopt: Mallopt = libc.mallopt
    return mallopt


def tune_allocator(
    environ: Mapping[str, str] | None = None, mallopt: Mallopt | None = None
) -> list[str]:
    """Apply :data:`SETTINGS` (see the module docstring), each unless the environment
    sets it; returns the names of those applied (for the startup log and tests)."""
    env = os.environ if environ is None else environ
    call = mallopt if mallopt is not None else _glibc_mallopt()
    if call is None:
        return []
    applied = []
    for param, value, variable in SETTINGS:
        if variable in env:
            continue
        if call(param, value) == 1:  # mallopt returns 1 on success
            applied.append(variable)
    return applied
