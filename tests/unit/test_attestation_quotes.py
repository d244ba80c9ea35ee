"""The attestation check takes its quote only from the node report of the pod's node,
for the pod's uid and instance; verifies it unless this operator itself verified that
very quote lately; and never lets the worker's status spare a verification."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.nodereport import GpuDevice, NodeReport, RelayedQuote, VmRecord
from cocoon_operator.api.v1alpha1 import ConditionStatus
from cocoon_operator.desired.launcher import revision
from cocoon_operator.handlers import attestation as step
from cocoon_operator.handlers.attestation import Attestation, attest_worker
from cocoon_operator.handlers.nodetracker import NodeReportOptions, NodeReports
from cocoon_operator.handlers.runtime import Deps, Indexes, Runtime, Tick
from cocoon_operator.policy.attestation import (
    HOST_UNREPORTED,
    NO_QUOTE,
    QUOTE_EXPIRED,
    GateDecision,
    GateReason,
    LastVerification,
    Rejected,
    policy_digest,
)
from cocoon_operator.policy.conditions import rfc3339
from cocoon_operator.policy.worker import PodFacts

REPO = Path(__file__).resolve().parents[2]
QUOTE = b"\x04\x00 a relayed TDX quote, as the launcher captured it"
SHA = hashlib.sha256(QUOTE).hexdigest()
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
POD_UID = "pod-uid-1"
GPU = "0000:1b:00.0"


class Verifying(Exception):
    """Raised by the fake checker: a full verification was asked for."""


class Checker:
    trust = step.TrustMode.TEST

    async def verify_quote(self, raw: bytes, **kwargs: Any) -> Any:
        raise Verifying(raw, kwargs)


def worker_body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    body: dict[str, Any] = next(d for d in docs if d["kind"] == "CocoonWorker")
    body["metadata"].update(namespace="ns", uid="u1", resourceVersion="7")
    if status is not None:
        body["status"] = status
    return body


def serving_pod(body: dict[str, Any]) -> PodFacts:
    spec = v1alpha1.CocoonWorker.model_validate(body).spec
    return PodFacts(
        name="worker-0-abc",
        node="n1",
        phase="Running",
        attested_gate=ConditionStatus.TRUE,
        revision=revision(spec),
        instance=0,
        host_ip="10.0.0.7",
        uid=POD_UID,
    )


def report(
    *,
    node: str = "n1",
    pod_uid: str = POD_UID,
    instance: int = 0,
    captured: dt.datetime = NOW - dt.timedelta(minutes=5),
) -> NodeReport:
    quote = RelayedQuote(
        quote=base64.b64encode(QUOTE).decode(), captured_at=rfc3339(captured), report_data=None
    )
    vm = VmRecord(
        instance=instance,
        namespace="ns",
        worker="worker-0",
        pod="worker-0-abc",
        pod_uid=pod_uid,
        pci=GPU,
        pid=1,
        running=True,
        quote=quote,
    )
    gpu = GpuDevice(pci=GPU, device_id="10de:2330", driver="vfio-pci", iommu_group="20")
    return NodeReport(node=node, agent_version="test", gpus=[gpu], vms=[vm])


async def check(
    monkeypatch: pytest.MonkeyPatch,
    *,
    reports: dict[str, NodeReport] | None,
    status: dict[str, Any] | None = None,
    last: LastVerification | None = None,
    report_age: dt.timedelta = dt.timedelta(minutes=1),
) -> GateDecision:
    """One check at NOW, the reports written ``report_age`` earlier; the decision it
    would write (or Verifying when it verifies)."""
    decisions: list[GateDecision] = []

    async def record(deps: Any, body: Any, pod: Any, decision: GateDecision, **_: Any) -> None:
        decisions.append(decision)

    monkeypatch.setattr(step, "_apply", record)
    deps = Deps(api=cast(Any, None), clock=lambda: NOW)
    state = Attestation(cast(Any, Checker()), cast(Any, None))
    if last is not None:
        deps.trust.verified[("ns", "worker-0")] = last
    body = worker_body(status)
    runtime = Runtime(started=deps)
    if reports is not None:
        tracker = NodeReports(NodeReportOptions(namespace="cocoon-system"), clock=lambda: NOW)
        tracker.reports.update(reports)
        tracker.stamps.update(dict.fromkeys(reports, NOW - report_age))
        runtime.node_reports = tracker
    pods: Any = {("ns", "worker-0"): [serving_pod(body)]}
    tick = Tick(
        runtime,
        kopf.Body(cast(kopf.RawBody, body)),
        logging.getLogger("test"),
        Indexes(pods=pods, instances=cast(Any, {}), nodes=cast(Any, {})),
    )
    await attest_worker(state, tick)
    (decision,) = decisions
    return decision


def failed_step(decision: GateDecision) -> str:
    assert decision.summary.failure is not None
    return decision.summary.failure.split(":", 1)[0]


async def test_the_quote_reported_for_the_pods_uid_instance_and_node_is_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(Verifying) as called:
        await check(monkeypatch, reports={"n1": report()})
    raw, kwargs = called.value.args
    assert raw == QUOTE
    assert kwargs["captured_at"] == NOW - dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    "reports",
    [
        {"n1": report(pod_uid="another-pod")},
        {"n1": report(instance=1)},
        {"n2": report(node="n2")},
        {"n1": report(node="n2")},  # a report that speaks for another node than its key
    ],
    ids=["another pod uid", "another instance", "another node", "a report for another node"],
)
async def test_a_quote_filed_under_anything_but_the_pods_own_vm_is_not_used(
    monkeypatch: pytest.MonkeyPatch, reports: dict[str, NodeReport]
) -> None:
    decision = await check(monkeypatch, reports=reports)  # Verifying if it were used
    assert decision.gate is ConditionStatus.FALSE
    # The host check already misses the pod's VM, or the quote lookup does.
    assert failed_step(decision) in (NO_QUOTE, HOST_UNREPORTED)


async def test_a_report_older_than_the_max_age_vouches_for_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead agent's last report would otherwise vouch for the host, and hand out
    its last quote, forever (the default max age is 900 s)."""
    with pytest.raises(Verifying):
        await check(monkeypatch, reports={"n1": report()}, report_age=dt.timedelta(seconds=899))
    decision = await check(
        monkeypatch, reports={"n1": report()}, report_age=dt.timedelta(seconds=901)
    )
    assert decision.gate is ConditionStatus.FALSE
    assert failed_step(decision) == HOST_UNREPORTED
    assert "last reported at" in (decision.summary.failure or ""), decision.summary


async def test_without_node_reports_no_quote_is_taken_from_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decision = await check(monkeypatch, reports=None)
    assert failed_step(decision) == NO_QUOTE
    assert "--node-report-namespace" in decision.message


async def test_a_status_naming_the_quote_as_verified_just_now_spares_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status = {
        "attestation": {
            "quoteSha256": SHA,
            "certificateSha256": SHA,
            "pod": "worker-0-abc",
            "verifiedAt": rfc3339(NOW),
            "expiresAt": rfc3339(NOW + dt.timedelta(days=365)),
            "trustRoot": "test",
        }
    }
    with pytest.raises(Verifying):
        await check(monkeypatch, reports={"n1": report()}, status=status)


async def test_the_operators_own_memory_of_that_quote_spares_a_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    last = LastVerification(
        pod_uid=POD_UID,
        quote_sha256=SHA,
        image_hash="11" * 32,
        verified_at=NOW - dt.timedelta(seconds=60),
        valid_until=NOW + dt.timedelta(seconds=600),
        gpu_checked=False,
        policy=policy_digest(v1alpha1.CocoonWorker.model_validate(worker_body()).spec.attestation),
    )
    with pytest.raises(ValueError, match="not enough values"):
        await check(monkeypatch, reports={"n1": report()}, last=last)  # nothing to write
    other_pod = dataclasses.replace(last, pod_uid="an earlier pod")
    with pytest.raises(Verifying):
        await check(monkeypatch, reports={"n1": report()}, last=other_pod)
    other_policy = dataclasses.replace(last, policy="verified under another policy")
    with pytest.raises(Verifying):
        await check(monkeypatch, reports={"n1": report()}, last=other_policy)


async def test_a_stale_quote_closes_the_gate_as_expired_without_being_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = report(captured=NOW - dt.timedelta(seconds=v1alpha1.QUOTE_MAX_AGE_DEFAULT + 1))
    decision = await check(monkeypatch, reports={"n1": old})
    assert (decision.gate, decision.reason) == (ConditionStatus.FALSE, GateReason.EXPIRED)
    assert failed_step(decision) == QUOTE_EXPIRED


def test_rejected_carries_the_quotes_fingerprint() -> None:
    assert Rejected(QUOTE_EXPIRED, "old", SHA).quote_sha256 == SHA
