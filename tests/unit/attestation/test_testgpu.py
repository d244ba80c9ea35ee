"""The test NVIDIA device PKI: its evidence verifies with GpuVerifier pinned to its root only."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from cocoon_operator.attestation import (
    GpuVerifier,
    load_certificates,
    nvidia_device_root,
    parse_spdm_measurements,
)
from cocoon_operator.attestation.errors import (
    AttestationError,
    CertificateExpiredError,
    EvidenceSignatureError,
    NonceMismatchError,
    SpdmFormatError,
    TrustRootError,
)
from cocoon_operator.attestation.testing.gpu import (
    DEFAULT_GPU_SEED,
    GpuMeasurements,
    GpuTestPki,
    build_gpu_evidence,
    generate_test_gpu_pki,
)
from cocoon_operator.attestation.testing.revocation import AlwaysGoodRevocation

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NONCE = bytes(range(0x40, 0x60))
OTHER_NONCE = bytes(range(0x60, 0x80))
MEASURED = GpuMeasurements.from_label(
    "gpu-release-7", driver_version="570.124.06", vbios_version="96.00.A5.00.01", count=5
)


@pytest.fixture(scope="module")
def pki() -> GpuTestPki:
    return generate_test_gpu_pki(now=NOW)


@pytest.fixture(scope="module")
def verifier(pki: GpuTestPki) -> GpuVerifier:
    return GpuVerifier(pki.trusted_root, revocation=AlwaysGoodRevocation())


@pytest.fixture(scope="module")
def evidence(pki: GpuTestPki) -> bytes:
    return build_gpu_evidence(pki, NONCE, MEASURED)


def test_evidence_verifies_against_the_test_root(
    pki: GpuTestPki, verifier: GpuVerifier, evidence: bytes
) -> None:
    result = verifier.verify(evidence, pki.chain_pem, now=NOW, expected_nonce=NONCE)
    assert result.nonce == NONCE
    assert (result.driver_version, result.vbios_version) == ("570.124.06", "96.00.A5.00.01")
    assert result.fwid == pki.fwid
    assert result.fwid is not None and len(result.fwid) == 48
    assert [b.value for b in result.measurements.blocks] == list(MEASURED.values)
    assert [b.index for b in result.measurements.blocks] == [1, 2, 3, 4, 5]
    assert "COCOON TEST GH100 Device" in result.device_certificate
    assert result.measurements_checked == 0


def test_default_measurements_verify(pki: GpuTestPki, verifier: GpuVerifier) -> None:
    result = verifier.verify(
        build_gpu_evidence(pki, OTHER_NONCE), pki.chain_pem, now=NOW, expected_nonce=OTHER_NONCE
    )
    assert (result.driver_version, result.vbios_version) == ("550.54.15", "96.00.5E.00.01")
    assert len(result.measurements.blocks) == 8
    assert all(len(b.value) == 48 for b in result.measurements.blocks)
    assert len(set(GpuMeasurements().values)) == 8


def test_layout_matches_the_real_h100_fixture_shape(evidence: bytes) -> None:
    """Request parameters, block spec/type and opaque field types as in hopperAttestationReport."""
    spdm = parse_spdm_measurements(evidence)
    assert evidence[:4] == bytes([0x11, 0xE0, 0x01, 0xFF])
    assert (spdm.request_param1, spdm.request_param2, spdm.slot_id) == (1, 0xFF, 0)
    assert (spdm.response_param1, spdm.response_param2) == (0, 0)
    assert {(b.spec, b.value_type) for b in spdm.blocks} == {(1, 1)}
    assert sorted(spdm.opaque.fields) == [3, 6, 20]
    assert spdm.opaque.fields[3] == b"570.124.06\x00"
    assert spdm.opaque.fields[6] == bytes.fromhex("00a5009601000000")
    assert len(spdm.signature) == 96
    assert spdm.signed_bytes == evidence[:-96]


@pytest.mark.parametrize(
    ("printed", "raw"),
    [
        ("96.00.5E.00.01", "005e009601000000"),  # the real fixture's field
        ("96.00.A5.00.01", "00a5009601000000"),
        ("00.00.00.00.00", "0000000000000000"),
        ("FF.FE.FD.FC.FB", "fcfdfefffb000000"),
    ],
)
def test_vbios_version_round_trips(pki: GpuTestPki, printed: str, raw: str) -> None:
    measured = GpuMeasurements(vbios_version=printed)
    spdm = parse_spdm_measurements(build_gpu_evidence(pki, NONCE, measured))
    assert spdm.opaque.fields[6] == bytes.fromhex(raw)
    assert spdm.opaque.vbios_version == printed.upper()


@pytest.mark.parametrize(
    "bad", ["96.00.5E.00", "96.00.5E.00.01.02", "96.0.5E.00.01", "96.00.ZZ.00.01"]
)
def test_malformed_vbios_version(bad: str) -> None:
    with pytest.raises(ValueError, match="VBIOS"):
        GpuMeasurements(vbios_version=bad)


def test_measurement_values_are_checked() -> None:
    with pytest.raises(ValueError, match="48"):
        GpuMeasurements(values=(bytes(32),))
    with pytest.raises(ValueError, match="measurements"):
        GpuMeasurements(values=())
    with pytest.raises(ValueError, match="driver"):
        GpuMeasurements(driver_version="550\x00.1")


def test_another_expected_nonce_is_refused(
    pki: GpuTestPki, verifier: GpuVerifier, evidence: bytes
) -> None:
    with pytest.raises(NonceMismatchError) as info:
        verifier.verify(evidence, pki.chain_pem, now=NOW, expected_nonce=OTHER_NONCE)
    assert info.value.code == "nonce_mismatch"


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_nonce_of_wrong_size(pki: GpuTestPki, size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        build_gpu_evidence(pki, bytes(size))


def _offsets(evidence: bytes) -> dict[str, int]:
    """Positions of the fields of ``evidence`` (5 blocks of 48 bytes, opaque 3/6/20)."""
    response = 37
    record = response + 8
    block = 4 + 3 + 48
    responder_nonce = record + 5 * block
    opaque_len = responder_nonce + 32
    opaque = opaque_len + 2
    (opaque_size,) = struct.unpack_from("<H", evidence, opaque_len)
    signature = opaque + opaque_size
    driver_size = struct.unpack_from("<H", evidence, opaque + 2)[0]
    vbios = opaque + 4 + driver_size
    fwid = vbios + 4 + 8
    assert signature + 96 == len(evidence)
    return {
        "request_version": 0,
        "request_code": 1,
        "request_param1": 2,
        "request_param2": 3,
        "requester_nonce_first": 4,
        "requester_nonce_last": 35,
        "slot": 36,
        "response_version": response,
        "response_code": response + 1,
        "response_param1": response + 2,
        "response_param2": response + 3,
        "block_count": response + 4,
        "record_length": response + 5,
        "block1_index": record,
        "block1_spec": record + 1,
        "block1_size": record + 2,
        "block1_value_type": record + 4,
        "block1_value_size": record + 5,
        "block1_value": record + 7,
        "block3_value_last": record + 3 * block - 1,
        "block5_value_last": record + 5 * block - 1,
        "responder_nonce": responder_nonce + 7,
        "opaque_length": opaque_len,
        "driver_type": opaque,
        "driver_text": opaque + 4,
        "vbios_value": vbios + 4,
        "fwid_type": fwid,
        "fwid_value_last": fwid + 4 + 47,
        "signature_r_first": signature,
        "signature_r_last": signature + 47,
        "signature_s_first": signature + 48,
        "signature_last": signature + 95,
    }


# What flipping bit 0 of each field is refused as: the parser sees a malformed
# exchange, the nonce check an unexpected nonce, or else the signature breaks.
FLIPS = {
    "request_version": SpdmFormatError,
    "request_code": SpdmFormatError,
    "request_param1": SpdmFormatError,  # bit 0 clear: "no signature wanted"
    "request_param2": EvidenceSignatureError,
    "requester_nonce_first": NonceMismatchError,
    "requester_nonce_last": NonceMismatchError,
    "slot": EvidenceSignatureError,
    "response_version": SpdmFormatError,
    "response_code": SpdmFormatError,
    "response_param1": EvidenceSignatureError,
    "response_param2": EvidenceSignatureError,
    "block_count": SpdmFormatError,
    "record_length": SpdmFormatError,
    "block1_index": EvidenceSignatureError,
    "block1_spec": EvidenceSignatureError,
    "block1_size": SpdmFormatError,
    "block1_value_type": EvidenceSignatureError,
    "block1_value_size": SpdmFormatError,
    "block1_value": EvidenceSignatureError,
    "block3_value_last": EvidenceSignatureError,
    "block5_value_last": EvidenceSignatureError,
    "responder_nonce": EvidenceSignatureError,
    "opaque_length": SpdmFormatError,
    "driver_type": EvidenceSignatureError,
    "driver_text": EvidenceSignatureError,
    "vbios_value": EvidenceSignatureError,
    "fwid_type": EvidenceSignatureError,
    "fwid_value_last": EvidenceSignatureError,
    "signature_r_first": EvidenceSignatureError,
    "signature_r_last": EvidenceSignatureError,
    "signature_s_first": EvidenceSignatureError,
    "signature_last": EvidenceSignatureError,
}


@pytest.mark.parametrize(("name", "error"), sorted(FLIPS.items()))
def test_flipping_a_byte_is_refused_at_the_right_step(
    pki: GpuTestPki,
    verifier: GpuVerifier,
    evidence: bytes,
    name: str,
    error: type[AttestationError],
) -> None:
    tampered = bytearray(evidence)
    tampered[_offsets(evidence)[name]] ^= 0x01
    with pytest.raises(error):
        verifier.verify(bytes(tampered), pki.chain_pem, now=NOW, expected_nonce=NONCE)


def test_flipping_any_byte_is_refused(
    pki: GpuTestPki, verifier: GpuVerifier, evidence: bytes
) -> None:
    """Every position, request to signature: no single-bit change still verifies."""
    accepted = []
    for position in range(len(evidence)):
        tampered = bytearray(evidence)
        tampered[position] ^= 0x80
        try:
            verifier.verify(bytes(tampered), pki.chain_pem, now=NOW)
        except AttestationError:
            continue
        accepted.append(position)
    assert accepted == []


def test_signature_by_another_key_is_refused(pki: GpuTestPki, verifier: GpuVerifier) -> None:
    other = generate_test_gpu_pki(b"another seed", now=NOW)
    forged = build_gpu_evidence(other, NONCE)
    with pytest.raises(EvidenceSignatureError):
        verifier.verify(forged, pki.chain_pem, now=NOW, expected_nonce=NONCE)


def test_production_device_root_refuses_the_test_chain(pki: GpuTestPki, evidence: bytes) -> None:
    production = GpuVerifier(nvidia_device_root(), revocation=AlwaysGoodRevocation())
    assert nvidia_device_root().production
    with pytest.raises(TrustRootError) as info:
        production.verify(evidence, pki.chain_pem, now=NOW, expected_nonce=NONCE)
    assert info.value.code == "trust_root"
    without_root = b"".join(c.public_bytes(Encoding.PEM) for c in (pki.device, pki.intermediate))
    with pytest.raises(TrustRootError):
        production.verify(evidence, without_root, now=NOW, expected_nonce=NONCE)


def test_chain_without_the_root_copy_still_anchors_to_the_test_root(
    pki: GpuTestPki, verifier: GpuVerifier, evidence: bytes
) -> None:
    without_root = b"".join(c.public_bytes(Encoding.PEM) for c in (pki.device, pki.intermediate))
    assert verifier.verify(evidence, without_root, now=NOW).fwid == pki.fwid


def test_test_root_is_not_production(pki: GpuTestPki) -> None:
    root = pki.trusted_root
    assert root.production is False
    assert root.label == "test"
    assert root.fingerprint != nvidia_device_root().fingerprint
    assert "TEST" in pki.root.subject.rfc4514_string()
    assert "NOT NVIDIA" in pki.root.subject.rfc4514_string()


def test_chain_shape(pki: GpuTestPki) -> None:
    certs = load_certificates(pki.chain_pem)
    assert certs == (pki.device, pki.intermediate, pki.root)
    assert pki.root.subject == pki.root.issuer
    assert pki.intermediate.issuer == pki.root.subject
    assert pki.device.issuer == pki.intermediate.subject
    for cert in certs:
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha384"
    path_lengths = [
        c.extensions.get_extension_for_class(x509.BasicConstraints).value for c in certs
    ]
    assert [(b.ca, b.path_length) for b in path_lengths] == [(False, None), (True, 0), (True, 1)]
    usages = [c.extensions.get_extension_for_class(x509.KeyUsage).value for c in certs]
    assert usages[0].digital_signature and not usages[0].key_cert_sign
    assert all(u.key_cert_sign for u in usages[1:])
    assert pki.device_key.public_key().public_numbers() == pki.device.public_key().public_numbers()
    assert pki.root.not_valid_before_utc == NOW - timedelta(days=1)
    assert pki.root.not_valid_after_utc == NOW - timedelta(days=1) + timedelta(days=3650)


def test_generation_is_deterministic(pki: GpuTestPki, evidence: bytes) -> None:
    again = generate_test_gpu_pki(DEFAULT_GPU_SEED, now=NOW)
    assert again.trusted_root.fingerprint == pki.trusted_root.fingerprint
    assert again.chain_pem == pki.chain_pem
    assert build_gpu_evidence(again, NONCE, MEASURED) == evidence
    assert generate_test_gpu_pki(DEFAULT_GPU_SEED.decode(), now=NOW).chain_pem == pki.chain_pem
    assert build_gpu_evidence(pki, OTHER_NONCE, MEASURED) != evidence


def test_another_seed_gives_another_pki(pki: GpuTestPki, evidence: bytes) -> None:
    other = generate_test_gpu_pki("another seed", now=NOW)
    assert other.trusted_root.fingerprint != pki.trusted_root.fingerprint
    assert other.fwid != pki.fwid
    assert build_gpu_evidence(other, NONCE, MEASURED) != evidence
    later = generate_test_gpu_pki(now=NOW + timedelta(days=1))
    assert later.trusted_root.fingerprint != pki.trusted_root.fingerprint
    assert later.fwid == pki.fwid  # firmware identity does not depend on the clock


def test_labels_give_distinct_measurements() -> None:
    assert GpuMeasurements.from_label("a").values == GpuMeasurements.from_label("a").values
    assert GpuMeasurements.from_label("a").values != GpuMeasurements.from_label("b").values
    assert len(GpuMeasurements.from_label("a", count=3).values) == 3


def test_chain_is_not_valid_before_its_not_before(
    pki: GpuTestPki, verifier: GpuVerifier, evidence: bytes
) -> None:
    not_before = pki.device.not_valid_before_utc
    assert verifier.verify(evidence, pki.chain_pem, now=not_before).nonce == NONCE
    with pytest.raises(CertificateExpiredError, match="not valid before") as info:
        verifier.verify(evidence, pki.chain_pem, now=not_before - timedelta(seconds=1))
    assert info.value.code == "certificate_validity"


def test_chain_expires(pki: GpuTestPki, verifier: GpuVerifier, evidence: bytes) -> None:
    with pytest.raises(CertificateExpiredError, match="expired"):
        verifier.verify(
            evidence, pki.chain_pem, now=pki.device.not_valid_after_utc + timedelta(seconds=1)
        )
