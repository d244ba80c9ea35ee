"""Worker counts by phase follow the workers, and gone workers leave no series."""

from __future__ import annotations

from prometheus_client import generate_latest

from cocoon_operator.metrics import Metrics


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
