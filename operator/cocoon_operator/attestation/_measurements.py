"""COCOON's derived identifiers: image hash, model hash and the REPORTDATA bindings."""

from __future__ import annotations

import hashlib
from typing import Protocol

MEASUREMENT_SIZE = 48
REPORT_DATA_SIZE = 64


class _Measured(Protocol):
    @property
    def mrtd(self) -> bytes: ...
    @property
    def mrconfigid(self) -> bytes: ...
    @property
    def mrowner(self) -> bytes: ...
    @property
    def mrownerconfig(self) -> bytes: ...
    @property
    def rtmr(self) -> tuple[bytes, bytes, bytes, bytes]: ...


def cocoon_image_hash(
    mrtd: bytes,
    mrconfigid: bytes,
    mrowner: bytes,
    mrownerconfig: bytes,
    rtmr: tuple[bytes, bytes, bytes, bytes],
) -> bytes:
    """SHA-256 of MRTD||MRCONFIGID||MROWNER||MROWNERCONFIG||RTMR0..3||64 zero bytes (448 bytes).

    The 64 zero bytes are REPORTDATA, zeroed but kept in COCOON's serialised record,
    so the hash identifies the image independently of the per-boot key binding.
    """
    parts = (mrtd, mrconfigid, mrowner, mrownerconfig, *rtmr)
    if len(rtmr) != 4 or any(len(p) != MEASUREMENT_SIZE for p in parts):
        raise ValueError("image hash needs eight 48-byte measurements (MRTD..RTMR3)")
    return hashlib.sha256(b"".join(parts) + bytes(REPORT_DATA_SIZE)).digest()


def image_hash_of(report: _Measured) -> bytes:
    """:func:`cocoon_image_hash` of a parsed TD report."""
    return cocoon_image_hash(
        report.mrtd, report.mrconfigid, report.mrowner, report.mrownerconfig, report.rtmr
    )


def model_hash(model: str) -> bytes:
    """SHA-256 of the full ``Name@commit:verity`` string (UTF-8): the root contract's model hash."""
    if "@" not in model or ":" not in model.partition("@")[2]:
        raise ValueError(f"model must look like Name@commit:verityhash, got {model!r}")
    return hashlib.sha256(model.encode("utf-8")).digest()


def report_data_for_key(ed25519_public_key: bytes) -> bytes:
    """REPORTDATA a COCOON worker puts in its quote: SHA-512 of the raw 32-byte Ed25519 key."""
    if len(ed25519_public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 raw bytes")
    return hashlib.sha512(ed25519_public_key).digest()


def report_data_for_nonce(nonce: bytes) -> bytes:
    """REPORTDATA for a freshness nonce: the nonce itself, zero-padded to 64 bytes."""
    if not 0 < len(nonce) <= REPORT_DATA_SIZE:
        raise ValueError("a REPORTDATA nonce is 1..64 bytes")
    return nonce.ljust(REPORT_DATA_SIZE, b"\x00")
