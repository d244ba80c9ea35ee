"""Who gets how much this cycle (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cocoon_operator.funding._ledger import Ledger, PlannedTransfer


class Limit(StrEnum):
    """Stable codes of what held a top-up back or made it smaller: the operator's own
    limits (its configuration, never a worker's spec) and the treasury's state.
    The worker's WalletFunded condition carries the operator's ones as its reason."""

    IN_FLIGHT = "InFlight"
    SETTLING = "Settling"
    WORKER_DAILY_CAP = "WorkerDailyCap"
    NAMESPACE_DAILY_CAP = "NamespaceDailyCap"
    GLOBAL_DAILY_CAP = "GlobalDailyCap"
    TREASURY_BALANCE = "TreasuryBalance"
    SHARED_WALLET = "SharedWallet"


@dataclass(frozen=True)
class TopUpRequest:
    worker: str  # namespace/name
    address: str  # raw form of the node wallet
    balance: int  # nanoTON, read from the chain
    minimum: int
    target: int  # already within the operator's per-worker limit (policy.treasury)
    daily_cap: int | None = None  # the smaller of the spec's and the operator's

    @property
    def namespace(self) -> str:
        return self.worker.partition("/")[0]


@dataclass(frozen=True)
class Refusal:
    worker: str
    reason: str
    code: Limit | None = None


def plan_topups(
    requests: Sequence[TopUpRequest],
    ledger: Ledger,
    *,
    day: str,
    global_daily_cap: int,
    available: int,
    settling: frozenset[str] = frozenset(),
    fee_per_transfer: int = 0,
    namespace_daily_cap: Callable[[str], int | None] = lambda _ns: None,
) -> tuple[list[PlannedTransfer], list[Refusal]]:
    """Transfers bringing wallets below ``minimum`` up to ``target``, within every cap.

    Lowest balances first, so a cap or a thin treasury serves the most urgent
    wallets. ``available`` is what the treasury may spend now (its balance less
    a reserve), and each transfer costs ``fee_per_transfer`` on top of its
    amount (an estimate of the fees it makes the treasury pay): a plan never
    spends more than ``available``. A wallet is served once, whichever workers
    name it: workers sharing a node wallet key share one wallet (COCOON derives
    it from key and owner, ``CocoonWallet.cpp``), and a top-up per worker would
    pay it once per worker; the others are refused with :attr:`Limit.SHARED_WALLET`
    (the wallet stays the first worker's for the UTC day, in the ledger).
    Workers in ``settling`` had a top-up confirmed so recently that their
    balance may not show it yet (on TON the credit lands in a later block):
    they wait. ``namespace_daily_cap`` is the operator's cap per namespace and
    UTC day (None: none), counted in the ledger like every other cap, pending
    intents included, so a crash or a restart forgets nothing.
    """
    transfers: list[PlannedTransfer] = []
    refusals: list[Refusal] = []
    pending = {(t.worker, t.address) for i in ledger.pending() for t in i.transfers}
    in_flight = {w for w, _ in pending} | {a for _, a in pending}
    room = _Room(
        global_daily_cap - ledger.spent_total(day), available, ledger, day, fee_per_transfer
    )
    # Wallet -> the worker it is topped up for: today's first, then this cycle's.
    served: dict[str, str] = ledger.funded_for(day)
    seen: set[str] = set()
    for req in sorted(requests, key=lambda r: (r.balance, r.worker)):
        if req.worker in seen or req.balance >= req.minimum:
            continue
        seen.add(req.worker)
        first = served.setdefault(req.address, req.worker)
        if first != req.worker:
            refusals.append(
                Refusal(
                    req.worker,
                    f"node wallet {req.address} is also worker {first}'s:"
                    " topped up once, for that worker",
                    Limit.SHARED_WALLET,
                )
            )
        elif req.worker in in_flight or req.address in in_flight:
            refusals.append(Refusal(req.worker, "a top-up is already in flight", Limit.IN_FLIGHT))
        elif req.worker in settling:
            refusals.append(
                Refusal(req.worker, "the last top-up is still settling", Limit.SETTLING)
            )
        elif req.target > req.balance:  # else at or above the (capped) target already
            outcome = room.take(req, namespace_daily_cap)
            if isinstance(outcome, Refusal):
                refusals.append(outcome)
            else:
                transfers.append(
                    PlannedTransfer(worker=req.worker, address=req.address, amount=outcome)
                )
    return transfers, refusals


class _Room:
    """What the caps and the treasury leave this cycle, spent as transfers are planned."""

    def __init__(
        self, global_left: int, available: int, ledger: Ledger, day: str, fee: int = 0
    ) -> None:
        self.global_left = global_left
        self.available = available
        self.fee = fee  # what each transfer costs the treasury on top of its amount
        self.ledger = ledger
        self.day = day
        self.namespace_left: dict[str, int | None] = {}

    def take(
        self, req: TopUpRequest, namespace_daily_cap: Callable[[str], int | None]
    ) -> int | Refusal:
        """The amount ``req`` gets (and spend it), or why it gets nothing."""
        amount = req.target - req.balance
        if req.daily_cap is not None:
            left = req.daily_cap - self.ledger.spent_on(req.worker, req.address, self.day)
            if left <= 0:
                return Refusal(
                    req.worker, "the worker's daily cap is used up", Limit.WORKER_DAILY_CAP
                )
            amount = min(amount, left)
        ns = req.namespace
        if ns not in self.namespace_left:
            cap = namespace_daily_cap(ns)
            spent = self.ledger.spent_in_namespace(ns, self.day)
            self.namespace_left[ns] = None if cap is None else cap - spent
        ns_left = self.namespace_left[ns]
        if ns_left is not None and ns_left <= 0:
            return Refusal(
                req.worker, f"namespace {ns}'s daily cap is used up", Limit.NAMESPACE_DAILY_CAP
            )
        if self.global_left <= 0:
            return Refusal(req.worker, "the global daily cap is used up", Limit.GLOBAL_DAILY_CAP)
        if self.available - self.fee <= 0:
            return Refusal(req.worker, "the treasury cannot cover it", Limit.TREASURY_BALANCE)
        amount = min(amount, self.global_left, self.available - self.fee)
        if ns_left is not None:
            amount = min(amount, ns_left)
            self.namespace_left[ns] = ns_left - amount
        self.global_left -= amount
        self.available -= amount + self.fee
        return amount
