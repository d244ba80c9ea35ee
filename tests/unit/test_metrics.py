"""Worker counts by phase follow the workers, and gone workers leave no series; the
operator's memory and its container's limit are read at each scrape."""

from __future__ import annotations

from prometheus_client import generate_latest

from cocoon_operator.metrics import (
    MemoryCollector,
    Metrics,
    memory_limit_bytes,
    resident_bytes,
)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_phase_counts_move_with_workers_and_gone_workers_are_dropped() -> None:
    m = Metrics()
    m.set_phase("ns", "a", "Attesting")
    m.set_phase("ns", "b", "Attesting")
    m.set_phase("ns", "a", "Ready")
    assert value(m, "cocoon_workers", phase="Ready") == 1
    assert value(m, "cocoon_workers", phase="Attesting") == 1
    assert value(m, "cocoon_workers", phase="Failed") == 0  # every phase is exported
    m.balance.labels("ns", "a").set(10_000_000_000)
    m.set_phase("ns", "a", None)
    assert value(m, "cocoon_workers", phase="Ready") == 0
    assert value(m, "cocoon_wallet_balance_nanoton", namespace="ns", worker="a") is None
    m.set_phase("ns", "never-funded", None)  # no series: nothing to remove, no error
    m.set_phase("ns", "a", None)  # gone twice: counted once
    m.set_phase("ns", "b", "Attesting")  # the same phase again: counted once
    assert value(m, "cocoon_workers", phase="Ready") == 0
    assert value(m, "cocoon_workers", phase="Attesting") == 1
    assert b"cocoon_funding_nanoton_total" in generate_latest(m.registry)


def test_a_cgroup_limit_is_read_in_bytes_and_no_limit_is_none() -> None:
    assert memory_limit_bytes("536870912\n") == 512 * 2**20  # cgroup v2 memory.max
    assert memory_limit_bytes("max\n") is None  # v2: no limit
    assert memory_limit_bytes("9223372036854771712\n") is None  # v1: no limit
    assert memory_limit_bytes("") is None
    assert memory_limit_bytes("0") is None


def test_the_resident_set_is_statms_second_field_in_pages() -> None:
    assert resident_bytes("61234 25000 3000 600 0 30000 0\n", 4096) == 25000 * 4096


def test_memory_and_its_limit_are_read_at_each_scrape() -> None:
    readings = iter([(300 * 2**20, 512 * 2**20), (400 * 2**20, None)])
    now: list[tuple[int, int | None]] = []

    def resident() -> int:
        now[:] = [next(readings)]
        return now[0][0]

    m = Metrics(memory=MemoryCollector(resident=resident, limit=lambda: now[0][1]))
    first = generate_latest(m.registry).decode().splitlines()
    assert "cocoon_operator_resident_memory_bytes 3.145728e+08" in first
    assert "cocoon_operator_memory_limit_bytes 5.36870912e+08" in first
    # The next scrape: more memory, and no limit (the family is there, with no sample).
    second = generate_latest(m.registry).decode().splitlines()
    assert "cocoon_operator_resident_memory_bytes 4.194304e+08" in second
    assert "# TYPE cocoon_operator_memory_limit_bytes gauge" in second
    assert not [line for line in second if line.startswith("cocoon_operator_memory_limit")]
