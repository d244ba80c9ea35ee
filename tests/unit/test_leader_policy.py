"""Who may take the operator's Lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
