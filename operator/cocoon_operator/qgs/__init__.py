"""Intel's quote generation service (QGS) wire format, as QEMU speaks it (pure library).

When a TDX guest asks for a quote, its kernel hands the VMM its 1024-byte
TDREPORT (Linux ``tdx_report_new``: ``in_len = TDX_REPORT_LEN``); QEMU wraps it
in a GET_QUOTE_REQ, sends it to the ``quote-generation-socket`` on a new
connection, reads one GET_QUOTE_RESP back and gives the guest only the quote
(``tdx-quote-generator.c:272-299``, ``tdx.c`` ``tdx_get_quote_completion``).
This package parses and builds those frames so the launcher's quote relay can
check them and keep the quotes, without changing a byte.

Sources (facts taken, no code copied):

* intel/SGXDataCenterAttestationPrimitives @ a46ee8ab1056:
  ``QuoteGeneration/quote_wrapper/qgs_msg_lib/inc/qgs_msg_lib.h`` (structures),
  ``qgs_msg_lib/qgs_msg_lib.cpp`` (generation and validation rules),
  ``qgs/qgs_server.cpp`` (socket framing), ``qgs/qgs_ql_logic.cpp`` (error answers),
  ``tdx_attest/tdx_attest.h`` (report sizes).
* qemu/qemu ``target/i386/kvm/tdx-quote-generator.c`` @ 50fd57418c3f and
  ``tdx-quote-generator.h`` @ 43ba160cb4bb (what QEMU sends and accepts).
* intel/linux-sgx ``common/inc/sgx_report2.h`` (REPORTDATA at offset 128 of the
  TDREPORT's REPORTMACSTRUCT).

Errors are :class:`QgsWireError` with a stable :class:`WireErrorReason`.
"""

from __future__ import annotations

from cocoon_operator.qgs._wire import (
    GET_QUOTE_FIXED_SIZE,
    HEADER_SIZE,
    MAJOR_VERSION,
    MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME,
    MINOR_VERSION,
    PREFIX_SIZE,
    QGS_ERROR_MAX,
    REPORT_DATA_OFFSET,
    REPORT_DATA_SIZE,
    TD_REPORT_SIZE,
    GetQuoteRequest,
    GetQuoteResponse,
    MessageType,
    QgsError,
    QgsHeader,
    QgsMessage,
    QgsWireError,
    WireErrorReason,
    encode_get_quote_error,
    encode_get_quote_request,
    encode_get_quote_response,
    frame,
    message_length,
    parse_frame,
    parse_get_quote_request,
    parse_get_quote_response,
    parse_message,
    td_report_data,
)

__all__ = [
    "GET_QUOTE_FIXED_SIZE",
    "HEADER_SIZE",
    "MAJOR_VERSION",
    "MAX_REQUEST_FRAME",
    "MAX_RESPONSE_FRAME",
    "MINOR_VERSION",
    "PREFIX_SIZE",
    "QGS_ERROR_MAX",
    "REPORT_DATA_OFFSET",
    "REPORT_DATA_SIZE",
    "TD_REPORT_SIZE",
    "GetQuoteRequest",
    "GetQuoteResponse",
    "MessageType",
    "QgsError",
    "QgsHeader",
    "QgsMessage",
    "QgsWireError",
    "WireErrorReason",
    "encode_get_quote_error",
    "encode_get_quote_request",
    "encode_get_quote_response",
    "frame",
    "message_length",
    "parse_frame",
    "parse_get_quote_request",
    "parse_get_quote_response",
    "parse_message",
    "td_report_data",
]
