import base64

import pytest
from pytoniq_core import Address as PytoniqAddress

from cocoon_operator.ton import address
from cocoon_operator.ton.address import (
    Address,
    crc16_xmodem,
    is_valid_address,
    normalize_address,
    parse_address,
    to_address,
)
from cocoon_operator.ton.errors import AddressError

# A basechain address used as an example in TON's documentation (a public fact):
# its bounceable url-safe form and its raw form.
DOC_FRIENDLY = "EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8xqB2N"
DOC_RAW = "0:83dfd552e63729b472fcbcc8c45ebcc6691702558b68ec7527e1ba403a0f31a8"
# The masterchain config contract address (-1:5555...).
CONFIG_RAW = "-1:" + "55" * 32


def test_crc16_xmodem_check_value() -> None:
    # The standard CRC catalogue check value for CRC-16/XMODEM.
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_xmodem(b"") == 0


def test_doc_vector_friendly_to_raw() -> None:
    parsed = parse_address(DOC_FRIENDLY)
    assert parsed.form == "friendly"
    assert parsed.bounceable is True
    assert parsed.testnet is False
    assert parsed.address.to_raw() == DOC_RAW
    assert normalize_address(DOC_FRIENDLY) == DOC_RAW


@pytest.mark.parametrize(
    ("bounceable", "testnet", "prefix"),
    [(True, False, "EQ"), (False, False, "UQ"), (True, True, "kQ"), (False, True, "0Q")],
)
def test_flags_round_trip(bounceable: bool, testnet: bool, prefix: str) -> None:
    addr = to_address(DOC_RAW)
    text = addr.to_friendly(bounceable=bounceable, testnet=testnet)
    assert text.startswith(prefix)
    parsed = parse_address(text)
    assert parsed.address == addr
    assert (parsed.bounceable, parsed.testnet) == (bounceable, testnet)
    # Independent implementation agrees (pytoniq-core).
    other = PytoniqAddress(DOC_RAW).to_str(
        is_user_friendly=True, is_bounceable=bounceable, is_test_only=testnet, is_url_safe=True
    )
    assert other == text


def test_masterchain_and_std_base64() -> None:
    addr = to_address(CONFIG_RAW)
    assert addr.workchain == -1
    std = addr.to_friendly(url_safe=False)
    url = addr.to_friendly(url_safe=True)
    assert parse_address(std).address == addr
    assert parse_address(url).address == addr
    assert PytoniqAddress(CONFIG_RAW).to_str(is_url_safe=False) == std


def test_std_alphabet_detected() -> None:
    # find an account id whose encoding uses '+' or '/' in the standard alphabet
    addr = Address(0, bytes([0xFB]) * 32)
    std = addr.to_friendly(url_safe=False)
    assert "+" in std or "/" in std
    parsed = parse_address(std)
    assert parsed.url_safe is False
    assert parsed.address == addr


def test_raw_is_case_insensitive_and_normalised_lower() -> None:
    assert normalize_address(DOC_RAW.upper()) == DOC_RAW
    assert parse_address(DOC_RAW).form == "raw"
    assert parse_address(DOC_RAW).bounceable is None


def test_bad_checksum() -> None:
    raw = bytearray(base64.urlsafe_b64decode(DOC_FRIENDLY))
    raw[-1] ^= 0x01
    bad = base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(AddressError, match="bad checksum"):
        parse_address(bad)


def test_bad_flags_byte() -> None:
    body = bytes([0x22, 0]) + bytes(32)
    text = base64.urlsafe_b64encode(body + crc16_xmodem(body).to_bytes(2, "big")).decode()
    with pytest.raises(AddressError, match="bad flags"):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (DOC_FRIENDLY[:-1], "bad length"),
        (DOC_FRIENDLY + "A", "bad length"),
        ("0:" + "ab" * 31, "bad length"),
        ("0:" + "zz" * 32, "bad raw address"),
        ("", "empty"),
        ("E" * 47 + "!", "base64"),
        ("EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8x+B_N", "mixes"),
    ],
)
def test_malformed(text: str, fragment: str) -> None:
    with pytest.raises(AddressError, match=fragment):
        parse_address(text)
    assert not is_valid_address(text)


def test_bad_workchain() -> None:
    with pytest.raises(AddressError, match="bad workchain"):
        parse_address("1:" + "00" * 32)
    assert parse_address("1:" + "00" * 32, allowed_workchains=None).address.workchain == 1
    with pytest.raises(AddressError, match="bad workchain"):
        parse_address("300:" + "00" * 32, allowed_workchains=None)
    friendly = Address(5, bytes(32)).to_friendly()
    with pytest.raises(AddressError, match="bad workchain 5"):
        parse_address(friendly)
    with pytest.raises(AddressError, match="bad workchain"):
        Address(-129, bytes(32))


def test_address_value_semantics() -> None:
    a = to_address(DOC_FRIENDLY)
    b = to_address(a.to_friendly(bounceable=False, testnet=True))
    assert a == b
    assert hash(a) == hash(b)
    assert str(a) == DOC_RAW
    assert to_address(a) is a
    with pytest.raises(AddressError, match="32 bytes"):
        Address(0, b"\x00" * 31)
    with pytest.raises(AddressError):
        parse_address(123)  # type: ignore[arg-type]


def test_an_address_seen_before_is_not_parsed_again() -> None:
    """The fleet's checks compare the same addresses every interval: the second parse
    of a text (surrounding spaces aside) comes from the kept one."""
    text = Address(0, bytes(range(32))).to_friendly(bounceable=False)
    first = parse_address(text)
    before = address._parse_text.cache_info()
    again = parse_address(f"  {text}\n")
    after = address._parse_text.cache_info()
    assert again is first
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_a_kept_parse_still_answers_to_the_allowed_workchains() -> None:
    text = "1:" + "ab" * 32
    assert parse_address(text, allowed_workchains=None).address.workchain == 1
    with pytest.raises(AddressError, match="bad workchain 1"):
        parse_address(text)  # the same text, now kept, under the default basechain/masterchain


def test_an_address_that_does_not_parse_fails_every_time() -> None:
    text = DOC_FRIENDLY[:-1] + ("A" if DOC_FRIENDLY[-1] != "A" else "B")
    for _ in range(2):
        with pytest.raises(AddressError, match="checksum"):
            parse_address(text)
