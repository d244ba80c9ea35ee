"""COCOON RA-TLS certificates: a self-signed Ed25519 certificate carrying the TDX quote.

Extension ``1.3.6.1.4.1.12345.1`` holds the raw quote and ``.2`` the serialised
user claims (today: exactly the raw 32-byte Ed25519 public key); REPORTDATA is
SHA-512 of those claims.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cocoon_operator.attestation._policy import KeyBinding
from cocoon_operator.attestation._roots import load_certificates
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.errors import (
    CertificateChainError,
    CertificateExpiredError,
    CertificateFormatError,
    ReportDataBindingError,
)

RATLS_QUOTE_OID = "1.3.6.1.4.1.12345.1"
RATLS_CLAIMS_OID = "1.3.6.1.4.1.12345.2"


def _extension(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateFormatError(f"extension {oid} decoded unexpectedly")
    return value.value


@dataclass(frozen=True)
class RaTlsCertificate:
    certificate: x509.Certificate
    public_key: bytes  # raw 32-byte Ed25519
    quote: bytes
    claims: bytes | None

    @property
    def binding(self) -> KeyBinding:
        """The REPORTDATA binding this certificate's key requires."""
        return KeyBinding(self.public_key)

    def check(self, *, now: datetime) -> None:
        """Self-signature valid and certificate valid at ``now``."""
        self.check_signature()
        self.check_validity(now=now)

    def check_signature(self) -> None:
        """The self-signature verifies (a property of the bytes alone: cacheable)."""
        cert = self.certificate
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateChainError(
                f"RA-TLS certificate is not validly self-signed: {exc}"
            ) from exc

    def check_validity(self, *, now: datetime) -> None:
        """The certificate is within its validity period at ``now``."""
        instant = utc(now)
        cert = self.certificate
        if not cert.not_valid_before_utc <= instant <= cert.not_valid_after_utc:
            raise CertificateExpiredError(
                f"RA-TLS certificate valid {cert.not_valid_before_utc.isoformat()} .. "
                f"{cert.not_valid_after_utc.isoformat()}, not at {instant.isoformat()}"
            )


def parse_ratls_certificate(data: bytes) -> RaTlsCertificate:
    """Decode a DER or PEM RA-TLS certificate. Raises :class:`CertificateFormatError`."""
    certs = load_certificates(data)
    cert = certs[0]
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateFormatError("RA-TLS certificate key is not Ed25519")
    quote = _extension(cert, RATLS_QUOTE_OID)
    if quote is None:
        raise CertificateFormatError(f"certificate has no quote extension {RATLS_QUOTE_OID}")
    return RaTlsCertificate(
        certificate=cert,
        public_key=key.public_bytes(Encoding.Raw, PublicFormat.Raw),
        quote=quote,
        claims=_extension(cert, RATLS_CLAIMS_OID),
    )


def check_ratls_binding(cert: RaTlsCertificate, report_data: bytes) -> None:
    """REPORTDATA == SHA-512(claims) and the claims are this certificate's key.

    Without a claims extension the key itself is taken as the claims.
    Raises :class:`ReportDataBindingError`.
    """
    claims = cert.claims if cert.claims is not None else cert.public_key
    if not hmac.compare_digest(claims, cert.public_key):
        raise ReportDataBindingError("RA-TLS claims are not the certificate's Ed25519 key")
    if not hmac.compare_digest(hashlib.sha512(claims).digest(), report_data):
        raise ReportDataBindingError("REPORTDATA is not SHA-512 of the RA-TLS claims")
