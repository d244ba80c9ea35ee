"""Earnings are written when first seen, then at most every 15 minutes; payouts when
due; node wallet balances read less often while they hold, and a Ready worker's
stats while they ask nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cocoon_operator.api.v1alpha1 import EarningsStatus, PayoutPolicy
from cocoon_operator.policy.chain import (
    EARNINGS_WRITE_SECONDS,
    STATS_BACKOFF_LIMIT,
    BalanceReading,
    StatsReading,
    WalletChoice,
    balance_read_due,
    earnings_due,
    next_reading,
    next_stats_reading,
    payout_due,
    stats_read_due,
    wallet_to_fund,
)
from cocoon_operator.ton.amounts import Nanoton

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def earned(tokens: int, at: datetime = NOW) -> EarningsStatus:
    return EarningsStatus(earned_tokens=tokens, checked_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_first_figures_are_written_then_changes_wait_their_turn() -> None:
    assert earnings_due(None, earned(5), now=NOW)
    assert not earnings_due(earned(5), earned(9), now=NOW + timedelta(seconds=60))
    # Rising counters cost a fleet at rest at most one write per worker per 15 min.
    assert not earnings_due(earned(5), earned(9), now=NOW + timedelta(seconds=899))
    later = NOW + timedelta(seconds=EARNINGS_WRITE_SECONDS)
    assert earnings_due(earned(5), earned(9), now=later)
    assert not earnings_due(earned(5), earned(5), now=later + timedelta(days=1))


def test_an_unreadable_last_write_time_means_the_figures_are_written() -> None:
    # The CRD's date-time format keeps most garbage out; what still gets in (a
    # copy restored from elsewhere, a schema change) must not stop the chain
    # step with a ValueError, as it did before policy.conditions.parse_rfc3339.
    garbled = EarningsStatus(earned_tokens=5, checked_at="yesterday-ish")
    assert earnings_due(garbled, earned(9), now=NOW)


def test_a_completed_payout_is_written_at_once() -> None:
    old = EarningsStatus(earned_tokens=10, paid_out_tokens=0, checked_at="2026-01-01T00:00:00Z")
    paid = EarningsStatus(earned_tokens=10, paid_out_tokens=10)
    moments_later = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert earnings_due(old, paid, now=moments_later)
    more_tokens = EarningsStatus(earned_tokens=20, paid_out_tokens=0)
    assert not earnings_due(old, more_tokens, now=moments_later)


def test_payout_policy_asks_only_above_its_threshold_and_never_twice_at_once() -> None:
    off = PayoutPolicy()
    assert not payout_due(off, unpaid_tokens=10**12, running=False)
    policy = PayoutPolicy(minimum_unpaid_tokens=1000)
    assert not payout_due(policy, unpaid_tokens=999, running=False)
    assert payout_due(policy, unpaid_tokens=1000, running=False)
    assert not payout_due(policy, unpaid_tokens=5000, running=True)


def test_a_persons_payout_request_is_acted_upon_once_per_value() -> None:
    off = PayoutPolicy()
    asked = payout_due(off, unpaid_tokens=0, running=False, requested="t1", handled=None)
    assert asked == "requested (t1)"
    assert payout_due(off, unpaid_tokens=0, running=False, requested="t1", handled="t1") is None
    assert payout_due(off, unpaid_tokens=0, running=False, requested="t2", handled="t1")
    assert payout_due(off, unpaid_tokens=0, running=True, requested="t2", handled="t1") is None
    policy = PayoutPolicy(minimum_unpaid_tokens=10)
    why = payout_due(policy, unpaid_tokens=12, running=False, requested="t1", handled="t1")
    assert why == "12 unpaid tokens >= spec.payout.minimumUnpaidTokens (10)"


ADDRESS = "0:" + "ab" * 32
MINIMUM = 5 * 10**9
INTERVAL = 30.0


def readings_over(balances: list[int], *, checks: int) -> list[int]:
    """The checks (0, 1, ...) at which the balance is read, ``balances[i]`` being what
    the chain holds at check i (the last one from then on)."""
    last: BalanceReading | None = None
    read_at = []
    for i in range(checks):
        now = NOW + timedelta(seconds=i * INTERVAL)
        if balance_read_due(last, address=ADDRESS, minimum=MINIMUM, now=now, interval=INTERVAL):
            held = Nanoton(balances[min(i, len(balances) - 1)])
            last = next_reading(last, ADDRESS, held, now)
            read_at.append(i)
    return read_at


def test_a_balance_that_holds_is_read_at_doubling_intervals_up_to_ten_checks() -> None:
    assert readings_over([10 * 10**9], checks=60) == [0, 1, 3, 7, 15, 25, 35, 45, 55]


def test_a_balance_that_moves_is_read_at_every_check_again() -> None:
    spend = [10 * 10**9] * 7 + [9 * 10**9]  # the worker spends between checks 6 and 7
    assert readings_over(spend, checks=12) == [0, 1, 3, 7, 8, 10]


def test_a_balance_below_the_minimum_is_read_at_every_check() -> None:
    assert readings_over([MINIMUM - 1], checks=6) == [0, 1, 2, 3, 4, 5]


def test_another_address_is_read_at_once() -> None:
    last = BalanceReading(ADDRESS, Nanoton(10 * 10**9), NOW, unchanged=4)
    soon = NOW + timedelta(seconds=INTERVAL)
    assert not balance_read_due(last, address=ADDRESS, minimum=MINIMUM, now=soon, interval=30)
    other = "0:" + "cd" * 32  # a new VM, a new node wallet
    assert balance_read_due(last, address=other, minimum=MINIMUM, now=soon, interval=30)
    assert next_reading(last, other, Nanoton(10 * 10**9), soon).unchanged == 0


def stats_reads_over(
    checks: int,
    *,
    asks: frozenset[int] = frozenset(),
    ready_from: int = 0,
    requested_at: frozenset[int] = frozenset(),
    pod_at: dict[int, str] | None = None,
) -> list[int]:
    """The chain checks (0, 1, ...) at which the worker's stats are read: a reading at a
    check in ``asks`` asks something of the operator; the worker is Ready from check
    ``ready_from``; a person's payout request waits at ``requested_at``; ``pod_at``:
    the pod from each given check on."""
    last: StatsReading | None = None
    pod, read_at = "p-1", []
    for i in range(checks):
        pod = (pod_at or {}).get(i, pod)
        now = NOW + timedelta(seconds=i * INTERVAL)
        due = stats_read_due(
            last,
            pod=pod,
            ready=i >= ready_from,
            payout_requested=i in requested_at,
            now=now,
            interval=INTERVAL,
        )
        if due:
            last = next_stats_reading(
                last, pod, ADDRESS, now, asked=i in asks, ready=i >= ready_from
            )
            read_at.append(i)
    return read_at


def test_a_quiet_ready_workers_stats_are_read_at_doubling_intervals_up_to_ten_checks() -> None:
    assert STATS_BACKOFF_LIMIT == 10
    assert stats_reads_over(60) == [0, 1, 3, 7, 15, 25, 35, 45, 55]


def test_stats_are_read_at_every_check_until_the_worker_is_ready_then_back_off() -> None:
    assert stats_reads_over(12, ready_from=4) == [0, 1, 2, 3, 4, 5, 7, 11]


def test_a_reading_that_asked_something_brings_the_reading_back_to_every_check() -> None:
    # A payout due at check 7 (or running, a coefficient to set back, a mismatch).
    assert stats_reads_over(12, asks=frozenset({7})) == [0, 1, 3, 7, 8, 9, 11]


def test_a_persons_payout_request_and_a_new_pod_are_read_at_once() -> None:
    # The request's reading asks for the payout: read again at the next check.
    assert stats_reads_over(10, requested_at=frozenset({5}), asks=frozenset({5})) == [
        0,
        1,
        3,
        5,
        6,
        7,
        9,
    ]
    assert stats_reads_over(10, pod_at={5: "p-2"}) == [0, 1, 3, 5, 6, 8]


def test_the_wallet_kept_is_the_one_the_worker_named_in_its_last_reading() -> None:
    reading = next_stats_reading(None, "p-1", ADDRESS, NOW, asked=False, ready=True)
    assert (reading.wallet, reading.quiet, reading.asked) == (ADDRESS, 0, False)
    later = NOW + timedelta(seconds=30)
    again = next_stats_reading(reading, "p-1", ADDRESS, later, asked=False, ready=True)
    assert again.quiet == 1
    assert next_stats_reading(again, "p-2", ADDRESS, later, asked=False, ready=True).quiet == 0
    assert next_stats_reading(again, "p-1", ADDRESS, later, asked=False, ready=False).quiet == 0


DERIVED = "0:" + "ab" * 32
OTHER = "0:" + "cd" * 32


def test_the_derived_wallet_is_funded_before_the_worker_reports_any() -> None:
    # A runner waits for 2.1 TON before it answers /jsonstats (BaseRunner.cpp).
    assert wallet_to_fund(DERIVED, None) == WalletChoice(DERIVED)


def test_the_derived_wallet_is_funded_when_the_worker_reports_the_same() -> None:
    assert wallet_to_fund(DERIVED, DERIVED) == WalletChoice(DERIVED)


def test_a_worker_naming_another_wallet_stops_funding_and_both_are_named() -> None:
    choice = wallet_to_fund(DERIVED, OTHER)
    assert choice.address == DERIVED
    assert choice.mismatch is not None and DERIVED in choice.mismatch and OTHER in choice.mismatch


def test_without_a_derived_address_the_reported_one_is_read() -> None:
    assert wallet_to_fund(None, OTHER) == WalletChoice(OTHER)
    assert wallet_to_fund(None, None) == WalletChoice(None)
