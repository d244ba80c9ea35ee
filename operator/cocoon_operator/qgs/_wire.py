"""Parse and build the framed messages QEMU and Intel's QGS exchange (pure, no I/O).

Sources (read, not copied; line numbers as of the commits named in
:mod:`cocoon_operator.qgs`):

* Frame: a 4-byte big-endian length of the message that follows
  (QGS ``qgs_server.cpp:61-80``; QEMU ``tdx-quote-generator.c:53-72``).
* Header, little-endian and packed (``qgs_msg_lib.h:47,73-79``): major u16,
  minor u16, type u32, size u32 (the whole message, header included),
  error_code u32 (responses only).
* GET_QUOTE_REQ (``qgs_msg_lib.h:81-86``): header, report_size u32 (not 0),
  id_list_size u32, then the report and the id list.
* GET_QUOTE_RESP (``qgs_msg_lib.h:88-93``): header, selected_id_size u32,
  quote_size u32, then the selected id and the quote. A failure is the same
  message with ``error_code`` set and both sizes 0 (``qgs_msg_lib.cpp:343-391``).
* Validation follows QGS's own inflate functions (``qgs_msg_lib.cpp:183-263``
  for requests, ``574-664`` for responses): only the major version is checked,
  ``size`` must equal the received length and the fixed part plus the variable
  sizes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

PREFIX_SIZE: Final = 4
"""The big-endian length in front of every message on the socket."""

HEADER_SIZE: Final = 16
"""``qgs_msg_header_t``: major, minor (u16 each), type, size, error_code (u32 each)."""

GET_QUOTE_FIXED_SIZE: Final = 24
"""Header plus two u32 sizes: the same for GET_QUOTE_REQ and GET_QUOTE_RESP."""

MAJOR_VERSION: Final = 1
MINOR_VERSION: Final = 1
"""What QEMU and QGS write (``qgs_msg_lib.cpp:37-38``, ``tdx-quote-generator.c:19-20``)."""

TD_REPORT_SIZE: Final = 1024
"""TDREPORT_STRUCT, what the guest kernel hands QEMU (``tdx_attest.h:83``, ``sgx_report2.h``)."""

REPORT_DATA_OFFSET: Final = 128
"""REPORTDATA inside REPORTMACSTRUCT, the first 256 bytes of the TDREPORT (``sgx_report2.h``)."""

REPORT_DATA_SIZE: Final = 64

MAX_REQUEST_FRAME: Final = 4096
"""Largest request frame accepted, prefix included. QEMU sends 4 + 24 + 1024 bytes;
QGS itself reads requests into a 4096-byte buffer (``qgs_server.cpp:272``)."""

MAX_RESPONSE_FRAME: Final = 128 * 1024 - 24
"""Largest response frame accepted, prefix included: QEMU reads the answer into the
guest's shared buffer (at most 128 KiB, ``tdx-quote-generator.h:18``) minus its
24-byte GetQuote header (``tdx-quote-generator.h:21``) and refuses anything longer
(``tdx-quote-generator.c:116-122``)."""

_HEADER = struct.Struct("<HHIII")
_SIZES = struct.Struct("<II")
_PREFIX = struct.Struct(">I")


class MessageType(enum.IntEnum):
    """``qgs_msg_type_t`` (``qgs_msg_lib.h:63-71``)."""

    GET_QUOTE_REQ = 0
    GET_QUOTE_RESP = 1
    GET_COLLATERAL_REQ = 2
    GET_COLLATERAL_RESP = 3
    GET_PLATFORM_INFO_REQ = 4
    GET_PLATFORM_INFO_RESP = 5


class QgsError(enum.IntEnum):
    """``qgs_msg_error_t`` (``qgs_msg_lib.h:43-61``): the codes a response's header may carry."""

    SUCCESS = 0x0000
    UNEXPECTED = 0x12001
    OUT_OF_MEMORY = 0x12002
    INVALID_PARAMETER = 0x12003
    INVALID_VERSION = 0x12004
    INVALID_TYPE = 0x12005
    INVALID_SIZE = 0x12006
    INVALID_CODE = 0x12007


QGS_ERROR_MAX: Final = 0x12008
"""Codes at or above this are not QGS's (``qgs_msg_lib.cpp:647,656-658``)."""


class WireErrorReason(enum.StrEnum):
    """Why a frame was refused. The values are stable: logs and metrics use them."""

    TRUNCATED = "truncated"
    """Fewer bytes than the prefix or the message's own fixed part needs."""
    OVERSIZED = "oversized"
    """The prefix announces more than the maximum frame: nothing more is read."""
    BAD_VERSION = "bad-version"
    """Major version is not 1 (QGS checks only the major: ``qgs_msg_lib.cpp:213-217``)."""
    BAD_TYPE = "bad-type"
    """Not a known message type, or not the type expected here."""
    SIZE_MISMATCH = "size-mismatch"
    """The prefix, ``header.size`` and the body's own sizes disagree, or bytes trail."""
    INVALID_FIELD = "invalid-field"
    """A field QGS forbids: empty report, error code in a request, empty successful
    quote, a failed response with a body, an unknown error code, a report that is
    not a TDREPORT."""


class QgsWireError(ValueError):
    """A frame that is not a well-formed QGS message; :attr:`reason` says which rule."""

    def __init__(self, reason: WireErrorReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class QgsHeader:
    """``qgs_msg_header_t``. ``type`` is a :class:`MessageType` once parsed."""

    major_version: int
    minor_version: int
    type: MessageType
    size: int
    error_code: int = 0

    def encode(self) -> bytes:
        return _HEADER.pack(
            self.major_version, self.minor_version, self.type, self.size, self.error_code
        )


@dataclass(frozen=True)
class QgsMessage:
    """Any QGS message, header checked, body (what follows the header) left as bytes."""

    header: QgsHeader
    body: bytes


@dataclass(frozen=True)
class GetQuoteRequest:
    """A GET_QUOTE_REQ: what QEMU sends for the guest (report = the guest's TDREPORT)."""

    header: QgsHeader
    report: bytes
    id_list: bytes

    @property
    def report_data(self) -> bytes:
        """The 64 bytes the guest bound into its report: what its quote will carry."""
        return td_report_data(self.report)


@dataclass(frozen=True)
class GetQuoteResponse:
    """A GET_QUOTE_RESP: a quote, or (``error_code`` not 0) QGS's refusal."""

    header: QgsHeader
    selected_id: bytes
    quote: bytes

    @property
    def error_code(self) -> int:
        return self.header.error_code

    @property
    def ok(self) -> bool:
        return self.header.error_code == QgsError.SUCCESS


def message_length(prefix: bytes, *, max_frame: int) -> int:
    """The message length a 4-byte prefix announces, refused before anything is read.

    Checking the bound on the prefix alone lets a reader refuse an oversized frame
    without buffering it. (A message too short for its header is refused when parsed.)
    """
    if len(prefix) != PREFIX_SIZE:
        raise QgsWireError(
            WireErrorReason.TRUNCATED, f"length prefix has {len(prefix)} of {PREFIX_SIZE} bytes"
        )
    (length,) = _PREFIX.unpack(prefix)
    if PREFIX_SIZE + length > max_frame:
        raise QgsWireError(
            WireErrorReason.OVERSIZED,
            f"prefix announces a {length}-byte message, more than the {max_frame}-byte frame limit",
        )
    return int(length)


def frame(message: bytes) -> bytes:
    """Prefix a message with its big-endian length, as it travels on the socket."""
    return _PREFIX.pack(len(message)) + message


def parse_frame(data: bytes, *, max_frame: int) -> QgsMessage:
    """One complete frame: prefix, then exactly the message it announces (checked header)."""
    length = message_length(data[:PREFIX_SIZE], max_frame=max_frame)
    got = len(data) - PREFIX_SIZE
    if got < length:
        raise QgsWireError(
            WireErrorReason.TRUNCATED, f"message has {got} of the {length} bytes announced"
        )
    if got > length:
        raise QgsWireError(
            WireErrorReason.SIZE_MISMATCH,
            f"{got - length} bytes follow the {length}-byte message the prefix announces",
        )
    return parse_message(data[PREFIX_SIZE:])


def parse_message(message: bytes) -> QgsMessage:
    """A message without its prefix: header checked against the message's length."""
    if len(message) < HEADER_SIZE:
        raise QgsWireError(
            WireErrorReason.TRUNCATED,
            f"message of {len(message)} bytes is shorter than the {HEADER_SIZE}-byte header",
        )
    major, minor, raw_type, size, error_code = _HEADER.unpack_from(message)
    if major != MAJOR_VERSION:
        raise QgsWireError(
            WireErrorReason.BAD_VERSION,
            f"version {major}.{minor}, expected major version {MAJOR_VERSION}",
        )
    try:
        msg_type = MessageType(raw_type)
    except ValueError:
        raise QgsWireError(WireErrorReason.BAD_TYPE, f"unknown message type {raw_type}") from None
    if size != len(message):
        raise QgsWireError(
            WireErrorReason.SIZE_MISMATCH,
            f"header.size is {size} but the message has {len(message)} bytes",
        )
    header = QgsHeader(major, minor, msg_type, size, error_code)
    return QgsMessage(header=header, body=message[HEADER_SIZE:])


def _expect(message: QgsMessage, expected: MessageType) -> tuple[int, int, bytes]:
    """The two u32 sizes after the header of a GET_QUOTE message, and what follows them."""
    if message.header.type != expected:
        raise QgsWireError(
            WireErrorReason.BAD_TYPE,
            f"{message.header.type.name} where {expected.name} was expected",
        )
    if message.header.size < GET_QUOTE_FIXED_SIZE:
        raise QgsWireError(
            WireErrorReason.TRUNCATED,
            f"{expected.name} of {message.header.size} bytes is shorter than its"
            f" {GET_QUOTE_FIXED_SIZE}-byte fixed part",
        )
    first, second = _SIZES.unpack_from(message.body)
    if GET_QUOTE_FIXED_SIZE + first + second != message.header.size:
        raise QgsWireError(
            WireErrorReason.SIZE_MISMATCH,
            f"{expected.name}: {GET_QUOTE_FIXED_SIZE} + {first} + {second} bytes declared,"
            f" header.size is {message.header.size}",
        )
    return first, second, message.body[_SIZES.size :]


def parse_get_quote_request(data: bytes, *, max_frame: int = MAX_REQUEST_FRAME) -> GetQuoteRequest:
    """A framed GET_QUOTE_REQ, checked as QGS checks it (``qgs_msg_lib.cpp:183-263``)."""
    message = parse_frame(data, max_frame=max_frame)
    report_size, _id_list_size, rest = _expect(message, MessageType.GET_QUOTE_REQ)
    if message.header.error_code != 0:
        raise QgsWireError(
            WireErrorReason.INVALID_FIELD,
            f"a request carries error code {message.header.error_code:#x}",
        )
    if report_size == 0:
        raise QgsWireError(WireErrorReason.INVALID_FIELD, "report_size is 0")
    return GetQuoteRequest(
        header=message.header, report=rest[:report_size], id_list=rest[report_size:]
    )


def parse_get_quote_response(
    data: bytes, *, max_frame: int = MAX_RESPONSE_FRAME
) -> GetQuoteResponse:
    """A framed GET_QUOTE_RESP, checked as QGS checks it (``qgs_msg_lib.cpp:574-664``)."""
    message = parse_frame(data, max_frame=max_frame)
    selected_id_size, quote_size, rest = _expect(message, MessageType.GET_QUOTE_RESP)
    code = message.header.error_code
    if code == QgsError.SUCCESS:
        if quote_size == 0:
            raise QgsWireError(WireErrorReason.INVALID_FIELD, "success with an empty quote")
    elif code >= QGS_ERROR_MAX:
        raise QgsWireError(WireErrorReason.INVALID_FIELD, f"unknown error code {code:#x}")
    elif selected_id_size or quote_size:
        raise QgsWireError(
            WireErrorReason.INVALID_FIELD,
            f"error code {code:#x} with a {selected_id_size}-byte id and {quote_size}-byte quote",
        )
    return GetQuoteResponse(
        header=message.header, selected_id=rest[:selected_id_size], quote=rest[selected_id_size:]
    )


def td_report_data(report: bytes) -> bytes:
    """REPORTDATA of a TDREPORT (bytes 128..192), refused if ``report`` is not one."""
    if len(report) != TD_REPORT_SIZE:
        raise QgsWireError(
            WireErrorReason.INVALID_FIELD,
            f"a {len(report)}-byte report is not a {TD_REPORT_SIZE}-byte TDREPORT",
        )
    return report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + REPORT_DATA_SIZE]


def encode_get_quote_request(
    report: bytes, id_list: bytes = b"", *, minor_version: int = MINOR_VERSION
) -> bytes:
    """The framed GET_QUOTE_REQ QEMU sends for ``report`` (``tdx-quote-generator.c:272-292``)."""
    if not report:
        raise QgsWireError(WireErrorReason.INVALID_FIELD, "report_size is 0")
    size = GET_QUOTE_FIXED_SIZE + len(report) + len(id_list)
    header = QgsHeader(MAJOR_VERSION, minor_version, MessageType.GET_QUOTE_REQ, size)
    return frame(header.encode() + _SIZES.pack(len(report), len(id_list)) + report + id_list)


def encode_get_quote_response(quote: bytes, selected_id: bytes = b"") -> bytes:
    """The framed GET_QUOTE_RESP QGS sends with a quote (``qgs_msg_lib.cpp:393-451``)."""
    if not quote:
        raise QgsWireError(WireErrorReason.INVALID_FIELD, "success with an empty quote")
    size = GET_QUOTE_FIXED_SIZE + len(selected_id) + len(quote)
    header = QgsHeader(MAJOR_VERSION, MINOR_VERSION, MessageType.GET_QUOTE_RESP, size)
    return frame(header.encode() + _SIZES.pack(len(selected_id), len(quote)) + selected_id + quote)


def encode_get_quote_error(code: int = QgsError.UNEXPECTED) -> bytes:
    """The framed GET_QUOTE_RESP QGS sends when it has no quote (``qgs_msg_lib.cpp:343-391``).

    QGS answers a malformed request and a failed quote generation alike with
    ``QGS_MSG_ERROR_UNEXPECTED`` (``qgs_ql_logic.cpp:152-154,176,188,201``).
    """
    if code == QgsError.SUCCESS or code >= QGS_ERROR_MAX:
        raise QgsWireError(WireErrorReason.INVALID_FIELD, f"{code:#x} is not a QGS error code")
    header = QgsHeader(
        MAJOR_VERSION, MINOR_VERSION, MessageType.GET_QUOTE_RESP, GET_QUOTE_FIXED_SIZE, code
    )
    return frame(header.encode() + _SIZES.pack(0, 0))
