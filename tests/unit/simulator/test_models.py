"""The local stack's stand-in for the model init container: one preparation per node
and model, progress in the real format, and a wrong verity failing as a real build does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cocoon_operator.models import ModelId, Phase
from cocoon_operator.nodeagent._models import read_models
from cocoon_operator.simulator._models import CATALOG, prepare_model

NAME_COMMIT, VERITY = next(iter(CATALOG.items()))
NAME, COMMIT = NAME_COMMIT.split("@")


async def test_two_workers_with_one_model_on_a_node_cause_one_preparation(tmp_path: Path) -> None:
    phases: list[str] = []

    async def seen() -> None:
        phases.extend(r.phase for r in read_models(tmp_path))

    model = ModelId(NAME, COMMIT, VERITY)
    first, second = await asyncio.gather(
        prepare_model(tmp_path, model, step_seconds=0.01, on_progress=seen),
        prepare_model(tmp_path, model, step_seconds=0.01, on_progress=seen),
    )
    assert first.phase is second.phase is Phase.READY
    assert phases.count("Ready") == 1  # the second found it Ready: no second build
    assert "Building" in phases
    (record,) = read_models(tmp_path)
    assert (record.phase, record.bytes_done) == ("Ready", record.bytes_total)


async def test_a_wrong_verity_fails_with_the_hash_mismatch_named(tmp_path: Path) -> None:
    async def nothing() -> None:
        return None

    wrong = ModelId(NAME, COMMIT, "0" * 64)
    result = await prepare_model(tmp_path, wrong, step_seconds=0.0, on_progress=nothing)
    assert (result.phase, result.reason) == (Phase.FAILED, "HashMismatch")
    assert f"expected {'0' * 64}, got {VERITY}" in (result.message or "")
    (record,) = read_models(tmp_path)
    assert record.phase == "Failed"
    assert not (tmp_path / f"{'0' * 64}.tar").exists()
