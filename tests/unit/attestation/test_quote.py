"""Our own TDX quote parser, checked against the documented offsets of the real samples."""

from __future__ import annotations

import hashlib
import struct

import pytest

from cocoon_operator.attestation import (
    cocoon_image_hash,
    load_certificates,
    parse_tdx_quote,
    pck_identity,
)
from cocoon_operator.attestation.errors import EvidenceFormatError, QuoteFormatError
from tests.unit.attestation.helpers import COCOON_MRTD, SAMPLE_MRTD, SAMPLE_RTMR

# Documented absolute offsets of the v4 body fields (v5: +6).
OFFSETS = {
    "mrtd": 184,
    "mrconfigid": 232,
    "mrowner": 280,
    "mrownerconfig": 328,
    "rtmr0": 376,
    "rtmr1": 424,
    "rtmr2": 472,
    "rtmr3": 520,
}


def _field(raw: bytes, name: str, shift: int = 0) -> bytes:
    start = OFFSETS[name] + shift
    return raw[start : start + 48]


def test_v4_sample_fields_match_sources(sample_quote: bytes) -> None:
    q = parse_tdx_quote(sample_quote)
    assert q.version == 4
    assert q.header.tee_type == 0x81
    assert q.body.body_type == 2
    assert q.body.mrservicetd is None
    assert q.signed_length == 632
    assert q.body.mrtd.hex() == SAMPLE_MRTD
    assert tuple(r.hex() for r in q.body.rtmr) == SAMPLE_RTMR
    assert q.body.report_data.hex().startswith("9a9d48e7")
    assert q.body.report_data.hex().endswith("2b523f20")
    assert q.body.report_data == sample_quote[568:632]
    assert q.signature_data_length == struct.unpack_from("<I", sample_quote, 632)[0]


@pytest.mark.parametrize("name", sorted(OFFSETS))
def test_v4_fields_sit_at_documented_offsets(sample_quote: bytes, name: str) -> None:
    body = parse_tdx_quote(sample_quote).body
    values = {
        "mrtd": body.mrtd,
        "mrconfigid": body.mrconfigid,
        "mrowner": body.mrowner,
        "mrownerconfig": body.mrownerconfig,
        **{f"rtmr{i}": body.rtmr[i] for i in range(4)},
    }
    assert values[name] == _field(sample_quote, name)


def test_v5_td15_body_is_shifted_by_the_descriptor(outdated_quote: bytes) -> None:
    q = parse_tdx_quote(outdated_quote)
    assert q.version == 5
    body_type, body_size = struct.unpack_from("<HI", outdated_quote, 48)
    assert (body_type, body_size) == (3, 648)
    assert q.body.body_type == 3
    assert q.body.mrtd == _field(outdated_quote, "mrtd", 6)
    assert q.body.rtmr[3] == _field(outdated_quote, "rtmr3", 6)
    assert q.body.report_data == outdated_quote[574:638]
    assert q.body.tee_tcb_svn2 == outdated_quote[638:654]
    assert q.body.mrservicetd == outdated_quote[654:702]
    assert q.signed_length == 48 + 6 + 648
    assert q.trailing_bytes == 0


def test_cocoon_quote_trailing_zeros_are_tolerated_and_trimmed(cocoon_quote: bytes) -> None:
    q = parse_tdx_quote(cocoon_quote)
    assert q.body.mrtd.hex() == COCOON_MRTD
    assert q.trailing_bytes == 70
    assert cocoon_quote[-70:] == bytes(70)
    assert len(q.trimmed) == len(cocoon_quote) - 70 == 632 + 4 + q.signature_data_length
    assert q.trimmed == cocoon_quote[: len(q.trimmed)]


def test_embedded_pck_chain_and_identity(cocoon_quote: bytes, sample_quote: bytes) -> None:
    for raw, fmspc in ((cocoon_quote, "90C06F000000"), (sample_quote, "B0C06F000000")):
        q = parse_tdx_quote(raw)
        assert q.signature_data.certification_data_type == 5
        assert len(q.signature_data.qe_report) == 384
        chain = load_certificates(q.pck_chain_pem)
        assert len(chain) == 3
        assert "Intel SGX Root CA" in chain[-1].subject.rfc4514_string()
        ident = pck_identity(chain[0])
        assert (ident.fmspc, ident.ca) == (fmspc, "platform")


def test_image_hash_is_sha256_of_448_bytes(sample_quote: bytes, cocoon_quote: bytes) -> None:
    for raw in (sample_quote, cocoon_quote):
        q = parse_tdx_quote(raw)
        record = raw[184 : 184 + 8 * 48] + bytes(64)
        assert len(record) == 448
        assert q.image_hash == hashlib.sha256(record).digest()
        b = q.body
        assert q.image_hash == cocoon_image_hash(
            b.mrtd, b.mrconfigid, b.mrowner, b.mrownerconfig, b.rtmr
        )


def test_image_hash_ignores_report_data(sample_quote: bytes) -> None:
    changed = bytearray(sample_quote)
    changed[600] ^= 0xFF  # inside REPORTDATA
    assert parse_tdx_quote(bytes(changed)).image_hash == parse_tdx_quote(sample_quote).image_hash
    changed[200] ^= 0xFF  # inside MRTD
    assert parse_tdx_quote(bytes(changed)).image_hash != parse_tdx_quote(sample_quote).image_hash


@pytest.mark.parametrize("cut", [0, 10, 47, 100, 631, 635, 700, 4000])
def test_truncated_quotes_are_format_errors(sample_quote: bytes, cut: int) -> None:
    with pytest.raises(QuoteFormatError):
        parse_tdx_quote(sample_quote[:cut])


def test_wrong_version_tee_and_declared_length(sample_quote: bytes) -> None:
    sgx = bytearray(sample_quote)
    sgx[0:2] = (3).to_bytes(2, "little")
    with pytest.raises(QuoteFormatError, match="version 3"):
        parse_tdx_quote(bytes(sgx))
    not_tdx = bytearray(sample_quote)
    not_tdx[4:8] = (0).to_bytes(4, "little")
    with pytest.raises(QuoteFormatError, match="not TDX"):
        parse_tdx_quote(bytes(not_tdx))
    too_long = bytearray(sample_quote)
    too_long[632:636] = (len(sample_quote)).to_bytes(4, "little")
    with pytest.raises(QuoteFormatError, match="signature data"):
        parse_tdx_quote(bytes(too_long))
    assert issubclass(QuoteFormatError, EvidenceFormatError)
    assert issubclass(QuoteFormatError, ValueError)


def test_image_hash_refuses_wrong_sizes() -> None:
    m = bytes(48)
    with pytest.raises(ValueError, match="48-byte"):
        cocoon_image_hash(m, m, m, bytes(47), (m, m, m, m))
