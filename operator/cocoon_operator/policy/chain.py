"""When the chain step writes what it read, funds, holds a VM for funds, and asks for a
payout (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR, EarningsStatus, PayoutPolicy
from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.ton.amounts import Nanoton

# A fleet whose workers earn all the time writes N / (this / 60) status patches a
# minute for earnings alone: at 5 minutes, 0.2 per worker per minute, as many as
# the whole steady state may write (docs/bench.md).
EARNINGS_WRITE_SECONDS = 900.0


def earnings_due(old: EarningsStatus | None, new: EarningsStatus, *, now: dt.datetime) -> bool:
    """Token counters rise all the time: write them at most every 15 minutes.

    The metrics carry the live figure; status is for people and GitOps, and a
    write per worker per check would make a fleet at rest cost API requests.
    """
    if old is None or old.checked_at is None or old.paid_out_tokens != new.paid_out_tokens:
        return True  # a completed payout is news: shown at once
    counters = ("earned_tokens", "paid_out_tokens")
    if all(getattr(old, c) == getattr(new, c) for c in counters):
        return False
    last = parse_rfc3339(old.checked_at)
    return last is None or (now - last).total_seconds() >= EARNINGS_WRITE_SECONDS


def payout_due(
    policy: PayoutPolicy,
    *,
    unpaid_tokens: int,
    running: bool,
    requested: str | None = None,
    handled: str | None = None,
) -> str | None:
    """Why a payout is to be asked for now, or None.

    A person's request (the payout-request annotation, a value not acted upon
    yet) or the declared threshold. Never while one is running (COCOON's
    proxies refuse a second request, and a request costs the node wallet a
    fee); the threshold never when the policy is off (0).
    """
    if running:
        return None
    if requested and requested != handled:
        return f"requested ({requested})"
    threshold = policy.minimum_unpaid_tokens
    if threshold > 0 and unpaid_tokens >= threshold:
        return f"{unpaid_tokens} unpaid tokens >= spec.payout.minimumUnpaidTokens ({threshold})"
    return None


# A node wallet's balance that stays the same is read at most this many check
# intervals apart. Reading every check costs the TON API N / interval calls a
# second: 33 at 1,000 workers and 30 s, where a toncenter key allows 10;
# backing off to 10 intervals makes it 3.3.
BALANCE_BACKOFF_LIMIT = 10


@dataclass(frozen=True)
class BalanceReading:
    """The last reading of a node wallet's balance from the chain."""

    address: str
    balance: Nanoton
    read_at: dt.datetime
    unchanged: int = 0  # readings in a row before this one that found the same balance


def balance_read_due(
    last: BalanceReading | None,
    *,
    address: str,
    minimum: int,
    now: dt.datetime,
    interval: float,
) -> bool:
    """Whether a chain check reads the balance again, or goes by ``last``.

    Read at every check while nothing is known of this address, or the balance
    is below the minimum (funding is due, or under way: its landing is to be
    seen). A balance that holds is read at doubling intervals (1, 2, 4, 8 and
    then 10 checks apart): only the worker spends from it, and a change
    brings the reading back to every check. Half an interval of slack keeps
    the timer's jitter from pushing a reading a whole check later.
    """
    if last is None or last.address != address or last.balance < minimum:
        return True
    return _backed_off(
        last.read_at, last.unchanged, now=now, interval=interval, limit=BALANCE_BACKOFF_LIMIT
    )


def _backed_off(
    read_at: dt.datetime, held: int, *, now: dt.datetime, interval: float, limit: int
) -> bool:
    """Whether a reading that found nothing new ``held`` times in a row is due again:
    1, 2, 4, 8 and then ``limit`` check intervals after ``read_at``, less half an
    interval of slack."""
    intervals: int = min(2 ** min(held, 4), limit)
    return (now - read_at).total_seconds() >= (intervals - 0.5) * interval


def next_reading(
    last: BalanceReading | None, address: str, balance: Nanoton, now: dt.datetime
) -> BalanceReading:
    """The reading taken now, counting how long the balance has held."""
    same = last is not None and last.address == address and last.balance == balance
    unchanged = last.unchanged + 1 if same and last is not None else 0
    return BalanceReading(address, balance, now, unchanged)


# A Ready worker whose stats ask nothing of the operator is read at most this many
# chain checks apart (5 minutes at the chart's 30 s). Reading every check was the
# largest single cost of a fleet at rest: a connection through the launcher's
# relay per worker per check, 11% of the operator's steady CPU at 1,000 workers
# (docs/bench.md).
STATS_BACKOFF_LIMIT = 10


@dataclass(frozen=True)
class StatsReading:
    """What the chain step keeps of a worker's last ``/jsonstats`` reading."""

    pod: str  # the launcher pod it was read through
    wallet: str  # the node wallet address the worker named (normalized)
    read_at: dt.datetime
    # Whether it asked something of the operator: a payout due or running, a
    # coefficient other than the spec's, a wallet other than the one funded; or
    # the worker was not Ready yet.
    asked: bool
    quiet: int = 0  # readings in a row before this one that asked nothing


def stats_read_due(
    last: StatsReading | None,
    *,
    pod: str,
    ready: bool,
    payout_requested: bool,
    now: dt.datetime,
    interval: float,
) -> bool:
    """Whether a chain check reads the worker's ``/jsonstats`` again, or goes by ``last``.

    Read at every check until the worker is Ready (the reading is part of what
    makes it so), while a person's payout request waits, when the pod changed,
    and while the last reading asked for something (a payout to ask for or
    under way, the coefficient to set back, a wallet mismatch): each of those
    is acted upon, or seen to end, within a check. A quiet Ready worker is read
    at doubling intervals (1, 2, 4, 8 and then 10 checks apart); what can
    change meanwhile is seen that much later: unpaid tokens crossing
    ``spec.payout.minimumUnpaidTokens``, a coefficient someone set by hand on
    the worker, a worker naming a wallet other than its derived one (which
    is the only one ever funded, so no top-up goes astray meanwhile), and
    the token counters in metrics (status writes them every 15 minutes at
    most anyway). A change of ``spec.coefficient`` needs no reading: the
    coefficient check compares the spec with the value last seen. Half an
    interval of slack keeps a check's jitter from pushing a reading a whole
    check later.
    """
    if last is None or last.pod != pod or last.asked or not ready or payout_requested:
        return True
    return _backed_off(
        last.read_at, last.quiet, now=now, interval=interval, limit=STATS_BACKOFF_LIMIT
    )


def next_stats_reading(
    last: StatsReading | None,
    pod: str,
    wallet: str,
    now: dt.datetime,
    *,
    asked: bool,
    ready: bool,
) -> StatsReading:
    """The reading taken now, counting how long the worker has asked nothing: the
    back-off starts from the first reading of the Ready worker."""
    asked = asked or not ready
    quiet = last.quiet + 1 if last is not None and last.pod == pod and not last.asked else 0
    return StatsReading(pod, wallet, now, asked, 0 if asked else quiet)


@dataclass(frozen=True)
class WalletChoice:
    """Which node wallet the chain step reads and funds, and whether it may fund it."""

    address: str | None
    mismatch: str | None = None  # why nothing is funded: the two addresses, named


def wallet_to_fund(
    derived: str | None, reported: str | None, own: str | None = None
) -> WalletChoice:
    """The node wallet address to fund: the one derived from the worker's key, never another.

    ``derived`` is what COCOON's ``CocoonWallet`` gives for the worker's
    ``node_wallet_key`` and owner (the launcher computes it where the key is, and
    the node agent reports it, ``ton/cocoonwallet.py``); ``reported`` is what the
    worker's ``/jsonstats`` says (``BaseRunner.cpp``: ``wallet.address``), when its
    runner has initialised. A runner waits for 2.1 TON before it initialises, so
    the derived address is what lets the first top-up happen at all; once the
    worker reports an address, it must be the derived one, or nothing is funded:
    a worker that names another wallet would have the treasury pay someone else.

    ``own`` is the address this operator derived itself, from the key Secret,
    before it funded the wallet ahead of the VM's start (:class:`StartFunding`):
    when it has one, that is the wallet, and a launcher or worker naming any
    other stops funding, both addresses named (the key Secret changed after the
    start floor was paid, or something between the key and the VM lies).

    Without a derived address (the operator reads no node reports) the reported
    one is used, as before COCOON's derivation was known; docs/funding.md says why
    that mode is weaker.
    """
    if own is not None:
        for who, other in (("launcher derives", derived), ("worker reports", reported)):
            if other is not None and other != own:
                return WalletChoice(
                    own,
                    mismatch=f"the {who} node wallet {other}, but the operator derived {own}"
                    " from the key and owner before the VM started: not funded",
                )
        return WalletChoice(own)
    if derived is None:
        return WalletChoice(reported)
    if reported is not None and reported != derived:
        return WalletChoice(
            derived,
            mismatch=f"the worker reports node wallet {reported}, but its key and owner give"
            f" {derived}: not funded",
        )
    return WalletChoice(derived)


@dataclass(frozen=True)
class StartFunding:
    """The chain step's last look at a worker's node wallet before its VM started, in a
    namespace funded before start (``policy.treasury.FundingLimits.before_start``).

    ``address`` is the wallet this operator derived itself from the key Secret and
    the owner (None: it could not, ``note`` says why); ``balance`` is the chain's
    figure after any top-up (None: not read); ``note`` says what was done or what
    held it back, ``limit`` the operator's limit behind that, if one was.
    """

    revision: str
    address: str | None
    balance: Nanoton | None
    note: str
    limit: str | None = None
    funded: bool = False  # a top-up was confirmed by this look


def _ton(nano: int) -> str:
    return f"{nano / 1e9:g} TON"


def start_hold(reading: StartFunding | None, revision: str) -> str | None:
    """Why ``revision``'s launcher pod is not created yet in a namespace funded before
    start, or None once the chain shows its node wallet at COCOON's start floor.

    COCOON's runner waits for 2.1 TON before it does anything
    (``BaseRunner::min_wallet_balance()``, runners/BaseRunner.hpp:335-337;
    runners/worker/WorkerRunner.cpp:230-231): the VM starts only when that is
    there, so it never sits unfunded. Only the chain's balance counts, never a
    worker's status.
    """
    if reading is None or reading.revision != revision:
        return (
            f"no VM is started until its node wallet holds {_ton(FUNDING_FLOOR)}, COCOON's"
            " start floor: the wallet has not been looked at yet"
        )
    if reading.balance is not None and reading.balance >= FUNDING_FLOOR:
        return None
    where = f"node wallet {reading.address}" if reading.address else "its node wallet"
    held = f", holding {_ton(reading.balance)}" if reading.balance is not None else ""
    return (
        f"no VM is started until {where} holds {_ton(FUNDING_FLOOR)}, COCOON's start"
        f" floor{held}: {reading.note}"
    )
