"""Which models to remove from a node's cache (pure).

A model image is tens of gigabytes; a node keeps the ones its VMs use and,
within the limits its owner sets, the ones it may need again. The policy never
picks a model a VM still uses, and otherwise removes the least recently used
first: every model unused for longer than ``max_age``, then more of the oldest
until at most ``max_count`` models and ``max_bytes`` bytes are left (counting
the ones in use, which stay even when they alone exceed a limit).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheEntry:
    """A published model in the cache: its verity hash, bytes on disk, last use (epoch s)."""

    verity: str
    bytes: int
    last_used: float


@dataclass(frozen=True)
class GcPolicy:
    """Limits, each optional: unused longer than ``max_age`` seconds, more than
    ``max_count`` models, more than ``max_bytes`` bytes."""

    max_age: float | None = None
    max_count: int | None = None
    max_bytes: int | None = None


def models_to_collect(
    entries: Iterable[CacheEntry],
    in_use: Collection[str],
    policy: GcPolicy,
    now: float,
) -> list[CacheEntry]:
    """The entries to remove, oldest last use first; never one whose verity is in ``in_use``.

    The answer is always the oldest unused entries (ties broken by verity hash,
    so the choice is stable), and the fewest of them that meet every limit, or
    all unused ones when even that does not.
    """
    kept = sorted(entries, key=lambda e: (e.last_used, e.verity))
    candidates = [e for e in kept if e.verity not in in_use]
    count = len(kept)
    total = sum(e.bytes for e in kept)
    chosen: list[CacheEntry] = []
    for entry in candidates:
        too_old = policy.max_age is not None and now - entry.last_used > policy.max_age
        too_many = policy.max_count is not None and count > policy.max_count
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if not (too_old or too_many or too_big):
            break
        chosen.append(entry)
        count -= 1
        total -= entry.bytes
    return chosen
