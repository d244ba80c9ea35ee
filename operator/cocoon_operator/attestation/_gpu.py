"""NVIDIA H100/H200 attestation report verification (SPDM + device chain + RIMs)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cocoon_operator.attestation._chain import ChainVerifier
from cocoon_operator.attestation._revocation import (
    RevocationChecker,
    RevocationStatus,
    enforce_revocation,
)
from cocoon_operator.attestation._rim import (
    RimVerifier,
    VerifiedRim,
    compare_measurements,
)
from cocoon_operator.attestation._roots import TrustedRoot
from cocoon_operator.attestation._spdm import SpdmMeasurements, parse_spdm_measurements
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.errors import (
    EvidenceSignatureError,
    MeasurementMismatchError,
    NonceMismatchError,
    SpdmFormatError,
)


@dataclass(frozen=True)
class VerifiedGpuEvidence:
    """A GPU report whose signature, chain, nonce and RIM comparison all passed."""

    measurements: SpdmMeasurements
    driver_version: str | None
    vbios_version: str | None
    fwid: bytes | None
    device_certificate: str  # subject of the signing (leaf) certificate
    device_revocation: RevocationStatus
    rims: tuple[VerifiedRim, ...]
    measurements_checked: int
    verified_at: datetime

    @property
    def nonce(self) -> bytes:
        return self.measurements.requester_nonce


class GpuVerifier:
    """Verify GET_MEASUREMENTS evidence from one GPU.

    Steps (the first failure raises; its ``code`` names the step): parse
    (``spdm_format``); requester nonce equals the expected one (``nonce_mismatch``);
    device chain to the pinned NVIDIA device root at ``now`` (``trust_root`` /
    ``certificate_chain`` / ``certificate_validity``); device chain revocation
    (``revoked``); P-384 signature over SHA-384(request || response minus
    signature) with the leaf key (``evidence_signature``); each RIM verified
    (``rim_signature``...), its version equal to the report's driver or VBIOS
    version, and every active RIM measurement equal to the report's
    (``measurement_mismatch``).
    """

    def __init__(
        self,
        device_root: TrustedRoot,
        *,
        revocation: RevocationChecker,
        rim_root: TrustedRoot | None = None,
        chain_verifier: ChainVerifier | None = None,
    ) -> None:
        self.device_root = device_root
        self.revocation = revocation
        self._chains = chain_verifier if chain_verifier is not None else ChainVerifier()
        self._rims = (
            RimVerifier(rim_root, revocation=revocation, chain_verifier=self._chains)
            if rim_root is not None
            else None
        )

    def verify_rim(self, document: bytes, *, now: datetime) -> VerifiedRim:
        if self._rims is None:
            raise ValueError("GpuVerifier was built without a RIM root")
        return self._rims.verify(document, now=now)

    def verify(
        self,
        evidence: bytes,
        certificate_chain: bytes,
        *,
        now: datetime,
        expected_nonce: bytes | None = None,
        rims: Sequence[bytes | VerifiedRim] = (),
    ) -> VerifiedGpuEvidence:
        instant = utc(now)
        parsed = parse_spdm_measurements(evidence)
        if not parsed.request_param1 & 0x01:
            raise SpdmFormatError("the request did not ask for a signed response")
        if expected_nonce is not None and not hmac.compare_digest(
            parsed.requester_nonce, expected_nonce
        ):
            raise NonceMismatchError(
                f"requester nonce {parsed.requester_nonce.hex()} is not the expected "
                f"{expected_nonce.hex()}"
            )
        chain = self._chains.verify(certificate_chain, self.device_root, now=instant)
        device_status = enforce_revocation(
            self.revocation, chain, now=instant, what="GPU device chain"
        )
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or leaf_key.curve.name != (
            "secp384r1"
        ):
            raise EvidenceSignatureError("GPU attestation key is not ECDSA P-384")
        half = len(parsed.signature) // 2
        signature = encode_dss_signature(
            int.from_bytes(parsed.signature[:half], "big"),
            int.from_bytes(parsed.signature[half:], "big"),
        )
        try:
            leaf_key.verify(signature, parsed.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise EvidenceSignatureError(
                "SPDM measurement signature does not verify with the device certificate"
            ) from None
        verified_rims = tuple(
            r if isinstance(r, VerifiedRim) else self.verify_rim(r, now=instant) for r in rims
        )
        driver = parsed.opaque.driver_version
        vbios = parsed.opaque.vbios_version
        known = {v.lower() for v in (driver, vbios) if v}
        for rim in verified_rims:
            if rim.version.lower() not in known:
                raise MeasurementMismatchError(
                    f"RIM {rim.rim_id[:16]}... is for version {rim.version}, the report has "
                    f"driver {driver} / VBIOS {vbios}",
                    checked=0,
                    mismatches=(),
                )
        comparison = compare_measurements(parsed, verified_rims)
        if comparison.mismatches:
            indexes = ", ".join(str(m.index) for m in comparison.mismatches)
            raise MeasurementMismatchError(
                f"{len(comparison.mismatches)} of {comparison.checked} measurements differ "
                f"from the RIM (index {indexes})",
                checked=comparison.checked,
                mismatches=comparison.mismatches,
            )
        return VerifiedGpuEvidence(
            measurements=parsed,
            driver_version=driver,
            vbios_version=vbios,
            fwid=parsed.opaque.fwid,
            device_certificate=chain[0].subject.rfc4514_string(),
            device_revocation=device_status,
            rims=verified_rims,
            measurements_checked=comparison.checked,
            verified_at=instant,
        )
