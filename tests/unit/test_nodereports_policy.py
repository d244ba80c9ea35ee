"""Orphaned VMs, workers' GPUs and their VMs' relayed quotes from node reports (pure)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from cocoon_operator.api.nodereport import (
    CONFIGMAP_LIMIT_BYTES,
    MAX_REPORTED_QUOTE_BYTES,
    GpuDevice,
    HostCheck,
    ModelRecord,
    NodeReport,
    RelayedQuote,
    VmRecord,
    report_name,
)
from cocoon_operator.desired.nodeagent import report_config_map
from cocoon_operator.policy.nodereports import (
    GPU_NEWS_HOLD,
    LivePod,
    ModelNews,
    NewsAction,
    NoQuote,
    StaleReport,
    fresh,
    host_problem,
    model_news_action,
    orphaned,
    relayed_quote,
    report_stamp,
    vm_gpu,
)
from cocoon_operator.policy.worker import PodFacts

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


def pod(uid: str, node: str | None, *, deleting: bool = False) -> PodFacts:
    return PodFacts(name=f"w-{uid}", node=node, phase="Running", uid=uid, deleting=deleting)


def test_a_worker_gets_the_gpu_of_its_pods_running_vm_on_the_pods_own_node() -> None:
    reports = {
        "a": report("a", vm("u1", pci="0000:1b:00.0"), vm("old", pci="0000:2b:00.0")),
        "b": report("b", vm("u3", running=False, pci="0000:3b:00.0")),
    }
    assert vm_gpu(reports, [pod("u1", "a")]) == "0000:1b:00.0"
    assert vm_gpu(reports, [pod("u3", "b")]) is None  # its VM stopped
    assert vm_gpu(reports, [pod("u1", "b")]) is None  # that uid's VM is on another node
    assert vm_gpu(reports, [pod("u9", "a")]) is None  # a new pod: no VM of its own yet
    assert vm_gpu({}, [pod("u1", "a")]) is None  # no fresh report, no word on it


def test_the_current_pods_vm_wins_over_one_being_stopped_that_still_runs() -> None:
    reports = {"a": report("a", vm("new", pci="0000:1b:00.0"), vm("old", pci="0000:2b:00.0"))}
    both = [pod("new", "a"), pod("old", "a", deleting=True)]
    assert vm_gpu(reports, both) == "0000:1b:00.0"
    assert vm_gpu(reports, list(reversed(both))) == "0000:1b:00.0"
    assert vm_gpu(reports, [pod("old", "a", deleting=True)]) == "0000:2b:00.0"


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


def host_report(
    *, checks_ok: bool = True, driver: str | None = "vfio-pci", **vm_kw: Any
) -> NodeReport:
    return NodeReport(
        node="n1",
        agent_version="test",
        checks=[
            HostCheck(
                name="tdx",
                ok=checks_ok,
                message="TDX module initialised" if checks_ok else "TDX module not initialised",
            )
        ],
        gpus=[
            GpuDevice(pci="0000:1b:00.0", device_id="10de:2330", driver=driver, iommu_group="12")
        ],
        vms=[vm("u1", **vm_kw)],
    )


def test_the_node_agent_vouches_for_a_vm_holding_a_gpu_passed_through_on_a_ready_host() -> None:
    assert host_problem(host_report(), node="n1", pod_uid="u1") is None


def test_a_failing_host_check_or_a_gpu_not_passed_through_is_a_definite_objection() -> None:
    failing = host_problem(host_report(checks_ok=False), node="n1", pod_uid="u1")
    assert failing is not None and failing.definite
    assert "tdx: TDX module not initialised" in failing.message
    shared = host_problem(host_report(driver="nvidia"), node="n1", pod_uid="u1")
    assert shared is not None and shared.definite and "bound to nvidia" in shared.message
    no_gpu = host_problem(host_report(pci=None), node="n1", pod_uid="u1")
    assert no_gpu is not None and no_gpu.definite and "holds no GPU" in no_gpu.message
    foreign = host_problem(host_report(pci="0000:9a:00.0"), node="n1", pod_uid="u1")
    assert foreign is not None and foreign.definite and "not among" in foreign.message


def test_no_report_or_no_vm_yet_is_waited_for() -> None:
    missing = host_problem(None, node="n1", pod_uid="u1")
    assert missing is not None and not missing.definite and "n1" in missing.message
    other = host_problem(host_report(), node="n1", pod_uid="u2")
    assert other is not None and not other.definite
    stopped = host_problem(host_report(running=False), node="n1", pod_uid="u1")
    assert stopped is not None and not stopped.definite


def quoted(uid: str, instance: int = 0, quote: bytes = b"a relayed quote") -> VmRecord:
    relayed = RelayedQuote(
        quote=base64.b64encode(quote).decode(), captured_at="2026-11-25T11:50:00.000000Z"
    )
    return vm(uid).model_copy(update={"instance": instance, "quote": relayed})


def test_the_quote_used_is_the_one_filed_under_the_pods_node_uid_and_instance() -> None:
    reports = {"n1": report("n1", quoted("u1", 0, b"mine"), quoted("u2", 1, b"theirs"))}
    found = relayed_quote(reports["n1"], node="n1", pod_uid="u1", instance=0)
    assert isinstance(found, RelayedQuote) and found.quote_bytes() == b"mine"
    for node, uid, instance in (("n1", "u1", 1), ("n1", "u3", 0), ("n2", "u1", 0)):
        missing = relayed_quote(reports.get(node), node=node, pod_uid=uid, instance=instance)
        assert isinstance(missing, NoQuote), (node, uid, instance)
    # A report that speaks for another node is not that node's.
    assert isinstance(relayed_quote(reports["n1"], node="n9", pod_uid="u1", instance=0), NoQuote)
    # A stopped VM's last quote is not evidence for anything.
    stopped = report("n1", quoted("u1").model_copy(update={"running": False}))
    assert isinstance(relayed_quote(stopped, node="n1", pod_uid="u1", instance=0), NoQuote)
    assert (
        "no quote"
        in relayed_quote(report("n1", vm("u1")), node="n1", pod_uid="u1", instance=0).message
    )  # type: ignore[union-attr]


def test_a_report_with_ten_vms_of_the_largest_quotes_fits_a_configmap() -> None:
    vms = [
        quoted(f"{i:08d}-0000-0000-0000-000000000000", i, b"\xff" * MAX_REPORTED_QUOTE_BYTES)
        for i in range(10)
    ]
    full = NodeReport(
        node="n" * 253,
        agent_version="test",
        checks=[HostCheck(name=f"check-{i}", ok=False, message="m" * 500) for i in range(6)],
        gpus=[
            GpuDevice(pci=f"0000:{i:02x}:00.0", device_id="10de:2330", driver=None, iommu_group="1")
            for i in range(8)
        ],
        vms=vms,
    )
    cm = report_config_map("cocoon-system", full, T0)
    assert len(json.dumps(cm).encode()) < CONFIGMAP_LIMIT_BYTES // 2


def test_a_report_quote_larger_than_the_bound_does_not_validate() -> None:
    with pytest.raises(ValidationError):
        quoted("u1", quote=b"\xff" * (MAX_REPORTED_QUOTE_BYTES + 3))


MAX_AGE = dt.timedelta(seconds=900)


def test_a_report_vouches_until_its_max_age_and_then_says_its_agent_went_quiet() -> None:
    r = report("a", vm("u1"))
    at = T0 - MAX_AGE
    assert fresh(r, at, now=T0, max_age=MAX_AGE) is r
    stale = fresh(r, at, now=T0 + dt.timedelta(seconds=1), max_age=MAX_AGE)
    assert isinstance(stale, StaleReport)
    problem = host_problem(stale, node="a", pod_uid="u1")
    assert problem is not None and not problem.definite
    assert "last reported at 2026-11-25T11:45:00Z" in problem.message
    assert isinstance(relayed_quote(stale, node="a", pod_uid="u1", instance=0), NoQuote)
    assert isinstance(fresh(r, None, now=T0, max_age=MAX_AGE), StaleReport)  # no stamp
    assert fresh(None, at, now=T0, max_age=MAX_AGE) is None


def test_a_stamp_from_the_future_counts_from_when_the_operator_saw_the_report() -> None:
    seen = T0
    assert report_stamp(T0 + dt.timedelta(days=365), observed=seen) == seen
    assert report_stamp(T0 - dt.timedelta(minutes=3), observed=seen) == T0 - dt.timedelta(minutes=3)
    assert report_stamp(None, observed=seen) is None


# The model check's news of a worker (handlers/nodes.py): what the reports say of
# its model on each node, and the GPU its VM holds.
ON_NODE: tuple[tuple[str, ModelRecord | None], ...] = (("node-a", None),)
NO_GPU: ModelNews = (ON_NODE, None)
GPU: ModelNews = (ON_NODE, "0000:1b:00.0")


def news(
    seen: ModelNews | None,
    said: ModelNews,
    *,
    phase: str | None = "Attesting",
    status_gpu: str | None = None,
    held_for: dt.timedelta | None = None,
) -> NewsAction:
    return model_news_action(
        seen,
        said,
        status_gpu=status_gpu,
        phase=phase,
        held_since=None if held_for is None else T0 - held_for,
        now=T0,
    )


def test_news_of_the_gpu_alone_waits_for_the_attestations_write_while_the_worker_attests() -> None:
    assert news(NO_GPU, GPU) is NewsAction.HOLD
    assert news(NO_GPU, GPU, held_for=GPU_NEWS_HOLD - dt.timedelta(seconds=1)) is NewsAction.HOLD


def test_a_gpu_held_for_the_whole_hold_is_written_by_a_reconcile_of_its_own() -> None:
    assert news(NO_GPU, GPU, held_for=GPU_NEWS_HOLD) is NewsAction.RECONCILE


def test_a_gpu_the_status_already_shows_is_no_news() -> None:
    assert news(NO_GPU, GPU, status_gpu="0000:1b:00.0", phase="Registering") is NewsAction.NOTHING
    assert news(GPU, GPU) is NewsAction.NOTHING


def test_the_gpu_of_a_worker_not_attesting_or_a_gpu_gone_is_written_at_once() -> None:
    for phase in ("Starting", "Ready", "Degraded", None):
        assert news(NO_GPU, GPU, phase=phase) is NewsAction.RECONCILE
    assert news(GPU, NO_GPU, status_gpu="0000:1b:00.0") is NewsAction.RECONCILE


def test_news_of_the_model_never_waits() -> None:
    ready = ModelRecord(verity="a" * 64, model="m@c:" + "a" * 64, phase="Ready")
    assert news(NO_GPU, ((("node-a", ready),), "0000:1b:00.0")) is NewsAction.RECONCILE
    assert news(None, GPU) is NewsAction.RECONCILE  # the first word of a worker
