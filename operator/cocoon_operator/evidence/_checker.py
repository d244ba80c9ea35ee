"""The evidence checker: a relayed quote in, an :data:`~cocoon_operator.policy.attestation.Outcome`
out.

The quote is the one the worker's guest obtained through the launcher's quote
relay, as the node agent of its node reported it. The RA-TLS certificate is
fetched only for ``spec.attestation.gpu.mode: Verify`` (the project's own GPU
evidence endpoint, which COCOON's worker does not serve): it must carry the key
the verified quote's REPORTDATA binds, and the GPU request is pinned to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from cocoon_operator.api.v1alpha1 import (
    AttestationPolicy,
    GpuAttestationPolicy,
    GpuEvidenceMode,
    GpuSummary,
)
from cocoon_operator.attestation import (
    Collateral,
    CollateralCache,
    GpuVerifier,
    TdxQuote,
    TdxVerifier,
    TrustedRoot,
    VerifiedGpuEvidence,
    VerifiedTdxQuote,
    check_ratls_binding,
    evaluate_tdx_policy,
    parse_ratls_certificate,
)
from cocoon_operator.attestation.errors import AttestationError
from cocoon_operator.policy.attestation import (
    UNREACHABLE,
    Outcome,
    Rejected,
    TrustMode,
    Verified,
    tdx_policy,
)
from cocoon_operator.workerapi import (
    CertificateChangedError,
    GpuEvidenceDocument,
    WorkerStatsError,
    fetch_gpu_evidence,
    fetch_ratls_certificate,
)

Fetch = Callable[[str, int], Awaitable[bytes]]
# (host, port, certificate SHA-256 to pin, nonce) -> the GPU's evidence from that VM
GpuFetch = Callable[[str, int, str, bytes], Awaitable[GpuEvidenceDocument]]
GPU_STEP = "gpu_"  # prefix of every GPU step, e.g. gpu_evidence_signature
CERTIFICATE_CACHE = 4096  # two quotes per worker for a fleet of 2,000
REPORT_DATA_STEP = "report_data"


@dataclass(frozen=True)
class _EngineVerdict:
    """The engine's verdict on one certificate's quote, and the collateral it used."""

    collateral: Collateral
    verified: VerifiedTdxQuote


class EvidenceChecker:
    """Verify workers' relayed TDX quotes against one pinned root.

    One instance serves the whole fleet: parsed quotes, PCK chains and collateral
    are cached, and the engine's verdict on an unchanged quote with unchanged
    collateral is reused (dates are checked again on every call).
    """

    def __init__(
        self,
        *,
        root: TrustedRoot,
        trust: TrustMode,
        collateral: CollateralCache,
        fetch: Fetch | None = None,
        gpu: GpuVerifier | None = None,
        gpu_fetch: GpuFetch | None = None,
        nonce: Callable[[], bytes] = lambda: secrets.token_bytes(32),
        timeout_seconds: float = 5.0,
        remembered_verdicts: int = CERTIFICATE_CACHE,
    ) -> None:
        if trust is TrustMode.INTEL and not root.production:
            raise ValueError("a non-production root needs TrustMode.TEST, chosen explicitly")
        self.trust = trust
        self._verifier = TdxVerifier(root)
        self._collateral = collateral
        self._timeout = timeout_seconds
        self._fetch: Fetch = fetch if fetch is not None else self._fetch_tls
        self._gpu = gpu
        self._gpu_fetch: GpuFetch = gpu_fetch if gpu_fetch is not None else self._fetch_gpu
        self._nonce = nonce
        # Parsed relayed quotes, by SHA-256 of their bytes.
        self._quotes: OrderedDict[str, TdxQuote] = OrderedDict()
        # The engine's verdict per quote or certificate (see _engine_verdict).
        self._verdicts: OrderedDict[str, _EngineVerdict] = OrderedDict()
        self._remembered = remembered_verdicts

    def _quote(self, fingerprint: str, raw: bytes) -> TdxQuote:
        hit = self._quotes.get(fingerprint)
        if hit is not None:
            self._quotes.move_to_end(fingerprint)
            return hit
        quote = self._verifier.parse(raw)
        self._quotes[fingerprint] = quote
        while len(self._quotes) > CERTIFICATE_CACHE:
            self._quotes.popitem(last=False)
        return quote

    def _engine_verdict(
        self, fingerprint: str, quote: TdxQuote, collateral: Collateral, now: datetime
    ) -> VerifiedTdxQuote:
        """DCAP's verdict on ``quote`` with ``collateral`` at ``now``.

        A guest asks for one quote an hour and is re-attested every
        ``reattestSeconds`` in between: the engine's inputs (the quote's bytes and
        the collateral object) are then the same, and only ``now`` moved. What
        ``now`` decides is checked again on every call: every collateral window
        here; the engine itself runs again for a new quote, for collateral the
        cache refreshed (a TCB recovery, a new CRL) and when time went backwards.
        """
        hit = self._verdicts.get(fingerprint)
        if hit is not None and hit.collateral is collateral and hit.verified.verified_at <= now:
            collateral.check_time(now)
            self._verdicts.move_to_end(fingerprint)
            return dataclasses.replace(hit.verified, verified_at=now)
        verified = self._verifier.verify(quote, collateral, now=now)
        if self._remembered > 0:
            self._verdicts[fingerprint] = _EngineVerdict(collateral, verified)
            while len(self._verdicts) > self._remembered:
                self._verdicts.popitem(last=False)
        return verified

    async def _fetch_tls(self, host: str, port: int) -> bytes:
        return await fetch_ratls_certificate(host, port, timeout_seconds=self._timeout)

    async def _fetch_gpu(
        self, host: str, port: int, certificate_sha256: str, nonce: bytes
    ) -> GpuEvidenceDocument:
        return await fetch_gpu_evidence(
            host,
            port,
            certificate_sha256=certificate_sha256,
            nonce=nonce,
            timeout_seconds=self._timeout,
        )

    async def fetch(self, host: str, port: int) -> bytes | Rejected:
        """The certificate ``host:port`` presents, or why none could be had."""
        try:
            return await self._fetch(host, port)
        except (OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            return Rejected(UNREACHABLE, f"no certificate from {host}:{port}: {detail}")

    async def verify_quote(
        self,
        raw: bytes,
        *,
        captured_at: datetime,
        requested_report_data: bytes | None,
        policy: AttestationPolicy,
        now: datetime,
        endpoint: tuple[str, int] | None = None,
    ) -> Outcome:
        """Verify a relayed quote in full: parsing, the PCK chain to the pinned root,
        collateral and TCB (DCAP), then the worker's policy (TCB statuses, advisories,
        allowed image hashes; the production root unless the operator trusts a test
        one); then, with ``policy.gpu.mode: Verify``, the GPU's evidence from ``endpoint``.

        ``requested_report_data``: what the guest asked the quote for, as the relay
        read it from the request; the quote must carry exactly that.
        """
        fingerprint = hashlib.sha256(raw).hexdigest()
        try:
            quote = self._quote(fingerprint, raw)
            if requested_report_data is not None and not hmac.compare_digest(
                quote.body.report_data, requested_report_data
            ):
                return Rejected(
                    REPORT_DATA_STEP,
                    "the quote's REPORTDATA is not what the guest asked to be quoted",
                    fingerprint,
                )
            key = self._verifier.collateral_key(quote, now=now)
            collateral = await self._collateral.get(key, now=now)
            verified = self._engine_verdict(fingerprint, quote, collateral, now)
        except AttestationError as exc:
            return Rejected(exc.code, str(exc), fingerprint)
        verdict = evaluate_tdx_policy(verified, tdx_policy(policy, self.trust))
        if not verdict.trusted:
            rule = verdict.failed_rule.value if verdict.failed_rule else "policy"
            return Rejected(rule, verdict.reason, fingerprint)
        gpu: GpuSummary | None = None
        if policy.gpu.mode is GpuEvidenceMode.VERIFY:
            checked = await self._gpu_for_quote(
                policy.gpu, endpoint, quote.body.report_data, fingerprint, now=now
            )
            if isinstance(checked, Rejected):
                return checked
            gpu = checked
        fresh_until = captured_at + timedelta(seconds=policy.quote_max_age_seconds)
        return Verified(
            quote_sha256=fingerprint,
            image_hash=verified.image_hash.hex(),
            mrtd=verified.mrtd.hex(),
            rtmr=tuple(r.hex() for r in verified.rtmr),
            tcb_status=verified.tcb_status,
            report_data=quote.body.report_data.hex(),
            captured_at=captured_at,
            valid_until=min(fresh_until, verified.collateral_expires_at),
            gpu=gpu,
        )

    async def _gpu_for_quote(
        self,
        policy: GpuAttestationPolicy,
        endpoint: tuple[str, int] | None,
        report_data: bytes,
        quote_sha256: str,
        *,
        now: datetime,
    ) -> GpuSummary | Rejected:
        """GPU evidence from the VM whose RA-TLS key the verified quote binds: the
        certificate there must carry that key, and the request is pinned to it."""
        if endpoint is None:
            return Rejected(GPU_STEP + "unsupported", "GPU evidence cannot be checked here")
        fetched = await self.fetch(*endpoint)
        if isinstance(fetched, Rejected):
            return Rejected(fetched.step, fetched.message, quote_sha256)
        try:
            cert = parse_ratls_certificate(fetched)
            cert.check_signature()
            cert.check_validity(now=now)
        except AttestationError as exc:
            return Rejected(GPU_STEP + exc.code, f"GPU evidence: {exc}", quote_sha256)
        try:
            check_ratls_binding(cert, report_data)
        except AttestationError:
            # The guest may have refreshed its key since the quote: the next quote
            # will bind the new one. Transient, like a certificate rotated mid-check.
            return Rejected(
                UNREACHABLE,
                "GPU evidence: the VM's RA-TLS key is not the one the verified quote binds"
                " (refreshed since the quote, or not the attested VM)",
                quote_sha256,
            )
        checked = await self._verify_gpu(
            policy, endpoint, hashlib.sha256(fetched).hexdigest(), now=now
        )
        if isinstance(checked, Rejected):
            return Rejected(checked.step, checked.message, quote_sha256)
        return checked

    async def _gpu_document(
        self, endpoint: tuple[str, int], fingerprint: str, nonce: bytes
    ) -> GpuEvidenceDocument | Rejected:
        host, port = endpoint
        try:
            return await self._gpu_fetch(host, port, fingerprint, nonce)
        except CertificateChangedError as exc:
            # Rotated since it was fetched: the next check verifies the new one.
            return Rejected(UNREACHABLE, f"GPU evidence: {exc}", fingerprint)
        except WorkerStatsError as exc:
            return Rejected(GPU_STEP + "evidence", str(exc), fingerprint)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            detail = str(exc) or type(exc).__name__
            return Rejected(UNREACHABLE, f"no GPU evidence from {host}:{port}: {detail}")

    async def _verify_gpu(
        self,
        policy: GpuAttestationPolicy,
        endpoint: tuple[str, int] | None,
        fingerprint: str,
        *,
        now: datetime,
    ) -> GpuSummary | Rejected:
        """Ask the attested VM (pinned to ``fingerprint``) for its GPU's measurements over
        a fresh nonce and verify them: a relayed or replayed report fails the nonce, a
        report from outside the VM fails the pin."""
        if self._gpu is None or endpoint is None:
            return Rejected(
                GPU_STEP + "unsupported", "GPU evidence cannot be checked here", fingerprint
            )
        nonce = self._nonce()
        document = await self._gpu_document(endpoint, fingerprint, nonce)
        if isinstance(document, Rejected):
            return document
        try:
            evidence = self._gpu.verify(
                document.evidence, document.certificate_chain, now=now, expected_nonce=nonce
            )
        except AttestationError as exc:
            return Rejected(GPU_STEP + exc.code, f"GPU evidence: {exc}", fingerprint)
        problem = gpu_version_problem(policy, evidence)
        if problem is not None:
            return Rejected(problem[0], problem[1], fingerprint)
        return GpuSummary(
            driver_version=evidence.driver_version,
            vbios_version=evidence.vbios_version,
            device_certificate=evidence.device_certificate,
            measurements_checked=evidence.measurements_checked,
            revocation=evidence.device_revocation.value,
        )


def gpu_version_problem(
    policy: GpuAttestationPolicy, evidence: VerifiedGpuEvidence
) -> tuple[str, str] | None:
    """The (step, message) of the first version the policy does not allow, if any."""
    for field, value, allowed in (
        ("driver", evidence.driver_version, policy.allowed_driver_versions),
        ("vbios", evidence.vbios_version, policy.allowed_vbios_versions),
    ):
        if allowed and (value or "").lower() not in {a.lower() for a in allowed}:
            return (
                f"{GPU_STEP}{field}_version",
                f"GPU {field} version {value} is not in"
                f" spec.attestation.gpu.allowed{field.capitalize()}Versions",
            )
    return None
