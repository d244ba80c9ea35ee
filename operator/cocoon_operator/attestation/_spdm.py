"""NVIDIA GPU evidence: SPDM 1.1 GET_MEASUREMENTS request + MEASUREMENTS response.

Request (37 bytes): version 0x11, code 0xE0, param1 (bit 0: signature wanted),
param2 (0xFF: all blocks), requester nonce (32), slot id (1).

Response: version, code 0x60, param1, param2, number of blocks (1), record length
(3, LE), measurement blocks, responder nonce (32), opaque length (2, LE), opaque
data, signature (96 bytes: P-384 r||s) over SHA-384(request || response without
the signature).

Each block: index (1), measurement spec (1), size (2, LE), then a DMTF
measurement: value type (1), value size (2, LE), value.

Opaque data is NVIDIA's list of (type u16, size u16, value) fields; the ones
used here are 3 = driver version (NUL-terminated text), 6 = VBIOS version
(8 bytes) and 20 = FWID.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cocoon_operator.attestation.errors import SpdmFormatError

SPDM_VERSION_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_SIZE = 37
NONCE_SIZE = 32
P384_SIGNATURE_SIZE = 96

OPAQUE_DRIVER_VERSION = 3
OPAQUE_VBIOS_VERSION = 6
OPAQUE_FWID = 20

OPAQUE_FIELD_NAMES: Mapping[int, str] = MappingProxyType(
    {
        1: "cert_issuer_name",
        2: "cert_authority_key_identifier",
        3: "driver_version",
        4: "gpu_info",
        5: "sku",
        6: "vbios_version",
        7: "manufacturer_id",
        8: "tamper_detection",
        9: "smc",
        10: "vpr",
        11: "nvdec0_status",
        12: "msrscnt",
        13: "cprinfo",
        14: "board_id",
        15: "chip_sku",
        16: "chip_sku_mod",
        17: "project",
        18: "project_sku",
        19: "project_sku_mod",
        20: "fwid",
        21: "protected_pcie_status",
        22: "switch_pdi",
        23: "floorswept_ports",
        24: "position_id",
        25: "lock_switch_status",
        32: "gpu_link_conn",
    }
)


@dataclass(frozen=True)
class MeasurementBlock:
    index: int  # SPDM block index, 1-based
    spec: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class OpaqueData:
    fields: Mapping[int, bytes]

    def _text(self, field_type: int) -> str | None:
        raw = self.fields.get(field_type)
        if raw is None:
            return None
        return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()

    @property
    def driver_version(self) -> str | None:
        return self._text(OPAQUE_DRIVER_VERSION)

    @property
    def vbios_version(self) -> str | None:
        """``96.00.5E.00.01`` from the 8-byte little-endian field, as NVIDIA prints it."""
        raw = self.fields.get(OPAQUE_VBIOS_VERSION)
        if raw is None:
            return None
        if len(raw) != 8:
            raise SpdmFormatError(f"VBIOS version field is {len(raw)} bytes, not 8")
        value = int.from_bytes(raw, "little")
        low = f"{value & 0xFFFFFFFF:08X}"
        return ".".join([low[0:2], low[2:4], low[4:6], low[6:8], f"{(value >> 32) & 0xFF:02X}"])

    @property
    def fwid(self) -> bytes | None:
        return self.fields.get(OPAQUE_FWID)

    def named(self) -> dict[str, str]:
        """Every field as hex, keyed by NVIDIA's field name (``type_N`` if unknown)."""
        return {OPAQUE_FIELD_NAMES.get(t, f"type_{t}"): v.hex() for t, v in self.fields.items()}


@dataclass(frozen=True)
class SpdmMeasurements:
    """A parsed GET_MEASUREMENTS exchange. Nothing here is verified."""

    request: bytes
    response: bytes
    request_param1: int
    request_param2: int
    requester_nonce: bytes
    slot_id: int
    response_param1: int
    response_param2: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: OpaqueData
    signature: bytes

    @property
    def signed_bytes(self) -> bytes:
        """request || response without its signature: what the device key signs."""
        return self.request + self.response[: len(self.response) - len(self.signature)]

    def measurement(self, index: int) -> MeasurementBlock | None:
        for block in self.blocks:
            if block.index == index:
                return block
        return None


def parse_hex_evidence(text: str | bytes) -> bytes:
    """The hex text form of an attestation report (whitespace ignored) as bytes."""
    raw = text.decode("ascii", errors="replace") if isinstance(text, bytes) else text
    compact = "".join(raw.split()).removeprefix("0x")
    try:
        return bytes.fromhex(compact)
    except ValueError as exc:
        raise SpdmFormatError(f"evidence is not hex: {exc}") from exc


def _parse_opaque(data: bytes) -> OpaqueData:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise SpdmFormatError("opaque data: truncated field header")
        field_type, size = struct.unpack_from("<HH", data, pos)
        pos += 4
        if pos + size > len(data):
            raise SpdmFormatError(f"opaque data: field {field_type} runs past the end")
        fields[field_type] = data[pos : pos + size]
        pos += size
    return OpaqueData(MappingProxyType(fields))


def _parse_blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    blocks: list[MeasurementBlock] = []
    pos = 0
    while pos < len(record):
        if pos + 7 > len(record):
            raise SpdmFormatError("measurement record: truncated block header")
        index, spec, size = struct.unpack_from("<BBH", record, pos)
        value_type, value_size = struct.unpack_from("<BH", record, pos + 4)
        if value_size + 3 != size or pos + 4 + size > len(record):
            raise SpdmFormatError(f"measurement block {index}: inconsistent sizes")
        blocks.append(MeasurementBlock(index, spec, value_type, record[pos + 7 : pos + 4 + size]))
        pos += 4 + size
    if len(blocks) != count:
        raise SpdmFormatError(f"response announces {count} blocks, record holds {len(blocks)}")
    return tuple(blocks)


def parse_spdm_measurements(
    evidence: bytes, *, signature_size: int = P384_SIGNATURE_SIZE
) -> SpdmMeasurements:
    """Parse request+response bytes. Raises :class:`SpdmFormatError`."""
    if len(evidence) < REQUEST_SIZE + 8:
        raise SpdmFormatError("evidence too short for an SPDM request and response")
    request, response = evidence[:REQUEST_SIZE], evidence[REQUEST_SIZE:]
    if request[0] != SPDM_VERSION_11 or request[1] != GET_MEASUREMENTS:
        raise SpdmFormatError(
            f"not an SPDM 1.1 GET_MEASUREMENTS request (0x{request[0]:02x} 0x{request[1]:02x})"
        )
    if response[0] != SPDM_VERSION_11 or response[1] != MEASUREMENTS:
        raise SpdmFormatError(
            f"not an SPDM 1.1 MEASUREMENTS response (0x{response[0]:02x} 0x{response[1]:02x})"
        )
    count = response[4]
    record_len = int.from_bytes(response[5:8], "little")
    pos = 8 + record_len
    if pos + NONCE_SIZE + 2 > len(response):
        raise SpdmFormatError("response truncated in measurement record / nonce")
    blocks = _parse_blocks(response[8:pos], count)
    responder_nonce = response[pos : pos + NONCE_SIZE]
    pos += NONCE_SIZE
    (opaque_len,) = struct.unpack_from("<H", response, pos)
    pos += 2
    if pos + opaque_len + signature_size != len(response):
        raise SpdmFormatError(
            f"response length {len(response)} != header+record+nonce+opaque "
            f"({pos + opaque_len}) + {signature_size}-byte signature"
        )
    opaque = _parse_opaque(response[pos : pos + opaque_len])
    return SpdmMeasurements(
        request=request,
        response=response,
        request_param1=request[2],
        request_param2=request[3],
        requester_nonce=request[4 : 4 + NONCE_SIZE],
        slot_id=request[36],
        response_param1=response[2],
        response_param2=response[3],
        blocks=blocks,
        responder_nonce=responder_nonce,
        opaque=opaque,
        signature=response[pos + opaque_len :],
    )
