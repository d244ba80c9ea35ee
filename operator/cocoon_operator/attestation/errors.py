"""Every exception the ``cocoon_operator.attestation`` package raises, in one place.

Each class carries a stable ``code`` (snake_case): it names the verification step
that failed and is what the CLI prints as ``error`` and what a readiness gate can
put in a condition reason. Messages are for people and may change; codes do not.

Tree (class, then its ``code``, then what it means)::

    AttestationError
    ├── EvidenceFormatError (ValueError)   input is malformed; nothing was verified
    │   ├── QuoteFormatError               quote_format          TDX quote layout
    │   ├── CollateralFormatError          collateral_format     collateral JSON / CRLs
    │   ├── CertificateFormatError         certificate_format    X.509 / PEM / RA-TLS
    │   ├── SpdmFormatError                spdm_format           SPDM request/response
    │   └── RimFormatError                 rim_format            RIM (SWID XML) layout
    ├── CollateralError                    no usable collateral for a quote
    │   ├── CollateralMissingError         collateral_missing    none given / none found
    │   ├── CollateralFetchError           collateral_fetch      PCCS/PCS fetch failed
    │   └── CollateralMismatchError        collateral_mismatch   other FMSPC / CA / TEE
    ├── VerificationError                  well formed but not trustworthy
    │   ├── TrustRootError                 trust_root            not anchored at the pin
    │   ├── CertificateChainError          certificate_chain     bad link / issuer not CA
    │   ├── ValidityPeriodError            (outside validity at ``now``)
    │   │   ├── CollateralExpiredError     collateral_expired    past nextUpdate
    │   │   ├── CollateralNotYetValidError collateral_not_yet_valid  issued after now
    │   │   └── CertificateExpiredError    certificate_validity  cert not valid at now
    │   ├── QuoteSignatureError            quote_signature       TD/QE report signature
    │   ├── PckChainError                  pck_chain             PCK chain / CRLs (DCAP)
    │   ├── CollateralSignatureError       collateral_signature  TCB info / QE identity
    │   ├── TcbLevelError                  tcb_level             no TCB level / revoked
    │   ├── DcapVerificationError          dcap                  other DCAP rejection
    │   ├── EvidenceSignatureError         evidence_signature    SPDM signature
    │   ├── NonceMismatchError             nonce_mismatch        unexpected nonce
    │   ├── RimSignatureError              rim_signature         RIM signature / digest
    │   ├── MeasurementMismatchError       measurement_mismatch  GPU value != RIM value
    │   └── RevocationError                revoked               revoked / status unknown
    └── ReportDataBindingError             report_data           RA-TLS key not bound

Policy decisions (TCB status not accepted, MRTD not allowed, ...) are *not*
exceptions: :func:`cocoon_operator.attestation.evaluate_tdx_policy` returns a
:class:`~cocoon_operator.attestation.Verdict` naming the failed rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from cocoon_operator.attestation._rim import MeasurementMismatch


class AttestationError(Exception):
    """Base class of every error raised by ``cocoon_operator.attestation``."""

    code: ClassVar[str] = "attestation"


class EvidenceFormatError(AttestationError, ValueError):
    """Input bytes/text could not be parsed; nothing was verified."""

    code = "format"


class QuoteFormatError(EvidenceFormatError):
    """A TDX quote is truncated, of an unsupported version/TEE, or inconsistent."""

    code = "quote_format"


class CollateralFormatError(EvidenceFormatError):
    """Collateral JSON (or a CRL / chain inside it) is malformed."""

    code = "collateral_format"


class CertificateFormatError(EvidenceFormatError):
    """A certificate or chain could not be decoded, or lacks a required extension."""

    code = "certificate_format"


class SpdmFormatError(EvidenceFormatError):
    """An SPDM GET_MEASUREMENTS request/response is malformed."""

    code = "spdm_format"


class RimFormatError(EvidenceFormatError):
    """A RIM document is not the expected SWID tag structure."""

    code = "rim_format"


class CollateralError(AttestationError):
    """No usable collateral for a quote."""

    code = "collateral"


class CollateralMissingError(CollateralError):
    """No collateral was given, or the source has none for the quote's FMSPC/CA."""

    code = "collateral_missing"


class CollateralFetchError(CollateralError):
    """Fetching collateral from a PCCS/PCS failed (transport or HTTP error)."""

    code = "collateral_fetch"


class CollateralMismatchError(CollateralError):
    """The collateral is for a different FMSPC or TEE type than the quote."""

    code = "collateral_mismatch"


class VerificationError(AttestationError):
    """Well-formed evidence that failed a cryptographic or freshness check."""

    code = "verification"


class TrustRootError(VerificationError):
    """A certificate chain does not terminate at the pinned trust root."""

    code = "trust_root"


class CertificateChainError(VerificationError):
    """A certificate chain is broken: bad signature, issuer not a CA, wrong order."""

    code = "certificate_chain"


class ValidityPeriodError(VerificationError):
    """Something is outside its validity window at the injected ``now``."""

    code = "validity"


class CollateralExpiredError(ValidityPeriodError):
    """TCB info, QE identity or a CRL is past its ``nextUpdate`` at ``now``."""

    code = "collateral_expired"


class CollateralNotYetValidError(ValidityPeriodError):
    """Collateral was issued after ``now``."""

    code = "collateral_not_yet_valid"


class CertificateExpiredError(ValidityPeriodError):
    """A certificate is expired or not yet valid at ``now``."""

    code = "certificate_validity"


class QuoteSignatureError(VerificationError):
    """The TD report signature, the QE report signature or the QE report hash is invalid."""

    code = "quote_signature"


class PckChainError(VerificationError):
    """The PCK certificate chain (or its CRLs) was rejected by the DCAP engine."""

    code = "pck_chain"


class CollateralSignatureError(VerificationError):
    """The TCB info or QE identity signature (or their issuer chain) is invalid."""

    code = "collateral_signature"


class TcbLevelError(VerificationError):
    """No TCB level of the collateral matches the platform, or the TCB is revoked."""

    code = "tcb_level"


class DcapVerificationError(VerificationError):
    """Any other rejection by the DCAP engine (the message says which)."""

    code = "dcap"


class EvidenceSignatureError(VerificationError):
    """The SPDM measurement response signature does not verify with the leaf key."""

    code = "evidence_signature"


class NonceMismatchError(VerificationError):
    """The requester nonce in the evidence is not the one the verifier expected."""

    code = "nonce_mismatch"


class RimSignatureError(VerificationError):
    """The RIM XML signature or its document digest is invalid."""

    code = "rim_signature"


class MeasurementMismatchError(VerificationError):
    """GPU measurements differ from the RIM, or a RIM is for another version.

    ``checked`` is how many active RIM measurements were compared and
    ``mismatches`` which of them differ (empty for a version mismatch).
    """

    code = "measurement_mismatch"

    def __init__(
        self,
        message: str,
        *,
        checked: int = 0,
        mismatches: tuple[MeasurementMismatch, ...] = (),
    ) -> None:
        super().__init__(message)
        self.checked = checked
        self.mismatches = mismatches


class RevocationError(VerificationError):
    """A certificate is revoked, or the revocation checker could not tell."""

    code = "revoked"


class ReportDataBindingError(AttestationError):
    """RA-TLS: the quote's REPORTDATA or the claims do not bind the certificate key."""

    code = "report_data"
