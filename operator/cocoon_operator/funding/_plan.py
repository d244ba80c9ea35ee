"""Who gets how much this cycle (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cocoon_operator.funding._ledger import Ledger, PlannedTransfer


@dataclass(frozen=True)
class TopUpRequest:
    worker: str  # namespace/name
    address: str  # raw form of the node wallet
    balance: int  # nanoTON, read from the chain
    minimum: int
    target: int
    daily_cap: int | None = None


@dataclass(frozen=True)
class Refusal:
    worker: str
    reason: str


def plan_topups(
    requests: Sequence[TopUpRequest],
    ledger: Ledger,
    *,
    day: str,
    global_daily_cap: int,
    available: int,
    settling: frozenset[str] = frozenset(),
    fee_per_transfer: int = 0,
) -> tuple[list[PlannedTransfer], list[Refusal]]:
    """Transfers bringing wallets below ``minimum`` up to ``target``, within every cap.

    Lowest balances first, so a cap or a thin treasury serves the most urgent
    wallets. ``available`` is what the treasury may spend now (its balance less
    a reserve), and each transfer costs ``fee_per_transfer`` on top of its
    amount (an estimate of the fees it makes the treasury pay): a plan never
    spends more than ``available``. A wallet that appears twice is served once. Workers in
    ``settling`` had a top-up confirmed so recently that their balance may not
    show it yet (on TON the credit lands in a later block): they wait.
    """
    transfers: list[PlannedTransfer] = []
    refusals: list[Refusal] = []
    pending = {t.worker for i in ledger.pending() for t in i.transfers}
    global_left = global_daily_cap - ledger.spent_total(day)
    seen: set[str] = set()
    for req in sorted(requests, key=lambda r: (r.balance, r.worker)):
        if req.worker in seen or req.balance >= req.minimum:
            continue
        seen.add(req.worker)
        if req.worker in pending:
            refusals.append(Refusal(req.worker, "a top-up is already in flight"))
            continue
        if req.worker in settling:
            refusals.append(Refusal(req.worker, "the last top-up is still settling"))
            continue
        amount = req.target - req.balance
        if req.daily_cap is not None:
            left = req.daily_cap - ledger.spent(req.worker, day)
            if left <= 0:
                refusals.append(Refusal(req.worker, "the worker's daily cap is used up"))
                continue
            amount = min(amount, left)
        if global_left <= 0:
            refusals.append(Refusal(req.worker, "the global daily cap is used up"))
            continue
        if available - fee_per_transfer <= 0:
            refusals.append(Refusal(req.worker, "the treasury cannot cover it"))
            continue
        amount = min(amount, global_left, available - fee_per_transfer)
        transfers.append(PlannedTransfer(worker=req.worker, address=req.address, amount=amount))
        global_left -= amount
        available -= amount + fee_per_transfer
    return transfers, refusals
