"""TON account addresses: parse, validate and normalise.

Two textual forms exist:

* raw: ``<workchain>:<64 hex digits>``, e.g. ``0:83df...31a8`` or ``-1:...``;
* user-friendly: 36 bytes in base64 or base64url (48 characters):
  ``tag(1) | workchain(1, signed) | account id(32) | CRC16-XMODEM(2, big-endian)``
  where the tag is ``0x11`` (bounceable) or ``0x51`` (non-bounceable), with
  ``0x80`` added for test-only (testnet) addresses.

An :class:`Address` is just the workchain and the 32-byte account id; flags
(bounceable, testnet, URL-safety) belong to one rendering of it and are reported
by :func:`parse_address` in :class:`ParsedAddress`. Compare addresses as
:class:`Address` values or by :func:`normalize_address` (the raw form), never as
user-friendly strings.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from typing import Literal

from .errors import AddressError

TAG_BOUNCEABLE = 0x11
TAG_NON_BOUNCEABLE = 0x51
TAG_TESTNET_FLAG = 0x80

BASECHAIN = 0
MASTERCHAIN = -1

_RAW = re.compile(r"(?P<wc>-?[0-9]+):(?P<hash>[0-9a-fA-F]*)")
_FRIENDLY_LEN = 48
_FRIENDLY_BYTES = 36


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final xor)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A TON account address: workchain (signed 8-bit here) and 32-byte account id."""

    workchain: int
    account_id: bytes

    def __post_init__(self) -> None:
        if isinstance(self.workchain, bool) or not isinstance(self.workchain, int):
            raise AddressError("workchain must be an int")
        if not -128 <= self.workchain <= 127:
            raise AddressError(
                f"bad workchain {self.workchain}: must fit in a signed byte (-128..127)"
            )
        if not isinstance(self.account_id, bytes) or len(self.account_id) != 32:
            raise AddressError("account id must be exactly 32 bytes")

    def to_raw(self) -> str:
        """Raw form ``wc:hex`` with lower-case hex: the canonical form for comparisons."""
        return f"{self.workchain}:{self.account_id.hex()}"

    def to_friendly(
        self, *, bounceable: bool = True, testnet: bool = False, url_safe: bool = True
    ) -> str:
        """User-friendly 48-character form with the given flags."""
        tag = TAG_BOUNCEABLE if bounceable else TAG_NON_BOUNCEABLE
        if testnet:
            tag |= TAG_TESTNET_FLAG
        body = bytes([tag, self.workchain & 0xFF]) + self.account_id
        full = body + crc16_xmodem(body).to_bytes(2, "big")
        encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
        return encode(full).decode("ascii")

    def __str__(self) -> str:
        return self.to_raw()


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    """An address plus how it was written. Flags are ``None`` for the raw form."""

    address: Address
    form: Literal["raw", "friendly"]
    bounceable: bool | None = None
    testnet: bool | None = None
    url_safe: bool | None = None


def _parse_raw(text: str) -> ParsedAddress:
    match = _RAW.fullmatch(text)
    if match is None:
        raise AddressError(f"bad raw address {text!r}: expected '<workchain>:<64 hex digits>'")
    wc = int(match.group("wc"))
    hex_part = match.group("hash")
    if len(hex_part) != 64:
        raise AddressError(
            f"bad length of raw address {text!r}: account id has {len(hex_part)} hex digits,"
            " expected 64"
        )
    if not -128 <= wc <= 127:
        raise AddressError(f"bad workchain {wc} in address {text!r}")
    return ParsedAddress(Address(wc, bytes.fromhex(hex_part)), "raw")


def _parse_friendly(text: str) -> ParsedAddress:
    if len(text) != _FRIENDLY_LEN:
        raise AddressError(
            f"bad length of user-friendly address {text!r}: {len(text)} characters,"
            f" expected {_FRIENDLY_LEN}"
        )
    has_url = "-" in text or "_" in text
    has_std = "+" in text or "/" in text
    if has_url and has_std:
        raise AddressError(f"address {text!r} mixes base64 and base64url alphabets")
    try:
        if has_url:
            raw = base64.urlsafe_b64decode(text.encode("ascii"))
        else:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise AddressError(f"address {text!r} is not valid base64/base64url") from exc
    if len(raw) != _FRIENDLY_BYTES:  # pragma: no cover - 48 base64 chars are always 36 bytes
        raise AddressError(f"bad length of decoded address {text!r}: {len(raw)} bytes")
    body, checksum = raw[:34], int.from_bytes(raw[34:], "big")
    expected = crc16_xmodem(body)
    if checksum != expected:
        raise AddressError(
            f"bad checksum in address {text!r}: CRC16 is {checksum:#06x}, expected {expected:#06x}"
        )
    tag = body[0]
    testnet = bool(tag & TAG_TESTNET_FLAG)
    base_tag = tag & ~TAG_TESTNET_FLAG
    if base_tag not in (TAG_BOUNCEABLE, TAG_NON_BOUNCEABLE):
        raise AddressError(f"bad flags byte {tag:#04x} in address {text!r}")
    wc = int.from_bytes(body[1:2], "big", signed=True)
    return ParsedAddress(
        Address(wc, bytes(body[2:34])),
        "friendly",
        bounceable=base_tag == TAG_BOUNCEABLE,
        testnet=testnet,
        url_safe=has_url or not has_std,
    )


# Distinct addresses a fleet's checks parse: each worker's wallet and its payout
# address, in both forms, and a few shared ones (root, treasury); 16,384 holds a
# fleet of some 4,000 workers at about 300 bytes an entry.
_PARSED_KEPT = 16_384


@functools.lru_cache(maxsize=_PARSED_KEPT)
def _parse_text(text: str) -> ParsedAddress:
    """A stripped address's parse, kept: the fleet's checks compare the same few
    thousand addresses every interval, and a user-friendly one costs a base64 decode
    and a bitwise CRC-16 in Python (3% of the operator's steady-state CPU at 1,000
    workers before, docs/bench.md). Both results are immutable; an address that
    does not parse raises each time (lru_cache keeps no exceptions)."""
    return _parse_raw(text) if ":" in text else _parse_friendly(text)


def parse_address(
    text: str, *, allowed_workchains: tuple[int, ...] | None = (BASECHAIN, MASTERCHAIN)
) -> ParsedAddress:
    """Parse a raw or user-friendly address.

    ``allowed_workchains`` (default: basechain and masterchain) rejects addresses
    in other workchains with a "bad workchain" error; pass ``None`` to allow any
    signed-byte workchain.
    """
    if not isinstance(text, str):
        raise AddressError(f"address must be a str, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise AddressError("address is empty")
    parsed = _parse_text(stripped)
    wc = parsed.address.workchain
    if allowed_workchains is not None and wc not in allowed_workchains:
        allowed = ", ".join(str(w) for w in allowed_workchains)
        raise AddressError(f"bad workchain {wc} in address {text!r}: allowed {allowed}")
    return parsed


def to_address(value: str | Address) -> Address:
    """Accept an :class:`Address` or any textual form and return the :class:`Address`."""
    if isinstance(value, Address):
        return value
    return parse_address(value).address


def normalize_address(text: str | Address) -> str:
    """Canonical raw form (``wc:lowerhex``) of any address form."""
    return to_address(text).to_raw()


def is_valid_address(text: str) -> bool:
    """True when :func:`parse_address` accepts ``text``."""
    try:
        parse_address(text)
    except AddressError:
        return False
    return True
