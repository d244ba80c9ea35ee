"""Full DCAP verification of the real TDX samples, through our verifier and dcap-qvl."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cocoon_operator.attestation import (
    Collateral,
    DcapQvlEngine,
    EngineReport,
    TdxVerifier,
    TrustedRoot,
    classify_engine_error,
    intel_sgx_root_ca,
    parse_tdx_quote,
    verify_tdx_quote,
)
from cocoon_operator.attestation.errors import (
    CollateralExpiredError,
    CollateralMismatchError,
    CollateralMissingError,
    CollateralNotYetValidError,
    CollateralSignatureError,
    DcapVerificationError,
    QuoteFormatError,
    QuoteSignatureError,
    TcbLevelError,
    TrustRootError,
    ValidityPeriodError,
    VerificationError,
)
from tests.unit.attestation.helpers import COCOON_MRTD, SAMPLE_MRTD, SAMPLE_RTMR

from ._pki import make_ca, pem
from .conftest import AT_DCAP_EXPIRED, AT_DCAP_SAMPLE, AT_OUTDATED


@pytest.fixture(scope="module")
def verifier(intel_root: TrustedRoot) -> TdxVerifier:
    return TdxVerifier(intel_root)


def test_sample_v4_full_dcap_pass(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    result = verifier.verify(sample_quote, sample_collateral, now=AT_DCAP_SAMPLE)
    assert result.tcb_status == "UpToDate"
    assert result.platform_tcb_status == "UpToDate"
    assert result.qe_tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.fmspc == "B0C06F000000"
    assert result.mrtd.hex() == SAMPLE_MRTD
    assert tuple(r.hex() for r in result.rtmr) == SAMPLE_RTMR
    assert result.report_data.hex()[:8] == "9a9d48e7"
    assert result.engine == "dcap-qvl"
    assert result.trusted_root_production
    assert result.trusted_root_fingerprint == intel_sgx_root_ca().fingerprint
    assert result.verified_at == AT_DCAP_SAMPLE
    assert result.collateral_expires_at == sample_collateral.info.expires_at
    assert result.image_hash == parse_tdx_quote(sample_quote).image_hash


def test_one_shot_function_and_embedded_root(
    sample_quote: bytes, sample_collateral: Collateral
) -> None:
    result = verify_tdx_quote(
        sample_quote, sample_collateral, trusted_root=intel_sgx_root_ca(), now=AT_DCAP_SAMPLE
    )
    assert result.tcb_status == "UpToDate"


def test_naive_now_is_refused(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verifier.verify(sample_quote, sample_collateral, now=datetime(2025, 6, 20))


def test_expired_collateral(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    with pytest.raises(CollateralExpiredError) as info:
        verifier.verify(sample_quote, sample_collateral, now=AT_DCAP_EXPIRED)
    assert info.value.code == "collateral_expired"
    assert isinstance(info.value, ValidityPeriodError)


def test_not_yet_valid_collateral(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    with pytest.raises(CollateralNotYetValidError):
        verifier.verify(sample_quote, sample_collateral, now=datetime(2025, 6, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (AT_DCAP_EXPIRED, CollateralExpiredError),
        (datetime(2025, 6, 1, tzinfo=UTC), CollateralNotYetValidError),
    ],
)
def test_engine_itself_enforces_time_at_injected_now(
    intel_root: TrustedRoot,
    sample_quote: bytes,
    sample_collateral: Collateral,
    now: datetime,
    error: type[Exception],
) -> None:
    """Our own pre-check is not the only guard: dcap-qvl rejects too, classified."""
    with pytest.raises(error):
        DcapQvlEngine().verify(
            parse_tdx_quote(sample_quote).trimmed,
            sample_collateral,
            root_ca_der=intel_root.der,
            now=now,
        )


@pytest.mark.parametrize(
    "position", [8, 10, 28, 47, 48, 64, 120, 184, 230, 300, 376, 519, 520, 568, 600, 631]
)
def test_flipping_a_signed_byte_breaks_the_quote_signature(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral, position: int
) -> None:
    tampered = bytearray(sample_quote)
    tampered[position] ^= 0x01
    with pytest.raises(QuoteSignatureError) as info:
        verifier.verify(bytes(tampered), sample_collateral, now=AT_DCAP_SAMPLE)
    assert info.value.code == "quote_signature"


@pytest.mark.parametrize("position", [0, 1, 2, 4, 5, 6, 7, 12, 27])
def test_flipping_header_type_fields_is_rejected_too(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral, position: int
) -> None:
    tampered = bytearray(sample_quote)
    tampered[position] ^= 0x01
    with pytest.raises((QuoteFormatError, QuoteSignatureError)):
        verifier.verify(bytes(tampered), sample_collateral, now=AT_DCAP_SAMPLE)


def test_every_signed_byte_is_covered_by_the_attestation_key_signature(
    sample_quote: bytes,
) -> None:
    """Independent of the engine's check order: ECDSA-P256(quote[0:632]) with the
    attestation key in the quote fails after flipping any byte of [0, 632)."""
    quote = parse_tdx_quote(sample_quote)
    sig = quote.signature_data.signature
    key_bytes = quote.signature_data.attestation_key
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + key_bytes)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, sample_quote[:632], ec.ECDSA(hashes.SHA256()))
    for position in range(632):
        tampered = bytearray(sample_quote[:632])
        tampered[position] ^= 0x01
        with pytest.raises(InvalidSignature):
            key.verify(der, bytes(tampered), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("position", [640, 690, 700, 763, 800, 1100])
def test_flipping_signature_key_or_qe_report_is_rejected(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral, position: int
) -> None:
    tampered = bytearray(sample_quote)
    tampered[position] ^= 0x01
    with pytest.raises(QuoteSignatureError):
        verifier.verify(bytes(tampered), sample_collateral, now=AT_DCAP_SAMPLE)


def test_wrong_root_is_rejected(sample_quote: bytes, sample_collateral: Collateral) -> None:
    ca, _ = make_ca("Not Intel Root", not_before=datetime(2020, 1, 1, tzinfo=UTC))
    wrong = TrustedRoot.load(pem(ca), label="test")
    assert not wrong.production
    with pytest.raises(TrustRootError) as info:
        TdxVerifier(wrong).verify(sample_quote, sample_collateral, now=AT_DCAP_SAMPLE)
    assert info.value.code == "trust_root"


def test_engine_alone_also_refuses_a_wrong_root(
    sample_quote: bytes, sample_collateral: Collateral, device_root: TrustedRoot
) -> None:
    """Pinning is passed through to dcap-qvl: it does not fall back to its built-in root."""
    with pytest.raises(VerificationError):
        DcapQvlEngine().verify(
            parse_tdx_quote(sample_quote).trimmed,
            sample_collateral,
            root_ca_der=device_root.der,
            now=AT_DCAP_SAMPLE,
        )


def test_v5_outdated_quote_is_not_trusted(
    verifier: TdxVerifier, outdated_quote: bytes, outdated_collateral: Collateral
) -> None:
    with pytest.raises(TcbLevelError) as info:
        verifier.verify(outdated_quote, outdated_collateral, now=AT_OUTDATED)
    assert info.value.code == "tcb_level"


def test_v5_outdated_passes_chain_and_collateral_checks(
    verifier: TdxVerifier, outdated_quote: bytes, outdated_collateral: Collateral
) -> None:
    """Everything before TCB matching succeeds: PCK chain, FMSPC, collateral freshness."""
    quote = parse_tdx_quote(outdated_quote)
    key = verifier.collateral_key(quote, now=AT_OUTDATED)
    assert key == outdated_collateral.key
    outdated_collateral.check_time(AT_OUTDATED)


class RecordingEngine:
    """Swapped-in engine: records its inputs and returns a fixed report."""

    name = "recording"

    def __init__(self, report: EngineReport) -> None:
        self.report = report
        self.calls: list[tuple[bytes, Collateral, bytes, datetime]] = []

    def verify(
        self, quote: bytes, collateral: Collateral, *, root_ca_der: bytes, now: datetime
    ) -> EngineReport:
        self.calls.append((quote, collateral, root_ca_der, now))
        return self.report


def test_cocoon_quote_full_verification_with_collateral_for_its_fmspc(
    intel_root: TrustedRoot, cocoon_quote: bytes, outdated_collateral: Collateral
) -> None:
    """No collateral ships with the cocoon quote; Intel collateral is per FMSPC/CA,
    and the dcap-qvl v5 sample's collateral is for the same FMSPC (90C06F000000)."""
    verifier = TdxVerifier(intel_root)
    result = verifier.verify(cocoon_quote, outdated_collateral, now=AT_OUTDATED)
    assert result.tcb_status == "UpToDate"
    assert result.fmspc == "90C06F000000"
    assert result.mrtd.hex() == COCOON_MRTD
    assert result.quote.trailing_bytes == 70


def test_engine_gets_the_trimmed_quote_and_pinned_root(
    intel_root: TrustedRoot, cocoon_quote: bytes, outdated_collateral: Collateral
) -> None:
    engine = RecordingEngine(EngineReport("UpToDate", ()))
    TdxVerifier(intel_root, engine=engine).verify(
        cocoon_quote, outdated_collateral, now=AT_OUTDATED
    )
    (quote, collateral, root_der, now) = engine.calls[0]
    assert len(quote) == len(cocoon_quote) - 70
    assert collateral is outdated_collateral
    assert root_der == intel_root.der
    assert now == AT_OUTDATED


def test_cocoon_quote_pck_chain_verifies_without_collateral(
    intel_root: TrustedRoot, cocoon_quote: bytes
) -> None:
    verifier = TdxVerifier(intel_root, engine=RecordingEngine(EngineReport("UpToDate", ())))
    quote = parse_tdx_quote(cocoon_quote)
    ident = verifier.pck_identity(quote, now=AT_OUTDATED)
    assert ident.fmspc == "90C06F000000"
    with pytest.raises(CollateralMissingError) as info:
        verifier.verify(quote, None, now=AT_OUTDATED)
    assert info.value.code == "collateral_missing"


def test_cocoon_quote_signature_flip_detected(
    intel_root: TrustedRoot, cocoon_quote: bytes, outdated_collateral: Collateral
) -> None:
    tampered = bytearray(cocoon_quote)
    tampered[190] ^= 0x80  # MRTD
    with pytest.raises(QuoteSignatureError):
        TdxVerifier(intel_root).verify(bytes(tampered), outdated_collateral, now=AT_OUTDATED)


def test_collateral_for_another_fmspc_is_a_mismatch(
    verifier: TdxVerifier, sample_quote: bytes, outdated_collateral: Collateral
) -> None:
    with pytest.raises(CollateralMismatchError):
        verifier.verify(sample_quote, outdated_collateral, now=AT_OUTDATED)


def test_tampered_tcb_info_breaks_its_signature(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    assert '"tcbEvaluationDataNumber":17' in sample_collateral.tcb_info
    forged = dataclasses.replace(
        sample_collateral,
        tcb_info=sample_collateral.tcb_info.replace(
            '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18'
        ),
    )
    with pytest.raises(CollateralSignatureError):
        verifier.verify(sample_quote, forged, now=AT_DCAP_SAMPLE)


def test_pre_checks_run_before_the_engine(
    intel_root: TrustedRoot, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    engine = RecordingEngine(EngineReport("UpToDate", ()))
    verifier = TdxVerifier(intel_root, engine=engine)
    with pytest.raises(CollateralExpiredError):
        verifier.verify(sample_quote, sample_collateral, now=AT_DCAP_EXPIRED)
    with pytest.raises(TrustRootError):
        TdxVerifier(
            TrustedRoot.load(pem(make_ca("x", not_before=AT_DCAP_SAMPLE - timedelta(days=1))[0])),
            engine=engine,
        ).verify(sample_quote, sample_collateral, now=AT_DCAP_SAMPLE)
    assert engine.calls == []
    result = verifier.verify(sample_quote, sample_collateral, now=AT_DCAP_SAMPLE)
    assert result.engine == "recording"
    assert len(engine.calls) == 1


def test_pck_chain_outside_its_validity_is_rejected(
    verifier: TdxVerifier, sample_quote: bytes, sample_collateral: Collateral
) -> None:
    from cocoon_operator.attestation.errors import CertificateExpiredError  # noqa: PLC0415

    with pytest.raises(CertificateExpiredError):
        verifier.verify(sample_quote, sample_collateral, now=datetime(2050, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Verification failed: TCBInfo expired", CollateralExpiredError),
        (
            "Verification failed: QE Identity issue date is in the future",
            CollateralNotYetValidError,
        ),
        ("Verification failed: ISV enclave report signature is invalid", QuoteSignatureError),
        ("Verification failed: QE report hash mismatch", QuoteSignatureError),
        ("Signature is invalid for tcb_info in quote_collateral", CollateralSignatureError),
        ("Verification failed: No matching TCB level found", TcbLevelError),
        ("Verification failed: Failed to parse root CA CRL", TrustRootError),
        ("Verification failed: Fmspc mismatch", CollateralMismatchError),
        ("something new", DcapVerificationError),
    ],
)
def test_engine_messages_are_classified(message: str, error: type[Exception]) -> None:
    assert classify_engine_error(message) is error
