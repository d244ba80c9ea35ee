"""Orphaned VMs and workers' GPUs from node reports (pure)."""

from __future__ import annotations

import datetime as dt

from cocoon_operator.api.nodereport import NodeReport, VmRecord, report_name
from cocoon_operator.desired.nodeagent import report_config_map
from cocoon_operator.policy.nodereports import LivePod, orphaned, worker_gpus

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
GRACE = dt.timedelta(seconds=60)


def vm(uid: str, *, running: bool = True, pci: str | None = "0000:1b:00.0") -> VmRecord:
    return VmRecord(
        instance=0,
        namespace="ns",
        worker="w",
        pod=f"w-{uid}",
        pod_uid=uid,
        pci=pci,
        pid=42,
        running=running,
    )


def report(node: str, *vms: VmRecord) -> NodeReport:
    return NodeReport(node=node, agent_version="test", vms=list(vms))


def live(uid: str, node: str | None) -> dict[str, LivePod]:
    return {uid: LivePod("ns", "w", "wuid", f"w-{uid}", node)}


def test_a_running_vm_without_its_pod_is_orphaned_only_after_the_grace() -> None:
    reports = {"a": report("a", vm("u1"))}
    found, seen = orphaned(reports, {}, {}, now=T0, grace=GRACE)
    assert found == [] and seen == {("a", "u1"): T0}
    found, seen = orphaned(reports, {}, seen, now=T0 + GRACE / 2, grace=GRACE)
    assert found == [] and seen == {("a", "u1"): T0}
    found, _ = orphaned(reports, {}, seen, now=T0 + GRACE, grace=GRACE)
    assert [o.key for o in found] == [("a", "u1")]
    assert "0000:1b:00.0" in found[0].describe() and "node a" in found[0].describe()


def test_a_vm_whose_pod_lives_on_its_node_or_that_stopped_is_not_orphaned() -> None:
    reports = {"a": report("a", vm("u1"), vm("u2", running=False))}
    found, seen = orphaned(reports, live("u1", "a"), {}, now=T0, grace=dt.timedelta(0))
    assert found == [] and seen == {}


def test_a_pod_of_that_uid_on_another_node_does_not_cover_the_vm() -> None:
    reports = {"a": report("a", vm("u1"))}
    found, _ = orphaned(reports, live("u1", "b"), {}, now=T0, grace=dt.timedelta(0))
    assert [o.key for o in found] == [("a", "u1")]


def test_the_first_seen_time_is_forgotten_once_the_pod_returns() -> None:
    reports = {"a": report("a", vm("u1"))}
    _, seen = orphaned(reports, {}, {}, now=T0, grace=GRACE)
    _, seen = orphaned(reports, live("u1", "a"), seen, now=T0 + GRACE, grace=GRACE)
    assert seen == {}


def test_a_worker_gets_the_gpu_of_its_live_pods_running_vm() -> None:
    reports = {
        "a": report("a", vm("u1", pci="0000:1b:00.0"), vm("old", pci="0000:2b:00.0")),
        "b": report("b", vm("u3", running=False, pci="0000:3b:00.0")),
    }
    pods = {**live("u1", "a"), **{"u3": LivePod("ns", "x", "xuid", "x-u3", "b")}}
    assert worker_gpus(reports, pods) == {("ns", "w"): "0000:1b:00.0"}


def test_report_names_fit_a_configmap_name_however_long_the_node_name() -> None:
    assert report_name("gpu-17") == "cocoon-node-gpu-17"
    long = "n" * 250
    name = report_name(long)
    assert len(name) <= 253 and name != report_name("n" * 249)
    cm = report_config_map("cocoon-system", report(long), T0)
    assert cm["metadata"]["name"] == name
    assert "cocoon.network/node" not in cm["metadata"]["labels"]  # not a valid label value
    assert cm["metadata"]["annotations"]["cocoon.network/reported-at"] == "2026-11-25T12:00:00Z"
    assert NodeReport.model_validate_json(cm["data"]["report.json"]).node == long
