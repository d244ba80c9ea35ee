"""The launcher Pod's init container on the local stack: a simulated ``model ensure``.

kwok runs no containers, so the simulation agent prepares each launcher pod's
model itself before it starts the simulated worker, in a per-node simulated
cache, with the real cache's file names, its per-model ``flock`` (one
preparation per node and model: a second worker waits, then finds it Ready)
and its progress-file format (:class:`~cocoon_operator.models.Progress`),
which the real node agent's reader (:func:`~cocoon_operator.nodeagent._models.read_models`)
turns into the simulated node's report.

What is simulated is the build itself: no Hub is reached and no real image
is made (a real build needs the model's files, GNU tar and veritysetup, and
takes minutes even for a small repository on the local stack's two cores).
Instead a ``Building`` phase advances over :data:`STEPS` steps to a small
placeholder pair. The simulated Hub knows the true root hash of the models in
:data:`CATALOG` (the examples' model); a model id naming another verity for
them fails as the real build fails, ``HashMismatch`` with build-model's words.
Other models (the tests' other commits) are taken to have the verity they name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from cocoon_operator.models import CacheNames, ModelId, Phase, Progress, Reason, Step, plan_ensure
from cocoon_operator.models._ensure import lock, observe

log = logging.getLogger(__name__)

#: The true root hash of each model the simulated Hub holds, by ``Name@commit``.
CATALOG: Final = {
    "Qwen/Qwen3-8B@9b5a8ef0fa05a010d8339363a7eb176c14275e51": (
        "7ed74afe17a2c27c8292ffadf79b8f88d255891766fa2ddd9850e2e595c792ec"
    ),
}
TAR_BYTES: Final = 1 << 20  # the placeholder tar; the tree is one 4 KiB block
TREE_BYTES: Final = 4096
STEPS: Final = 4


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.rename(path)


def _record(cache: Path, names: CacheNames, progress: Progress) -> None:
    _write(cache / names.progress, progress.to_json().encode())


def true_verity(model: ModelId) -> str:
    """The root hash the simulated Hub's build of ``model`` gives."""
    return CATALOG.get(f"{model.name}@{model.commit}", model.verity)


async def prepare_model(
    cache: Path,
    model: ModelId,
    *,
    step_seconds: float,
    on_progress: Callable[[], Awaitable[None]],
) -> Progress:
    """Make ``model`` Ready in ``cache`` as ``model ensure`` would; the final record.

    ``on_progress`` is awaited after each record written (to publish the report).
    """
    await asyncio.to_thread(cache.mkdir, parents=True, exist_ok=True)
    names = CacheNames(model.verity)
    fd = await lock(cache / names.lock)
    try:
        state = await asyncio.to_thread(observe, cache, names)
        if plan_ensure(names, state, has_source=False).step is Step.READY:
            os.utime(cache / names.progress)  # its last use, as ensure marks it
            assert state.progress is not None
            log.info("model %s is Ready on %s already", model, cache)
            return state.progress
        log.info("preparing model %s in %s", model, cache)
        for step in range(STEPS + 1):
            done = TAR_BYTES * step // STEPS
            progress = Progress(str(model), Phase.BUILDING, done, TAR_BYTES, updated_at=time.time())
            _record(cache, names, progress)
            await on_progress()
            await asyncio.sleep(step_seconds)
        actual = true_verity(model)
        if actual != model.verity:
            progress = Progress(
                str(model),
                Phase.FAILED,
                TAR_BYTES,
                TAR_BYTES,
                reason=Reason.HASH_MISMATCH.value,
                message=(
                    f"model {model.name}: verity hash mismatch: expected {model.verity},"
                    f" got {actual}"
                ),
                updated_at=time.time(),
            )
            _record(cache, names, progress)
            await on_progress()
            log.warning("model %s failed in %s: %s", model, cache, progress.message)
            return progress
        seed = hashlib.sha256(str(model).encode()).digest()
        _write(cache / names.tree, seed * (TREE_BYTES // len(seed)))
        _write(cache / names.tar, seed * (TAR_BYTES // len(seed)))
        progress = Progress(
            str(model),
            Phase.READY,
            TAR_BYTES + TREE_BYTES,
            TAR_BYTES + TREE_BYTES,
            updated_at=time.time(),
            tar_bytes=TAR_BYTES,
            tree_bytes=TREE_BYTES,
        )
        _record(cache, names, progress)
        await on_progress()
        log.info("model %s is Ready in %s", model, cache)
        return progress
    finally:
        os.close(fd)
