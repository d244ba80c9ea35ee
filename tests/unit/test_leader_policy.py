"""Who may take the operator's Lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.policy.leader import may_take

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_a_held_lease_is_taken_only_after_it_expires() -> None:
    fresh = NOW - timedelta(seconds=10)
    assert not may_take("a", fresh, 15, identity="b", now=NOW)
    assert may_take("a", fresh, 10, identity="b", now=NOW)  # expired exactly now
    assert may_take("b", fresh, 15, identity="b", now=NOW)  # our own: renew


def test_an_empty_or_released_lease_is_free() -> None:
    assert may_take(None, None, 15, identity="b", now=NOW)
    assert may_take("", NOW, 15, identity="b", now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A Lease's renewTime as the apiserver writes it (MicroTime).
        ("2026-12-06T04:40:00.123456Z", datetime(2026, 12, 6, 4, 40, 0, 123456, tzinfo=UTC)),
        ("2026-12-06T06:40:00+02:00", datetime(2026, 12, 6, 4, 40, tzinfo=UTC)),
        ("2026-12-06T04:40:00", datetime(2026, 12, 6, 4, 40, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1733460000, None),
    ],
)
def test_a_lease_time_reads_as_an_aware_utc_instant_or_none(
    text: object, expected: datetime | None
) -> None:
    assert parse_rfc3339(text) == expected
