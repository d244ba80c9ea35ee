"""PerObject keeps a value per live frozen object (api/memo.py)."""

from __future__ import annotations

import gc

import pytest

from cocoon_operator.api.memo import PerObject
from cocoon_operator.api.nodereport import RelayedQuote


def quote(text: str = "AAAA") -> RelayedQuote:
    return RelayedQuote(quote=text, captured_at="2026-12-07T12:00:00Z")


def test_a_value_is_computed_once_per_live_object_and_again_for_another() -> None:
    calls: list[str] = []

    def length(q: RelayedQuote) -> int:
        calls.append(q.quote)
        return len(q.quote)

    kept = PerObject(length)
    one = quote()
    assert [kept(one) for _ in range(3)] == [4, 4, 4]
    assert calls == ["AAAA"]
    same_content = quote()
    assert kept(same_content) == 4  # another object, though equal: its own entry
    changed = one.model_copy(update={"quote": "AAAAAAAA"})
    assert kept(changed) == 8  # a copy with changes is never given the old value
    assert calls == ["AAAA", "AAAA", "AAAAAAAA"]


def test_an_entry_goes_with_its_object() -> None:
    kept = PerObject(lambda q: q.quote)
    one = quote()
    kept(one)
    key = id(one)
    assert key in kept.kept
    del one
    gc.collect()
    assert key not in kept.kept


def test_a_value_that_raises_is_not_kept() -> None:
    attempts = 0

    def failing(q: RelayedQuote) -> str:
        nonlocal attempts
        attempts += 1
        raise ValueError("not base64")

    kept = PerObject(failing)
    one = quote()
    for _ in range(2):
        with pytest.raises(ValueError, match="not base64"):
            kept(one)
    assert attempts == 2
    assert kept.kept == {}
