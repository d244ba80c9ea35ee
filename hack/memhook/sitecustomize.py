"""Where the operator's memory goes: reports from inside a running operator (a bench tool).

Not part of the operator: loaded only when this directory is on ``PYTHONPATH``
and ``COCOON_MEMHOOK_DIR`` is set, and then only in ``cocoon-operator run``
(every other Python process of the stack ignores it), e.g.::

    COCOON_MEMHOOK_DIR=/tmp/mem PYTHONPATH=hack/memhook \\
        hack/bench-fleet --workers 100 --keep ...
    kill -USR2 "$(cat /tmp/cocoon-bench-fleet/run/operator.pid)"

SIGUSR2 writes ``report-<pid>-<k>.txt`` there: RSS, glibc's heap (``mallinfo2``:
in use and free), CPython's arenas (in use and free), the modules loaded, the
largest of the operator's own structures (kopf's per-object memories, the
parse cache, the node reports, the Deps caches), asyncio tasks by coroutine.
``COCOON_MEMHOOK_TRACE=N`` also traces allocations (tracemalloc, N frames;
from ``COCOON_MEMHOOK_TRACE_DELAY`` seconds after start, 12 by default, as
tracing from the start made the operator miss the bench's minute to come up)
and adds them grouped by the innermost frame in the operator or kopf;
``COCOON_MEMHOOK_PEAKS=1`` then writes a report each time the traced memory
grows by 3 MB (at most every 15 s), to catch a ramp's peak;
``COCOON_MEMHOOK_LIGHT=1`` leaves out the object walk (slow under tracing).
``COCOON_MEMHOOK_GC=1`` times the cyclic garbage collector: every 5 s
``gc-<pid>.txt`` gets a line of the seconds and collections so far per
generation, the process's CPU seconds and the objects the collector tracks
(py-spy puts a collection's time on whatever line allocated last).
``COCOON_MEMHOOK_GARBAGE=1`` (with it) also runs a full collection every 20 s
that keeps what it finds (``gc.DEBUG_SAVEALL``) and appends to
``garbage-<pid>.txt`` what the cycles were made of, by type, then lets them go:
which reference cycles the operator leaves for the collector.
Under tracing CPython's arenas are not reported (tracemalloc wraps the allocator).
docs/bench.md ("Where the operator's memory goes") has the method and figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

_DIR = os.environ.get("COCOON_MEMHOOK_DIR")
_FRAMES = int(os.environ.get("COCOON_MEMHOOK_TRACE", "0") or 0)
_LIGHT = bool(os.environ.get("COCOON_MEMHOOK_LIGHT"))
_GARBAGE = bool(os.environ.get("COCOON_MEMHOOK_GARBAGE"))
_MB = 2**20
_count = [0]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _is_operator() -> bool:
    with open("/proc/self/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return any(a.endswith(b"cocoon-operator") for a in argv[:2]) and b"run" in argv[:4]


def _deep(obj: object, seen: set[int]) -> int:
    """Bytes reachable from ``obj`` not yet counted in ``seen`` (types, modules and
    functions are not followed: shared code, not data)."""
    total, stack = 0, [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, type | type(sys)) or (callable(o) and not isinstance(o, dict | list)):
            continue
        with contextlib.suppress(TypeError):
            total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


def _process(w: Any) -> None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")):
                w(line.rstrip())
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    w(
        "== glibc heap (MB): "
        + " ".join(f"{n}={getattr(info, n) / _MB:.1f}" for n, _ in _Mallinfo2._fields_)
    )
    fd, path = tempfile.mkstemp()
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)  # _debugmallocstats writes to the C stderr
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    with open(path) as f:
        keep = ("arenas allocated current", "bytes in allocated", "bytes in available")
        w("== CPython arenas\n" + "".join(line for line in f if any(k in line for k in keep)))
    os.unlink(path)
    tops = Counter(name.split(".")[0] for name in sys.modules)
    w(f"== modules {len(sys.modules)}: " + " ".join(f"{k}:{v}" for k, v in tops.most_common(25)))


def _objects(w: Any) -> None:
    import asyncio  # noqa: PLC0415 - loaded by then

    from kopf._core.reactor import inventory  # noqa: PLC0415

    from cocoon_operator.handlers import parsed, runtime  # noqa: PLC0415

    objs = gc.get_objects()
    types = Counter(type(o).__qualname__ for o in objs)
    w(
        f"== gc-tracked objects {len(objs)}: "
        + ", ".join(f"{t} {c}" for t, c in types.most_common(25))
    )
    seen: set[int] = set()
    for memories in (o for o in objs if isinstance(o, inventory.ResourceMemories)):
        items = memories._items.values()
        bodies = [m.daemons_memory.live_fresh_body for m in items]
        held = sum(_deep(b, seen) for b in bodies if b is not None)
        memos = sum(_deep(m.memo, seen) for m in items)
        w(
            f"== kopf: {len(items)} objects; timer bodies {held / _MB:.2f} MB,"
            f" memos {memos / _MB:.2f} MB, the rest {_deep(memories, seen) / _MB:.2f} MB"
        )
    w(f"== parse cache: {len(parsed._newest)} workers, {_deep(parsed._newest, seen) / _MB:.2f} MB")
    for deps in (o for o in objs if isinstance(o, runtime.Deps)):
        for name in (
            "latest",
            "latest_pods",
            "unindexed_pods",
            "coefficients",
            "trust",
            "locks",
            "metrics",
            "diffbase",
        ):
            w(f"   deps.{name}: {_deep(getattr(deps, name), seen) / _MB:.2f} MB")
    for rt in (o for o in objs if isinstance(o, runtime.Runtime)):
        w(f"== node reports: {_deep(rt.node_reports, seen) / _MB:.2f} MB")
    coros = Counter(
        getattr(t.get_coro(), "__qualname__", "?") for t in objs if isinstance(t, asyncio.Task)
    )
    w(
        f"== asyncio tasks {sum(coros.values())}: "
        + ", ".join(f"{n} {c}" for n, c in coros.most_common(12))
    )


def _where(frame: tracemalloc.Frame) -> str:
    return frame.filename.split("site-packages/")[-1].split("operator/")[-1] + f":{frame.lineno}"


def _traced(w: Any) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, __file__)])
    stats = snapshot.statistics("traceback")
    owners: Counter[str] = Counter()
    for stat in stats:
        frames = list(stat.traceback)  # oldest first
        own = [f for f in frames if "cocoon_operator" in f.filename or "/kopf/" in f.filename]
        owners[_where(own[-1]) if own else "(other) " + _where(frames[-1])] += stat.size
    now, peak = tracemalloc.get_traced_memory()
    w(f"== traced {now / _MB:.1f} MB (peak {peak / _MB:.1f}); by innermost operator or kopf frame:")
    for where, size in owners.most_common(40):
        w(f"{size / _MB:8.2f} MB  {where}")


def _report(signum: int, frame: object) -> None:
    _count[0] += 1
    lines: list[str] = [f"== at {time.time():.0f}"]
    started = time.monotonic()
    _process(lines.append)
    if not _LIGHT:
        _objects(lines.append)
    if tracemalloc.is_tracing():
        _traced(lines.append)
    lines.append(f"== report took {time.monotonic() - started:.1f} s")
    assert _DIR is not None
    with open(os.path.join(_DIR, f"report-{os.getpid()}-{_count[0]}.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _watch_peaks() -> None:
    best, last = 0, 0.0
    while True:
        time.sleep(1)
        now = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        if now > best + 3 * _MB and time.monotonic() - last > 15:
            best, last = now, time.monotonic()
            os.kill(os.getpid(), signal.SIGUSR2)


_gc_started = [0.0]
_gc_seconds = [0.0, 0.0, 0.0]
_gc_runs = [0, 0, 0]


def _time_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        generation = info["generation"]
        _gc_seconds[generation] += time.perf_counter() - _gc_started[0]
        _gc_runs[generation] += 1


def _garbage(path: str) -> None:
    """One full collection that keeps its garbage, tallied by type into ``path``."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in gc.garbage:
            kind = type(obj).__qualname__
            kinds[kind] += 1
            sizes[kind] += sys.getsizeof(obj)
        top = ", ".join(f"{k} {n} ({sizes[k] // 1024} KB)" for k, n in kinds.most_common(12))
        with open(path, "a") as f:
            f.write(f"{time.time():.1f} cpu {time.process_time():.2f} found {found}: {top}\n")
    finally:
        gc.garbage.clear()
        gc.set_debug(0)


def _log_gc() -> None:
    assert _DIR is not None
    path = os.path.join(_DIR, f"gc-{os.getpid()}.txt")
    garbage = os.path.join(_DIR, f"garbage-{os.getpid()}.txt")
    ticks = 0
    while True:
        time.sleep(5)
        ticks += 1
        if _GARBAGE and ticks % 4 == 0:
            _garbage(garbage)
        cpu = time.process_time()
        spent = " ".join(f"{s:.3f}" for s in _gc_seconds)
        runs = " ".join(str(n) for n in _gc_runs)
        with open(path, "a") as f:
            f.write(
                f"{time.time():.1f} cpu {cpu:.2f} gc_s {spent} runs {runs}"
                f" tracked {len(gc.get_objects())}\n"
            )


if _DIR and _is_operator():
    signal.signal(signal.SIGUSR2, _report)
    if os.environ.get("COCOON_MEMHOOK_GC"):
        gc.callbacks.append(_time_gc)
        threading.Thread(target=_log_gc, daemon=True).start()
    if _FRAMES:
        delay = float(os.environ.get("COCOON_MEMHOOK_TRACE_DELAY", "12"))
        timer = threading.Timer(delay, tracemalloc.start, (_FRAMES,))
        timer.daemon = True
        timer.start()
        if os.environ.get("COCOON_MEMHOOK_PEAKS"):
            threading.Thread(target=_watch_peaks, daemon=True).start()
