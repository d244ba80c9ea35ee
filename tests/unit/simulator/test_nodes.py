"""The simulation agent's node reports satisfy the operator's real host policy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cocoon_operator.api.nodereport import RelayedQuote
from cocoon_operator.launcher import FileQuote
from cocoon_operator.policy.nodereports import NoQuote, host_problem, relayed_quote
from cocoon_operator.simulator._nodes import (
    MISFILED_PREFIX,
    SIMULATED_GPUS,
    SimulatedNodes,
    SimulatedQuote,
)


def nodes() -> SimulatedNodes:
    return SimulatedNodes(api=None, namespace="ns", heartbeat=dt.timedelta(seconds=30))  # type: ignore[arg-type]


def start(sim: SimulatedNodes, node: str, uid: str, instance: int) -> str | None:
    vm = sim.started(
        node,
        namespace="ns",
        worker=f"w{instance}",
        pod=f"p{instance}",
        pod_uid=uid,
        instance=instance,
    )
    return vm.pci


def test_each_vm_holds_its_own_gpu_and_the_host_vouches_for_it() -> None:
    sim = nodes()
    a, b = start(sim, "n1", "uid-a", 0), start(sim, "n1", "uid-b", 1)
    other = start(sim, "n2", "uid-c", 0)
    assert a and b and a != b
    assert other == a  # another node, its own GPUs
    report = sim.report("n1")
    assert [vm.pod_uid for vm in report.vms] == ["uid-a", "uid-b"]
    for uid in ("uid-a", "uid-b"):
        assert host_problem(report, node="n1", pod_uid=uid) is None
    # A VM not (or no longer) reported is waited for, not refused.
    assert sim.stopped("uid-a") == "n1"
    assert sim.stopped("uid-a") is None  # already gone
    gone = host_problem(sim.report("n1"), node="n1", pod_uid="uid-a")
    assert gone is not None and not gone.definite
    # Its GPU is free again.
    assert start(sim, "n1", "uid-d", 2) == a


def test_a_node_has_as_many_gpus_as_its_capacity_says() -> None:
    sim = nodes()
    pcis = [start(sim, "n1", f"uid-{i}", i) for i in range(SIMULATED_GPUS)]
    assert None not in pcis and len(set(pcis)) == SIMULATED_GPUS
    assert start(sim, "n1", "uid-extra", 9) is None  # the scheduler never places a ninth
    problem = host_problem(sim.report("n1"), node="n1", pod_uid="uid-extra")
    assert problem is not None and problem.definite


def test_each_vms_latest_quote_is_reported_with_it_and_a_misfiled_one_is_not_its_own() -> None:
    at = dt.datetime(2026, 12, 6, 14, 0, tzinfo=dt.UTC)
    misfiled = {"uid-b"}
    sim = nodes()
    sim.quote_source = lambda uid: SimulatedQuote(
        FileQuote(f"quote of {uid}".encode(), at, b"\x01" * 64), misfiled=uid in misfiled
    )
    start(sim, "n1", "uid-a", 0), start(sim, "n1", "uid-b", 1)
    report = sim.report("n1")
    a = relayed_quote(report, node="n1", pod_uid="uid-a", instance=0)
    assert isinstance(a, RelayedQuote) and a.quote_bytes() == b"quote of uid-a"
    assert a.report_data == "01" * 64
    # uid-b's quote sits under another uid: the operator finds none for uid-b.
    assert isinstance(relayed_quote(report, node="n1", pod_uid="uid-b", instance=1), NoQuote)
    moved = relayed_quote(report, node="n1", pod_uid=MISFILED_PREFIX + "uid-b", instance=1)
    assert isinstance(moved, RelayedQuote) and moved.quote_bytes() == b"quote of uid-b"


def test_closed_nodes_leave_no_directory_of_their_own_behind(tmp_path: Path) -> None:
    sim = nodes()
    made = [sim.models_root, sim.state_root]
    start(sim, "n1", "uid-a", 0)
    assert all(path.is_dir() for path in made)
    sim.close()
    assert not any(path.exists() for path in made)
    # A models root the caller passed in stays the caller's.
    kept = SimulatedNodes(
        api=None,  # type: ignore[arg-type]
        namespace="ns",
        heartbeat=dt.timedelta(seconds=30),
        models_root=tmp_path,
    )
    kept.close()
    assert tmp_path.is_dir() and not kept.state_root.exists()
