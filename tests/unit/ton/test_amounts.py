from decimal import Decimal

import pytest

from cocoon_operator.ton.amounts import (
    MAX_NANOTON_EXCLUSIVE,
    NANOTON_PER_TON,
    format_ton,
    nanoton,
    parse_nanoton,
    parse_ton,
    to_decimal,
)
from cocoon_operator.ton.errors import AmountError, TonError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.1", 2_100_000_000),
        ("5", 5 * NANOTON_PER_TON),
        ("0", 0),
        ("0.000000001", 1),
        ("  1.5 ", 1_500_000_000),
        ("123456789.123456789", 123_456_789_123_456_789),
        ("007.10", 7_100_000_000),
    ],
)
def test_parse_ton_strings_exact(text: str, expected: int) -> None:
    assert parse_ton(text) == expected


def test_parse_ton_int_and_decimal() -> None:
    assert parse_ton(3) == 3_000_000_000
    assert parse_ton(Decimal("2.1")) == 2_100_000_000
    assert parse_ton(Decimal("1E-9")) == 1


@pytest.mark.parametrize(
    "text",
    ["", "-1", "+1", "1e3", "1.", ".5", "NaN", "inf", "1,5", "0.0000000001", "1 000", "\uff12"],
)
def test_parse_ton_rejects(text: str) -> None:
    with pytest.raises(AmountError):
        parse_ton(text)


def test_parse_ton_rejects_float_bool_and_bad_decimal() -> None:
    with pytest.raises(AmountError, match="float"):
        parse_ton(2.1)  # type: ignore[arg-type]
    with pytest.raises(AmountError):
        parse_ton(True)
    with pytest.raises(AmountError, match="9 decimal"):
        parse_ton(Decimal("0.0000000001"))
    with pytest.raises(AmountError, match="finite"):
        parse_ton(Decimal("NaN"))
    with pytest.raises(AmountError, match="negative"):
        parse_ton(Decimal("-1"))


def test_nanoton_range() -> None:
    assert nanoton(0) == 0
    assert nanoton(MAX_NANOTON_EXCLUSIVE - 1) == MAX_NANOTON_EXCLUSIVE - 1
    with pytest.raises(AmountError, match="Grams"):
        nanoton(MAX_NANOTON_EXCLUSIVE)
    with pytest.raises(AmountError, match="negative"):
        nanoton(-1)
    with pytest.raises(AmountError):
        nanoton(True)


def test_parse_nanoton() -> None:
    assert parse_nanoton("2100000000") == 2_100_000_000
    assert parse_nanoton(7) == 7
    for bad in ("-1", "1.5", "", "0x10"):
        with pytest.raises(AmountError):
            parse_nanoton(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [(2_100_000_000, "2.1"), (0, "0"), (1, "0.000000001"), (5 * NANOTON_PER_TON, "5")],
)
def test_format_round_trip(value: int, text: str) -> None:
    assert format_ton(value) == text
    assert parse_ton(format_ton(value)) == value
    assert to_decimal(value) == Decimal(text)


def test_amount_error_is_value_error_and_ton_error() -> None:
    assert issubclass(AmountError, ValueError)
    assert issubclass(AmountError, TonError)
