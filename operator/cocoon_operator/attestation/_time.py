"""Time handling: every check takes an explicit, timezone-aware ``now``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(now: datetime) -> datetime:
    """Return ``now`` in UTC; a naive datetime is refused (its meaning is ambiguous)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return now.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 / RFC 3339 instant; a bare date or naive time is taken as UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def epoch_seconds(now: datetime) -> int:
    """Whole seconds since the Unix epoch of an aware datetime."""
    return int(utc(now).timestamp())
