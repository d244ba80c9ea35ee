"""The QGS wire format: frames built as QEMU and QGS build them parse, and bad ones are
refused with the reason the rule they break names."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from cocoon_operator.attestation import parse_tdx_quote
from cocoon_operator.qgs import (
    MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME,
    MessageType,
    QgsError,
    QgsWireError,
    WireErrorReason,
    encode_get_quote_error,
    encode_get_quote_request,
    encode_get_quote_response,
    message_length,
    parse_frame,
    parse_get_quote_request,
    parse_get_quote_response,
    td_report_data,
)
from tests.unit.qgs import _frames

REPORT_DATA = bytes(range(64))
REPORT = _frames.td_report(REPORT_DATA)


def test_a_request_built_as_qemu_builds_it_parses_to_its_report_and_report_data() -> None:
    request = parse_get_quote_request(_frames.qemu_request(REPORT))

    assert request.header.major_version == 1
    assert request.header.minor_version == 1
    assert request.header.type is MessageType.GET_QUOTE_REQ
    assert request.header.size == 24 + 1024
    assert request.header.error_code == 0
    assert request.report == REPORT
    assert request.id_list == b""
    assert request.report_data == REPORT_DATA


def test_the_module_encodes_a_request_byte_for_byte_as_qemu_does() -> None:
    assert encode_get_quote_request(REPORT) == _frames.qemu_request(REPORT)
    assert len(_frames.qemu_request(REPORT)) == 4 + 24 + 1024


def test_a_response_built_as_qgs_builds_it_parses_to_a_quote_our_parser_reads(
    real_quote: bytes,
) -> None:
    response = parse_get_quote_response(_frames.qgs_quote_response(real_quote))

    assert response.ok
    assert response.selected_id == b""
    assert response.quote == real_quote
    assert parse_tdx_quote(response.quote).version in (4, 5)


def test_the_module_encodes_quote_and_error_responses_byte_for_byte_as_qgs_does(
    sample_quote: bytes,
) -> None:
    assert encode_get_quote_response(sample_quote) == _frames.qgs_quote_response(sample_quote)
    assert encode_get_quote_error() == _frames.qgs_error_response()
    assert encode_get_quote_error(QgsError.INVALID_SIZE) == _frames.qgs_error_response(0x12006)


def test_a_response_with_a_selected_id_keeps_the_id_and_the_quote_apart(
    sample_quote: bytes,
) -> None:
    uuid = bytes(range(16))
    response = parse_get_quote_response(_frames.qgs_quote_response(sample_quote, uuid))

    assert response.selected_id == uuid
    assert response.quote == sample_quote


def test_a_request_with_an_id_list_keeps_the_report_and_the_list_apart() -> None:
    id_list = bytes(range(16))
    request = parse_get_quote_request(encode_get_quote_request(REPORT, id_list))

    assert request.report == REPORT
    assert request.id_list == id_list


def test_an_error_answer_from_qgs_parses_as_not_ok_with_its_code() -> None:
    response = parse_get_quote_response(_frames.qgs_error_response())

    assert not response.ok
    assert response.error_code == QgsError.UNEXPECTED
    assert response.quote == b""


def test_a_minor_version_other_than_one_is_accepted_as_qgs_accepts_it() -> None:
    """QGS checks only the major version (qgs_msg_lib.cpp:213-217)."""
    request = parse_get_quote_request(encode_get_quote_request(REPORT, minor_version=0))

    assert request.header.minor_version == 0


def _patch(frame: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(frame)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


GOOD_REQUEST = _frames.qemu_request(REPORT)

# Offsets in a frame: prefix 0, major 4, minor 6, type 8, size 12, error 16, sizes 20 and 24.
BAD_REQUESTS: dict[str, tuple[Callable[[], bytes], WireErrorReason]] = {
    "cut short": (lambda: GOOD_REQUEST[:-1], WireErrorReason.TRUNCATED),
    "only part of the prefix": (lambda: GOOD_REQUEST[:3], WireErrorReason.TRUNCATED),
    "a message shorter than a header": (
        lambda: _frames.prefix(8) + bytes(8),
        WireErrorReason.TRUNCATED,
    ),
    "a zero length": (lambda: _frames.prefix(0), WireErrorReason.TRUNCATED),
    "a fixed part cut short": (
        lambda: _frames.prefix(20) + _frames.header(0, 20) + bytes(4),
        WireErrorReason.TRUNCATED,
    ),
    "a length over the limit": (
        lambda: _frames.prefix(MAX_REQUEST_FRAME - 3) + bytes(16),
        WireErrorReason.OVERSIZED,
    ),
    "major version 2": (lambda: _patch(GOOD_REQUEST, 4, "<H", 2), WireErrorReason.BAD_VERSION),
    "major version 0": (lambda: _patch(GOOD_REQUEST, 4, "<H", 0), WireErrorReason.BAD_VERSION),
    "an unknown type": (lambda: _patch(GOOD_REQUEST, 8, "<I", 6), WireErrorReason.BAD_TYPE),
    "a response's type": (lambda: _patch(GOOD_REQUEST, 8, "<I", 1), WireErrorReason.BAD_TYPE),
    "a platform-info request": (
        lambda: _frames.prefix(16) + _frames.header(4, 16),
        WireErrorReason.BAD_TYPE,
    ),
    "header.size unlike the prefix": (
        lambda: _patch(GOOD_REQUEST, 12, "<I", 24 + 1024 + 4),
        WireErrorReason.SIZE_MISMATCH,
    ),
    "header.size and report_size agreeing with each other, not with the prefix": (
        lambda: _patch(_patch(GOOD_REQUEST, 12, "<I", 24 + 1040), 20, "<I", 1040),
        WireErrorReason.SIZE_MISMATCH,
    ),
    "report_size unlike header.size": (
        lambda: _patch(GOOD_REQUEST, 20, "<I", 1000),
        WireErrorReason.SIZE_MISMATCH,
    ),
    "id_list_size unlike header.size": (
        lambda: _patch(GOOD_REQUEST, 24, "<I", 16),
        WireErrorReason.SIZE_MISMATCH,
    ),
    "bytes after the frame": (lambda: GOOD_REQUEST + b"\0", WireErrorReason.SIZE_MISMATCH),
    "an empty report": (
        lambda: _patch(_patch(GOOD_REQUEST, 20, "<I", 0), 24, "<I", 1024),
        WireErrorReason.INVALID_FIELD,
    ),
    "an error code": (
        lambda: _patch(GOOD_REQUEST, 16, "<I", 0x12001),
        WireErrorReason.INVALID_FIELD,
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_refused_with_the_reason_of_the_rule_it_breaks(case: str) -> None:
    build, reason = BAD_REQUESTS[case]

    with pytest.raises(QgsWireError) as refused:
        parse_get_quote_request(build())

    assert refused.value.reason is reason
    assert str(refused.value).startswith(reason.value + ": ")


def test_a_request_of_exactly_the_maximum_frame_is_accepted() -> None:
    report = bytes(MAX_REQUEST_FRAME - 4 - 24)

    request = parse_get_quote_request(encode_get_quote_request(report))

    assert len(request.report) == MAX_REQUEST_FRAME - 28


def test_an_oversized_frame_is_refused_on_its_prefix_alone() -> None:
    """A reader can refuse without buffering what the prefix announces."""
    with pytest.raises(QgsWireError) as refused:
        message_length(_frames.prefix(1 << 31), max_frame=MAX_REQUEST_FRAME)

    assert refused.value.reason is WireErrorReason.OVERSIZED
    assert message_length(_frames.prefix(1048), max_frame=MAX_REQUEST_FRAME) == 1048


def _response_fields(
    selected_id_size: int, quote_size: int, error_code: int, body: bytes = b""
) -> bytes:
    size = 24 + len(body)
    message = (
        _frames.header(1, size, error_code)
        + struct.pack("<II", selected_id_size, quote_size)
        + body
    )
    return _frames.prefix(len(message)) + message


BAD_RESPONSES: dict[str, tuple[Callable[[], bytes], WireErrorReason]] = {
    "success with an empty quote": (
        lambda: _response_fields(0, 0, 0),
        WireErrorReason.INVALID_FIELD,
    ),
    "an error with a quote": (
        lambda: _response_fields(0, 4, 0x12001, b"abcd"),
        WireErrorReason.INVALID_FIELD,
    ),
    "an error code QGS does not have": (
        lambda: _response_fields(0, 0, 0x12008),
        WireErrorReason.INVALID_FIELD,
    ),
    "quote_size unlike header.size": (
        lambda: _response_fields(0, 5, 0, b"abcd"),
        WireErrorReason.SIZE_MISMATCH,
    ),
    "a request's type": (
        lambda: _frames.qemu_request(REPORT),
        WireErrorReason.BAD_TYPE,
    ),
    "a length over what QEMU can take": (
        lambda: _frames.prefix(MAX_RESPONSE_FRAME) + bytes(16),
        WireErrorReason.OVERSIZED,
    ),
}


@pytest.mark.parametrize("case", list(BAD_RESPONSES))
def test_a_bad_response_is_refused_with_the_reason_of_the_rule_it_breaks(case: str) -> None:
    build, reason = BAD_RESPONSES[case]

    with pytest.raises(QgsWireError) as refused:
        parse_get_quote_response(build())

    assert refused.value.reason is reason


def test_any_known_message_type_parses_as_a_frame_with_its_body_untouched() -> None:
    body = struct.pack("<HHII", 4, 17, 16, 16) + bytes(32)
    message = _frames.header(5, 16 + len(body)) + body

    parsed = parse_frame(_frames.prefix(len(message)) + message, max_frame=MAX_REQUEST_FRAME)

    assert parsed.header.type is MessageType.GET_PLATFORM_INFO_RESP
    assert parsed.body == body


def test_report_data_refuses_a_report_that_is_not_a_tdreport() -> None:
    assert td_report_data(REPORT) == REPORT_DATA
    with pytest.raises(QgsWireError) as refused:
        td_report_data(REPORT[:-1])

    assert refused.value.reason is WireErrorReason.INVALID_FIELD


def test_the_encoders_refuse_what_qgs_would_not_produce() -> None:
    for build in (
        lambda: encode_get_quote_request(b""),
        lambda: encode_get_quote_response(b""),
        lambda: encode_get_quote_error(QgsError.SUCCESS),
        lambda: encode_get_quote_error(0x12008),
    ):
        with pytest.raises(QgsWireError) as refused:
            build()
        assert refused.value.reason is WireErrorReason.INVALID_FIELD


def test_the_error_reasons_keep_their_published_names() -> None:
    assert [r.value for r in WireErrorReason] == [
        "truncated",
        "oversized",
        "bad-version",
        "bad-type",
        "size-mismatch",
        "invalid-field",
    ]
