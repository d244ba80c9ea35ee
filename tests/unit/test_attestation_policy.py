"""When evidence is verified again, and what each outcome does to the readiness gate."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cocoon_operator.api.v1alpha1 import (
    AttestationPolicy,
    ConditionStatus,
    GpuSummary,
)
from cocoon_operator.policy.attestation import (
    HOST,
    HOST_UNREPORTED,
    NO_QUOTE,
    QUOTE_EXPIRED,
    UNREACHABLE,
    GateReason,
    LastVerification,
    Rejected,
    TrustMode,
    Verified,
    decide,
    needs_verification,
    policy_digest,
    quote_expired,
    still_booting,
    tdx_policy,
)
from cocoon_operator.policy.conditions import rfc3339
from tests.unit.helpers import GOOD, LAST, NOW, QUOTE, verified_summary

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


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
    # What people compare with what proxies see: the RA-TLS key hash, and the quote.
    assert d.summary.report_data == "33" * 64
    assert d.summary.quote_sha256 == QUOTE
    assert d.summary.quote_captured_at == rfc3339(NOW - timedelta(minutes=10))
    assert d.summary.certificate_sha256 is None
    # Valid for two re-attestation periods, unless the quote or collateral ends sooner.
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


def test_a_periodic_success_is_silent_and_a_new_quote_is_announced() -> None:
    prev = verified_summary()
    later = NOW + timedelta(seconds=900)
    same = decide(
        GOOD, previous=prev, pod="p1", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=later
    )
    assert same.event_reason is None
    rotated = Verified(**{**GOOD.__dict__, "quote_sha256": "bb" * 32})
    d = decide(
        rotated,
        previous=prev,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=later,
    )
    assert d.event_reason == "Reattested" and not d.warning
    assert d.summary.quote_sha256 == "bb" * 32


def test_a_quote_of_the_same_vm_with_other_measurements_is_announced_as_a_warning() -> None:
    prev = verified_summary()
    changed = Verified(**{**GOOD.__dict__, "quote_sha256": "bb" * 32, "image_hash": "44" * 32})
    d = decide(
        changed,
        previous=prev,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert (d.gate, d.event_reason, d.warning) == (T, "MeasurementsChanged", True)
    assert "1111111111111111... -> 4444444444444444..." in d.event_message
    # Another pod's measurements are no change of this VM's.
    other = decide(
        changed,
        previous=prev,
        pod="p2",
        gate=F,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert other.event_reason == "Attested"


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


def test_a_quote_missing_for_a_moment_keeps_the_operators_own_verdict_until_it_expires() -> None:
    prev = verified_summary()
    gone = Rejected(NO_QUOTE, "the launcher on n1 has relayed no quote for instance 0 yet")
    soon = NOW + timedelta(seconds=60)
    held = decide(
        gone,
        previous=prev,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=soon,
        valid_until=LAST.valid_until,
    )
    assert held.gate is T and held.event_reason == "QuoteNotReported" and held.warning
    late = NOW + timedelta(seconds=1801)
    dropped = decide(
        gone,
        previous=held.summary,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=late,
        valid_until=LAST.valid_until,
    )
    assert (dropped.gate, dropped.reason) == (F, GateReason.EXPIRED)


def test_a_status_claiming_a_valid_verdict_keeps_no_gate_open_without_the_operators_memory() -> (
    None
):
    forged = verified_summary().model_copy(
        update={"expires_at": rfc3339(NOW + timedelta(days=365))}
    )
    gone = Rejected(NO_QUOTE, "no quote")
    d = decide(
        gone,
        previous=forged,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW + timedelta(seconds=60),
    )
    assert d.gate is F


def test_a_quote_older_than_the_policy_allows_closes_the_gate_as_expired() -> None:
    captured = NOW - timedelta(seconds=4501)
    why = quote_expired(captured, now=NOW, max_age_seconds=4500)
    assert why is not None and "4501 s ago" in why
    assert quote_expired(NOW - timedelta(seconds=4500), now=NOW, max_age_seconds=4500) is None
    d = decide(
        Rejected(QUOTE_EXPIRED, why, "aa" * 32),
        previous=verified_summary(),
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
        valid_until=LAST.valid_until,
    )
    assert (d.gate, d.reason, d.event_reason) == (F, GateReason.EXPIRED, "AttestationFailed")


def test_a_vm_that_never_had_a_quote_reported_is_held_with_its_own_reason() -> None:
    d = decide(
        Rejected(NO_QUOTE, "no quote yet"),
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert (d.gate, d.reason) == (F, GateReason.NO_QUOTE)


def test_an_unreachable_new_pod_is_not_trusted_on_another_pods_verdict() -> None:
    prev = verified_summary(pod="old")
    gone = Rejected(UNREACHABLE, "timeout")
    d = decide(
        gone, previous=prev, pod="new", gate=T, trust=TrustMode.TEST, reattest_seconds=900, now=NOW
    )
    assert (d.gate, d.reason) == (F, GateReason.UNREACHABLE)
    assert d.summary.pod == "new" and d.summary.verified_at is None


def due(last: LastVerification | None, **changes: object) -> bool:
    args: dict[str, object] = {
        "pod_uid": "u1",
        "gate": T,
        "quote_sha256": QUOTE,
        "reattest_seconds": 900,
        "now": NOW + timedelta(seconds=10),
    }
    args.update(changes)
    return needs_verification(last, **args)  # type: ignore[arg-type]


def test_verification_is_due_on_schedule_on_a_new_quote_on_a_new_pod_and_without_memory() -> None:
    assert not due(LAST)
    assert due(LAST, now=NOW + timedelta(seconds=900))
    assert due(LAST, quote_sha256="dd" * 32)
    assert due(LAST, pod_uid="u2")
    assert due(LAST, gate=F)
    # A gate held open on an older verdict is confirmed once a quote is back.
    assert due(LAST, gate_message="last evidence still valid until ...; no quote reported")
    assert not due(LAST, gate_message="TDX evidence verified (TCB UpToDate, test root)")
    # A spec whose attestation policy changed is judged again at once.
    stricter = AttestationPolicy(allowed_image_hashes=["ab" * 32])
    assert due(LAST, policy=policy_digest(stricter))
    assert policy_digest(stricter) != policy_digest(AttestationPolicy())
    # Nothing but the operator's memory spares a verification: no summary, however
    # fresh it claims to be, is an argument.
    assert due(None)


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


def test_a_remembered_library_policy_is_always_the_one_of_the_spec_at_hand() -> None:
    # tdx_policy is memoised: every field it reads, and the trust mode, must key it.
    base = AttestationPolicy(allowed_image_hashes=["ab" * 32])
    variants = [
        base,
        AttestationPolicy(allowed_image_hashes=["cd" * 32]),
        AttestationPolicy(allowed_image_hashes=["ab" * 32], rejected_advisories=["INTEL-SA-00001"]),
        AttestationPolicy(
            allowed_image_hashes=["ab" * 32], accepted_tcb_statuses=["SWHardeningNeeded"]
        ),
        AttestationPolicy(),
    ]
    built = [tdx_policy(v, TrustMode.TEST) for v in variants]
    assert len(set(built)) == len(variants)
    assert (
        tdx_policy(AttestationPolicy(allowed_image_hashes=["ab" * 32]), TrustMode.TEST)
        == (built[0])
    )
    assert tdx_policy(base, TrustMode.INTEL) != built[0]
    assert built[2].rejected_advisories == frozenset({"INTEL-SA-00001"})
    assert built[3].accepted_tcb_statuses == frozenset({"SWHardeningNeeded"})


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
    host = Rejected(HOST, "host checks failing on n1: tdx: TDX module not initialised", QUOTE)
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
        valid_until=LAST.valid_until,
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
    due = {
        required: needs_verification(
            LAST,  # verified just now, without GPU evidence
            pod_uid="u1",
            gate=T,
            quote_sha256=QUOTE,
            reattest_seconds=900,
            now=NOW + timedelta(seconds=5),
            gpu_required=required,
        )
        for required in (False, True)
    }
    assert due == {False: False, True: True}
