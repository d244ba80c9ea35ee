"""The cross-check of a verified quote with what the guest's health monitor reports
(COCOON's ``health-monitor``, ``tdx`` command), and what a mismatch does to the gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cocoon_operator.api.nodereport import GuestHealthReport, NodeReport, VmRecord
from cocoon_operator.api.v1alpha1 import ConditionStatus
from cocoon_operator.policy.attestation import (
    HEALTH_MISMATCH,
    NO_HEALTH_READING,
    GateReason,
    LastVerification,
    Rejected,
    TrustMode,
    Verified,
    cross_check_health,
    decide,
    with_health,
)
from cocoon_operator.policy.nodereports import guest_health

T = ConditionStatus.TRUE
NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
RTMR = ("b0" * 48, "b1" * 48, "b2" * 48, "b3" * 48)
GOOD = Verified(
    quote_sha256="aa" * 32,
    image_hash="11" * 32,
    mrtd="22" * 48,
    rtmr=RTMR,
    tcb_status="UpToDate",
    report_data="33" * 64,
    captured_at=NOW - timedelta(minutes=10),
    valid_until=NOW + timedelta(days=1),
)
LAST = LastVerification(
    pod_uid="u1",
    quote_sha256=GOOD.quote_sha256,
    image_hash=GOOD.image_hash,
    verified_at=NOW,
    valid_until=NOW + timedelta(seconds=1800),
    gpu_checked=False,
    mrtd=GOOD.mrtd,
    rtmr=RTMR,
)


def reading(**changes: object) -> GuestHealthReport:
    fields: dict[str, object] = {
        "checked_at": "2026-12-06T13:59:00.000000Z",
        "image_hash": GOOD.image_hash,
        "mrtd": GOOD.mrtd,
        "rtmr": list(RTMR),
    }
    return GuestHealthReport.model_validate(fields | changes)


def test_a_reading_that_agrees_is_noted_with_what_was_compared() -> None:
    checked = cross_check_health(
        image_hash=GOOD.image_hash, mrtd=GOOD.mrtd, rtmr=RTMR, health=reading()
    )
    assert checked.mismatch is None
    assert checked.note == "image hash, MRTD, RTMR0, RTMR1, RTMR2, RTMR3 match the verified quote"


def test_no_reading_is_not_a_failure_and_the_note_says_so() -> None:
    checked = cross_check_health(image_hash=GOOD.image_hash, mrtd=GOOD.mrtd, rtmr=RTMR, health=None)
    assert checked.mismatch is None and checked.note == NO_HEALTH_READING
    assert "9999" in checked.note and "not required" in checked.note


def test_each_register_that_differs_is_a_mismatch_naming_it() -> None:
    other = "ff" * 48
    for changes, name in (
        ({"image_hash": "ee" * 32}, "image hash"),
        ({"mrtd": other}, "MRTD"),
        ({"rtmr": [*RTMR[:3], other]}, "RTMR3"),
        ({"rtmr": [other, *RTMR[1:]]}, "RTMR0"),
    ):
        checked = cross_check_health(
            image_hash=GOOD.image_hash, mrtd=GOOD.mrtd, rtmr=RTMR, health=reading(**changes)
        )
        assert checked.mismatch is not None and f"reports other {name} than" in checked.mismatch


def test_a_reading_without_a_tdreport_compares_its_rtmrs_only() -> None:
    # health-render.cpp:167-173: no image hash or MRTD, the RTMRs from sysfs.
    partial = reading(image_hash=None, mrtd=None)
    checked = cross_check_health(
        image_hash=GOOD.image_hash, mrtd=GOOD.mrtd, rtmr=RTMR, health=partial
    )
    assert checked.mismatch is None and checked.note.startswith("RTMR0, RTMR1, RTMR2, RTMR3 match")
    bad = reading(image_hash=None, mrtd=None, rtmr=[*RTMR[:2], "ff" * 48, RTMR[3]])
    checked = cross_check_health(image_hash=GOOD.image_hash, mrtd=GOOD.mrtd, rtmr=RTMR, health=bad)
    assert checked.mismatch is not None and "RTMR2" in checked.mismatch


def test_a_fresh_verification_that_the_monitor_contradicts_is_rejected() -> None:
    out, note = with_health(GOOD, None, reading(rtmr=[*RTMR[:3], "ff" * 48]))
    assert isinstance(out, Rejected) and note is None
    assert out.step == HEALTH_MISMATCH and out.quote_sha256 == GOOD.quote_sha256


def test_a_fresh_verification_carries_the_note_into_the_summary() -> None:
    out, note = with_health(GOOD, None, reading())
    assert isinstance(out, Verified) and out.health is not None and note is None
    d = decide(
        out,
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    assert d.summary.health_monitor == out.health


def test_a_standing_verdict_is_checked_against_a_new_reading_without_re_verifying() -> None:
    # Nothing due (None): the last verification's values are compared.
    assert with_health(None, LAST, reading()).outcome is None
    assert with_health(None, LAST, None).outcome is None
    out, note = with_health(None, LAST, reading(mrtd="ff" * 48))
    assert isinstance(out, Rejected) and out.step == HEALTH_MISMATCH and note is None


def test_a_standing_verdict_notes_what_the_reading_now_says_of_it() -> None:
    # What status.attestation.healthMonitor should say: rewritten only when it changes.
    assert with_health(None, LAST, reading()) == (
        None,
        "image hash, MRTD, RTMR0, RTMR1, RTMR2, RTMR3 match the verified quote",
    )
    assert with_health(None, LAST, None) == (None, NO_HEALTH_READING)
    # No verdict of this operator's stands: nothing to note.
    assert with_health(None, None, reading()) == (None, None)


def test_other_outcomes_pass_unchanged() -> None:
    rejected = Rejected("quote_signature", "bad")
    assert with_health(rejected, LAST, reading(mrtd="ff" * 48)) == (rejected, None)
    assert with_health(rejected, LAST, reading(mrtd="ff" * 48)).outcome is rejected


def test_a_mismatch_closes_the_gate_with_its_own_reason_and_a_warning_event() -> None:
    opened = decide(
        GOOD,
        previous=None,
        pod="p1",
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW,
    )
    out = with_health(None, LAST, reading(mrtd="ff" * 48)).outcome
    assert isinstance(out, Rejected)
    d = decide(
        out,
        previous=opened.summary,
        pod="p1",
        gate=T,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW + timedelta(minutes=1),
        valid_until=LAST.valid_until,  # a standing verdict does not hold the gate open
    )
    assert d.gate is ConditionStatus.FALSE and d.reason is GateReason.HEALTH_MISMATCH
    assert d.event_reason == "HealthMismatch" and d.warning
    assert d.summary.failure is not None and d.summary.failure.startswith(HEALTH_MISMATCH)
    assert d.summary.health_monitor is not None and "other MRTD than" in d.summary.health_monitor
    # The same mismatch again records no second Event.
    again = decide(
        out,
        previous=d.summary,
        pod="p1",
        gate=ConditionStatus.FALSE,
        trust=TrustMode.TEST,
        reattest_seconds=900,
        now=NOW + timedelta(minutes=2),
    )
    assert again.reason is GateReason.HEALTH_MISMATCH and again.event_reason is None


def vm(uid: str, instance: int, health: GuestHealthReport | None) -> VmRecord:
    return VmRecord(
        instance=instance,
        namespace="ns",
        worker="w",
        pod="p",
        pod_uid=uid,
        pci=None,
        pid=1,
        running=True,
        health=health,
    )


def test_a_reading_is_taken_only_from_this_pods_vm_on_its_node() -> None:
    mine, other = reading(), reading(mrtd="ff" * 48)
    report = NodeReport(node="n1", agent_version="v", vms=[vm("u1", 3, mine), vm("u2", 4, other)])
    assert guest_health(report, node="n1", pod_uid="u1", instance=3) == mine
    assert guest_health(report, node="n1", pod_uid="u1", instance=4) is None
    assert guest_health(report, node="n2", pod_uid="u1", instance=3) is None
    assert guest_health(None, node="n1", pod_uid="u1", instance=3) is None
    assert guest_health(report, node="n1", pod_uid="u2", instance=4) == other
