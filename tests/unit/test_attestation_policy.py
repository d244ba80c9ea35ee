"""When evidence is verified again, and what each outcome does to the readiness gate."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cocoon_operator.api.v1alpha1 import (
    AttestationPolicy,
    AttestationSummary,
    ConditionStatus,
    GpuSummary,
)
from cocoon_operator.policy.attestation import (
    HOST,
    HOST_UNREPORTED,
    UNREACHABLE,
    GateReason,
    Rejected,
    TrustMode,
    Verified,
    decide,
    needs_verification,
    still_booting,
    tdx_policy,
)
from cocoon_operator.policy.conditions import rfc3339

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CERT = "aa" * 32
GOOD = Verified(
    certificate_sha256=CERT,
    image_hash="11" * 32,
    mrtd="22" * 48,
    tcb_status="UpToDate",
    valid_until=NOW + timedelta(days=1),
)


def verified_summary(
    at: datetime = NOW, *, pod: str = "p1", reattest: int = 900
) -> AttestationSummary:
    return decide(
        GOOD,
        previous=None,
        pod=pod,
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=reattest,
        now=at,
    ).summary


def test_first_success_opens_the_gate_and_records_an_event() -> None:
    d = decide(
        GOOD,
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert (d.gate, d.reason, d.event_reason, d.warning) == (
        T,
        GateReason.VERIFIED,
        "Attested",
        False,
    )
    assert d.summary.trust_root == "test"
    assert d.summary.verified_at == rfc3339(NOW)
    # Valid for two re-attestation periods, unless the certificate ends sooner.
    assert d.summary.expires_at == rfc3339(NOW + timedelta(seconds=1800))
    short = Verified(**{**GOOD.__dict__, "valid_until": NOW + timedelta(minutes=5)})
    d2 = decide(
        short,
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.INTEL,
        reattest_seconds=900,
        now=NOW,
    )
    assert d2.summary.expires_at == rfc3339(NOW + timedelta(minutes=5))


def test_a_periodic_success_is_silent_and_a_new_certificate_is_announced() -> None:
    prev = verified_summary()
    later = NOW + timedelta(seconds=900)
    same = decide(
        GOOD, previous=prev, pod="p1", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=later
    )
    assert same.event_reason is None
    rotated = Verified(**{**GOOD.__dict__, "certificate_sha256": "bb" * 32})
    d = decide(
        rotated,
        previous=prev,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=later,
    )
    assert d.event_reason == "Reattested"
    assert d.summary.certificate_sha256 == "bb" * 32


def test_bad_evidence_closes_the_gate_at_once_even_when_the_last_verdict_is_valid() -> None:
    prev = verified_summary()
    bad = Rejected("quote_signature", "signature invalid", "cc" * 32)
    d = decide(
        bad, previous=prev, pod="p1", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=NOW
    )
    assert (d.gate, d.reason, d.warning) == (F, GateReason.REJECTED, True)
    assert d.event_reason == "AttestationFailed"
    assert d.summary.failure == "quote_signature: signature invalid"
    assert d.summary.verified_at == prev.verified_at  # the last good verdict is kept for reference
    # The same failure again records no second Event.
    again = decide(
        bad,
        previous=d.summary,
        pod="p1",
        gate=F,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert again.event_reason is None and again.gate is F
    # ... and writes nothing new: the failure began when it began.
    later = decide(
        bad,
        previous=d.summary,
        pod="p1",
        gate=F,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW + timedelta(seconds=30),
    )
    assert later.summary == d.summary


def test_an_unreachable_worker_keeps_a_valid_verdict_until_it_expires() -> None:
    prev = verified_summary()
    gone = Rejected(UNREACHABLE, "no certificate from 127.1.0.1:12001: refused")
    soon = NOW + timedelta(seconds=60)
    held = decide(
        gone, previous=prev, pod="p1", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=soon
    )
    assert held.gate is T and held.event_reason == "WorkerUnreachable" and held.warning
    late = NOW + timedelta(seconds=1801)
    dropped = decide(
        gone,
        previous=held.summary,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=late,
    )
    assert (dropped.gate, dropped.reason) == (F, GateReason.EXPIRED)


def test_an_unreachable_new_pod_is_not_trusted_on_another_pods_verdict() -> None:
    prev = verified_summary(pod="old")
    gone = Rejected(UNREACHABLE, "timeout")
    d = decide(
        gone, previous=prev, pod="new", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=NOW
    )
    assert (d.gate, d.reason) == (F, GateReason.UNREACHABLE)
    assert d.summary.pod == "new" and d.summary.verified_at is None


def due(summary: AttestationSummary | None, **changes: object) -> bool:
    args: dict[str, object] = {
        "pod": "p1",
        "gate": T,
        "certificate_sha256": CERT,
        "reattest_seconds": 900,
        "now": NOW + timedelta(seconds=10),
    }
    args.update(changes)
    return needs_verification(summary, **args)  # type: ignore[arg-type]


def test_verification_is_due_on_schedule_on_rotation_on_a_new_pod_and_after_failure() -> None:
    prev = verified_summary()
    assert not due(prev)
    assert due(prev, now=NOW + timedelta(seconds=900))
    assert due(prev, certificate_sha256="dd" * 32)
    assert due(prev, pod="p2")
    assert due(prev, gate=F)
    assert due(None, gate=None)
    assert due(prev.model_copy(update={"failure": "x: y"}))


def test_the_trust_root_requirement_comes_from_the_operator_not_the_spec() -> None:
    spec = AttestationPolicy(
        accepted_tcb_statuses=["UpToDate", "SWHardeningNeeded"], allowed_image_hashes=["ab" * 32]
    )
    intel = tdx_policy(spec, TrustMode.INTEL)
    assert intel.require_production_root is True
    assert intel.accepted_tcb_statuses == frozenset({"UpToDate", "SWHardeningNeeded"})
    assert intel.allowed_image_hashes == frozenset({bytes.fromhex("ab" * 32)})
    assert tdx_policy(spec, TrustMode.TEST).require_production_root is False
    assert tdx_policy(AttestationPolicy(), TrustMode.INTEL).allowed_image_hashes is None


def test_a_vm_that_never_answered_is_booting_for_a_while_not_failing() -> None:
    gone = Rejected(UNREACHABLE, "refused")
    started = NOW - timedelta(seconds=30)
    assert still_booting(gone, previous=None, pod="p1", started_at=started, now=NOW)
    late = NOW + timedelta(seconds=600)
    assert not still_booting(gone, previous=None, pod="p1", started_at=started, now=late)
    # Once verified, unreachable is news; bad evidence is never "booting".
    assert not still_booting(
        gone, previous=verified_summary(), pod="p1", started_at=started, now=NOW
    )
    bad = Rejected("quote_signature", "bad")
    assert not still_booting(bad, previous=None, pod="p1", started_at=started, now=NOW)


def test_a_host_the_node_agent_objects_to_closes_the_gate_with_its_own_reason() -> None:
    prev = verified_summary()
    host = Rejected(HOST, "host checks failing on n1: tdx: TDX module not initialised", CERT)
    d = decide(
        host, previous=prev, pod="p1", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=NOW
    )
    assert (d.gate, d.reason, d.event_reason, d.warning) == (
        F,
        GateReason.HOST_REJECTED,
        "AttestationFailed",
        True,
    )
    assert d.summary.failure is not None and d.summary.failure.startswith("host: host checks")


def test_a_vm_the_node_agent_has_not_reported_yet_is_waited_for_like_a_booting_one() -> None:
    unreported = Rejected(HOST_UNREPORTED, "the node agent on n1 does not report this pod's VM")
    started = NOW - timedelta(seconds=30)
    assert still_booting(unreported, previous=None, pod="p1", started_at=started, now=NOW)
    # A verdict still valid survives it; past the grace, a never-verified VM is held.
    held = decide(
        unreported,
        previous=verified_summary(),
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW + timedelta(seconds=60),
    )
    assert held.gate is T and held.event_reason == "HostNotReported"
    never = decide(
        unreported,
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW + timedelta(seconds=600),
    )
    assert (never.gate, never.reason) == (F, GateReason.HOST_UNREPORTED)


def test_gpu_evidence_is_kept_in_the_summary_and_named_in_the_message() -> None:
    gpu = GpuSummary(driver_version="550.54.15", vbios_version="96.00.5E.00.01")
    d = decide(
        replace(GOOD, gpu=gpu),
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert d.summary.gpu == gpu
    assert d.message.startswith("TDX and GPU evidence verified")
    assert verified_summary().gpu is None  # InGuest: nothing claimed about the GPU


def test_asking_for_gpu_evidence_makes_a_tdx_only_verdict_due_at_once() -> None:
    summary = verified_summary()  # verified just now, without GPU evidence
    due = {
        required: needs_verification(
            summary,
            pod="p1",
            gate=T,
            certificate_sha256=CERT,
            reattest_seconds=900,
            now=NOW + timedelta(seconds=5),
            gpu_required=required,
        )
        for required in (False, True)
    }
    assert due == {False: False, True: True}
