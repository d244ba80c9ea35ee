"""Fuzzing the parsers that take bytes from outside: a malformed input is refused with
the project's own error naming the step, and never escapes as another exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoon_operator.attestation import (
    Collateral,
    parse_hex_evidence,
    parse_ratls_certificate,
    parse_spdm_measurements,
    parse_tdx_quote,
)
from cocoon_operator.attestation.errors import AttestationError, CollateralFormatError
from cocoon_operator.policy.payouts import UNREADABLE, PayoutIntent, parse_intent
from cocoon_operator.ton.address import parse_address
from cocoon_operator.ton.errors import AddressError
from cocoon_operator.workerapi import WorkerClient, WorkerStatsError, parse_stats

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "attestation"
QUOTE = (FIXTURES / "tdx" / "dcap-qvl" / "tdx_quote").read_bytes()
COLLATERAL = (FIXTURES / "tdx" / "dcap-qvl" / "tdx_quote_collateral.json").read_text()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """The original with bytes flipped, a range cut out, or truncated."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 64)))
        del data[start:end]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated(QUOTE)))
def test_tdx_quote_parser(raw: bytes) -> None:
    try:
        quote = parse_tdx_quote(raw)
    except AttestationError as exc:
        assert exc.code  # names the step
    else:
        assert quote.version in (4, 5)


@FUZZ
@given(st.one_of(st.binary(max_size=4096), st.text(max_size=512).map(str.encode)))
def test_ratls_certificate_parser(raw: bytes) -> None:
    try:
        parse_ratls_certificate(raw)
    except AttestationError as exc:
        assert exc.code


GPU_REPORT = parse_hex_evidence(
    (FIXTURES / "gpu" / "attestation-sdk" / "hopperAttestationReport.txt").read_text()
)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated(GPU_REPORT)))
def test_spdm_parser(raw: bytes) -> None:
    try:
        parse_spdm_measurements(raw)
    except AttestationError as exc:
        assert exc.code


@FUZZ
@given(st.text(max_size=256))
def test_hex_evidence_parser(text: str) -> None:
    try:
        parse_hex_evidence(text)
    except AttestationError as exc:
        assert exc.code


@FUZZ
@given(st.integers(0, len(COLLATERAL) - 1), st.text(max_size=8))
def test_collateral_json_parser(cut: int, junk: str) -> None:
    try:
        Collateral.from_json(COLLATERAL[:cut] + junk)
    except AttestationError as exc:
        assert exc.code


@FUZZ
@given(st.text(max_size=80))
def test_ton_address_parser(text: str) -> None:
    try:
        parse_address(text)
    except AddressError as exc:
        assert str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


@FUZZ
@given(json_values)
def test_worker_stats_parser(doc: object) -> None:
    try:
        parse_stats(json.loads(json.dumps(doc)))
    except WorkerStatsError as exc:
        assert str(exc)


@FUZZ
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_payout_intent_annotation_parser(raw: str) -> None:
    """Anyone may edit the annotation: whatever it holds reads as an intent, or as
    the unreadable one that asks nobody; never as an exception."""
    intent = parse_intent(raw)
    assert intent is not None
    if intent is not UNREADABLE:
        assert isinstance(intent.purpose, str)
        assert all(type(v) is int for v in intent.expected.values())
        assert parse_intent(intent.to_annotation()) == intent


@FUZZ
@given(st.text(max_size=40), st.dictionaries(st.text(max_size=48), st.integers(0, 2**40)))
def test_payout_intent_reads_back_as_written(purpose: str, expected: dict[str, int]) -> None:
    intent = PayoutIntent(purpose, expected)
    assert parse_intent(intent.to_annotation()) == intent


# Two kilobytes of brackets are deeper than Python's JSON parser recurses: its
# RecursionError is no ValueError, and used to escape every parser below.
DEEP = "[" * 5000 + "]" * 5000


def test_collateral_nested_too_deep_is_a_collateral_format_error() -> None:
    with pytest.raises(CollateralFormatError, match="not JSON"):
        Collateral.from_json(DEEP)
    doc = json.loads(COLLATERAL)
    doc["tcb_info"] = DEEP
    with pytest.raises(CollateralFormatError, match="unreadable"):
        _ = Collateral.from_json(json.dumps(doc)).info


async def test_worker_documents_nested_too_deep_are_worker_stats_errors() -> None:
    async def deep(_path: str, _name: object = None, _value: object = None) -> str:
        return DEEP

    client = WorkerClient("127.0.0.1", 1)
    client._get = deep  # type: ignore[method-assign]  # the worker's answer, without a worker
    async with client:
        with pytest.raises(WorkerStatsError, match="jsonstats is not JSON"):
            await client.stats()
