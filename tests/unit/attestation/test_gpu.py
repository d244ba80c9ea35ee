"""NVIDIA H100 evidence: SPDM parsing, signature, device chain, RIMs, revocation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from cocoon_operator.attestation import (
    GpuVerifier,
    NoRevocationCheck,
    RevocationStatus,
    RimVerifier,
    SerialDenyList,
    TrustedRoot,
    compare_measurements,
    load_certificates,
    nvidia_device_root,
    nvidia_rim_root,
    parse_hex_evidence,
    parse_spdm_measurements,
)
from cocoon_operator.attestation.errors import (
    CertificateExpiredError,
    EvidenceSignatureError,
    MeasurementMismatchError,
    NonceMismatchError,
    RevocationError,
    RimFormatError,
    RimSignatureError,
    SpdmFormatError,
    TrustRootError,
)
from cocoon_operator.attestation.testing.revocation import AlwaysGoodRevocation

from .conftest import AT_GPU

NONCE = "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66"
AT_DRIVER_RIM = datetime(2025, 6, 1, tzinfo=UTC)  # its signer is valid from 2025-05-24


@pytest.fixture(scope="module")
def report(gpu_dir: Path) -> bytes:
    return parse_hex_evidence(
        (gpu_dir / "attestation-sdk" / "hopperAttestationReport.txt").read_text()
    )


@pytest.fixture(scope="module")
def chain(gpu_dir: Path) -> bytes:
    return (gpu_dir / "attestation-sdk" / "hopperCertChain.txt").read_bytes()


@pytest.fixture(scope="module")
def vbios_rim(gpu_dir: Path) -> bytes:
    return (gpu_dir / "nvtrust" / "1010_0200_882_96005E0001_PROD.swidtag").read_bytes()


@pytest.fixture(scope="module")
def mismatch_rim(gpu_dir: Path) -> bytes:
    return (gpu_dir / "attestation-sdk" / "vbios_rim_measurement_mismatch.xml").read_bytes()


@pytest.fixture(scope="module")
def tampered_rim(gpu_dir: Path) -> bytes:
    return (gpu_dir / "attestation-sdk" / "driver_rim_tampered.xml").read_bytes()


@pytest.fixture
def verifier(device_root: TrustedRoot, rim_root: TrustedRoot) -> GpuVerifier:
    return GpuVerifier(device_root, revocation=AlwaysGoodRevocation(), rim_root=rim_root)


def test_embedded_nvidia_roots_are_the_pinned_files(
    device_root: TrustedRoot, rim_root: TrustedRoot
) -> None:
    assert nvidia_device_root().fingerprint == device_root.fingerprint
    assert nvidia_rim_root().fingerprint == rim_root.fingerprint
    assert device_root.production and rim_root.production


def test_spdm_parse_matches_sources(report: bytes) -> None:
    spdm = parse_spdm_measurements(report)
    assert spdm.requester_nonce.hex() == NONCE
    assert (spdm.request_param1, spdm.request_param2, spdm.slot_id) == (1, 0xFF, 0)
    assert len(spdm.blocks) == 64
    assert [b.index for b in spdm.blocks] == list(range(1, 65))
    assert all(len(b.value) == 48 for b in spdm.blocks)
    assert spdm.opaque.driver_version == "535.86.09"
    assert spdm.opaque.vbios_version == "96.00.5E.00.01"
    assert spdm.opaque.fwid is None
    assert len(spdm.signature) == 96
    assert spdm.signed_bytes == report[:-96]
    assert spdm.opaque.named()["project"] == b"1010\x00".hex()


def test_spdm_parse_reads_fwid_when_present(gpu_dir: Path) -> None:
    other = parse_spdm_measurements(
        parse_hex_evidence(
            (
                gpu_dir / "attestation-sdk" / "hopperAttestationReportInvalidSignature.txt"
            ).read_text()
        )
    )
    assert other.opaque.fwid is not None and len(other.opaque.fwid) == 48
    assert other.opaque.driver_version == "560.00"
    assert other.opaque.vbios_version == "96.00.A5.00.01"


@pytest.mark.parametrize("cut", [10, 37, 100, 4000, 4051])
def test_truncated_evidence(report: bytes, cut: int) -> None:
    with pytest.raises(SpdmFormatError):
        parse_spdm_measurements(report[:cut])


def test_not_spdm() -> None:
    with pytest.raises(SpdmFormatError):
        parse_spdm_measurements(bytes(200))
    with pytest.raises(SpdmFormatError, match="hex"):
        parse_hex_evidence("xyz")


def test_report_verifies_with_chain_to_device_root(
    verifier: GpuVerifier, report: bytes, chain: bytes
) -> None:
    result = verifier.verify(report, chain, now=AT_GPU, expected_nonce=bytes.fromhex(NONCE))
    assert result.nonce.hex() == NONCE
    assert (result.driver_version, result.vbios_version) == ("535.86.09", "96.00.5E.00.01")
    assert result.device_revocation is RevocationStatus.GOOD
    assert "GSP FMC LF" in result.device_certificate
    assert result.measurements_checked == 0
    assert result.rims == ()


def test_wrong_nonce(verifier: GpuVerifier, report: bytes, chain: bytes) -> None:
    with pytest.raises(NonceMismatchError) as info:
        verifier.verify(report, chain, now=AT_GPU, expected_nonce=bytes(32))
    assert info.value.code == "nonce_mismatch"


def test_invalid_signature_fixture(verifier: GpuVerifier, gpu_dir: Path, chain: bytes) -> None:
    bad = parse_hex_evidence(
        (gpu_dir / "attestation-sdk" / "hopperAttestationReportInvalidSignature.txt").read_text()
    )
    with pytest.raises(EvidenceSignatureError) as info:
        verifier.verify(bad, chain, now=AT_GPU)
    assert info.value.code == "evidence_signature"


@pytest.mark.parametrize("position", [4, 20, 40, 45, 60, 500, 3000, 3560, 3600, 3700, 3955])
def test_flipping_a_signed_byte_breaks_the_signature(
    verifier: GpuVerifier, report: bytes, chain: bytes, position: int
) -> None:
    """Positions avoid the length/count fields, so parsing still succeeds."""
    tampered = bytearray(report)
    tampered[position] ^= 0x01
    with pytest.raises(EvidenceSignatureError):
        verifier.verify(bytes(tampered), chain, now=AT_GPU)


def test_flipping_the_signature_itself(verifier: GpuVerifier, report: bytes, chain: bytes) -> None:
    tampered = bytearray(report)
    tampered[-1] ^= 0x01
    with pytest.raises(EvidenceSignatureError):
        verifier.verify(bytes(tampered), chain, now=AT_GPU)


def test_wrong_device_root(rim_root: TrustedRoot, report: bytes, chain: bytes) -> None:
    wrong = GpuVerifier(rim_root, revocation=AlwaysGoodRevocation())
    with pytest.raises(TrustRootError):
        wrong.verify(report, chain, now=AT_GPU)


def test_chain_without_the_root_copy_still_anchors(
    verifier: GpuVerifier, report: bytes, chain: bytes
) -> None:
    certs = load_certificates(chain)
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    without_root = b"".join(c.public_bytes(Encoding.PEM) for c in certs[:-1])
    assert verifier.verify(report, without_root, now=AT_GPU).driver_version == "535.86.09"


def test_device_chain_not_yet_valid(verifier: GpuVerifier, report: bytes, chain: bytes) -> None:
    with pytest.raises(CertificateExpiredError):
        verifier.verify(report, chain, now=datetime(2020, 1, 1, tzinfo=UTC))


def test_vbios_rim_matches_all_active_measurements(
    verifier: GpuVerifier, report: bytes, chain: bytes, vbios_rim: bytes
) -> None:
    result = verifier.verify(report, chain, now=AT_GPU, rims=[vbios_rim])
    assert result.measurements_checked == 12
    (rim,) = result.rims
    assert rim.version == "96.00.5E.00.01"
    assert len(rim.active) == 12
    assert rim.revocation is RevocationStatus.GOOD
    assert "HCC RIM L4 Signer" in rim.signer


def test_measurement_mismatch_at_index_10(
    verifier: GpuVerifier, report: bytes, chain: bytes, mismatch_rim: bytes
) -> None:
    rim = verifier.verify_rim(mismatch_rim, now=AT_GPU)  # signature itself is valid
    with pytest.raises(MeasurementMismatchError) as info:
        verifier.verify(report, chain, now=AT_GPU, rims=[rim])
    err = info.value
    assert err.code == "measurement_mismatch"
    assert err.checked == 12
    (mismatch,) = err.mismatches
    assert (mismatch.index, mismatch.rim_index) == (10, 9)
    assert mismatch.actual == parse_spdm_measurements(report).measurement(10).value.hex()  # type: ignore[union-attr]
    assert mismatch.actual not in mismatch.expected


def test_compare_measurements_directly(
    rim_root: TrustedRoot, report: bytes, vbios_rim: bytes, mismatch_rim: bytes
) -> None:
    rims = RimVerifier(rim_root, revocation=AlwaysGoodRevocation())
    spdm = parse_spdm_measurements(report)
    good = compare_measurements(spdm, [rims.verify(vbios_rim, now=AT_GPU)])
    assert (good.checked, good.mismatches) == (12, ())
    bad = rims.verify(mismatch_rim, now=AT_GPU)
    with pytest.raises(RimFormatError, match="active in both"):
        compare_measurements(spdm, [rims.verify(vbios_rim, now=AT_GPU), bad])


def test_tampered_rim_digest(
    verifier: GpuVerifier, tampered_rim: bytes, report: bytes, chain: bytes
) -> None:
    with pytest.raises(RimSignatureError, match="digest") as info:
        verifier.verify_rim(tampered_rim, now=AT_DRIVER_RIM)
    assert info.value.code == "rim_signature"
    with pytest.raises(RimSignatureError):
        verifier.verify(report, chain, now=AT_DRIVER_RIM, rims=[tampered_rim])


def test_tampered_rim_before_its_signer_is_valid(
    verifier: GpuVerifier, tampered_rim: bytes
) -> None:
    with pytest.raises(CertificateExpiredError):
        verifier.verify_rim(tampered_rim, now=AT_GPU)


def test_edited_measurement_in_valid_rim_breaks_digest(
    verifier: GpuVerifier, vbios_rim: bytes
) -> None:
    edited = vbios_rim.replace(b"7f3e9382785513c1", b"7f3e9382785513c2", 1)
    assert edited != vbios_rim
    with pytest.raises(RimSignatureError):
        verifier.verify_rim(edited, now=AT_GPU)


def test_rim_signer_expired(verifier: GpuVerifier, vbios_rim: bytes) -> None:
    with pytest.raises(CertificateExpiredError):
        verifier.verify_rim(vbios_rim, now=datetime(2025, 7, 1, tzinfo=UTC))


def test_rim_with_wrong_root(device_root: TrustedRoot, vbios_rim: bytes) -> None:
    with pytest.raises(TrustRootError):
        RimVerifier(device_root, revocation=AlwaysGoodRevocation()).verify(vbios_rim, now=AT_GPU)


def test_rim_version_must_match_the_report(
    verifier: GpuVerifier, report: bytes, chain: bytes, vbios_rim: bytes
) -> None:
    """A RIM for another VBIOS version cannot vouch for this report."""
    rim = verifier.verify_rim(vbios_rim, now=AT_GPU)
    other = dataclasses.replace(rim, version="96.00.A5.00.01")
    with pytest.raises(MeasurementMismatchError, match=r"is for version 96\.00\.A5\.00\.01"):
        verifier.verify(report, chain, now=AT_GPU, rims=[other])


def test_revocation_is_explicit_and_visible(
    device_root: TrustedRoot, report: bytes, chain: bytes
) -> None:
    unchecked = GpuVerifier(device_root, revocation=NoRevocationCheck())
    assert unchecked.verify(report, chain, now=AT_GPU).device_revocation is (
        RevocationStatus.NOT_CHECKED
    )
    leaf = load_certificates(chain)[0]
    revoked = GpuVerifier(
        device_root, revocation=SerialDenyList([(leaf.issuer, leaf.serial_number)])
    )
    with pytest.raises(RevocationError) as info:
        revoked.verify(report, chain, now=AT_GPU)
    assert info.value.code == "revoked"


def test_unknown_revocation_status_is_not_trusted(
    device_root: TrustedRoot, report: bytes, chain: bytes
) -> None:
    from cocoon_operator.attestation import RevocationResult  # noqa: PLC0415

    class Unreachable:
        name = "ocsp-unreachable"

        def check(self, chain: object, *, now: datetime) -> RevocationResult:
            return RevocationResult(RevocationStatus.UNKNOWN, "OCSP responder unreachable")

    with pytest.raises(RevocationError, match="unknown"):
        GpuVerifier(device_root, revocation=Unreachable()).verify(report, chain, now=AT_GPU)


def test_gpu_verifier_requires_a_revocation_checker(device_root: TrustedRoot) -> None:
    with pytest.raises(TypeError):
        GpuVerifier(device_root)  # type: ignore[call-arg]


def test_chain_is_leaf_first(chain: bytes) -> None:
    certs = load_certificates(chain)
    assert isinstance(certs[0], x509.Certificate)
    assert certs[0].issuer == certs[1].subject
