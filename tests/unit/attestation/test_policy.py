"""The policy over a verified quote: each rule, its order, and the verdict it names."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from cocoon_operator.attestation import (
    Collateral,
    KeyBinding,
    NonceBinding,
    PolicyRule,
    TdxPolicy,
    TdxVerifier,
    TrustedRoot,
    VerifiedTdxQuote,
    evaluate_tdx_policy,
    hex_set,
    model_hash,
    report_data_for_key,
    report_data_for_nonce,
)
from tests.unit.attestation.helpers import SAMPLE_MRTD

from .conftest import AT_DCAP_SAMPLE

MODEL = "Qwen/Qwen3-32B@0123456789abcdef0123456789abcdef01234567:" + "ab" * 32
OPEN = TdxPolicy(require_report_data_binding=False)


@pytest.fixture(scope="module")
def verified(
    intel_root: TrustedRoot, sample_quote: bytes, sample_collateral: Collateral
) -> VerifiedTdxQuote:
    return TdxVerifier(intel_root).verify(sample_quote, sample_collateral, now=AT_DCAP_SAMPLE)


def test_default_policy_trusts_uptodate_with_matching_binding(
    verified: VerifiedTdxQuote,
) -> None:
    binding = NonceBinding(verified.report_data)
    verdict = evaluate_tdx_policy(verified, TdxPolicy(), binding=binding)
    assert verdict.trusted, verdict.reason
    assert verdict.failed_rule is None
    assert verdict.checked == tuple(PolicyRule)


def test_default_requires_a_binding(verified: VerifiedTdxQuote) -> None:
    verdict = evaluate_tdx_policy(verified, TdxPolicy())
    assert not verdict.trusted
    assert verdict.failed_rule is PolicyRule.REPORT_DATA


@pytest.mark.parametrize("status", ["OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded"])
def test_only_uptodate_by_default(verified: VerifiedTdxQuote, status: str) -> None:
    other = dataclasses.replace(verified, tcb_status=status)
    verdict = evaluate_tdx_policy(other, OPEN)
    assert (verdict.trusted, verdict.failed_rule) == (False, PolicyRule.TCB_STATUS)
    assert status in verdict.reason
    relaxed = dataclasses.replace(OPEN, accepted_tcb_statuses=frozenset({"UpToDate", status}))
    assert evaluate_tdx_policy(other, relaxed).trusted


def test_rejected_advisory(verified: VerifiedTdxQuote) -> None:
    other = dataclasses.replace(verified, advisory_ids=("INTEL-SA-00837",))
    policy = dataclasses.replace(OPEN, rejected_advisories=frozenset({"INTEL-SA-00837"}))
    assert evaluate_tdx_policy(other, policy).failed_rule is PolicyRule.ADVISORY
    assert evaluate_tdx_policy(other, OPEN).trusted


def test_non_production_root_needs_explicit_opt_in(verified: VerifiedTdxQuote) -> None:
    test_pki = dataclasses.replace(verified, trusted_root_production=False)
    assert evaluate_tdx_policy(test_pki, OPEN).failed_rule is PolicyRule.TRUST_ROOT
    assert evaluate_tdx_policy(
        test_pki, dataclasses.replace(OPEN, require_production_root=False)
    ).trusted


def test_mrtd_allow_list(verified: VerifiedTdxQuote) -> None:
    allowed = dataclasses.replace(OPEN, allowed_mrtd=hex_set([SAMPLE_MRTD.upper()]))
    assert evaluate_tdx_policy(verified, allowed).trusted
    other = dataclasses.replace(OPEN, allowed_mrtd=hex_set(["00" * 48]))
    assert evaluate_tdx_policy(verified, other).failed_rule is PolicyRule.MRTD


def test_rtmr_set_allow_list(verified: VerifiedTdxQuote) -> None:
    rtmr = verified.rtmr
    assert evaluate_tdx_policy(
        verified, dataclasses.replace(OPEN, allowed_rtmr=frozenset({rtmr}))
    ).trusted
    changed = (rtmr[0], rtmr[1], rtmr[2], b"\x01" * 48)
    verdict = evaluate_tdx_policy(
        verified, dataclasses.replace(OPEN, allowed_rtmr=frozenset({changed}))
    )
    assert verdict.failed_rule is PolicyRule.RTMR


def test_image_hash_allow_list(verified: VerifiedTdxQuote) -> None:
    good = dataclasses.replace(OPEN, allowed_image_hashes=hex_set([verified.image_hash.hex()]))
    assert evaluate_tdx_policy(verified, good).trusted
    bad = dataclasses.replace(OPEN, allowed_image_hashes=hex_set(["0x" + "11" * 32]))
    verdict = evaluate_tdx_policy(verified, bad)
    assert verdict.failed_rule is PolicyRule.IMAGE_HASH
    assert verified.image_hash.hex() in verdict.reason


def test_model_hash_is_sha256_of_the_full_string(verified: VerifiedTdxQuote) -> None:
    assert model_hash(MODEL) == hashlib.sha256(MODEL.encode()).digest()
    policy = dataclasses.replace(OPEN, allowed_model_hashes=frozenset({model_hash(MODEL)}))
    assert evaluate_tdx_policy(verified, policy, model=MODEL).trusted
    other = MODEL.replace("32B", "8B")
    assert evaluate_tdx_policy(verified, policy, model=other).failed_rule is PolicyRule.MODEL_HASH
    assert evaluate_tdx_policy(verified, policy).failed_rule is PolicyRule.MODEL_HASH
    bare = evaluate_tdx_policy(verified, policy, model="Qwen3-32B")
    assert bare.failed_rule is PolicyRule.MODEL_HASH


def test_key_binding(verified: VerifiedTdxQuote) -> None:
    key = bytes(range(32))
    assert report_data_for_key(key) == hashlib.sha512(key).digest()
    bound = dataclasses.replace(
        verified,
        quote=dataclasses.replace(
            verified.quote,
            body=dataclasses.replace(verified.quote.body, report_data=report_data_for_key(key)),
        ),
    )
    assert evaluate_tdx_policy(bound, TdxPolicy(), binding=KeyBinding(key)).trusted
    verdict = evaluate_tdx_policy(verified, TdxPolicy(), binding=KeyBinding(key))
    assert verdict.failed_rule is PolicyRule.REPORT_DATA
    assert "RA-TLS key" in verdict.reason


def test_nonce_binding(verified: VerifiedTdxQuote) -> None:
    assert report_data_for_nonce(b"\x01\x02") == b"\x01\x02" + bytes(62)
    wrong = evaluate_tdx_policy(verified, TdxPolicy(), binding=NonceBinding(b"\x01" * 32))
    assert wrong.failed_rule is PolicyRule.REPORT_DATA
    assert "nonce" in wrong.reason


def test_first_failing_rule_is_reported(verified: VerifiedTdxQuote) -> None:
    policy = TdxPolicy(allowed_mrtd=hex_set(["00" * 48]), allowed_image_hashes=hex_set(["00" * 32]))
    verdict = evaluate_tdx_policy(dataclasses.replace(verified, tcb_status="OutOfDate"), policy)
    assert verdict.failed_rule is PolicyRule.TCB_STATUS
    assert verdict.checked == (PolicyRule.TRUST_ROOT, PolicyRule.TCB_STATUS)
