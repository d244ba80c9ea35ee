"""The quotes a VM produced, as the launcher hands them to the node agent: one file per VM.

The launcher's quote relay sees every quote the guest obtains (at boot and at each
hourly certificate refresh: COCOON's ``cocoon-cert-refresh.timer``). It keeps the
latest :data:`QUOTES_KEPT` of them in ``/run/cocoon/instance-<i>.quotes.json``,
beside the instance record the node agent already reads, written atomically
(a temporary file, then a rename) so the agent never reads half a file::

    {"version": 1, "instance": 3, "podUid": "...",
     "quotes": [{"quote": BASE64, "capturedAt": "2026-12-06T14:00:00.123456Z",
                 "reportData": HEX128 | null}, ...]}      # newest first

``capturedAt`` is when the host's quote service answered; ``reportData`` the
REPORTDATA the guest asked to be quoted (the SHA-512 of its RA-TLS key), read
from the TDREPORT in its request. Both sides bound what they accept
(:func:`parse_quote_file`): the file is read by a more trusted component than
the one that could, in the worst case, have influenced its content (the guest
chooses the bytes it asks a quote for; the service's answer is a quote or an
error, checked by the relay).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

QUOTE_FILE_VERSION: Final = 1
#: How many of a VM's latest quotes the file keeps (newest first).
QUOTES_KEPT: Final = 4
#: The largest quote passed on. Real TDX quotes with their PCK chain are ~5 KB
#: (shared/fixtures/attestation/tdx: 5,006 and 5,010 bytes).
MAX_QUOTE_BYTES: Final = 32 * 1024
#: The largest quotes file read: QUOTES_KEPT base64 quotes of the largest size, and room.
MAX_QUOTE_FILE_BYTES: Final = QUOTES_KEPT * (MAX_QUOTE_BYTES * 4 // 3 + 512) + 1024
REPORT_DATA_HEX: Final = 128
_SUFFIX: Final = ".quotes.json"


class QuoteFileError(ValueError):
    """A quotes file that is not what the launcher writes."""


@dataclass(frozen=True)
class FileQuote:
    quote: bytes
    captured_at: datetime
    report_data: bytes | None


@dataclass(frozen=True)
class QuoteFile:
    instance: int
    pod_uid: str
    quotes: tuple[FileQuote, ...]  # newest first

    def latest(self) -> FileQuote | None:
        return max(self.quotes, key=lambda q: q.captured_at, default=None)


def quote_file_path(state_dir: Path, instance: int) -> Path:
    return state_dir / f"instance-{instance}{_SUFFIX}"


def is_quote_file(name: str) -> bool:
    """Whether a name in the state directory is a quotes file (not an instance record)."""
    return name.endswith(_SUFFIX)


def _stamp(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("a capture time must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render_quote_file(instance: int, pod_uid: str, quotes: Sequence[FileQuote]) -> str:
    """The file's text for the newest :data:`QUOTES_KEPT` of ``quotes`` (larger ones dropped)."""
    kept = sorted(
        (q for q in quotes if len(q.quote) <= MAX_QUOTE_BYTES),
        key=lambda q: q.captured_at,
        reverse=True,
    )[:QUOTES_KEPT]
    doc = {
        "version": QUOTE_FILE_VERSION,
        "instance": instance,
        "podUid": pod_uid,
        "quotes": [
            {
                "quote": base64.b64encode(q.quote).decode(),
                "capturedAt": _stamp(q.captured_at),
                "reportData": q.report_data.hex() if q.report_data is not None else None,
            }
            for q in kept
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


def write_quote_file(
    state_dir: Path, instance: int, pod_uid: str, quotes: Sequence[FileQuote]
) -> Path:
    """Replace the VM's quotes file atomically (mode 0644: the agent reads it)."""
    path = quote_file_path(state_dir, instance)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_quote_file(instance, pod_uid, quotes))
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return path


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise QuoteFileError(f"{key!r} is missing or not a {kind.__name__}")
    return value


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise QuoteFileError("capturedAt is not a timestamp")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise QuoteFileError(f"capturedAt {value!r} is not RFC 3339") from None
    if at.tzinfo is None:
        raise QuoteFileError("capturedAt has no time zone")
    return at.astimezone(UTC)


def _parse_quote(entry: Any) -> FileQuote:
    if not isinstance(entry, dict):
        raise QuoteFileError("a quote entry is not an object")
    text = _field(entry, "quote", str)
    if len(text) > MAX_QUOTE_BYTES * 4 // 3 + 4:
        raise QuoteFileError(f"a quote is larger than {MAX_QUOTE_BYTES} bytes")
    try:
        quote = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise QuoteFileError("a quote is not base64") from None
    if not quote or len(quote) > MAX_QUOTE_BYTES:
        raise QuoteFileError(f"a quote is empty or larger than {MAX_QUOTE_BYTES} bytes")
    raw = entry.get("reportData")
    report_data = None
    if raw is not None:
        if not isinstance(raw, str) or len(raw) != REPORT_DATA_HEX:
            raise QuoteFileError("reportData is not 64 bytes of hex")
        try:
            report_data = bytes.fromhex(raw)
        except ValueError:
            raise QuoteFileError("reportData is not hex") from None
    return FileQuote(quote, _parse_time(entry.get("capturedAt")), report_data)


def parse_quote_file(text: str) -> QuoteFile:
    """The file's content, checked: bounded, well-formed, at most :data:`QUOTES_KEPT` quotes."""
    if len(text) > MAX_QUOTE_FILE_BYTES:
        raise QuoteFileError(f"the file is larger than {MAX_QUOTE_FILE_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError:
        raise QuoteFileError("not JSON") from None
    if not isinstance(doc, dict):
        raise QuoteFileError("not a JSON object")
    if doc.get("version") != QUOTE_FILE_VERSION:
        raise QuoteFileError(f"version {doc.get('version')!r} is not {QUOTE_FILE_VERSION}")
    instance = _field(doc, "instance", int)
    if not 0 <= instance <= 9:
        raise QuoteFileError(f"instance {instance} is not 0..9")
    pod_uid = _field(doc, "podUid", str)
    if not pod_uid or len(pod_uid) > 128:
        raise QuoteFileError("podUid is empty or too long")
    entries = _field(doc, "quotes", list)
    if len(entries) > QUOTES_KEPT:
        raise QuoteFileError(f"{len(entries)} quotes, more than {QUOTES_KEPT}")
    return QuoteFile(instance, pod_uid, tuple(_parse_quote(e) for e in entries))
