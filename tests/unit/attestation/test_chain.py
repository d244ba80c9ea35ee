"""Chain verification to a pinned root, at an injected instant, and its cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cocoon_operator.attestation import (
    ChainVerifier,
    TrustedRoot,
    intel_sgx_root_ca,
    load_certificates,
    verify_chain,
)
from cocoon_operator.attestation.errors import (
    CertificateChainError,
    CertificateExpiredError,
    CertificateFormatError,
    TrustRootError,
)

from ._pki import make_ca, pem
from .conftest import AT_GPU

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _issue(
    name: str, issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def test_test_pki_chain_and_failures() -> None:
    root, root_key = make_ca("Test Root", not_before=T0)
    inter, inter_key = _issue("Test Intermediate", root, root_key, ca=True)
    leaf, _ = _issue("Test Leaf", inter, inter_key, ca=False)
    trusted = TrustedRoot.load(pem(root), label="test")
    assert not trusted.production
    now = T0 + timedelta(days=1)
    assert verify_chain([leaf, inter, root], trusted, now=now) == (leaf, inter)
    assert verify_chain([leaf, inter], trusted, now=now) == (leaf, inter)
    with pytest.raises(CertificateChainError, match="not signed by the next"):
        verify_chain([inter, leaf], trusted, now=now)
    not_ca, not_ca_key = _issue("Not A CA", root, root_key, ca=False)
    leaf2, _ = _issue("Leaf Under Non-CA", not_ca, not_ca_key, ca=False)
    with pytest.raises(CertificateChainError, match="not a CA"):
        verify_chain([leaf2, not_ca], trusted, now=now)
    other_root, _ = make_ca("Other Root", not_before=T0)
    with pytest.raises(TrustRootError):
        verify_chain([leaf, inter], TrustedRoot.load(pem(other_root)), now=now)
    with pytest.raises(TrustRootError):
        verify_chain([leaf, inter, other_root], trusted, now=now)
    with pytest.raises(CertificateExpiredError):
        verify_chain([leaf, inter], trusted, now=T0 + timedelta(days=31))
    with pytest.raises(CertificateChainError):
        verify_chain([], trusted, now=now)


def test_cache_serves_hits_inside_the_window_only(gpu_dir: Path, device_root: TrustedRoot) -> None:
    chain = (gpu_dir / "attestation-sdk" / "hopperCertChain.txt").read_bytes()
    cache = ChainVerifier()
    first = cache.verify(chain, device_root, now=AT_GPU)
    assert cache.verify(chain, device_root, now=AT_GPU + timedelta(days=1)) is first
    assert len(first) == 4  # the root copy is dropped
    with pytest.raises(CertificateExpiredError):
        cache.verify(chain, device_root, now=datetime(2019, 1, 1, tzinfo=UTC))
    with pytest.raises(TrustRootError):
        cache.verify(chain, intel_sgx_root_ca(), now=AT_GPU)


def test_roots_load_der_or_pem_and_refuse_bundles(tdx_dir: Path, gpu_dir: Path) -> None:
    der = (tdx_dir / "dcap-qvl" / "TrustedRootCA.der").read_bytes()
    root = TrustedRoot.load(der)
    assert root.der == der
    assert root.fingerprint == intel_sgx_root_ca().fingerprint
    assert "Intel SGX Root CA" in root.certificate.subject.rfc4514_string()
    bundle = (gpu_dir / "attestation-sdk" / "hopperCertChain.txt").read_bytes()
    assert len(load_certificates(bundle)) == 5
    with pytest.raises(CertificateFormatError, match="one certificate"):
        TrustedRoot.load(bundle)
    with pytest.raises(CertificateFormatError):
        TrustedRoot.load(b"\x30\x03\x02\x01\x00")
