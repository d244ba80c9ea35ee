"""Topping up node wallets from a treasury wallet, at most once per intent (no Kubernetes).

The one rule everything here serves: a transfer is never sent twice. Each
external message the treasury signs is an :class:`Intent` recorded in a durable
:class:`Ledger` *before* it is sent, with its seqno, expiry and message hash.
On every cycle (and so after any crash) pending intents are resolved first:
found on chain by message hash (confirmed), or provably never applicable
(``valid_until`` passed while the wallet's seqno still equals the intent's:
expired). While one is unresolved, nothing new is signed; a pending intent's
own BOC may be re-sent, which the wallet's seqno check makes harmless.

- :mod:`._ledger`: the ledger and intent models, and the store protocol;
- :mod:`._plan`: who gets how much, within per-worker (per-wallet), per-namespace and
  global daily caps, each wallet once (pure);
- :mod:`._treasury`: the I/O: resolve, record, send, confirm;
- :mod:`._balances`: the fleet's node wallet balances for the chain checks, read in
  batches (never what the treasury pays by: it re-reads).
"""

from __future__ import annotations

from cocoon_operator.funding._balances import BalanceBook, BookReading, Seen, plan_reads
from cocoon_operator.funding._ledger import (
    FileLedgerStore,
    Intent,
    IntentState,
    Ledger,
    LedgerConflictError,
    LedgerStore,
    MemoryLedgerStore,
    PlannedTransfer,
)
from cocoon_operator.funding._plan import Limit, Refusal, TopUpRequest, plan_topups
from cocoon_operator.funding._treasury import FundingReport, Treasury, failpoint, settle_forever

__all__ = [
    "BalanceBook",
    "BookReading",
    "FileLedgerStore",
    "FundingReport",
    "Intent",
    "IntentState",
    "Ledger",
    "LedgerConflictError",
    "LedgerStore",
    "Limit",
    "MemoryLedgerStore",
    "PlannedTransfer",
    "Refusal",
    "Seen",
    "TopUpRequest",
    "Treasury",
    "failpoint",
    "plan_reads",
    "plan_topups",
    "settle_forever",
]
