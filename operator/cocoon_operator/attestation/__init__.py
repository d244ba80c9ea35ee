"""Attestation evidence verification for COCOON workers (pure library; I/O at the edges).

Intel TDX DCAP quotes (v4/v5) are parsed here and verified by a swappable DCAP
engine (default: PyPI ``dcap-qvl``) against an explicitly pinned root; NVIDIA
H100 SPDM evidence and RIMs are verified with ``cryptography`` and ``signxml``.
Every function that checks time takes an aware ``now``; none reads the clock.
Errors: see :mod:`cocoon_operator.attestation.errors`. CLI: :mod:`.cli`.
"""

from __future__ import annotations

from cocoon_operator.attestation._chain import ChainVerifier, verify_chain
from cocoon_operator.attestation._collateral import (
    Collateral,
    CollateralCache,
    CollateralInfo,
    CollateralKey,
    CollateralSource,
    LocalCollateralSource,
)
from cocoon_operator.attestation._engine import (
    DcapQvlEngine,
    EngineReport,
    QuoteVerifierEngine,
    classify_engine_error,
)
from cocoon_operator.attestation._gpu import GpuVerifier, VerifiedGpuEvidence
from cocoon_operator.attestation._measurements import (
    cocoon_image_hash,
    model_hash,
    report_data_for_key,
    report_data_for_nonce,
)
from cocoon_operator.attestation._policy import (
    KeyBinding,
    NonceBinding,
    PolicyRule,
    ReportDataBinding,
    TdxPolicy,
    Verdict,
    evaluate_tdx_policy,
    hex_set,
)
from cocoon_operator.attestation._quote import (
    PckIdentity,
    QuoteHeader,
    QuoteSignatureData,
    TdReport,
    TdxQuote,
    parse_tdx_quote,
    pck_identity,
)
from cocoon_operator.attestation._ratls import (
    RATLS_CLAIMS_OID,
    RATLS_QUOTE_OID,
    RaTlsCertificate,
    check_ratls_binding,
    parse_ratls_certificate,
)
from cocoon_operator.attestation._revocation import (
    NoRevocationCheck,
    RevocationChecker,
    RevocationResult,
    RevocationStatus,
    SerialDenyList,
)
from cocoon_operator.attestation._rim import (
    MeasurementComparison,
    MeasurementMismatch,
    RimMeasurement,
    RimVerifier,
    VerifiedRim,
    compare_measurements,
)
from cocoon_operator.attestation._roots import (
    TrustedRoot,
    intel_sgx_root_ca,
    load_certificates,
    nvidia_device_root,
    nvidia_rim_root,
)
from cocoon_operator.attestation._spdm import (
    MeasurementBlock,
    OpaqueData,
    SpdmMeasurements,
    parse_hex_evidence,
    parse_spdm_measurements,
)
from cocoon_operator.attestation._tdx import TdxVerifier, VerifiedTdxQuote, verify_tdx_quote

__all__ = [
    "RATLS_CLAIMS_OID",
    "RATLS_QUOTE_OID",
    "ChainVerifier",
    "Collateral",
    "CollateralCache",
    "CollateralInfo",
    "CollateralKey",
    "CollateralSource",
    "DcapQvlEngine",
    "EngineReport",
    "GpuVerifier",
    "KeyBinding",
    "LocalCollateralSource",
    "MeasurementBlock",
    "MeasurementComparison",
    "MeasurementMismatch",
    "NoRevocationCheck",
    "NonceBinding",
    "OpaqueData",
    "PckIdentity",
    "PolicyRule",
    "QuoteHeader",
    "QuoteSignatureData",
    "QuoteVerifierEngine",
    "RaTlsCertificate",
    "ReportDataBinding",
    "RevocationChecker",
    "RevocationResult",
    "RevocationStatus",
    "RimMeasurement",
    "RimVerifier",
    "SerialDenyList",
    "SpdmMeasurements",
    "TdReport",
    "TdxPolicy",
    "TdxQuote",
    "TdxVerifier",
    "TrustedRoot",
    "Verdict",
    "VerifiedGpuEvidence",
    "VerifiedRim",
    "VerifiedTdxQuote",
    "check_ratls_binding",
    "classify_engine_error",
    "cocoon_image_hash",
    "compare_measurements",
    "evaluate_tdx_policy",
    "hex_set",
    "intel_sgx_root_ca",
    "load_certificates",
    "model_hash",
    "nvidia_device_root",
    "nvidia_rim_root",
    "parse_hex_evidence",
    "parse_ratls_certificate",
    "parse_spdm_measurements",
    "parse_tdx_quote",
    "pck_identity",
    "report_data_for_key",
    "report_data_for_nonce",
    "verify_chain",
    "verify_tdx_quote",
]
