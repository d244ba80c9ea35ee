"""When to verify a worker's evidence, and what a check's outcome means (pure).

The attestation step is the only writer of the launcher pod's readiness gate
(``cocoon.network/attested``). The evidence is the TDX quote the worker's guest
really obtained through the launcher's quote relay, as the node agent of the
pod's node reports it (:func:`cocoon_operator.policy.nodereports.relayed_quote`).
These functions decide, from what was observed, whether to run the full
verification now and what the gate, the worker's ``status.attestation`` and the
Events should say afterwards. The I/O (collateral, DCAP) lives in
:mod:`cocoon_operator.evidence`.

Rules, as an SRE would want them:

- Bad evidence (a signature that fails, a TCB status or image not accepted) takes
  the worker out of Ready at once: the VM is not what it claims to be.
- A VM whose latest relayed quote was captured more than
  ``spec.attestation.quoteMaxAgeSeconds`` ago (the guest refreshes hourly, plus a
  margin) is out of Ready (``EvidenceExpired``): it no longer shows it is what it was.
- A quote not reported for a moment (the agent's report lagging) keeps the last
  good verdict until that verdict expires, so a blip does not flap a fleet.
- Each new quote is verified in full; the same quote again every
  ``reattestSeconds`` (collateral, CRLs and TCB levels change). Whether a quote
  was verified is the operator's own memory, never read back from the status.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from cocoon_operator.api.memo import PerObject
from cocoon_operator.api.nodereport import GuestHealthReport
from cocoon_operator.api.v1alpha1 import (
    AttestationPolicy,
    AttestationSummary,
    ConditionStatus,
    GpuSummary,
)
from cocoon_operator.attestation import TdxPolicy, hex_set
from cocoon_operator.policy.conditions import rfc3339


class TrustMode(StrEnum):
    """Which root a quote's DCAP chain must end in: the operator's choice, not a worker's."""

    INTEL = "intel"
    TEST = "test"  # the local stack's test PKI, selected explicitly at start


class GateReason(StrEnum):
    VERIFIED = "EvidenceVerified"
    REJECTED = "EvidenceRejected"
    EXPIRED = "EvidenceExpired"
    UNREACHABLE = "WorkerUnreachable"
    HOST_REJECTED = "HostRejected"
    HOST_UNREPORTED = "HostNotReported"
    NO_QUOTE = "QuoteNotReported"
    HEALTH_MISMATCH = "HealthMismatch"


UNREACHABLE = "unreachable"  # the failed step when the worker could not be reached
NO_QUOTE = "no-quote"  # the node report holds no relayed quote for the pod's VM (yet)
QUOTE_EXPIRED = "quote-expired"  # the latest relayed quote is older than the policy allows
# The node agent's report does not vouch for the VM's host (see
# cocoon_operator.policy.nodereports.host_problem): wrong, or not reported yet.
HOST = "host"
HOST_UNREPORTED = "host-unreported"
# The guest's health monitor reports other measurements than the verified quote.
HEALTH_MISMATCH = "health-mismatch"
# Steps that say nothing against the VM itself: waited out during boot, and a
# verdict still valid survives them.
TRANSIENT_STEPS = frozenset({UNREACHABLE, HOST_UNREPORTED, NO_QUOTE})
# How the gate's message starts while it is held open on an older verdict.
HELD = "last evidence still valid"


def tdx_policy(spec: AttestationPolicy, trust: TrustMode) -> TdxPolicy:
    """The library policy for a worker: its spec's lists, the operator's trust root.

    Memoised on exactly the values it is built from (a fleet shares a handful of
    policies, and the spec is parsed afresh on every check).
    """
    return _tdx_policy(
        tuple(s.value for s in spec.accepted_tcb_statuses),
        tuple(spec.rejected_advisories),
        tuple(spec.allowed_image_hashes),
        trust,
    )


@functools.lru_cache(maxsize=256)
def _tdx_policy(
    tcb_statuses: tuple[str, ...],
    rejected_advisories: tuple[str, ...],
    image_hashes: tuple[str, ...],
    trust: TrustMode,
) -> TdxPolicy:
    return TdxPolicy(
        accepted_tcb_statuses=frozenset(tcb_statuses),
        rejected_advisories=frozenset(rejected_advisories),
        allowed_image_hashes=hex_set(list(image_hashes)) if image_hashes else None,
        # A relayed quote binds the RA-TLS key the guest chose (REPORTDATA = its
        # SHA-512), which the host cannot know in advance: recorded, not required.
        require_report_data_binding=False,
        require_production_root=trust is TrustMode.INTEL,
    )


def quote_expired(captured_at: datetime, *, now: datetime, max_age_seconds: int) -> str | None:
    """Why a quote captured at ``captured_at`` is too old at ``now``; None while it is fresh."""
    age = now - captured_at
    if age <= timedelta(seconds=max_age_seconds):
        return None
    return (
        f"the latest relayed quote was captured {int(age.total_seconds())} s ago"
        f" (at {rfc3339(captured_at)}), more than quoteMaxAgeSeconds={max_age_seconds}:"
        " the guest has not refreshed its evidence"
    )


@dataclass(frozen=True)
class Verified:
    """What a successful check established."""

    quote_sha256: str
    image_hash: str
    mrtd: str
    tcb_status: str
    report_data: str  # hex: the SHA-512 of the guest's RA-TLS key (COCOON's claims)
    captured_at: datetime  # when the host's quote service produced the quote
    valid_until: datetime  # the collateral's end or the quote's freshness, whichever is first
    gpu: GpuSummary | None = None  # when the operator verified the GPU's evidence too
    rtmr: tuple[str, ...] = ()  # hex RTMR0..3 of the verified quote
    health: str | None = None  # the health-monitor cross-check (see cross_check_health)


@dataclass(frozen=True)
class Rejected:
    """A check that failed: ``step`` is the library's error code or policy rule."""

    step: str
    message: str
    quote_sha256: str | None = None


@dataclass(frozen=True)
class LastVerification:
    """The operator's own memory of a worker's last full verification (never the status)."""

    pod_uid: str
    quote_sha256: str
    image_hash: str
    verified_at: datetime
    valid_until: datetime
    gpu_checked: bool
    policy: str = ""  # policy_digest of the spec it was verified against
    mrtd: str = ""
    rtmr: tuple[str, ...] = ()
    # The TCB status it found: the treasury's own TCB policy reads it from here
    # (policy/treasury.py tcb_refusal), never from status.attestation.
    tcb_status: str = ""
    revision: str = ""  # the worker revision whose pod it verified


@dataclass(frozen=True)
class HealthCheck:
    """The cross-check of a verified quote with the guest's health monitor."""

    mismatch: str | None  # why they differ; None when they agree or there is no reading
    note: str  # for status.attestation.healthMonitor


NO_HEALTH_READING = (
    "no reading: the host has not reached the guest's health monitor (vsock port 9999);"
    " not required"
)


def cross_check_health(
    *, image_hash: str, mrtd: str, rtmr: tuple[str, ...], health: GuestHealthReport | None
) -> HealthCheck:
    """Compare what the guest's health monitor reports with a verified quote's values.

    COCOON's monitor prints the TD's MRTD, RTMRs and the image hash computed over
    them from a fresh TDREPORT (``tee/cocoon/health-render.cpp:163-194``;
    ``tdx.cpp:62-95,126-140``): the same registers the quote signs. The reading is
    unsigned, so it can only take trust away: any value it gives that differs is a
    mismatch; a value it does not give is not compared; no reading at all is not a
    failure (the host may not reach the monitor), and the note says so.
    """
    if health is None:
        return HealthCheck(None, NO_HEALTH_READING)
    pairs: list[tuple[str, str | None, str]] = [
        ("image hash", health.image_hash, image_hash),
        ("MRTD", health.mrtd, mrtd),
    ]
    if health.rtmr is not None and len(rtmr) == 4:
        pairs += [
            (f"RTMR{i}", got, want)
            for i, (got, want) in enumerate(zip(health.rtmr, rtmr, strict=True))
        ]
    compared = [name for name, got, _ in pairs if got is not None]
    differ = [
        (name, got, want)
        for name, got, want in pairs
        if got is not None and got.lower() != want.lower()
    ]
    if differ:
        names = ", ".join(name for name, _, _ in differ)
        values = "; ".join(f"{n} {g[:16]}... (quote: {w[:16]}...)" for n, g, w in differ)
        return HealthCheck(
            f"the guest's health monitor (read at {health.checked_at}) reports other"
            f" {names} than the verified quote: {values}",
            f"mismatch on {names}",
        )
    if not compared:
        return HealthCheck(None, NO_HEALTH_READING)
    # No time in the note: it is rewritten only when what it says changes.
    return HealthCheck(None, f"{', '.join(compared)} match the verified quote")


class HealthVerdict(NamedTuple):
    """The check's outcome after the health-monitor cross-check (see :func:`with_health`)."""

    outcome: Outcome | None
    # For a verdict that stands (``outcome`` None): what status.attestation.healthMonitor
    # should say, a reading that arrived or went since it was written. None otherwise.
    note: str | None


def with_health(
    outcome: Outcome | None, last: LastVerification | None, health: GuestHealthReport | None
) -> HealthVerdict:
    """The check's outcome after the health-monitor cross-check.

    A fresh verification is compared with its own quote; a check that verified
    nothing (``None``: this operator's last verification of the same quote still
    stands) with that verification's values. A mismatch is a rejection
    (:data:`HEALTH_MISMATCH`): the gate closes, the operator forgets its verdict,
    and only a new full verification, with a reading that agrees, opens it again.
    One comparison per check, the note of a standing verdict included: it runs at
    every attestation check of every worker.
    """
    if isinstance(outcome, Verified):
        checked = cross_check_health(
            image_hash=outcome.image_hash, mrtd=outcome.mrtd, rtmr=outcome.rtmr, health=health
        )
        if checked.mismatch is not None:
            return HealthVerdict(
                Rejected(HEALTH_MISMATCH, checked.mismatch, outcome.quote_sha256), None
            )
        return HealthVerdict(dataclasses.replace(outcome, health=checked.note), None)
    if outcome is None and last is not None:
        checked = cross_check_health(
            image_hash=last.image_hash, mrtd=last.mrtd, rtmr=last.rtmr, health=health
        )
        if checked.mismatch is not None:
            return HealthVerdict(
                Rejected(HEALTH_MISMATCH, checked.mismatch, last.quote_sha256), None
            )
        return HealthVerdict(None, checked.note)
    return HealthVerdict(outcome, None)


def _policy_digest(spec: AttestationPolicy) -> str:
    """What a verification depends on in the worker's spec: a change re-verifies at once.
    Asked at every attestation check: kept per policy object while it lives."""
    return spec.model_dump_json(by_alias=True)


policy_digest = PerObject(_policy_digest)


Outcome = Verified | Rejected


BOOT_GRACE_SECONDS = 180


def still_booting(
    outcome: Outcome,
    *,
    previous: AttestationSummary | None,
    pod: str,
    started_at: datetime | None,
    now: datetime,
    grace_seconds: float = BOOT_GRACE_SECONDS,
) -> bool:
    """An unreachable VM that has never been verified and started moments ago is
    booting, not failing: nothing is written until it answers or the grace ends."""
    if not isinstance(outcome, Rejected) or outcome.step not in TRANSIENT_STEPS:
        return False
    if previous is not None and previous.pod == pod and previous.verified_at:
        return False
    return started_at is not None and now - started_at < timedelta(seconds=grace_seconds)


def needs_verification(
    last: LastVerification | None,
    *,
    pod_uid: str,
    gate: ConditionStatus | None,
    quote_sha256: str,
    reattest_seconds: int,
    now: datetime,
    gpu_required: bool = False,
    policy: str = "",
    gate_message: str | None = None,
) -> bool:
    """Whether the quote just read for ``pod_uid`` must be verified in full: anything
    but the very quote this operator verified for that pod, under the same policy
    (:func:`policy_digest`), less than ``reattest_seconds`` ago (``gpu_required``:
    GPU evidence it did not cover). A gate held open on an older verdict
    (``gate_message``) is confirmed by a verification as soon as a quote is back."""
    if last is None or gate is not ConditionStatus.TRUE or last.policy != policy:
        return True
    if gate_message is not None and gate_message.startswith(HELD):
        return True
    if gpu_required and not last.gpu_checked:
        return True
    if last.pod_uid != pod_uid or last.quote_sha256 != quote_sha256:
        return True
    # A clock set back is not a reason (fail-static): a new quote comes within the hour.
    return now >= last.verified_at + timedelta(seconds=reattest_seconds)


@dataclass(frozen=True)
class GateDecision:
    """The readiness gate to write, the summary to store, the Event to record."""

    gate: ConditionStatus
    reason: GateReason
    message: str
    summary: AttestationSummary
    event_reason: str | None = None
    event_message: str = ""
    warning: bool = False


def decide(
    outcome: Outcome,
    *,
    previous: AttestationSummary | None,
    pod: str,
    gate: ConditionStatus | None,
    trust: TrustMode,
    reattest_seconds: int,
    now: datetime,
    valid_until: datetime | None = None,
) -> GateDecision:
    """Turn one check's outcome into the gate, summary and Event (see the module rules).

    ``valid_until``: until when this operator's own last verification of the same
    pod stays good (from its memory, not the status), for a quote not reported
    for a moment.
    """
    stamp = rfc3339(now)
    if isinstance(outcome, Verified):
        expires = min(outcome.valid_until, now + timedelta(seconds=2 * reattest_seconds))
        summary = AttestationSummary(
            image_hash=outcome.image_hash,
            mrtd=outcome.mrtd,
            tcb_status=outcome.tcb_status,
            trust_root=trust.value,
            quote_sha256=outcome.quote_sha256,
            report_data=outcome.report_data,
            quote_captured_at=rfc3339(outcome.captured_at),
            pod=pod,
            verified_at=stamp,
            expires_at=rfc3339(expires),
            gpu=outcome.gpu,
            health_monitor=outcome.health,
        )
        what = "TDX and GPU evidence" if outcome.gpu is not None else "TDX evidence"
        message = f"{what} verified (TCB {outcome.tcb_status}, {trust.value} root)"
        event: str | None = None
        warning = False
        same_vm = previous is not None and previous.pod == pod
        if (
            same_vm
            and previous is not None
            and previous.image_hash
            not in (
                None,
                outcome.image_hash,
            )
        ):
            event, warning = "MeasurementsChanged", True
            message += (
                f" after the VM's measurements changed (image hash {previous.image_hash[:16]}..."
                f" -> {outcome.image_hash[:16]}...)"
            )
        elif gate is not ConditionStatus.TRUE or not same_vm:
            event = "Attested"
        elif previous is not None and previous.quote_sha256 != outcome.quote_sha256:
            event, message = "Reattested", message + " on a new quote"
        return GateDecision(
            ConditionStatus.TRUE,
            GateReason.VERIFIED,
            message,
            summary,
            event,
            f"image {outcome.image_hash[:16]}...: {message}",
            warning,
        )

    base = previous if previous is not None and previous.pod == pod else AttestationSummary(pod=pod)
    failure = f"{outcome.step}: {outcome.message}"
    repeated = previous is not None and previous.failure == failure
    # failedAt is when this failure began: a repeat writes nothing new.
    failed_at = previous.failed_at if repeated and previous and previous.failed_at else stamp
    summary = base.model_copy(update={"failure": failure, "failed_at": failed_at})
    event_reason = None if repeated else "AttestationFailed"
    if outcome.step in TRANSIENT_STEPS:
        unreachable = outcome.step == UNREACHABLE
        if gate is ConditionStatus.TRUE and valid_until is not None and now < valid_until:
            why = {UNREACHABLE: "worker unreachable", NO_QUOTE: "no quote reported"}.get(
                outcome.step, "host not reported"
            )
            return GateDecision(
                ConditionStatus.TRUE,
                GateReason.VERIFIED,
                f"{HELD} until {rfc3339(valid_until)}; {why}",
                summary,
                event_reason
                and {UNREACHABLE: "WorkerUnreachable", NO_QUOTE: "QuoteNotReported"}.get(
                    outcome.step, "HostNotReported"
                ),
                failure,
                warning=True,
            )
        if base.verified_at:
            reason = GateReason.EXPIRED
        elif outcome.step == NO_QUOTE:
            reason = GateReason.NO_QUOTE
        else:
            reason = GateReason.UNREACHABLE if unreachable else GateReason.HOST_UNREPORTED
        return GateDecision(
            ConditionStatus.FALSE, reason, failure, summary, event_reason, failure, warning=True
        )
    return _rejection(outcome, summary, event_reason, failure)


def _rejection(
    outcome: Rejected, summary: AttestationSummary, event_reason: str | None, failure: str
) -> GateDecision:
    """The closed gate for evidence that says something against the VM."""
    if outcome.step == QUOTE_EXPIRED:
        reason = GateReason.EXPIRED
    elif outcome.step == HEALTH_MISMATCH:
        reason = GateReason.HEALTH_MISMATCH
        event_reason = event_reason and "HealthMismatch"
        summary = summary.model_copy(update={"health_monitor": outcome.message})
    elif outcome.step == HOST:
        reason = GateReason.HOST_REJECTED
    else:
        reason = GateReason.REJECTED
    return GateDecision(
        ConditionStatus.FALSE,
        reason,
        failure,
        summary,
        event_reason,
        failure,
        warning=True,
    )
