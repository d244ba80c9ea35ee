"""The node agent's view of the model cache: progress records to report (bounded,
tolerant of torn files) and gc that never takes a model a VM's state file names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cocoon_operator.api.nodereport import NodeReport
from cocoon_operator.models import GcPolicy, Phase, Progress
from cocoon_operator.nodeagent._models import GcOptions, gc_pass, models_in_use, read_models

A, B, C = "a" * 64, "b" * 64, "c" * 64


def model_id(verity: str) -> str:
    return f"Org/M@{'1' * 40}:{verity}"


def ready(cache: Path, verity: str, *, used: float, size: int = 1000) -> None:
    cache.mkdir(exist_ok=True)
    (cache / f"{verity}.tar").write_bytes(b"t" * size)
    (cache / f"{verity}.tar.verity").write_bytes(b"v" * 10)
    progress = Progress(
        model_id(verity),
        Phase.READY,
        size + 10,
        size + 10,
        updated_at=used,
        tar_bytes=size,
        tree_bytes=10,
    )
    path = cache / f"{verity}.progress.json"
    path.write_text(progress.to_json())
    os.utime(path, (used, used))


def test_the_report_lists_each_models_phase_bytes_and_cause(tmp_path: Path) -> None:
    ready(tmp_path, A, used=100.0)
    failed = Progress(
        model_id(B),
        Phase.FAILED,
        5,
        50,
        reason="Unauthorized",
        message="HTTP 401 from the Hub",
        updated_at=200.0,
    )
    (tmp_path / f"{B}.progress.json").write_text(failed.to_json())
    records = read_models(tmp_path)
    assert [(r.verity, r.phase) for r in records] == [(B, "Failed"), (A, "Ready")]
    assert (records[0].reason, records[0].message) == ("Unauthorized", "HTTP 401 from the Hub")
    assert (records[0].bytes_done, records[0].bytes_total, records[0].updated_at) == (5, 50, 200.0)


def test_torn_foreign_and_oversized_files_are_skipped_and_the_rest_reported(
    tmp_path: Path,
) -> None:
    ready(tmp_path, A, used=1.0)
    (tmp_path / f"{B}.progress.json").write_text('{"phase": "Downl')
    (tmp_path / f"{C}.progress.json").write_text(" " * 100_000)
    (tmp_path / "notes.progress.json").write_text("{}")
    assert [r.verity for r in read_models(tmp_path)] == [A]


def test_a_ready_record_whose_pair_is_gone_is_not_reported(tmp_path: Path) -> None:
    ready(tmp_path, A, used=1.0)
    (tmp_path / f"{A}.tar").unlink()
    assert read_models(tmp_path) == []


def test_the_report_keeps_the_newest_models_and_stays_small(tmp_path: Path) -> None:
    for i in range(100):
        ready(tmp_path, f"{i:064x}", used=float(i))
    records = read_models(tmp_path)
    assert len(records) == 64
    assert records[0].verity == f"{99:064x}"
    report = NodeReport(node="n" * 253, agent_version="x", models=records)
    assert len(report.to_json()) < 64 * 1024


def test_a_missing_cache_reports_no_models(tmp_path: Path) -> None:
    assert read_models(tmp_path / "absent") == []


def test_the_models_in_use_are_those_the_launchers_state_files_name(tmp_path: Path) -> None:
    (tmp_path / "instance-0.json").write_text(json.dumps({"instance": 0, "modelVerity": A}))
    (tmp_path / "instance-1.json").write_text("{torn")
    (tmp_path / "instance-2.json").write_text(json.dumps({"instance": 2}))
    assert models_in_use(tmp_path) == {A}


def test_a_model_named_in_a_launcher_pods_own_directory_is_in_use(tmp_path: Path) -> None:
    # Launchers write their records in their pod's directory (desired/launcher.py
    # mounts /run/cocoon/pods/<uid> as their /run/cocoon): gc must see those too.
    pod = tmp_path / "pods" / "0f3c2a5e-uid"
    pod.mkdir(parents=True)
    (pod / "instance-3.json").write_text(json.dumps({"instance": 3, "modelVerity": B}))
    (tmp_path / "instance-0.json").write_text(json.dumps({"instance": 0, "modelVerity": A}))
    assert models_in_use(tmp_path) == {A, B}


def test_gc_collects_an_unused_model_when_the_policy_says_so_and_not_before(
    tmp_path: Path,
) -> None:
    cache, state = tmp_path / "models", tmp_path / "run"
    state.mkdir()
    ready(cache, A, used=1_000.0)  # the deleted worker's model
    ready(cache, B, used=1_000.0)  # a running VM's
    (state / "instance-0.json").write_text(json.dumps({"instance": 0, "modelVerity": B}))
    options = GcOptions(GcPolicy(max_age=3600.0), min_idle=600.0)
    # Younger than max_age: the policy keeps it.
    assert gc_pass(cache, state, options, now=1_000.0 + 3000.0).removed == []
    assert (cache / f"{A}.tar").exists()
    removed = gc_pass(cache, state, options, now=1_000.0 + 3601.0).removed
    assert [e.verity for e in removed] == [A]
    assert not (cache / f"{A}.tar").exists()
    assert not (cache / f"{A}.progress.json").exists()
    assert (cache / f"{B}.tar").exists()  # in use by a VM, however old


def test_gc_never_takes_a_model_used_within_the_idle_grace(tmp_path: Path) -> None:
    cache, state = tmp_path / "models", tmp_path / "run"
    state.mkdir()
    ready(cache, A, used=1_000.0)
    ready(cache, B, used=5_000.0)
    options = GcOptions(GcPolicy(max_count=0), min_idle=600.0)
    removed = gc_pass(cache, state, options, now=5_100.0).removed
    assert [e.verity for e in removed] == [A]  # B was made Ready 100 s ago


def test_gc_without_limits_is_off() -> None:
    assert not GcOptions(GcPolicy()).enabled
    assert GcOptions(GcPolicy(max_bytes=0)).enabled
