"""A COCOON-style RA-TLS certificate around any quote bytes (tests, the worker simulator).

A real fixture quote is fine for parsing tests; the simulator wraps the quotes of
:mod:`.quotes`. Never used by verification code.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from cocoon_operator.attestation._ratls import RATLS_CLAIMS_OID, RATLS_QUOTE_OID
from cocoon_operator.attestation._time import utc


def build_ratls_certificate(
    quote: bytes,
    *,
    private_key: Ed25519PrivateKey,
    not_before: datetime,
    validity: timedelta = timedelta(days=1),
    claims: bytes | None = None,
    common_name: str = "cocoon-worker",
    serial_number: int = 1,
) -> bytes:
    """A self-signed Ed25519 certificate (PEM) with the quote and claims extensions.

    ``claims`` defaults to the raw public key, as COCOON serialises them today.
    Both extensions are critical, like COCOON's. No clock is read: pass ``not_before``.
    """
    public = private_key.public_key()
    raw_key = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = utc(not_before)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial_number)
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(RATLS_QUOTE_OID), quote),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(RATLS_CLAIMS_OID), raw_key if claims is None else claims
            ),
            critical=True,
        )
    )
    cert = builder.sign(private_key, None)
    return cert.public_bytes(serialization.Encoding.PEM)
