"""The quotes file the launcher writes beside each VM's record, and the bounds the node
agent reads it with."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cocoon_operator.launcher import (
    MAX_QUOTE_BYTES,
    MAX_QUOTE_FILE_BYTES,
    QUOTES_KEPT,
    FileQuote,
    QuoteFileError,
    is_quote_file,
    parse_quote_file,
    quote_file_path,
    render_quote_file,
    write_quote_file,
)
from cocoon_operator.launcher._quoterelay import CapturedQuote, QuoteStore
from cocoon_operator.launcher._run import quote_recorder
from cocoon_operator.qgs import (
    REPORT_DATA_OFFSET,
    TD_REPORT_SIZE,
    encode_get_quote_request,
    parse_get_quote_request,
)

AT = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


def quotes(n: int) -> list[FileQuote]:
    return [
        FileQuote(bytes([i]) * 5000, AT + timedelta(hours=i), bytes([i]) * 64) for i in range(n)
    ]


def test_the_file_keeps_the_newest_quotes_newest_first_and_reads_back_as_written() -> None:
    parsed = parse_quote_file(render_quote_file(3, "uid-3", quotes(QUOTES_KEPT + 2)))
    assert (parsed.instance, parsed.pod_uid) == (3, "uid-3")
    assert len(parsed.quotes) == QUOTES_KEPT
    assert [q.captured_at for q in parsed.quotes] == [
        AT + timedelta(hours=h) for h in range(QUOTES_KEPT + 1, 1, -1)
    ]
    latest = parsed.latest()
    assert latest is not None and latest.quote == bytes([QUOTES_KEPT + 1]) * 5000
    assert latest.report_data == bytes([QUOTES_KEPT + 1]) * 64


def test_a_quote_larger_than_the_bound_is_not_written() -> None:
    big = FileQuote(b"\x04" * (MAX_QUOTE_BYTES + 1), AT + timedelta(days=1), None)
    parsed = parse_quote_file(render_quote_file(0, "u", [*quotes(1), big]))
    assert [len(q.quote) for q in parsed.quotes] == [5000]


def doc(**changes: object) -> str:
    base: dict[str, object] = json.loads(render_quote_file(1, "uid-1", quotes(2)))
    base.update(changes)
    return json.dumps(base)


def entry(**changes: object) -> dict[str, object]:
    base = {
        "quote": base64.b64encode(b"q" * 100).decode(),
        "capturedAt": "2026-12-06T14:00:00Z",
        "reportData": None,
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        (doc(version=2), "version"),
        (doc(instance=10), "not 0..9"),
        (doc(instance=True), "instance"),
        (doc(podUid=""), "podUid"),
        (doc(quotes=[entry()] * (QUOTES_KEPT + 1)), "more than"),
        (doc(quotes=[entry(quote="not base64!")]), "not base64"),
        (doc(quotes=[entry(quote="")]), "empty"),
        (
            doc(quotes=[entry(quote=base64.b64encode(b"q" * (MAX_QUOTE_BYTES + 1)).decode())]),
            "larger than",
        ),
        (doc(quotes=[entry(capturedAt="yesterday")]), "RFC 3339"),
        (doc(quotes=[entry(capturedAt="2026-12-06T14:00:00")]), "time zone"),
        (doc(quotes=[entry(reportData="ab")]), "64 bytes"),
        (doc(quotes=[entry(reportData="zz" * 64)]), "not hex"),
        (doc(quotes=["a string"]), "not an object"),
        (" " * (MAX_QUOTE_FILE_BYTES + 1), "larger than"),
    ],
)
def test_anything_but_what_the_launcher_writes_is_refused_naming_why(text: str, why: str) -> None:
    with pytest.raises(QuoteFileError, match=why):
        parse_quote_file(text)


def test_the_file_sits_beside_the_instance_record_and_is_told_apart_from_it(
    tmp_path: Path,
) -> None:
    path = write_quote_file(tmp_path, 7, "uid-7", quotes(1))
    assert path == quote_file_path(tmp_path, 7) == tmp_path / "instance-7.quotes.json"
    assert is_quote_file(path.name) and not is_quote_file("instance-7.json")
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then renamed
    assert parse_quote_file(path.read_text()).pod_uid == "uid-7"


def test_each_quote_the_relay_captures_rewrites_the_vms_file_with_its_reportdata(
    tmp_path: Path,
) -> None:
    store = QuoteStore(keep=8)
    capture = quote_recorder(store, tmp_path, 2, "uid-2")
    for i in range(QUOTES_KEPT + 1):
        report = bytearray(TD_REPORT_SIZE)
        report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + 64] = bytes([i]) * 64
        request = parse_get_quote_request(encode_get_quote_request(bytes(report)))
        capture(CapturedQuote("cocoon-instance-2", request, b"quote %d" % i, AT + timedelta(i)))
    parsed = parse_quote_file(quote_file_path(tmp_path, 2).read_text())
    assert len(parsed.quotes) == QUOTES_KEPT
    latest = parsed.latest()
    assert latest is not None
    assert latest.quote == b"quote %d" % QUOTES_KEPT
    assert latest.report_data == bytes([QUOTES_KEPT]) * 64
