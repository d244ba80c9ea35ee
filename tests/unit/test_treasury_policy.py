"""The operator's own limits on a worker's money: funding bounds, the treasury's TCB
floor, registration rights and the owner's daily cap (pure), and the flags they
come from."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from cocoon_operator.api.conditions import Reason
from cocoon_operator.api.v1alpha1 import ConditionStatus, Funding, TcbStatus
from cocoon_operator.cli import build_parser, chain_options, funding_limits
from cocoon_operator.funding import Intent, IntentState, Ledger, PlannedTransfer
from cocoon_operator.policy.treasury import (
    TREASURY_TCB_DEFAULT,
    FundingLimits,
    NamespaceLimits,
    PolicyCode,
    RegistrationPolicy,
    funding_bounds,
    owner_cap_refusal,
    registration_refusal,
    tcb_refusal,
)
from cocoon_operator.policy.worker import ChainFacts, view

TON = 1_000_000_000
IMAGE = "ab" * 32

Key = tuple[str, str]


def test_a_target_above_the_operators_limit_is_funded_up_to_the_limit_and_says_so() -> None:
    bounds = funding_bounds(Funding(minimum=5 * TON, target=9_000 * TON), "ns", FundingLimits())
    assert bounds.target == 20 * TON
    assert bounds.capped is not None and "--funding-max-target" in bounds.capped
    assert "9000 TON" in bounds.capped and "20 TON" in bounds.capped


def test_a_spec_within_the_limits_keeps_its_values_and_gets_the_operators_daily_cap() -> None:
    bounds = funding_bounds(Funding(), "ns", FundingLimits())
    assert (bounds.target, bounds.daily_cap, bounds.capped) == (10 * TON, 20 * TON, None)
    own = funding_bounds(Funding(daily_cap=7 * TON), "ns", FundingLimits())
    assert own.daily_cap == 7 * TON and own.capped is None


def test_a_spec_daily_cap_above_the_operators_is_lowered_and_named() -> None:
    bounds = funding_bounds(Funding(daily_cap=90_000 * TON), "ns", FundingLimits())
    assert bounds.daily_cap == 20 * TON
    assert bounds.capped is not None and "--funding-worker-daily-cap" in bounds.capped


def test_a_namespace_override_replaces_the_default_for_that_namespace_only() -> None:
    limits = FundingLimits(namespaces={"big": NamespaceLimits(max_target=500 * TON)})
    spec = Funding(minimum=5 * TON, target=300 * TON)
    assert funding_bounds(spec, "big", limits).target == 300 * TON
    assert funding_bounds(spec, "small", limits).target == 20 * TON
    assert limits.namespace_daily_cap("big") == limits.namespace_daily_cap("small") == 100 * TON


def test_the_treasury_funds_up_to_date_tcb_only_by_default_whatever_the_worker_accepts() -> None:
    assert tcb_refusal("UpToDate", TREASURY_TCB_DEFAULT) is None
    for looser in ("OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded", ""):
        why = tcb_refusal(looser, TREASURY_TCB_DEFAULT)
        assert why is not None and "--treasury-tcb-status: UpToDate" in why
    wider = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED})
    assert tcb_refusal("SWHardeningNeeded", wider) is None


def test_registration_needs_an_allowed_namespace_and_an_allowed_image() -> None:
    policy = RegistrationPolicy(namespaces=frozenset({"team"}), image_hashes=frozenset({IMAGE}))
    assert registration_refusal(policy, "team", [("model", "cd" * 32), ("worker", IMAGE)]) is None
    other = registration_refusal(policy, "other", [("model", "cd" * 32)])
    assert other is not None and "namespace other" in other and "--registration-namespace" in other
    image = registration_refusal(policy, "team", [("worker", "ef" * 32)])
    assert image is not None and "ef" * 32 in image and "--registration-image-hash" in image
    nothing = RegistrationPolicy()  # the default: no namespace may register
    assert registration_refusal(nothing, "team", [("model", "cd" * 32)]) is not None


def test_the_owner_wallet_stops_at_its_daily_cap() -> None:
    assert owner_cap_refusal(0, 20 * 50_000_000, TON) is None
    why = owner_cap_refusal(19 * 50_000_000, 2 * 50_000_000, TON)
    assert why is not None and "--registration-daily-cap" in why


def test_wallet_funded_names_the_operator_policy_that_held_a_top_up_back() -> None:
    for code, reason in (
        (PolicyCode.FUNDING_LIMITED, Reason.FUNDING_LIMITED),
        (PolicyCode.SHARED_WALLET, Reason.SHARED_WALLET),
        (PolicyCode.TCB_NOT_FUNDED, Reason.TCB_NOT_FUNDED),
    ):
        low = ChainFacts(balance=TON, funding_note="not topped up: why", funding_limit=code.value)
        funded = next(c for c in view(None, chain=low).conditions if c.type == "WalletFunded")
        assert (funded.status, funded.reason) == (ConditionStatus.FALSE, reason)
        assert "not topped up: why" in funded.message
        enough = ChainFacts(balance=3 * TON, funding_limit=code.value)
        funded = next(c for c in view(None, chain=enough).conditions if c.type == "WalletFunded")
        assert (funded.status, funded.reason) == (ConditionStatus.TRUE, reason)
    fine = ChainFacts(balance=10 * TON, funding_limit=PolicyCode.FUNDING_LIMITED.value)
    funded = next(c for c in view(None, chain=fine).conditions if c.type == "WalletFunded")
    assert funded.reason == Reason.FUNDED  # at its minimum: funded, the note says the cap


def test_the_flags_give_finite_defaults_and_per_namespace_overrides() -> None:
    limits = funding_limits([], [], [])
    assert limits.of("any") == NamespaceLimits(20 * TON, 20 * TON, 100 * TON)
    limits = funding_limits(["50", "team=500"], ["team=60"], ["team=0"])
    assert limits.of("any").max_target == 50 * TON
    assert limits.of("team") == NamespaceLimits(500 * TON, 60 * TON, 0)
    for bad in (["=5"], ["lots"], ["ns=-1"]):
        with pytest.raises(ValueError, match="--funding-max-target"):
            funding_limits(bad, [], [])


def test_run_flags_carry_the_money_policy_into_the_chain_options() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--ton-endpoint",
            "http://127.0.0.1:1",
            "--registration-namespace",
            "team",
            "--registration-image-hash",
            IMAGE.upper(),
            "--registration-daily-cap",
            "0.5",
            "--treasury-tcb-status",
            "SWHardeningNeeded",
            "--treasury-tcb-status",
            "UpToDate",
        ]
    )
    options = chain_options(args)
    assert options.registration == RegistrationPolicy(
        frozenset({"team"}), frozenset({IMAGE}), TON // 2
    )
    assert options.treasury_tcb == {TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED}
    default = chain_options(build_parser().parse_args(["run", "--ton-endpoint", "http://x"]))
    assert default.treasury_tcb == TREASURY_TCB_DEFAULT
    assert default.registration == RegistrationPolicy()
    bad = build_parser().parse_args(
        ["run", "--ton-endpoint", "http://x", "--registration-image-hash", "xyz"]
    )
    with pytest.raises(ValueError, match="--registration-image-hash"):
        chain_options(bad)


def test_a_registration_stays_asked_for_after_the_ledger_prunes_it() -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    sent = Intent(
        id="r",
        seqno=0,
        valid_until=0,
        message_hash="00",
        boc="",
        transfers=[
            PlannedTransfer(worker="ns/w", address="0:r", amount=1, purpose="register:r:worker:1")
        ],
        created_at=now,
        state=IntentState.CONFIRMED,
        resolved_at=now,
    )
    ledger = Ledger(treasury="0:o", intents=[sent]).pruned(now + timedelta(days=3))
    assert ledger.intents == []
    assert ledger.has_purpose("register:r:worker:1")
    assert ledger.confirmed_purpose("register:r:worker:1") is not None
    # Pruned again, it is kept once.
    assert ledger.pruned(now + timedelta(days=6)).done_purposes == ["register:r:worker:1"]


def test_a_shared_wallet_is_named_whatever_its_balance() -> None:
    full = ChainFacts(balance=50 * TON, funding_limit=PolicyCode.SHARED_WALLET.value)
    funded = next(c for c in view(None, chain=full).conditions if c.type == "WalletFunded")
    assert (funded.status, funded.reason) == (ConditionStatus.TRUE, Reason.SHARED_WALLET)


def test_a_wallet_is_funded_for_its_first_worker_until_that_one_is_gone() -> None:
    from cocoon_operator.handlers.chain import Chain  # noqa: PLC0415

    state = Chain(ton=None, batcher=None, lists=None)  # type: ignore[arg-type]
    living = {("ns", "a"), ("ns", "b")}
    alive = living.__contains__
    assert state.wallet_user(("ns", "a"), "0:w", alive) == ("ns", "a")
    assert state.wallet_user(("ns", "b"), "0:w", alive) == ("ns", "a")
    assert state.wallet_user(("ns", "a"), "0:w", alive) == ("ns", "a")
    living.discard(("ns", "a"))  # its pods are gone: the other takes the wallet over
    assert state.wallet_user(("ns", "b"), "0:w", alive) == ("ns", "b")
    # A worker whose wallet changed gives the old one up.
    assert state.wallet_user(("ns", "b"), "0:v", alive) == ("ns", "b")
    assert state.wallet_users == {"0:v": ("ns", "b")}
    state.forget(("ns", "b"))
    assert state.wallet_users == {}


def test_wallet_claims_indexed_by_worker_decide_as_a_scan_of_every_wallet_did() -> None:
    # The scan the index replaced, as it was: every wallet this worker held but
    # ``address`` is given up, and a wallet goes to the first worker still alive.
    from cocoon_operator.handlers.chain import Chain  # noqa: PLC0415

    def scanned(users: dict[str, Key], key: Key, address: str, alive: Callable[[Key], bool]) -> Key:
        for old in [a for a, k in users.items() if k == key and a != address]:
            del users[old]
        first = users.setdefault(address, key)
        if first != key and not alive(first):
            first = users[address] = key
        return first

    rng = random.Random(29)
    keys: list[Key] = [("ns", w) for w in "abcdef"]
    state = Chain(ton=None, batcher=None, lists=None)  # type: ignore[arg-type]
    reference: dict[str, Key] = {}
    for _ in range(5000):
        living = {k for k in keys if rng.random() < 0.7}
        key, address = rng.choice(keys), rng.choice(["0:u", "0:v", "0:w", "0:x"])
        if rng.random() < 0.1:
            state.forget(key)
            for a in [a for a, k in reference.items() if k == key]:
                del reference[a]
            continue
        got = state.wallet_user(key, address, living.__contains__)
        assert got == scanned(reference, key, address, living.__contains__)
        assert state.wallet_users == reference


def test_a_cap_refusal_reaches_the_worker_as_funding_limited_naming_its_flag() -> None:
    from cocoon_operator.funding import FundingReport, Limit, Refusal  # noqa: PLC0415
    from cocoon_operator.handlers.chain import _describe  # noqa: PLC0415

    report = FundingReport(
        refused=[
            Refusal("ns/a", "namespace ns's daily cap is used up", Limit.NAMESPACE_DAILY_CAP),
            Refusal("ns/b", "node wallet 0:w is also worker ns/a's", Limit.SHARED_WALLET),
            Refusal("ns/c", "a top-up is already in flight", Limit.IN_FLIGHT),
        ]
    )
    capped = _describe(report, "ns/a")
    assert capped.limit == "FundingLimited" and "(--funding-namespace-daily-cap)" in capped.note
    assert _describe(report, "ns/b").limit == "SharedWallet"
    assert _describe(report, "ns/c").limit is None  # transient: no operator limit
