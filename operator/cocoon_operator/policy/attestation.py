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


UNREACHABLE = "unreachable"  # the failed step when the worker could not be reached
NO_QUOTE = "no-quote"  # the node report holds no relayed quote for the pod's VM (yet)
QUOTE_EXPIRED = "quote-expired"  # the latest relayed quote is older than the policy allows
# The node agent's report does not vouch for the VM's host (see
# cocoon_operator.policy.nodereports.host_problem): wrong, or not reported yet.
HOST = "host"
HOST_UNREPORTED = "host-unreported"
# Steps that say nothing against the VM itself: waited out during boot, and a
# verdict still valid survives them.
TRANSIENT_STEPS = frozenset({UNREACHABLE, HOST_UNREPORTED, NO_QUOTE})
# How the gate's message starts while it is held open on an older verdict.
HELD = "last evidence still valid"


def tdx_policy(spec: AttestationPolicy, trust: TrustMode) -> TdxPolicy:
    """The library policy for a worker: its spec's lists, the operator's trust root."""
    return TdxPolicy(
        accepted_tcb_statuses=frozenset(s.value for s in spec.accepted_tcb_statuses),
        rejected_advisories=frozenset(spec.rejected_advisories),
        allowed_image_hashes=hex_set(spec.allowed_image_hashes)
        if spec.allowed_image_hashes
        else None,
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
    # The TCB status it found: the treasury's own TCB policy reads it from here
    # (policy/treasury.py tcb_refusal), never from status.attestation.
    tcb_status: str = ""


def policy_digest(spec: AttestationPolicy) -> str:
    """What a verification depends on in the worker's spec: a change re-verifies at once."""
    return spec.model_dump_json(by_alias=True)


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
    if outcome.step == QUOTE_EXPIRED:
        reason = GateReason.EXPIRED
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
