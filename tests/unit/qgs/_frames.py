"""Frames as QEMU and QGS build them, written with ``struct`` from the specs, not the module.

The tests compare :mod:`cocoon_operator.qgs` against these, so a mistake in the
module's layout cannot hide behind the module's own encoder. Sources:

* qemu/qemu ``target/i386/kvm/tdx-quote-generator.c`` @ 50fd57418c3f
* intel/SGXDataCenterAttestationPrimitives @ a46ee8ab1056,
  ``QuoteGeneration/quote_wrapper/qgs_msg_lib/{inc/qgs_msg_lib.h,qgs_msg_lib.cpp}``,
  ``qgs/qgs_server.cpp``
* intel/linux-sgx ``common/inc/sgx_report2.h`` (TDREPORT layout)
"""

from __future__ import annotations

import struct

QGS_MSG_ERROR_UNEXPECTED = 0x12001  # qgs_msg_lib.h:52
GET_QUOTE_REQ, GET_QUOTE_RESP = 0, 1  # qgs_msg_lib.h:64-65


def prefix(length: int) -> bytes:
    """The 4-byte big-endian length (qgs_server.cpp:74-80, tdx-quote-generator.c:66-72)."""
    return bytes(
        [(length >> 24) & 0xFF, (length >> 16) & 0xFF, (length >> 8) & 0xFF, length & 0xFF]
    )


def header(msg_type: int, size: int, error_code: int = 0, major: int = 1, minor: int = 1) -> bytes:
    """qgs_msg_header_t, packed little-endian u16 u16 u32 u32 u32 (qgs_msg_lib.h:47,73-79)."""
    return struct.pack("<HHIII", major, minor, msg_type, size, error_code)


def td_report(report_data: bytes) -> bytes:
    """A 1024-byte TDREPORT: REPORTTYPE 0x81 at 0, REPORTDATA at 128 (sgx_report2.h)."""
    assert len(report_data) == 64
    mac_struct = bytes([0x81, 0, 0, 0]) + bytes(124) + report_data + bytes(64)
    body = bytes((i * 7 + 3) & 0xFF for i in range(1024 - 256))
    return mac_struct + body


def qemu_request(report: bytes) -> bytes:
    """What QEMU writes for a guest's report: header 1.1, GET_QUOTE_REQ, size 24+len,
    error 0, report_size len, id_list_size 0, the report, all behind the prefix
    (tdx-quote-generator.c:272-292)."""
    message = header(GET_QUOTE_REQ, 24 + len(report)) + struct.pack("<II", len(report), 0) + report
    return prefix(len(message)) + message


def qgs_quote_response(quote: bytes, selected_id: bytes = b"") -> bytes:
    """What QGS writes with a quote (qgs_msg_lib.cpp:393-451, qgs_server.cpp:227-230)."""
    size = 24 + len(selected_id) + len(quote)
    message = (
        header(GET_QUOTE_RESP, size)
        + struct.pack("<II", len(selected_id), len(quote))
        + selected_id
        + quote
    )
    return prefix(len(message)) + message


def qgs_error_response(code: int = QGS_MSG_ERROR_UNEXPECTED) -> bytes:
    """What QGS writes without a quote: sizeof(qgs_msg_get_quote_resp_t) = 24 bytes,
    the code in the header, both sizes 0 (qgs_msg_lib.cpp:343-391)."""
    message = header(GET_QUOTE_RESP, 24, error_code=code) + struct.pack("<II", 0, 0)
    return prefix(len(message)) + message


def qemu_reads(answer: bytes, payload_len: int = 8192 - 24) -> tuple[str, bytes]:
    """How QEMU takes an answer (tdx_get_quote_read, tdx-quote-generator.c:87-194):
    ``("quote", bytes the guest gets)`` or ``("error", why)``. ``payload_len`` is the
    guest's shared buffer less its 24-byte header (the Linux driver's buffer is 8 KiB).
    """
    if len(answer) < 4:
        return "error", b"end of file before reply"
    (length,) = struct.unpack(">I", answer[:4])
    if length == 0 or length > payload_len - 4:  # :116-122
        return "error", b"message length"
    payload_len = 4 + length
    if len(answer) < 4 + 16:
        return "error", b"end of file before reply"
    major, minor, msg_type, size, error_code = struct.unpack_from("<HHIII", answer, 4)
    if (major, minor) != (1, 1):  # :133-140
        return "error", b"version"
    if msg_type != GET_QUOTE_RESP:  # :141-146
        return "error", b"type"
    if size > payload_len - 4:  # :147-152
        return "error", b"size"
    if error_code != 0:  # :153-158
        return "error", b"error code"
    if len(answer) < 4 + 24:
        return "error", b"end of file before reply"
    selected_id_size, quote_size = struct.unpack_from("<II", answer, 20)
    if selected_id_size != 0:  # :162-168
        return "error", b"selected id"
    if payload_len - 4 - 24 != quote_size:  # :169-176
        return "error", b"quote size"
    if len(answer) < payload_len:
        return "error", b"end of file before reply"
    return "quote", answer[28:payload_len]  # :179-185: prefix and 24-byte header stripped
