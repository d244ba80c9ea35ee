"""A minimal DER reader: just enough to walk the Intel SGX PCK certificate extension."""

from __future__ import annotations

from collections.abc import Iterator

from cocoon_operator.attestation.errors import CertificateFormatError

TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_SEQUENCE = 0x30


def read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """Read one TLV at ``offset``; return (tag, value, offset after it). Short tags only."""
    if offset + 2 > len(data):
        raise CertificateFormatError("DER: truncated TLV header")
    tag = data[offset]
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertificateFormatError("DER: unsupported length encoding")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise CertificateFormatError("DER: value runs past the end of its container")
    return tag, data[pos:end], end


def iter_tlv(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Iterate the TLVs laid end to end in ``data`` (the contents of a SEQUENCE)."""
    offset = 0
    while offset < len(data):
        tag, value, offset = read_tlv(data, offset)
        yield tag, value


def encode_oid(dotted: str) -> bytes:
    """The DER contents (no tag/length) of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        rest = arc
        chunk = [rest & 0x7F]
        rest >>= 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def find_oid_value(sequence_contents: bytes, oid: str) -> tuple[int, bytes] | None:
    """Depth-first search for ``SEQUENCE { OID oid, value }``; return (tag, value) of value."""
    wanted = encode_oid(oid)
    for tag, value in iter_tlv(sequence_contents):
        if tag != TAG_SEQUENCE:
            continue
        items = list(iter_tlv(value))
        if len(items) == 2 and items[0] == (TAG_OID, wanted):
            return items[1]
        found = find_oid_value(value, oid)
        if found is not None:
            return found
    return None
