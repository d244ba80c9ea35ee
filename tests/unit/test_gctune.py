"""gctune.py: the operator's collector settings, applied in a process of their own
(freezing the test runner's objects would change every later test's collector)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_the_collector_freezes_what_exists_at_startup_and_sets_the_thresholds() -> None:
    out = run(
        """
        import gc
        from cocoon_operator import gctune
        garbage = []
        garbage.append(garbage)  # a cycle nobody holds: collected first, not frozen
        del garbage
        frozen, thresholds = gctune.tune_collector()
        print(frozen == gc.get_freeze_count() > 1000, thresholds, gc.get_threshold())
        """
    )
    assert out == "True (10000, 10, 10) (10000, 10, 10)"


def test_cycles_made_after_startup_are_still_collected_and_frozen_objects_are_not() -> None:
    out = run(
        """
        import gc, weakref
        from cocoon_operator import gctune

        class Node:
            pass

        before = Node()
        before.me = before  # alive at startup: frozen with everything else
        seen_before = weakref.ref(before)
        gctune.tune_collector()
        del before  # garbage now, but never scanned again
        later = Node()
        later.me = later
        seen_later = weakref.ref(later)
        del later
        gc.collect()
        print(seen_before() is not None, seen_later() is None)
        """
    )
    assert out == "True True"
