"""The test DCAP PKI: its quotes verify through dcap-qvl pinned to the test root, and only there."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509

from cocoon_operator.attestation import (
    Collateral,
    KeyBinding,
    PolicyRule,
    TdxPolicy,
    TdxVerifier,
    evaluate_tdx_policy,
    intel_sgx_root_ca,
    model_hash,
    parse_tdx_quote,
    pck_identity,
    report_data_for_key,
    report_data_for_nonce,
)
from cocoon_operator.attestation.errors import (
    CollateralExpiredError,
    CollateralNotYetValidError,
    DcapVerificationError,
    PckChainError,
    QuoteSignatureError,
    TcbLevelError,
    TrustRootError,
)
from cocoon_operator.attestation.testing.pki import DcapTestPki, PlatformTcb, generate_test_pki
from cocoon_operator.attestation.testing.quotes import TdMeasurements, build_td_quote

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MEASURED = TdMeasurements.from_label("test-release-1")
KEY = bytes(range(32))
MODEL = "Org/Model@0123456789abcdef0123456789abcdef01234567:" + "cd" * 32


@pytest.fixture(scope="module")
def pki() -> DcapTestPki:
    return generate_test_pki(now=NOW)


def _quote(pki: DcapTestPki, **kwargs: object) -> bytes:
    args: dict[str, object] = {
        "mrtd": MEASURED.mrtd,
        "rtmr0": MEASURED.rtmr[0],
        "rtmr1": MEASURED.rtmr[1],
        "rtmr2": MEASURED.rtmr[2],
        "rtmr3": MEASURED.rtmr[3],
        "report_data": report_data_for_key(KEY),
    }
    args.update(kwargs)
    return build_td_quote(pki, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def quote(pki: DcapTestPki) -> bytes:
    return _quote(pki)


def _policy(**changes: object) -> TdxPolicy:
    base = TdxPolicy(
        require_production_root=False,
        allowed_mrtd=frozenset({MEASURED.mrtd}),
        allowed_rtmr=frozenset({MEASURED.rtmr}),
        allowed_image_hashes=frozenset({MEASURED.image_hash}),
        allowed_model_hashes=frozenset({model_hash(MODEL)}),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_quote_verifies_uptodate_against_the_test_root(pki: DcapTestPki, quote: bytes) -> None:
    result = TdxVerifier(pki.trusted_root).verify(quote, pki.collateral, now=NOW)
    assert result.tcb_status == "UpToDate"
    assert result.platform_tcb_status == "UpToDate"
    assert result.qe_tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.fmspc == pki.platform.fmspc_hex
    assert result.mrtd == MEASURED.mrtd
    assert result.rtmr == MEASURED.rtmr
    assert result.report_data == report_data_for_key(KEY)
    assert result.image_hash == MEASURED.image_hash
    assert result.trusted_root_fingerprint == pki.trusted_root.fingerprint
    assert not result.trusted_root_production
    assert not pki.trusted_root.production


def test_policy_needs_the_test_root_selected_explicitly(pki: DcapTestPki, quote: bytes) -> None:
    verified = TdxVerifier(pki.trusted_root).verify(quote, pki.collateral, now=NOW)
    binding = KeyBinding(KEY)
    refused = evaluate_tdx_policy(
        verified, dataclasses.replace(_policy(), require_production_root=True), binding=binding
    )
    assert not refused.trusted
    assert refused.failed_rule is PolicyRule.TRUST_ROOT
    assert not evaluate_tdx_policy(verified, TdxPolicy(), binding=binding).trusted
    accepted = evaluate_tdx_policy(verified, _policy(), binding=binding, model=MODEL)
    assert accepted.trusted, accepted.reason
    other_image = _policy(allowed_image_hashes=frozenset({bytes(32)}))
    verdict = evaluate_tdx_policy(verified, other_image, binding=binding, model=MODEL)
    assert verdict.failed_rule is PolicyRule.IMAGE_HASH
    wrong_key = evaluate_tdx_policy(verified, _policy(), binding=KeyBinding(bytes(32)), model=MODEL)
    assert wrong_key.failed_rule is PolicyRule.REPORT_DATA


def test_the_engine_itself_is_pinned_to_the_given_root(pki: DcapTestPki, quote: bytes) -> None:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(pki.collateral_json())
    now = int(NOW.timestamp())
    report = dcap_qvl.verify_with_root_ca(quote, collateral, pki.root_der, now)
    assert report.status == "UpToDate"
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(quote, collateral, intel_sgx_root_ca().der, now)
    with pytest.raises(ValueError):
        dcap_qvl.verify(quote, collateral, now)  # the engine's built-in Intel root


def test_production_verifier_refuses_test_quotes(pki: DcapTestPki, quote: bytes) -> None:
    with pytest.raises(TrustRootError):
        TdxVerifier(intel_sgx_root_ca()).verify(quote, pki.collateral, now=NOW)
    other = generate_test_pki(now=NOW, seed="another test PKI")
    with pytest.raises(TrustRootError):
        TdxVerifier(other.trusted_root).verify(quote, other.collateral, now=NOW)


def test_collateral_json_has_dcap_qvl_keys(pki: DcapTestPki, tdx_dir: Path) -> None:
    sample = json.loads((tdx_dir / "dcap-qvl" / "tdx_quote_collateral.json").read_text())
    doc = json.loads(pki.collateral_json())
    assert list(doc) == list(sample)
    assert Collateral.from_json(pki.collateral_json()) == pki.collateral
    info = pki.collateral.info
    assert (info.tee, info.fmspc, info.ca) == ("TDX", pki.platform.fmspc_hex, "platform")
    assert info.issued_at == NOW - timedelta(hours=1)
    assert info.expires_at == NOW + timedelta(days=30)
    tcb = json.loads(pki.collateral.tcb_info)
    assert (tcb["id"], tcb["version"], tcb["tcbLevels"][0]["tcbStatus"]) == ("TDX", 3, "UpToDate")
    assert json.loads(pki.collateral.qe_identity)["id"] == "TD_QE"


def test_pck_certificate_carries_the_sgx_extension(pki: DcapTestPki, quote: bytes) -> None:
    ext = dcap_qvl.parse_quote(quote).pck_extension()
    assert ext is not None
    platform = pki.platform
    assert ext.fmspc == platform.fmspc
    assert ext.pce_id == platform.pce_id
    assert ext.pce_svn == platform.pce_svn
    assert ext.cpu_svn == platform.cpu_svn
    assert len(ext.ppid) == 16
    assert ext.sgx_type == platform.sgx_type
    assert len(ext.platform_instance_id or b"") == 16
    leaf = x509.load_pem_x509_certificates(parse_tdx_quote(quote).pck_chain_pem)[0]
    assert pck_identity(leaf).fmspc == platform.fmspc_hex
    assert pck_identity(leaf).ca == "platform"


def test_generation_is_deterministic_in_seed_and_clock(pki: DcapTestPki, quote: bytes) -> None:
    again = generate_test_pki(now=NOW)
    assert again.collateral == pki.collateral
    assert again.pck_chain_pem == pki.pck_chain_pem
    assert _quote(again) == quote
    assert generate_test_pki(now=NOW, seed="x").root_der != pki.root_der
    later = generate_test_pki(now=NOW + timedelta(days=1))
    assert later.root_certificate.public_key() == pki.root_certificate.public_key()
    assert later.collateral != pki.collateral


@pytest.mark.parametrize(("version", "td15"), [(5, False), (5, True)])
def test_v5_quotes_verify(pki: DcapTestPki, version: int, td15: bool) -> None:
    raw = _quote(pki, version=version, td15=td15, report_data=report_data_for_nonce(b"n"))
    parsed = parse_tdx_quote(raw)
    assert parsed.version == 5
    assert parsed.body.body_type == (3 if td15 else 2)
    assert parsed.trailing_bytes == 0
    result = TdxVerifier(pki.trusted_root).verify(raw, pki.collateral, now=NOW)
    assert result.tcb_status == "UpToDate"
    assert result.image_hash == MEASURED.image_hash


def test_tampered_quote_fails_its_signature(pki: DcapTestPki, quote: bytes) -> None:
    tampered = bytearray(quote)
    tampered[48 + 200] ^= 0x01  # inside MRTD
    with pytest.raises(QuoteSignatureError) as info:
        TdxVerifier(pki.trusted_root).verify(bytes(tampered), pki.collateral, now=NOW)
    assert info.value.code == "quote_signature"


def test_collateral_dates_follow_the_clock(pki: DcapTestPki, quote: bytes) -> None:
    verifier = TdxVerifier(pki.trusted_root)
    with pytest.raises(CollateralExpiredError):
        verifier.verify(quote, pki.collateral, now=NOW + timedelta(days=31))
    with pytest.raises(CollateralNotYetValidError):
        verifier.verify(quote, pki.collateral, now=NOW - timedelta(hours=2))
    short = generate_test_pki(now=NOW, collateral_validity=timedelta(hours=2))
    assert short.collateral.info.expires_at == NOW + timedelta(hours=2)


def test_tcb_status_and_advisories_are_configurable(pki: DcapTestPki) -> None:
    outdated = generate_test_pki(now=NOW, tcb_status="OutOfDate", advisory_ids=["INTEL-SA-0001"])
    result = TdxVerifier(outdated.trusted_root).verify(
        _quote(outdated), outdated.collateral, now=NOW
    )
    assert result.tcb_status == "OutOfDate"
    assert result.advisory_ids == ("INTEL-SA-0001",)
    verdict = evaluate_tdx_policy(result, _policy(), binding=KeyBinding(KEY))
    assert verdict.failed_rule is PolicyRule.TCB_STATUS


def test_revoked_pck_and_unmatched_tcb_are_refused(pki: DcapTestPki) -> None:
    revoked = generate_test_pki(now=NOW, revoke_pck=True)
    with pytest.raises(PckChainError):
        TdxVerifier(revoked.trusted_root).verify(_quote(revoked), revoked.collateral, now=NOW)
    below = bytes([5, 1, 1]) + bytes(13)  # TDX late microcode SVN under the only TCB level
    with pytest.raises(TcbLevelError):
        TdxVerifier(pki.trusted_root).verify(
            _quote(pki, tee_tcb_svn=below), pki.collateral, now=NOW
        )
    debug = bytes([1, 0, 0, 0x10, 0, 0, 0, 0])
    with pytest.raises(DcapVerificationError, match="Debug"):
        TdxVerifier(pki.trusted_root).verify(
            _quote(pki, td_attributes=debug), pki.collateral, now=NOW
        )


def test_custom_platform_values(pki: DcapTestPki) -> None:
    platform = PlatformTcb(fmspc=bytes.fromhex("00A1B2C3D4E5"), pce_svn=300, qe_isvsvn=9)
    custom = generate_test_pki(now=NOW, platform=platform)
    result = TdxVerifier(custom.trusted_root).verify(_quote(custom), custom.collateral, now=NOW)
    assert result.fmspc == "00A1B2C3D4E5"
    assert result.tcb_status == "UpToDate"


def test_bad_arguments_are_refused(pki: DcapTestPki) -> None:
    with pytest.raises(ValueError):
        _quote(pki, version=3)
    with pytest.raises(ValueError):
        _quote(pki, td15=True)
    with pytest.raises(ValueError):
        _quote(pki, mrtd=b"short")
    with pytest.raises(ValueError):
        _quote(pki, report_data=bytes(65))
    with pytest.raises(ValueError):
        PlatformTcb(fmspc=b"12345")
    with pytest.raises(ValueError):
        TdMeasurements(mrtd=bytes(48), rtmr=(bytes(48), bytes(48), bytes(48), bytes(47)))
    with pytest.raises(ValueError):
        generate_test_pki(now=datetime(2026, 1, 1))  # naive: refused
