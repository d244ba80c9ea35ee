"""The evidence checker: certificate in, :data:`~cocoon_operator.policy.attestation.Outcome` out."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime

from cocoon_operator.api.v1alpha1 import AttestationPolicy
from cocoon_operator.attestation import (
    CollateralCache,
    RaTlsCertificate,
    TdxQuote,
    TdxVerifier,
    TrustedRoot,
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
from cocoon_operator.workerapi import fetch_ratls_certificate

Fetch = Callable[[str, int], Awaitable[bytes]]
CERTIFICATE_CACHE = 4096  # two certificates per worker for a fleet of 2,000


class EvidenceChecker:
    """Verify workers' RA-TLS evidence against one pinned root.

    One instance serves the whole fleet: parsed PCK chains and collateral are
    cached, so a re-attestation costs a TLS handshake and the engine's own
    signature checks.
    """

    def __init__(
        self,
        *,
        root: TrustedRoot,
        trust: TrustMode,
        collateral: CollateralCache,
        fetch: Fetch | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        if trust is TrustMode.INTEL and not root.production:
            raise ValueError("a non-production root needs TrustMode.TEST, chosen explicitly")
        self.trust = trust
        self._verifier = TdxVerifier(root)
        self._collateral = collateral
        self._timeout = timeout_seconds
        self._fetch: Fetch = fetch if fetch is not None else self._fetch_tls
        # Parsed certificates (and their quotes) whose self-signature verified, by SHA-256 of
        # their DER: both are properties of the bytes alone, and a worker
        # presents the same certificate for an hour. Dates and everything in
        # the quote are checked on every verification.
        self._certificates: OrderedDict[str, tuple[RaTlsCertificate, TdxQuote]] = OrderedDict()

    def _certificate(self, fingerprint: str, der: bytes) -> tuple[RaTlsCertificate, TdxQuote]:
        hit = self._certificates.get(fingerprint)
        if hit is not None:
            self._certificates.move_to_end(fingerprint)
            return hit
        cert = parse_ratls_certificate(der)
        cert.check_signature()
        entry = (cert, self._verifier.parse(cert.quote))
        self._certificates[fingerprint] = entry
        while len(self._certificates) > CERTIFICATE_CACHE:
            self._certificates.popitem(last=False)
        return entry

    async def _fetch_tls(self, host: str, port: int) -> bytes:
        return await fetch_ratls_certificate(host, port, timeout_seconds=self._timeout)

    async def fetch(self, host: str, port: int) -> bytes | Rejected:
        """The certificate ``host:port`` presents, or why none could be had."""
        try:
            return await self._fetch(host, port)
        except (OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            return Rejected(UNREACHABLE, f"no certificate from {host}:{port}: {detail}")

    async def verify(self, der: bytes, *, policy: AttestationPolicy, now: datetime) -> Outcome:
        """Verify a fetched certificate: self-signature, quote, collateral, policy."""
        fingerprint = hashlib.sha256(der).hexdigest()
        try:
            cert, quote = self._certificate(fingerprint, der)
            cert.check_validity(now=now)
            key = self._verifier.collateral_key(quote, now=now)
            collateral = await self._collateral.get(key, now=now)
            verified = self._verifier.verify(quote, collateral, now=now)
        except AttestationError as exc:
            return Rejected(exc.code, str(exc), fingerprint)
        verdict = evaluate_tdx_policy(
            verified, tdx_policy(policy, self.trust), binding=cert.binding
        )
        if not verdict.trusted:
            rule = verdict.failed_rule.value if verdict.failed_rule else "policy"
            return Rejected(rule, verdict.reason, fingerprint)
        return Verified(
            certificate_sha256=fingerprint,
            image_hash=verified.image_hash.hex(),
            mrtd=verified.mrtd.hex(),
            tcb_status=verified.tcb_status,
            valid_until=min(cert.certificate.not_valid_after_utc, verified.collateral_expires_at),
        )
