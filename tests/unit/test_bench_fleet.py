"""hack/bench-fleet's pure parts: issue 29's targets read from a run, and the projection."""

from __future__ import annotations

import datetime as dt
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "bench-fleet"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bench_fleet", str(SCRIPT))
    spec = importlib.util.spec_from_loader("bench_fleet", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fleet"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def run(
    n: int,
    *,
    wall: float = 100.0,
    rest_cpu: float = 100.0,
    cpu_to_ready: float = 10.0,
    cpu_steady: float = 3.0,
    steady_seconds: float = 60.0,
    writes_per_worker: float = 6.0,
    rss: float = 150.0,
    calls_per_worker_minute: float = 0.05,
    tls_share: float = 0.0,
) -> dict[str, Any]:
    """A run's JSON as the bench writes it, with only what the targets read."""
    return {
        "workers": n,
        "machine": {"cpus": 2},
        "fleet": {"wall_seconds_to_all_ready": wall},
        "cpu_seconds_to_ready_by_process": {"kube-apiserver": rest_cpu, "cocoon-operator": 99.0},
        "operator_flags": {"attestation_check_seconds": 10, "chain_check_seconds": 30},
        "operator_process": {
            "cpu_seconds_to_ready": cpu_to_ready,
            "cpu_seconds_steady": cpu_steady,
            "peak_rss_mb": rss,
        },
        "requests": {
            "steady_seconds": steady_seconds,
            "writes_per_worker_to_ready": writes_per_worker,
        },
        "chain": {"steady_calls_per_worker_per_minute": calls_per_worker_minute},
        "baseline": {"requests_per_second": 100.0},
        "profile": {"steady": {"samples": 1000, "tls_share": tls_share}},
    }


def verdicts(bench: ModuleType, r: dict[str, Any]) -> dict[str, bool | None]:
    return {t.name.split(" (")[0]: t.met for t in bench.targets(r)}


def test_a_run_within_every_bound_meets_every_target_but_the_one_it_is_too_small_for(
    bench: ModuleType,
) -> None:
    # 1,000 workers: Ready in 55 s against a floor of 50 s (100 CPU s on 2 cores),
    # 20 s of CPU (20 ms each), 3 s of CPU a minute (5% of a core), 200 MB.
    r = run(1000, wall=55, cpu_to_ready=20, cpu_steady=3, rss=200)
    got = verdicts(bench, r)
    assert got.pop("3,000 workers Ready") is None
    assert all(got.values()), got


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"wall": 61}, "all Ready, ratio to the rest-of-stack floor"),
        ({"cpu_to_ready": 21}, "operator CPU to Ready per worker"),
        ({"cpu_steady": 3.1}, "steady operator CPU, share of a core per 1,000 workers"),
        ({"writes_per_worker": 6.1}, "operator writes per worker to Ready"),
        ({"rss": 201}, "operator peak RSS at 1,000 workers"),
        ({"calls_per_worker_minute": 0.06}, "chain reads per worker per minute, steady"),
        ({"tls_share": 0.01}, "steady samples in a TLS handshake"),
    ],
)
def test_each_target_is_missed_by_a_run_just_past_its_bound(
    bench: ModuleType, change: dict[str, float], missed: str
) -> None:
    base = {"wall": 55.0, "cpu_to_ready": 20.0, "cpu_steady": 3.0, "rss": 200.0}
    got = verdicts(bench, run(1000, **{**base, **change}))
    assert [name for name, met in got.items() if met is False] == [missed]


def test_the_memory_bound_is_200_mb_at_1000_workers_and_400_at_3000(bench: ModuleType) -> None:
    assert bench.rss_limit_mb(1000) == 200
    assert bench.rss_limit_mb(3000) == 400


def test_three_thousand_workers_must_be_ready_within_five_minutes(bench: ModuleType) -> None:
    assert verdicts(bench, run(3000, wall=301, rest_cpu=600))["3,000 workers Ready"] is False
    assert verdicts(bench, run(3000, wall=299, rest_cpu=600))["3,000 workers Ready"] is True


def test_the_projection_extends_the_line_through_two_runs_and_names_the_worst_first(
    bench: ModuleType,
) -> None:
    small = run(1000, rss=200, cpu_steady=3, calls_per_worker_minute=0.05)
    large = run(3000, rss=400, cpu_steady=9, calls_per_worker_minute=0.05)
    rows = {key: (value, limit) for key, value, limit, _ in bench.project(small, large, 10_000)}
    assert rows["peak_rss_mb"][0] == pytest.approx(1100)  # 100 MB + 0.1 MB a worker
    assert rows["operator_cpu_share_steady"][0] == pytest.approx(0.5)  # 3 CPU s a minute per 1,000
    assert rows["chain_calls_per_second_steady"][0] == pytest.approx(10_000 * 0.05 / 60)
    assert rows["writes_to_ready"][1] == 600 * 100.0  # ten minutes at the measured write rate
    worst = bench.project(small, large, 10_000)[0]
    assert worst[0] == "peak_rss_mb"  # 1,100 MB of a 512 MB limit


def test_a_projection_needs_two_fleet_sizes(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="two fleet sizes"):
        bench.project(run(1000), run(1000), 10_000)


def _status(phase: str, **conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "phase": phase,
        "conditions": [
            {"type": kind, "status": status, "reason": reason, "message": message}
            for kind, (status, reason, message) in conditions.items()
        ],
    }


def test_a_status_write_is_named_by_the_phase_the_turned_and_reworded_conditions_and_fields(
    bench: ModuleType,
) -> None:
    before = _status(
        "Starting",
        VMRunning=("False", "VMStarting", "pod phase Pending"),
        ModelReady=("False", "Building", "0%"),
        Ready=("False", "NotReady", "waiting for: ModelReady, VMRunning"),
    )
    after = _status(
        "Starting",
        VMRunning=("True", "VMRunning", "runs"),
        ModelReady=("False", "Building", "25%"),
        Ready=("False", "NotReady", "waiting for: ModelReady"),
    )
    assert bench.status_change(before, {**after, "gpu": "0000:17:00.0"}) == (
        "+VMRunning ~ModelReady gpu"
    )
    moved = {**after, "phase": "Attesting"}
    assert bench.status_change(after, moved) == "phase Attesting"
    attested = {**after, "attestation": {"imageHash": "ab", "mrtd": "cd", "pod": "p"}}
    noted = {**after, "attestation": {**attested["attestation"], "healthMonitor": "matches"}}
    assert bench.status_change(after, attested) == "attestation"  # more than two keys
    assert bench.status_change(attested, noted) == "attestation(healthMonitor)"


def test_a_version_whose_status_is_unchanged_is_no_status_write(bench: ModuleType) -> None:
    status = _status("Pending", Scheduled=("False", "PodCreated", "waiting"))
    assert bench.status_change(status, dict(status)) == ""


def test_the_overloaded_share_of_a_window_is_read_from_the_operators_log(
    bench: ModuleType,
) -> None:
    def at(clock: str) -> float:
        return dt.datetime.strptime(f"2026-12-07 {clock}", "%Y-%m-%d %H:%M:%S").timestamp()

    log = "\n".join(
        [
            "[2026-12-07 12:00:00,000] cocoon_operator.back [WARNING ] Operator overloaded: its"
            " event loop runs 0.30s late; Ready workers' re-checks are spaced out",
            "[2026-12-07 12:00:10,000] kopf.objects [INFO    ] something else",
            "[2026-12-07 12:00:20,500] cocoon_operator.back [INFO    ] Operator no longer"
            " overloaded (event loop 0.04s late)",
            "[2026-12-07 12:01:30,000] cocoon_operator.back [WARNING ] Operator overloaded: its"
            " event loop runs 0.40s late",
        ]
    )
    # A window from 12:00:10 to 12:01:40: 10.5 s of the first span, 10 of the second,
    # which has not ended; one of the two began inside it.
    got = bench.overload_figures(log, at("12:00:10"), at("12:01:40"))
    assert got["notices"] == 1
    assert got["seconds"] == pytest.approx(20.5)
    assert got["share"] == pytest.approx(20.5 / 90)
    assert bench.overload_figures("", at("12:00:00"), at("12:01:00"))["share"] == 0


def test_chart_intervals_are_the_charts_own_defaults_the_node_agents_heartbeat_included(
    bench: ModuleType,
) -> None:
    values = yaml.safe_load((SCRIPT.parents[1] / "charts/cocoon-operator/values.yaml").read_text())
    args = bench.parse_args(["--chart-intervals"])
    assert args.attestation_check_seconds == values["attestation"]["checkSeconds"]
    assert args.chain_check_seconds == values["chain"]["checkSeconds"]
    assert args.report_heartbeat_seconds == values["nodeAgent"]["heartbeatSeconds"]
    assert bench.parse_args([]).report_heartbeat_seconds is None  # the simulation agent's own
