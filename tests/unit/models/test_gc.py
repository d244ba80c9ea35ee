"""Which models gc removes (pure): examples, then properties over random caches and limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cocoon_operator.models._gc import CacheEntry, GcPolicy, models_to_collect

NOW = 1_000_000.0


def entry(v: str, size: int, age: float) -> CacheEntry:
    return CacheEntry(v * 64, size, NOW - age)


A, B, C, D = entry("a", 10, 400), entry("b", 20, 300), entry("c", 30, 200), entry("d", 40, 100)


def chosen(policy: GcPolicy, in_use: set[str] | None = None) -> list[str]:
    picked = models_to_collect([D, B, A, C], in_use or set(), policy, NOW)
    return [e.verity[0] for e in picked]


def test_without_limits_nothing_is_removed() -> None:
    assert chosen(GcPolicy()) == []


def test_models_unused_for_longer_than_max_age_go_oldest_first() -> None:
    assert chosen(GcPolicy(max_age=250)) == ["a", "b"]


def test_the_oldest_go_until_the_count_fits() -> None:
    assert chosen(GcPolicy(max_count=1)) == ["a", "b", "c"]


def test_the_oldest_go_until_the_bytes_fit() -> None:
    assert chosen(GcPolicy(max_bytes=70)) == ["a", "b"]


def test_a_model_in_use_stays_even_when_it_is_the_oldest_and_over_every_limit() -> None:
    assert chosen(GcPolicy(max_age=0, max_count=0, max_bytes=0), {A.verity}) == ["b", "c", "d"]


def test_models_in_use_count_toward_the_limits() -> None:
    assert chosen(GcPolicy(max_bytes=75), {D.verity}) == ["a", "b"]


def test_equal_last_uses_are_broken_by_verity_hash() -> None:
    x, y = entry("y", 1, 10), entry("x", 1, 10)
    assert models_to_collect([x, y], set(), GcPolicy(max_count=1), NOW) == [y]


entries = st.lists(
    st.builds(
        CacheEntry,
        verity=st.sampled_from([c * 64 for c in "0123456789abcdef"]),
        bytes=st.integers(0, 10**12),
        last_used=st.floats(NOW - 10**7, NOW),
    ),
    unique_by=lambda e: e.verity,
    max_size=16,
)
policies = st.builds(
    GcPolicy,
    max_age=st.none() | st.floats(0, 10**7),
    max_count=st.none() | st.integers(0, 20),
    max_bytes=st.none() | st.integers(0, 10**13),
)


def meets(policy: GcPolicy, kept: list[CacheEntry], in_use: set[str]) -> bool:
    """The limits as the policy states them: count and bytes over every model kept,
    age over the unused ones (a model in use is never too old)."""
    unused = [e for e in kept if e.verity not in in_use]
    return (
        (policy.max_count is None or len(kept) <= policy.max_count)
        and (policy.max_bytes is None or sum(e.bytes for e in kept) <= policy.max_bytes)
        and (policy.max_age is None or all(NOW - e.last_used <= policy.max_age for e in unused))
    )


@given(entries, st.data(), policies)
def test_gc_never_picks_a_model_in_use(
    cache: list[CacheEntry], data: st.DataObject, policy: GcPolicy
) -> None:
    in_use = set(data.draw(st.lists(st.sampled_from([e.verity for e in cache]))) if cache else [])
    assert not {e.verity for e in models_to_collect(cache, in_use, policy, NOW)} & in_use


@given(entries, st.data(), policies)
def test_gc_picks_the_oldest_unused_and_no_more_than_the_limits_need(
    cache: list[CacheEntry], data: st.DataObject, policy: GcPolicy
) -> None:
    in_use = set(data.draw(st.lists(st.sampled_from([e.verity for e in cache]))) if cache else [])
    picked = models_to_collect(cache, in_use, policy, NOW)
    unused = sorted(
        (e for e in cache if e.verity not in in_use), key=lambda e: (e.last_used, e.verity)
    )
    assert picked == unused[: len(picked)]  # a prefix: oldest first, none skipped
    kept = [e for e in cache if e not in picked]
    if len(picked) < len(unused):  # stopped before the last unused one: the limits are met
        assert meets(policy, kept, in_use)
    if picked:  # and no sooner: keeping the last one picked would break a limit
        assert not meets(policy, [*kept, picked[-1]], in_use)
