"""The node's model cache as the agent sees it: progress records to report, and gc.

``model ensure`` (the launcher Pod's init container) leaves one
``<verity>.progress.json`` per model in the cache (``models/_cache.py``
:class:`~cocoon_operator.models.Progress`). The agent reads them, bounded
(at most :data:`MAX_PROGRESS_BYTES` of a file, at most
:data:`~cocoon_operator.api.nodereport.MAX_MODEL_RECORDS` models, the newest
first) and tolerant: a torn, foreign or oversized file is skipped with a
warning, the rest are reported. A ``Ready`` record counts only while both
images are there with the sizes it recorded (a pair removed by hand is no
longer Ready, whatever its record says).

The agent also collects unused models (``models/_gc.py``'s pure policy, run
by :func:`~cocoon_operator.models.collect` under each model's lock) when its
flags give a limit. A model is in use, and never collected, while a launcher
state file names it (``modelVerity``, written by the launcher beside the
pod's name: any state file counts, running or not, since the launcher removes
it once QEMU has exited), and for ``min_idle`` seconds after its last use (a
model an init container has just made Ready, whose VM has not started yet).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoon_operator.api.nodereport import MAX_MODEL_MESSAGE, MAX_MODEL_RECORDS, ModelRecord
from cocoon_operator.models import CacheNames, GcPolicy, Phase, collect
from cocoon_operator.models._cache import parse_progress
from cocoon_operator.models._ensure import Collected, cache_entries

log = logging.getLogger(__name__)

#: Where the launcher Pod's init container keeps the node's models (desired/config.py).
MODEL_CACHE_DIR: Final = "var/lib/cocoon/models"
MAX_PROGRESS_BYTES: Final = 8192  # a progress file is a few hundred bytes
_PROGRESS = re.compile(r"([0-9a-f]{64})\.progress\.json")


def _read_bounded(path: Path, limit: int) -> str | None:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    return data.decode("utf-8", errors="replace")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _record(cache: Path, verity: str, text: str) -> ModelRecord | None:
    progress = parse_progress(text)
    if progress is None or not progress.model.endswith(f":{verity}"):
        return None
    phase = progress.phase.value
    if progress.phase is Phase.READY:
        names = CacheNames(verity)
        sizes = (_size(cache / names.tar), _size(cache / names.tree))
        if sizes != (progress.tar_bytes, progress.tree_bytes):
            return None  # the pair is gone or changed: nothing Ready to report
    message = progress.message
    if message is not None and len(message) > MAX_MODEL_MESSAGE:
        message = message[: MAX_MODEL_MESSAGE - 1] + "…"
    return ModelRecord(
        verity=verity,
        model=progress.model[:400],
        phase=phase,
        bytes_done=progress.bytes_done,
        bytes_total=progress.bytes_total,
        reason=progress.reason[:64] if isinstance(progress.reason, str) else None,
        message=message if isinstance(message, str) else None,
        updated_at=progress.updated_at,
    )


def read_models(cache: Path, limit: int = MAX_MODEL_RECORDS) -> list[ModelRecord]:
    """The cache's models by their progress files: at most ``limit``, the most recently
    updated first (then by verity, so the report is stable)."""
    try:
        names = os.listdir(cache)
    except OSError:
        return []
    records = []
    for name in names:
        match = _PROGRESS.fullmatch(name)
        if match is None:
            continue
        text = _read_bounded(cache / name, MAX_PROGRESS_BYTES)
        record = None if text is None else _record(cache, match.group(1), text)
        if record is None:
            if text is None or parse_progress(text) is None:
                log.warning("ignoring model progress file %s (unreadable or not one)", name)
            continue
        records.append(record)
    records.sort(key=lambda r: (-r.updated_at, r.verity))
    return records[:limit]


def models_in_use(state_dir: Path) -> set[str]:
    """The verity hashes the launchers' state files name (``modelVerity``): in each
    launcher pod's own directory (``pods/<pod UID>/``, see ``_probe.state_dirs``) and
    in the shared one older launchers wrote to."""
    found: set[str] = set()
    try:
        files = [*state_dir.glob("instance-*.json"), *state_dir.glob("pods/*/instance-*.json")]
    except OSError:
        return found
    for f in files:
        try:
            verity = json.loads(f.read_text()).get("modelVerity")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(verity, str):
            found.add(verity)
    return found


@dataclass(frozen=True)
class GcOptions:
    """The agent's gc flags; without any limit the agent collects nothing."""

    policy: GcPolicy
    interval: float = 600.0
    min_idle: float = 600.0

    @property
    def enabled(self) -> bool:
        p = self.policy
        return p.max_age is not None or p.max_count is not None or p.max_bytes is not None


def recently_used(cache: Path, since: float) -> set[str]:
    """The models last used after ``since`` (epoch seconds)."""
    return {e.verity for e in cache_entries(cache) if e.last_used > since}


def gc_pass(
    cache: Path, state_dir: Path, options: GcOptions, *, now: float | None = None
) -> Collected:
    """One collection: the policy over the cache, never a model a VM or a recent ``ensure``
    uses."""
    at = time.time() if now is None else now
    in_use = models_in_use(state_dir) | recently_used(cache, at - options.min_idle)
    result = collect(cache, in_use, options.policy, now=at)
    for entry in result.removed:
        log.info("collected model %s (%d bytes)", entry.verity, entry.bytes)
    return result
