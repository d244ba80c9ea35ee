"""When to verify a worker's evidence, and what a check's outcome means (pure).

The attestation step is the only writer of the launcher pod's readiness gate
(``cocoon.network/attested``). These functions decide, from what was observed,
whether to run the full verification now and what the gate, the worker's
``status.attestation`` and the Events should say afterwards. The I/O (TLS
handshake, collateral, DCAP) lives in :mod:`cocoon_operator.evidence`.

Rules, as an SRE would want them:

- Bad evidence (a signature that fails, a TCB status or image not accepted) takes
  the worker out of Ready at once: the VM is not what it claims to be.
- An unreachable worker keeps its last good verdict until that verdict expires
  (``2 x reattestSeconds`` after it was made, or the certificate's end, if
  sooner), so a network blip does not flap a fleet; then the gate drops.
- Evidence is verified again every ``reattestSeconds`` and whenever the worker
  presents another certificate (COCOON rotates it hourly), never less often.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cocoon_operator.api.v1alpha1 import (
    AttestationPolicy,
    AttestationSummary,
    ConditionStatus,
    GpuSummary,
)
from cocoon_operator.attestation import TdxPolicy, hex_set
from cocoon_operator.policy.conditions import parse_rfc3339, rfc3339


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


UNREACHABLE = "unreachable"  # the failed step when no certificate could be fetched
# The node agent's report does not vouch for the VM's host (see
# cocoon_operator.policy.nodereports.host_problem): wrong, or not reported yet.
HOST = "host"
HOST_UNREPORTED = "host-unreported"
# Steps that say nothing against the VM itself: waited out during boot, and a
# verdict still valid survives them.
TRANSIENT_STEPS = frozenset({UNREACHABLE, HOST_UNREPORTED})


def tdx_policy(spec: AttestationPolicy, trust: TrustMode) -> TdxPolicy:
    """The library policy for a worker: its spec's lists, the operator's trust root."""
    return TdxPolicy(
        accepted_tcb_statuses=frozenset(s.value for s in spec.accepted_tcb_statuses),
        rejected_advisories=frozenset(spec.rejected_advisories),
        allowed_image_hashes=hex_set(spec.allowed_image_hashes)
        if spec.allowed_image_hashes
        else None,
        require_report_data_binding=True,
        require_production_root=trust is TrustMode.INTEL,
    )


@dataclass(frozen=True)
class Verified:
    """What a successful check established."""

    certificate_sha256: str
    image_hash: str
    mrtd: str
    tcb_status: str
    valid_until: datetime  # the certificate's or the collateral's end, whichever is first
    gpu: GpuSummary | None = None  # when the operator verified the GPU's evidence too


@dataclass(frozen=True)
class Rejected:
    """A check that failed: ``step`` is the library's error code or policy rule."""

    step: str
    message: str
    certificate_sha256: str | None = None


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
    summary: AttestationSummary | None,
    *,
    pod: str,
    gate: ConditionStatus | None,
    certificate_sha256: str,
    reattest_seconds: int,
    now: datetime,
    gpu_required: bool = False,
) -> bool:
    """Whether the certificate just fetched from ``pod`` must be verified in full
    (``gpu_required``: the policy now asks for GPU evidence the last check did not cover)."""
    if summary is None or gate is not ConditionStatus.TRUE or summary.failure:
        return True
    if gpu_required and summary.gpu is None:
        return True
    if summary.pod != pod or summary.certificate_sha256 != certificate_sha256:
        return True
    verified_at = parse_rfc3339(summary.verified_at)
    return verified_at is None or now >= verified_at + timedelta(seconds=reattest_seconds)


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


def _still_valid(summary: AttestationSummary | None, pod: str, now: datetime) -> bool:
    if summary is None or summary.pod != pod or summary.verified_at is None:
        return False
    expires = parse_rfc3339(summary.expires_at)
    return expires is not None and now < expires


def decide(
    outcome: Outcome,
    *,
    previous: AttestationSummary | None,
    pod: str,
    gate: ConditionStatus | None,
    trust: TrustMode,
    reattest_seconds: int,
    now: datetime,
) -> GateDecision:
    """Turn one check's outcome into the gate, summary and Event (see the module rules)."""
    stamp = rfc3339(now)
    if isinstance(outcome, Verified):
        expires = min(outcome.valid_until, now + timedelta(seconds=2 * reattest_seconds))
        summary = AttestationSummary(
            image_hash=outcome.image_hash,
            mrtd=outcome.mrtd,
            tcb_status=outcome.tcb_status,
            trust_root=trust.value,
            certificate_sha256=outcome.certificate_sha256,
            pod=pod,
            verified_at=stamp,
            expires_at=rfc3339(expires),
            gpu=outcome.gpu,
        )
        what = "TDX and GPU evidence" if outcome.gpu is not None else "TDX evidence"
        message = f"{what} verified (TCB {outcome.tcb_status}, {trust.value} root)"
        event: str | None = None
        if gate is not ConditionStatus.TRUE or previous is None or previous.pod != pod:
            event = "Attested"
        elif previous.certificate_sha256 != outcome.certificate_sha256:
            event, message = "Reattested", message + " after the certificate changed"
        return GateDecision(
            ConditionStatus.TRUE,
            GateReason.VERIFIED,
            message,
            summary,
            event,
            f"image {outcome.image_hash[:16]}...: {message}",
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
        if gate is ConditionStatus.TRUE and _still_valid(previous, pod, now):
            why = "worker unreachable" if unreachable else "host not reported"
            return GateDecision(
                ConditionStatus.TRUE,
                GateReason.VERIFIED,
                f"last evidence still valid until {base.expires_at}; {why}",
                summary,
                event_reason and ("WorkerUnreachable" if unreachable else "HostNotReported"),
                failure,
                warning=True,
            )
        if base.verified_at:
            reason = GateReason.EXPIRED
        else:
            reason = GateReason.UNREACHABLE if unreachable else GateReason.HOST_UNREPORTED
        return GateDecision(
            ConditionStatus.FALSE, reason, failure, summary, event_reason, failure, warning=True
        )
    return GateDecision(
        ConditionStatus.FALSE,
        GateReason.HOST_REJECTED if outcome.step == HOST else GateReason.REJECTED,
        failure,
        summary,
        event_reason,
        failure,
        warning=True,
    )
