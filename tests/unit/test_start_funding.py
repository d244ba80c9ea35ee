"""Funding a node wallet before its VM starts, in the namespaces the operator opts in (pure).

COCOON's runner waits for 2.1 TON before it does anything
(runners/BaseRunner.hpp:335-337, runners/worker/WorkerRunner.cpp:230-231): in an
opted-in namespace the launcher pod waits for the chain to show that floor, the
floor alone is paid before attestation, within the same caps and ledger as the
top-up to the target afterwards, and the operator's own derivation of the
wallet is the only address funded from then on.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cocoon_operator.api.conditions import Reason
from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR, CocoonWorkerStatus, Funding
from cocoon_operator.cli import build_parser, chain_options, funding_limits
from cocoon_operator.desired.launcher import revision
from cocoon_operator.funding import (
    Intent,
    IntentState,
    Ledger,
    Limit,
    PlannedTransfer,
    TopUpRequest,
    plan_topups,
)
from cocoon_operator.policy import allowlist
from cocoon_operator.policy.chain import StartFunding, WalletChoice, start_hold, wallet_to_fund
from cocoon_operator.policy.treasury import (
    START_FUNDING_MARGIN,
    FundingLimits,
    NamespaceLimits,
    funding_bounds,
    start_funding_bounds,
)
from cocoon_operator.reconcile.worker import plan
from tests.unit.helpers import T0, T1, observed, running_pod, spec

TON = 1_000_000_000
REV = revision(spec())
OWN = "0:" + "aa" * 32
OTHER = "0:" + "bb" * 32
DAY = "2026-11-25"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def conds(p: object) -> dict[str, dict[str, str]]:
    status = p.status  # type: ignore[attr-defined]
    return {c["type"]: c for c in status["conditions"]}


def listed() -> allowlist.Listing:
    return allowlist.Listing(REV, allowlist.model_hash(spec().model), True, None, None)


def look(balance: int | None, *, rev: str = REV, note: str = "topped up") -> StartFunding:
    return StartFunding(rev, OWN, balance, note)


# Who opts in


def test_no_namespace_is_funded_before_start_unless_the_operator_names_it() -> None:
    assert not FundingLimits().funds_before_start("team-a")
    named = FundingLimits(before_start=frozenset({"team-a"}))
    assert named.funds_before_start("team-a")
    assert not named.funds_before_start("team-b")
    assert FundingLimits(before_start=frozenset({"*"})).funds_before_start("team-b")


def test_the_flag_names_namespaces_or_all_and_needs_a_treasury() -> None:
    limits = funding_limits([], [], [], ["team-a", "*"])
    assert limits.before_start == frozenset({"team-a", "*"})
    with pytest.raises(ValueError, match="--fund-before-start-namespace"):
        funding_limits([], [], [], ["team-a=5"])
    args = build_parser().parse_args(
        ["run", "--ton-endpoint", "http://ton", "--fund-before-start-namespace", "team-a"]
    )
    with pytest.raises(ValueError, match="needs --treasury-secret"):
        chain_options(args)
    args = build_parser().parse_args(
        [
            "run",
            "--ton-endpoint",
            "http://ton",
            "--treasury-secret",
            "ops/treasury",
            "--fund-before-start-namespace",
            "team-a",
        ]
    )
    assert chain_options(args).funding_limits.funds_before_start("team-a")


# How much


def test_the_start_top_up_is_cocoons_floor_and_a_storage_fee_margin_no_more() -> None:
    funding = Funding(minimum=5 * TON, target=10 * TON)
    bounds = start_funding_bounds(funding, "team-a", FundingLimits())
    assert FUNDING_FLOOR == 2_100_000_000
    assert bounds.target == FUNDING_FLOOR + START_FUNDING_MARGIN
    assert START_FUNDING_MARGIN == TON // 1000
    assert bounds.capped is None
    # The same daily cap as the top-up to the target: one worker, one wallet.
    assert bounds.daily_cap == funding_bounds(funding, "team-a", FundingLimits()).daily_cap


def test_an_operator_target_cap_below_the_floor_caps_the_start_top_up_and_says_so() -> None:
    limits = FundingLimits(NamespaceLimits(max_target=2 * TON))
    bounds = start_funding_bounds(Funding(), "team-a", limits)
    assert bounds.target == 2 * TON
    assert bounds.capped is not None and "--funding-max-target" in bounds.capped


# When the pod is created


def test_no_launcher_pod_is_created_while_the_wallet_is_short_of_the_floor() -> None:
    hold = start_hold(look(1 * TON, note="a top-up is in flight"), REV)
    assert hold is not None and OWN in hold and "a top-up is in flight" in hold
    p = plan(observed(chain_enabled=True, listing=listed(), start_funding=hold), now=T0)
    assert p.apply == [] and p.delete_pods == []
    c = conds(p)
    assert (c["WalletFunded"]["status"], c["WalletFunded"]["reason"]) == (
        "False",
        Reason.AWAITING_START_FUNDING,
    )
    assert c["Scheduled"]["reason"] == Reason.AWAITING_START_FUNDING
    assert "2.1 TON" in c["WalletFunded"]["message"]
    assert p.status["phase"] == "Pending"


def test_a_wallet_not_looked_at_yet_or_for_another_revision_holds_the_pod() -> None:
    assert start_hold(None, REV) is not None
    assert start_hold(look(5 * TON, rev="other"), REV) is not None
    assert start_hold(StartFunding(REV, None, None, "not funded: no Secret"), REV) is not None


def test_the_pod_is_created_once_the_chain_shows_the_floor() -> None:
    assert start_hold(look(FUNDING_FLOOR - 1), REV) is not None
    assert start_hold(look(FUNDING_FLOOR), REV) is None
    held = plan(
        observed(chain_enabled=True, listing=listed(), start_funding=start_hold(look(0), REV)),
        now=T0,
    )
    status = CocoonWorkerStatus.model_validate(held.status)
    started = plan(
        observed(chain_enabled=True, listing=listed(), status=status, start_funding=None), now=T1
    )
    assert [o["kind"] for o in started.apply] == ["Pod"]
    assert conds(started)["WalletFunded"]["reason"] != Reason.AWAITING_START_FUNDING


def test_a_running_vm_is_never_stopped_for_its_start_floor() -> None:
    pods = (running_pod(REV),)
    hold = start_hold(look(0), REV)
    p = plan(observed(pods, chain_enabled=True, listing=listed(), start_funding=hold), now=T0)
    assert p.apply == [] and p.delete_pods == []
    assert conds(p)["WalletFunded"]["reason"] != Reason.AWAITING_START_FUNDING


# Which wallet


def test_the_operators_own_derivation_is_the_wallet_funded_after_start() -> None:
    assert wallet_to_fund(OWN, OWN, OWN) == WalletChoice(OWN)
    assert wallet_to_fund(None, None, OWN) == WalletChoice(OWN)


@pytest.mark.parametrize(
    ("launcher", "worker", "who"),
    [(OTHER, None, "launcher derives"), (OWN, OTHER, "worker reports"), (None, OTHER, "worker")],
)
def test_a_launcher_or_worker_naming_another_wallet_than_the_operators_stops_funding(
    launcher: str | None, worker: str | None, who: str
) -> None:
    choice = wallet_to_fund(launcher, worker, OWN)
    assert choice.address == OWN
    assert choice.mismatch is not None
    assert OWN in choice.mismatch and OTHER in choice.mismatch and who in choice.mismatch


# The money: one ledger, one cap, once per wallet


def intent(worker: str, address: str, amount: int, state: IntentState) -> Intent:
    return Intent(
        id=f"{worker}-{amount}",
        seqno=1,
        valid_until=0,
        message_hash="00",
        boc="",
        transfers=[PlannedTransfer(worker=worker, address=address, amount=amount)],
        created_at=NOW,
        state=state,
    )


def start_request(worker: str, balance: int, cap: int) -> TopUpRequest:
    bounds = start_funding_bounds(Funding(), "ns", FundingLimits())
    return TopUpRequest(worker, OWN, balance, FUNDING_FLOOR, bounds.target, cap)


def target_request(worker: str, balance: int, cap: int) -> TopUpRequest:
    bounds = funding_bounds(Funding(), "ns", FundingLimits())
    return TopUpRequest(worker, OWN, balance, Funding().minimum, bounds.target, cap)


def topups(requests: list[TopUpRequest], ledger: Ledger):  # type: ignore[no-untyped-def]
    return plan_topups(requests, ledger, day=DAY, global_daily_cap=1000 * TON, available=1000 * TON)


def test_the_floor_before_start_and_the_target_after_attestation_share_one_daily_cap() -> None:
    start = FUNDING_FLOOR + START_FUNDING_MARGIN
    transfers, _ = topups([start_request("ns/a", 0, 20 * TON)], Ledger(treasury="0:t"))
    assert [(t.worker, t.address, t.amount) for t in transfers] == [("ns/a", OWN, start)]
    paid = Ledger(treasury="0:t", intents=[intent("ns/a", OWN, start, IntentState.CONFIRMED)])
    # The same worker's top-up to its target, the same day: allowed, and counted.
    transfers, refusals = topups([target_request("ns/a", start, 20 * TON)], paid)
    assert [t.amount for t in transfers] == [10 * TON - start] and refusals == []
    transfers, _ = topups([target_request("ns/a", start, 5 * TON)], paid)
    assert [t.amount for t in transfers] == [5 * TON - start]  # the cap, both counted


def test_a_start_top_up_pending_across_a_restart_is_never_asked_for_again() -> None:
    # Killed between recording the intent and seeing it confirmed: the restarted
    # operator looks again, finds the wallet still short, and asks again.
    pending = Ledger(
        treasury="0:t", intents=[intent("ns/a", OWN, FUNDING_FLOOR, IntentState.PENDING)]
    )
    transfers, refusals = topups([start_request("ns/a", 0, 20 * TON)], pending)
    assert transfers == []
    assert [(r.worker, r.code) for r in refusals] == [("ns/a", Limit.IN_FLIGHT)]


def test_a_second_worker_on_a_wallet_funded_before_start_is_told_it_is_shared() -> None:
    paid = Ledger(
        treasury="0:t", intents=[intent("ns/a", OWN, FUNDING_FLOOR, IntentState.CONFIRMED)]
    )
    transfers, refusals = topups([start_request("ns/b", 0, 20 * TON)], paid)
    assert transfers == []
    assert [(r.worker, r.code) for r in refusals] == [("ns/b", Limit.SHARED_WALLET)]
