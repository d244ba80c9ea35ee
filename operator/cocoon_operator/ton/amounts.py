"""TON amounts: always integer nanoTON, never floats.

1 TON = 10**9 nanoTON. On chain an amount is ``Grams`` (``VarUInteger 16``), so
valid values are ``0 <= n < 2**120``. :data:`Nanoton` is a ``NewType`` over
``int`` so the type checker keeps nanoTON and other integers apart at no run-time
cost; build one with :func:`nanoton` (validates) or :func:`parse_ton` (human
"2.1"-style TON strings, parsed exactly with :class:`decimal.Decimal`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import NewType

from .errors import AmountError

Nanoton = NewType("Nanoton", int)

NANOTON_PER_TON = 10**9
#: Exclusive upper bound of a ``Grams`` value (``VarUInteger 16``).
MAX_NANOTON_EXCLUSIVE = 2**120

_TON_TEXT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?")
_NANO_TEXT = re.compile(r"[0-9]+")


def nanoton(value: int) -> Nanoton:
    """Validate an integer nanoTON amount (``0 <= value < 2**120``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AmountError(f"nanoTON amount must be an int, got {type(value).__name__}")
    if value < 0:
        raise AmountError(f"nanoTON amount must not be negative, got {value}")
    if value >= MAX_NANOTON_EXCLUSIVE:
        raise AmountError(f"nanoTON amount {value} does not fit in Grams (must be < 2**120)")
    return Nanoton(value)


def parse_ton(value: str | int | Decimal) -> Nanoton:
    """Parse a TON amount ("2.1", "5", ``Decimal("0.000000001")``, ``3``) into nanoTON.

    Strings must be plain non-negative decimals with at most 9 fractional digits;
    exponents, signs, "NaN"/"Infinity" and floats are refused. The conversion is
    exact: ``parse_ton("2.1") == 2_100_000_000``.
    """
    if isinstance(value, (bool, float)):
        raise AmountError(
            f"TON amount must be a decimal string, int or Decimal, not {type(value).__name__}"
        )
    if isinstance(value, int):
        return nanoton(value * NANOTON_PER_TON)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise AmountError(f"TON amount must be finite, got {value}")
        try:
            scaled = value.scaleb(9)
        except InvalidOperation as exc:  # pragma: no cover - only on context traps
            raise AmountError(f"cannot scale TON amount {value}") from exc
        if scaled != scaled.to_integral_value():
            raise AmountError(f"TON amount {value} has more than 9 decimal places")
        return nanoton(int(scaled))
    if not isinstance(value, str):
        raise AmountError(f"TON amount must be a str, int or Decimal, not {type(value).__name__}")
    text = value.strip()
    match = _TON_TEXT.fullmatch(text)
    if match is None:
        raise AmountError(f"TON amount {value!r} is not a plain non-negative decimal such as '2.1'")
    frac = match.group("frac") or ""
    if len(frac) > 9:
        raise AmountError(f"TON amount {value!r} has more than 9 decimal places")
    whole = int(match.group("whole"))
    return nanoton(whole * NANOTON_PER_TON + int(frac.ljust(9, "0")))


def parse_nanoton(value: str | int) -> Nanoton:
    """Parse a nanoTON amount as the v2 HTTP API returns it (a decimal string or int)."""
    if isinstance(value, bool):
        raise AmountError("nanoTON amount must not be a bool")
    if isinstance(value, int):
        return nanoton(value)
    if not isinstance(value, str) or _NANO_TEXT.fullmatch(value.strip()) is None:
        raise AmountError(f"nanoTON amount {value!r} is not a non-negative integer string")
    return nanoton(int(value.strip()))


def to_decimal(value: int) -> Decimal:
    """Exact TON value of an integer nanoTON amount."""
    return Decimal(nanoton(value)).scaleb(-9)


def format_ton(value: int) -> str:
    """Human form of a nanoTON amount without trailing zeros: 2100000000 -> "2.1"."""
    n = nanoton(value)
    whole, frac = divmod(n, NANOTON_PER_TON)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:09d}".rstrip("0")
