"""RA-TLS certificates: quote and claims extensions, the Ed25519 key and the binding."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from cocoon_operator.attestation import (
    RATLS_QUOTE_OID,
    check_ratls_binding,
    parse_ratls_certificate,
    parse_tdx_quote,
)
from cocoon_operator.attestation.errors import (
    CertificateExpiredError,
    CertificateFormatError,
    ReportDataBindingError,
)
from cocoon_operator.attestation.testing.ratls import build_ratls_certificate

from .conftest import AT_OUTDATED


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_round_trip_pem_and_der(key: Ed25519PrivateKey, cocoon_quote: bytes) -> None:
    pem = build_ratls_certificate(cocoon_quote, private_key=key, not_before=AT_OUTDATED)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    for data in (pem, der):
        cert = parse_ratls_certificate(data)
        assert cert.quote == cocoon_quote
        assert cert.claims == _raw(key) == cert.public_key
        assert cert.binding.public_key == _raw(key)
        cert.check(now=AT_OUTDATED + timedelta(hours=1))
    ext = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_oid(
        x509.ObjectIdentifier(RATLS_QUOTE_OID)
    )
    assert ext.critical
    quote = parse_tdx_quote(parse_ratls_certificate(pem).quote)
    assert quote.body.mrtd.hex().startswith("7357a10d")


def test_binding_accepts_sha512_of_the_key(key: Ed25519PrivateKey, cocoon_quote: bytes) -> None:
    cert = parse_ratls_certificate(
        build_ratls_certificate(cocoon_quote, private_key=key, not_before=AT_OUTDATED)
    )
    check_ratls_binding(cert, hashlib.sha512(_raw(key)).digest())


def test_fixture_quote_is_not_bound_to_a_fresh_key(
    key: Ed25519PrivateKey, cocoon_quote: bytes
) -> None:
    cert = parse_ratls_certificate(
        build_ratls_certificate(cocoon_quote, private_key=key, not_before=AT_OUTDATED)
    )
    with pytest.raises(ReportDataBindingError) as info:
        check_ratls_binding(cert, parse_tdx_quote(cert.quote).body.report_data)
    assert info.value.code == "report_data"


def test_claims_for_another_key_are_refused(key: Ed25519PrivateKey, cocoon_quote: bytes) -> None:
    other = _raw(Ed25519PrivateKey.generate())
    cert = parse_ratls_certificate(
        build_ratls_certificate(cocoon_quote, private_key=key, not_before=AT_OUTDATED, claims=other)
    )
    with pytest.raises(ReportDataBindingError, match="claims"):
        check_ratls_binding(cert, hashlib.sha512(other).digest())


def test_validity_is_checked_at_now(key: Ed25519PrivateKey, cocoon_quote: bytes) -> None:
    cert = parse_ratls_certificate(
        build_ratls_certificate(cocoon_quote, private_key=key, not_before=AT_OUTDATED)
    )
    with pytest.raises(CertificateExpiredError):
        cert.check(now=AT_OUTDATED + timedelta(days=2))
    with pytest.raises(CertificateExpiredError):
        cert.check(now=AT_OUTDATED - timedelta(seconds=1))


def test_missing_quote_extension_and_non_ed25519(key: Ed25519PrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])

    def build(private: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(7)
            .not_valid_before(AT_OUTDATED)
            .not_valid_after(AT_OUTDATED + timedelta(days=1))
        )
        algorithm = None if isinstance(private, Ed25519PrivateKey) else hashes.SHA256()
        return builder.sign(private, algorithm).public_bytes(serialization.Encoding.PEM)

    with pytest.raises(CertificateFormatError, match="quote extension"):
        parse_ratls_certificate(build(key))
    with pytest.raises(CertificateFormatError, match="Ed25519"):
        parse_ratls_certificate(build(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(CertificateFormatError):
        parse_ratls_certificate(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_der_ending_in_a_whitespace_or_nul_byte_still_parses(cocoon_quote: bytes) -> None:
    """Regression: DER must not be stripped like PEM text (its last byte is arbitrary)."""
    for _ in range(2000):
        private = Ed25519PrivateKey.generate()
        pem = build_ratls_certificate(cocoon_quote, private_key=private, not_before=AT_OUTDATED)
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        if der[-1:] in (b"\x00", b" ", b"\t", b"\r", b"\n"):
            break
    else:
        pytest.fail("no DER certificate ending in a strippable byte was produced")
    assert parse_ratls_certificate(der).public_key == _raw(private)
