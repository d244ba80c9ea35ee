"""Who is topped up, by how much, within which caps (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from cocoon_operator.funding import (
    Intent,
    IntentState,
    Ledger,
    Limit,
    PlannedTransfer,
    TopUpRequest,
    plan_topups,
)

TON = 1_000_000_000
DAY = "2026-11-25"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def req(worker: str, balance: int, *, cap: int | None = None) -> TopUpRequest:
    return TopUpRequest(worker, f"0:{worker:0>64}", balance, 5 * TON, 10 * TON, cap)


def intent(worker: str, amount: int, state: IntentState, when: datetime = NOW) -> Intent:
    return Intent(
        id=f"{worker}-{amount}",
        seqno=1,
        valid_until=0,
        message_hash="00",
        boc="",
        transfers=[PlannedTransfer(worker=worker, address=f"0:{worker:0>64}", amount=amount)],
        created_at=when,
        state=state,
    )


def plan(
    requests: list[TopUpRequest],
    ledger: Ledger | None = None,
    *,
    cap: int = 1000 * TON,
    available: int = 1000 * TON,
):  # type: ignore[no-untyped-def]
    return plan_topups(
        requests,
        ledger or Ledger(treasury="0:t"),
        day=DAY,
        global_daily_cap=cap,
        available=available,
    )


def test_wallets_below_minimum_are_topped_up_to_target_and_others_left_alone() -> None:
    transfers, refusals = plan([req("a", 3 * TON), req("b", 6 * TON), req("c", 0)])
    assert {t.worker: t.amount for t in transfers} == {"a": 7 * TON, "c": 10 * TON}
    assert refusals == []
    assert [t.worker for t in transfers] == ["c", "a"]  # lowest balance first


def test_a_worker_cap_counts_confirmed_and_pending_but_not_expired_intents() -> None:
    ledger = Ledger(
        treasury="0:t",
        intents=[
            intent("a", 4 * TON, IntentState.CONFIRMED),
            intent("a", 50 * TON, IntentState.EXPIRED),
            intent("a", 1 * TON, IntentState.CONFIRMED, datetime(2026, 11, 24, tzinfo=UTC)),
        ],
    )
    transfers, _ = plan([req("a", 0, cap=6 * TON)], ledger)
    assert [(t.worker, t.amount) for t in transfers] == [("a", 2 * TON)]
    transfers, refusals = plan([req("a", 0, cap=4 * TON)], ledger)
    assert transfers == [] and refusals[0].reason == "the worker's daily cap is used up"


def test_the_global_cap_serves_the_most_urgent_first() -> None:
    transfers, refusals = plan([req("a", 4 * TON), req("b", 0), req("c", 1 * TON)], cap=15 * TON)
    assert [(t.worker, t.amount) for t in transfers] == [("b", 10 * TON), ("c", 5 * TON)]
    assert [r.worker for r in refusals] == ["a"]


def test_a_worker_with_a_top_up_in_flight_gets_no_second_one() -> None:
    ledger = Ledger(treasury="0:t", intents=[intent("a", 5 * TON, IntentState.PENDING)])
    transfers, refusals = plan([req("a", 0)], ledger)
    assert transfers == []
    assert refusals[0].reason == "a top-up is already in flight"


def test_a_thin_treasury_pays_what_it_can_and_says_who_waits() -> None:
    transfers, refusals = plan([req("a", 0), req("b", 1)], available=12 * TON)
    assert [(t.worker, t.amount) for t in transfers] == [("a", 10 * TON), ("b", 2 * TON)]
    transfers, refusals = plan([req("a", 0), req("b", 1)], available=10 * TON)
    assert [r.reason for r in refusals] == ["the treasury cannot cover it"]


def test_the_same_wallet_twice_is_served_once() -> None:
    transfers, _ = plan([req("a", 0), req("a", 0)])
    assert len(transfers) == 1


def test_a_worker_whose_last_top_up_is_settling_waits_for_its_balance_to_show_it() -> None:
    transfers, refusals = plan_topups(
        [req("a", 0), req("b", 0)],
        Ledger(treasury="0:t"),
        day=DAY,
        global_daily_cap=1000 * TON,
        available=1000 * TON,
        settling=frozenset({"a"}),
    )
    assert [t.worker for t in transfers] == ["b"]
    assert refusals[0].worker == "a" and "settling" in refusals[0].reason


def shared(worker: str, balance: int, address: str = "0:" + "ab" * 32) -> TopUpRequest:
    return TopUpRequest(worker, address, balance, 5 * TON, 10 * TON)


def test_two_workers_sharing_one_wallet_get_one_top_up_and_the_second_is_told_why() -> None:
    transfers, refusals = plan([shared("ns/a", 0), shared("ns/b", 0)])
    assert [(t.worker, t.amount) for t in transfers] == [("ns/a", 10 * TON)]
    [refused] = refusals
    assert refused.worker == "ns/b" and refused.code is Limit.SHARED_WALLET
    assert "also worker ns/a's" in refused.reason


def test_a_wallet_topped_up_today_for_one_worker_is_not_topped_up_again_for_another() -> None:
    earlier = intent("ns/a", 10 * TON, IntentState.CONFIRMED)
    earlier = earlier.model_copy(
        update={
            "transfers": [
                t.model_copy(update={"address": "0:" + "ab" * 32}) for t in earlier.transfers
            ]
        }
    )
    transfers, refusals = plan([shared("ns/b", 0)], Ledger(treasury="0:t", intents=[earlier]))
    assert transfers == []
    assert [r.code for r in refusals] == [Limit.SHARED_WALLET]


def test_a_namespace_cap_counts_the_ledger_and_this_cycle_and_spares_other_namespaces() -> None:
    spent = intent("team/x", 6 * TON, IntentState.PENDING, NOW)
    ledger = Ledger(treasury="0:t", intents=[spent])
    caps = {"team": 12 * TON}
    transfers, refusals = plan_topups(
        [req("team/a", 0), req("team/b", 0), req("other/c", 0)],
        ledger,
        day=DAY,
        global_daily_cap=1000 * TON,
        available=1000 * TON,
        namespace_daily_cap=caps.get,
    )
    # 6 TON left for the namespace: team/a gets them, team/b nothing, other/c its all.
    assert {t.worker: t.amount for t in transfers} == {"team/a": 6 * TON, "other/c": 10 * TON}
    [refused] = refusals
    assert refused.worker == "team/b" and refused.code is Limit.NAMESPACE_DAILY_CAP
    assert "namespace team's daily cap" in refused.reason


def test_a_namespace_cap_of_zero_funds_nobody_there() -> None:
    transfers, refusals = plan_topups(
        [req("team/a", 0)],
        Ledger(treasury="0:t"),
        day=DAY,
        global_daily_cap=1000 * TON,
        available=1000 * TON,
        namespace_daily_cap=lambda _ns: 0,
    )
    assert transfers == [] and [r.code for r in refusals] == [Limit.NAMESPACE_DAILY_CAP]


def test_a_request_already_at_its_capped_target_plans_nothing() -> None:
    request = TopUpRequest("ns/a", "0:" + "cd" * 32, 3 * TON, 5 * TON, 3 * TON)
    assert plan([request]) == ([], [])
