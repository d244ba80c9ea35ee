"""The attestation step: the only writer of the launcher pod's readiness gate.

A timer per worker takes the latest TDX quote its VM's guest obtained through
the launcher's quote relay, from the node agent's report of the pod's node (in
the operator's own namespace: ``--node-report-namespace``; nothing a tenant can
write is read), checks it is fresh (``quoteMaxAgeSeconds``), verifies it in full
when it is new or ``reattestSeconds`` have passed, then writes the gate
condition on the pod and the summary in ``status.attestation``. When the gate
changes, the worker's reconcile runs at once and writes the summary together
with the Attested condition and the phase it derives from the gate.

Enabled by ``cocoon-operator run`` (see :func:`register`); the checker, its
pinned root and its collateral cache are built at startup from
:class:`AttestationOptions`, given to :func:`register`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import READINESS_GATE
from cocoon_operator.api.memo import PerObject
from cocoon_operator.api.nodereport import GuestHealthReport, RelayedQuote
from cocoon_operator.attestation import (
    CollateralCache,
    GpuVerifier,
    NoRevocationCheck,
    TrustedRoot,
    intel_sgx_root_ca,
    nvidia_device_root,
)
from cocoon_operator.attestation.pccs import PccsCollateralSource
from cocoon_operator.desired.launcher import revision
from cocoon_operator.evidence import EvidenceChecker
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.nodetracker import NodeReports
from cocoon_operator.handlers.reconciler import reconcile_body
from cocoon_operator.handlers.runtime import Deps, Indexes, Logger, Runtime, Tick
from cocoon_operator.policy.admission import GPU_VERIFY_UNAVAILABLE
from cocoon_operator.policy.attestation import (
    BOOT_GRACE_SECONDS,
    HOST,
    HOST_UNREPORTED,
    NO_QUOTE,
    QUOTE_EXPIRED,
    TRANSIENT_STEPS,
    GateDecision,
    LastVerification,
    Outcome,
    Rejected,
    TrustMode,
    Verified,
    decide,
    needs_verification,
    policy_digest,
    quote_expired,
    still_booting,
    with_health,
)
from cocoon_operator.policy.conditions import parse_rfc3339, rfc3339
from cocoon_operator.policy.nodereports import (
    HostProblem,
    NoQuote,
    guest_health,
    host_problem,
    relayed_quote,
)
from cocoon_operator.policy.worker import PodFacts

INTEL_PCS = "https://api.trustedservices.intel.com"
#: The failed step of a worker asking for gpu.mode Verify of an operator that does not allow it.
GPU_MODE_UNAVAILABLE = "gpu_mode_unavailable"


@dataclass(frozen=True)
class AttestationOptions:
    """What ``cocoon-operator run`` was told about trust and collateral."""

    pccs_url: str = INTEL_PCS
    # A test PKI's root (the local stack's). Never a default: the operator
    # trusts Intel's root unless this is given on the command line.
    test_root: Path | None = None
    # The test PKI's GPU device root; only with ``test_root`` (see cli.py).
    gpu_test_root: Path | None = None
    # --allow-gpu-verify-mode: without it, gpu.mode Verify never verifies (COCOON's
    # worker serves no GPU evidence endpoint).
    allow_gpu_verify: bool = False
    check_seconds: float = 10.0
    timeout_seconds: float = 5.0
    boot_grace_seconds: float = BOOT_GRACE_SECONDS
    # Collateral is refetched at least this often (see attestation DEFAULT_MAX_AGE).
    collateral_max_age_hours: float = 24.0


@dataclass
class Attestation:
    checker: EvidenceChecker
    session: aiohttp.ClientSession
    boot_grace_seconds: float = BOOT_GRACE_SECONDS
    check_seconds: float = 10.0
    allow_gpu_verify: bool = False


def _root(options: AttestationOptions) -> tuple[TrustedRoot, TrustMode]:
    if options.test_root is None:
        return intel_sgx_root_ca(), TrustMode.INTEL
    root = TrustedRoot.load(options.test_root.read_bytes(), label="test")
    if root.production:
        return root, TrustMode.INTEL  # Intel's own root given as a file: no test mode
    return root, TrustMode.TEST


def _gpu_verifier(options: AttestationOptions, trust: TrustMode) -> GpuVerifier:
    """NVIDIA's device root; a test root only on a stack that trusts a test DCAP root.

    Revocation is not checked (NVIDIA's OCSP needs the network and is a pluggable
    step): each summary says ``revocation: not_checked``, so nobody assumes it was.
    """
    root = nvidia_device_root()
    if options.gpu_test_root is not None and trust is TrustMode.TEST:
        root = TrustedRoot.load(options.gpu_test_root.read_bytes(), label="test GPU")
    return GpuVerifier(root, revocation=NoRevocationCheck())


def started(options: AttestationOptions, logger: Logger) -> Attestation:
    """The step's state at startup: the trusted roots, a collateral cache, an HTTP session."""
    root, trust = _root(options)
    if trust is TrustMode.TEST:
        logger.warning(
            "attestation trusts a TEST root (sha256 %s): for the local stack only",
            root.fingerprint,
        )
    session = aiohttp.ClientSession()
    collateral = CollateralCache(
        PccsCollateralSource(options.pccs_url, session),
        refresh_before_expiry=dt.timedelta(hours=1),
        max_age=dt.timedelta(hours=options.collateral_max_age_hours),
    )
    gpu = _gpu_verifier(options, trust)
    if not gpu.device_root.production:
        logger.warning(
            "GPU attestation trusts a TEST device root (sha256 %s): for the local stack only",
            gpu.device_root.fingerprint,
        )
    checker = EvidenceChecker(
        root=root,
        trust=trust,
        collateral=collateral,
        gpu=gpu,
        timeout_seconds=options.timeout_seconds,
    )
    return Attestation(
        checker,
        session,
        options.boot_grace_seconds,
        options.check_seconds,
        allow_gpu_verify=options.allow_gpu_verify,
    )


def _serving_pod(pods: list[PodFacts], rev: str) -> PodFacts | None:
    """The pod of the current revision whose VM runs at a known address."""
    for pod in pods:
        if (
            pod.revision == rev
            and not pod.deleting
            and pod.phase == "Running"
            and pod.host_ip
            and pod.instance is not None
        ):
            return pod
    return None


def _gate_condition(decision: GateDecision, now: dt.datetime) -> dict[str, Any]:
    return {
        "type": READINESS_GATE,
        "status": decision.gate.value,
        "reason": decision.reason.value,
        "message": decision.message[:1024],
        "lastProbeTime": rfc3339(now),
    }


def _host(reports: NodeReports | None, pod: PodFacts) -> HostProblem | None:
    """The node agent's objection to ``pod``'s host; None when it has none, or when the
    operator reads no node reports (``--node-report-namespace`` not given)."""
    if reports is None or pod.node is None or pod.uid is None:
        return None
    return host_problem(reports.current(pod.node), node=pod.node, pod_uid=pod.uid)


def _quote_for(reports: NodeReports | None, pod: PodFacts) -> RelayedQuote | NoQuote:
    """The latest relayed quote of ``pod``'s VM, from its node's report, and only there."""
    if reports is None:
        return NoQuote(
            "the operator reads no node reports (--node-report-namespace): relayed quotes"
            " come only from them"
        )
    if pod.node is None or pod.uid is None or pod.instance is None:
        return NoQuote("the pod's node, uid or instance is not known yet")
    return relayed_quote(
        reports.current(pod.node), node=pod.node, pod_uid=pod.uid, instance=pod.instance
    )


def _health_for(reports: NodeReports | None, pod: PodFacts) -> GuestHealthReport | None:
    """What the guest's health monitor of ``pod``'s VM last said, bound as its quote is."""
    if reports is None or pod.node is None or pod.uid is None or pod.instance is None:
        return None
    return guest_health(
        reports.reports.get(pod.node), node=pod.node, pod_uid=pod.uid, instance=pod.instance
    )


def _fingerprint(quote: RelayedQuote) -> str | None:
    """The SHA-256 of the quote's bytes; None when it is not base64. Every check
    compares it with the last verified quote's, nearly always the same, so it is
    kept per reported quote object (about 5 KB to decode and hash each time)."""
    try:
        return hashlib.sha256(quote.quote_bytes()).hexdigest()
    except ValueError:
        return None


_quote_fingerprint = PerObject(_fingerprint)


def _quote_facts(quote: RelayedQuote) -> tuple[str, dt.datetime, bytes | None] | Rejected:
    """The quote's fingerprint, capture time and requested REPORTDATA."""
    captured = parse_rfc3339(quote.captured_at)
    fingerprint = _quote_fingerprint(quote)
    if fingerprint is None:
        return Rejected("quote_format", "the reported quote is not base64")
    requested = bytes.fromhex(quote.report_data) if quote.report_data else None
    if captured is None:
        return Rejected("quote_format", f"capture time {quote.captured_at!r} is not RFC 3339")
    return fingerprint, captured, requested


async def _outcome(
    state: Attestation,
    quote: RelayedQuote | NoQuote,
    *,
    deps: Deps,
    host: HostProblem | None,
    worker: v1alpha1.CocoonWorker,
    pod: PodFacts,
    last: LastVerification | None,
    now: dt.datetime,
) -> Outcome | None:
    """The check's outcome: the host's objection, the quote's absence or age, the
    verdict on it; None when this operator verified that very quote recently enough."""
    if host is not None:
        # The host does not vouch for the VM: no verdict on its evidence yet.
        step = HOST if host.definite else HOST_UNREPORTED
        if host.definite:
            deps.metrics.attestations.labels("rejected", step).inc()
        return Rejected(step, host.message)
    if isinstance(quote, NoQuote):
        deps.metrics.attestation_checks.labels("none").inc()
        return Rejected(NO_QUOTE, quote.message)
    deps.metrics.attestation_checks.labels("relayed-quote").inc()
    facts = _quote_facts(quote)
    if isinstance(facts, Rejected):
        return facts
    fingerprint, captured, requested = facts
    policy = worker.spec.attestation
    stale = quote_expired(captured, now=now, max_age_seconds=policy.quote_max_age_seconds)
    if stale is not None:
        deps.metrics.attestations.labels("rejected", QUOTE_EXPIRED).inc()
        return Rejected(QUOTE_EXPIRED, stale, fingerprint)
    assert pod.uid is not None  # a quote was matched to it
    due = needs_verification(
        last,
        pod_uid=pod.uid,
        gate=pod.attested_gate,
        quote_sha256=fingerprint,
        reattest_seconds=policy.reattest_seconds,
        now=now,
        gpu_required=policy.gpu.mode is v1alpha1.GpuEvidenceMode.VERIFY,
        policy=policy_digest(policy),
        gate_message=pod.attested_message,
    )
    if not due:
        return None
    outcome: Outcome
    if policy.gpu.mode is v1alpha1.GpuEvidenceMode.VERIFY and not state.allow_gpu_verify:
        # Admission refuses it; a spec that got in while the webhook was down fails
        # closed here, naming the field, rather than being silently checked less.
        outcome = Rejected(GPU_MODE_UNAVAILABLE, GPU_VERIFY_UNAVAILABLE, fingerprint)
    else:
        # Urgent while the gate is not open: this check decides whether it opens.
        gate_open = pod.attested_gate is v1alpha1.ConditionStatus.TRUE
        async with deps.probes.slot(urgent=not gate_open):
            outcome = await state.checker.verify_quote(
                quote.quote_bytes(),  # decoded again only for a verification
                captured_at=captured,
                requested_report_data=requested,
                policy=policy,
                now=now,
                endpoint=pod.ratls_endpoint(),
            )
    if isinstance(outcome, Rejected):
        deps.metrics.attestations.labels("rejected", outcome.step).inc()
    else:
        deps.metrics.attestations.labels("verified", "").inc()
    return outcome


async def attest_worker(state: Attestation, tick: Tick) -> None:
    """Check one worker's relayed quote when its VM runs; a no-op when nothing is due."""
    current = tick.current()
    if current is None:
        return  # being deleted, or a spec the reconcile reports unparseable
    body, worker = current
    deps, logger, meta, reports = (
        tick.deps,
        tick.logger,
        body["metadata"],
        tick.runtime.node_reports,
    )
    pod = _serving_pod(tick.pods(), revision(worker.spec))
    if pod is None or pod.uid is None:
        return
    key = tick.key
    # What this operator itself verified last: the only record that can spare a
    # full verification (the status is output, and anyone may write it).
    verified = deps.trust.verified
    last = verified.get(key)
    if last is not None and last.pod_uid != pod.uid:
        last = None  # a new pod never inherits another pod's verdict
    policy = worker.spec.attestation
    previous = worker.status.attestation
    now = deps.clock()
    outcome = await _outcome(
        state,
        _quote_for(reports, pod),
        deps=deps,
        host=_host(reports, pod),
        worker=worker,
        pod=pod,
        last=last,
        now=now,
    )
    # The guest's health monitor must agree with the verified quote (where the host reads it).
    outcome, standing_note = with_health(outcome, last, _health_for(reports, pod))
    if outcome is None:
        await _note_health(deps, meta, previous, standing_note)
        return
    if isinstance(outcome, Verified):
        verified[key] = LastVerification(
            revision=revision(worker.spec),
            pod_uid=pod.uid,
            quote_sha256=outcome.quote_sha256,
            image_hash=outcome.image_hash,
            verified_at=now,
            valid_until=min(
                outcome.valid_until, now + dt.timedelta(seconds=2 * policy.reattest_seconds)
            ),
            gpu_checked=outcome.gpu is not None,
            policy=policy_digest(policy),
            mrtd=outcome.mrtd,
            rtmr=outcome.rtmr,
            tcb_status=outcome.tcb_status,
        )
    elif outcome.step not in TRANSIENT_STEPS:
        verified.pop(key, None)  # rejected: nothing verified stands
    if still_booting(
        outcome,
        previous=previous,
        pod=pod.name,
        started_at=parse_rfc3339(pod.started_at),
        now=now,
        grace_seconds=state.boot_grace_seconds,
    ):
        return
    kept = verified.get(key)
    decision = decide(
        outcome,
        previous=previous,
        pod=pod.name,
        gate=pod.attested_gate,
        trust=state.checker.trust,
        reattest_seconds=policy.reattest_seconds,
        now=now,
        valid_until=kept.valid_until if kept is not None and kept.pod_uid == pod.uid else None,
    )
    await _apply(
        deps,
        body,
        pod,
        decision,
        previous=previous,
        now=now,
        logger=logger,
        then=(tick.runtime, tick.indexes),
    )


async def _note_health(
    deps: Deps,
    meta: Any,
    previous: v1alpha1.AttestationSummary | None,
    note: str | None,
) -> None:
    """Say in status what the health cross-check found for a verdict that stands (a
    reading that arrived after the verification, or went): written only on a change."""
    if note is None or previous is None or previous.health_monitor == note:
        return
    await deps.patch_status(
        meta["namespace"], meta["name"], {"attestation": {"healthMonitor": note}}
    )


def summary_change(
    decision: GateDecision, previous: v1alpha1.AttestationSummary | None
) -> dict[str, Any] | None:
    """``status.attestation`` as a merge patch, None when the decision changes nothing."""
    summary = decision.summary.model_dump(mode="json", by_alias=True, exclude_none=True)
    old = previous.model_dump(mode="json", by_alias=True, exclude_none=True) if previous else None
    if summary == old:
        return None
    # A merge patch keeps keys it does not mention: clear the dropped ones.
    dropped = {key: None for key in (old or {}).keys() - summary.keys()}
    return {"attestation": summary | dropped}


async def _apply(
    deps: Deps,
    body: kopf.Body,
    pod: PodFacts,
    decision: GateDecision,
    *,
    previous: v1alpha1.AttestationSummary | None,
    now: dt.datetime,
    logger: Logger,
    then: tuple[Runtime, Indexes],
) -> None:
    """Write the decision: the gate, an Event, the summary; ``then`` (the runtime and
    the indexes) for the reconcile that follows a gate change."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    change = summary_change(decision, previous)
    unchanged = (
        pod.attested_gate is decision.gate
        and pod.attested_reason == decision.reason.value
        and pod.attested_message == decision.message[:1024]
    )

    async def gate_and_event() -> None:
        if not unchanged:
            condition = _gate_condition(decision, now)
            if pod.attested_gate is not decision.gate:
                condition["lastTransitionTime"] = rfc3339(now)
            await deps.patch_pod_condition(namespace, pod.name, condition)
        if decision.event_reason:
            await deps.record(
                body, decision.event_reason, decision.event_message, warning=decision.warning
            )
            log = logger.warning if decision.warning else logger.info
            log("%s: %s", decision.event_reason, decision.event_message)

    if unchanged:
        if change is not None:
            await deps.patch_status(namespace, name, change)
        await gate_and_event()
        return
    # A new gate: written first, under the worker's lock, so the summary never
    # claims a verdict the gate does not carry yet. The reconcile then writes
    # the summary with the Attested condition and phase in one status write,
    # and the gate's own watch event, reconciled after it, finds nothing left.
    runtime, indexes = then
    await reconcile_body(runtime, body, indexes, logger, first=gate_and_event, recorded=change)


def register(
    registry: kopf.OperatorRegistry, runtime: Runtime, options: AttestationOptions
) -> Check:
    """Add the attestation step's start and stop to ``registry``; its check, every
    ``options.check_seconds``, for the checks' scheduler (:mod:`.checks`). Its
    state (roots, collateral cache, HTTP session) lives here, made at startup."""
    step: list[Attestation] = []

    async def start(*, logger: Logger, **_: Any) -> None:
        step.append(started(options, logger))

    async def stop(**_: Any) -> None:
        for state in step:
            await state.session.close()

    async def check(tick: Tick) -> None:
        if step:
            await attest_worker(step[0], tick)

    kopf.on.startup(id="attestation-start", registry=registry)(start)
    kopf.on.cleanup(id="attestation-stop", registry=registry)(stop)
    return Check("attestation", check, options.check_seconds)
