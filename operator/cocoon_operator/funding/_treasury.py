"""The treasury: resolve what is pending, record, send, confirm. All I/O is here."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cocoon_operator.funding._ledger import (
    Intent,
    IntentState,
    Ledger,
    LedgerStore,
    PlannedTransfer,
)
from cocoon_operator.funding._plan import Refusal, TopUpRequest, plan_topups
from cocoon_operator.ton.amounts import Nanoton
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.errors import TonMessageRejectedError
from cocoon_operator.ton.wallet import Transfer, WalletKey, WalletV4R2

log = logging.getLogger(__name__)

FAILPOINTS_ENV = "COCOON_FAILPOINTS"
MESSAGES_PER_EXTERNAL = 4  # wallet v4r2
LOOKUP_DEPTH = 64  # treasury transactions searched for an intent's message


def failpoint(name: str) -> None:
    """Die here, as by ``kill -9``, when ``name`` is listed in ``$COCOON_FAILPOINTS``.

    Crash-safety tests set it on a real operator process; it is read at each
    point so nothing is cached at import.
    """
    if name in os.environ.get(FAILPOINTS_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FundingReport:
    confirmed: list[PlannedTransfer] = field(default_factory=list)
    pending: list[PlannedTransfer] = field(default_factory=list)
    expired: list[PlannedTransfer] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    messages_sent: int = 0


class TreasuryMismatchError(Exception):
    """The stored ledger belongs to another treasury wallet: refuse to guess."""


class Treasury:
    """A v4r2 treasury wallet that tops node wallets up, never paying twice."""

    def __init__(
        self,
        ton: TonClient,
        key: WalletKey,
        store: LedgerStore,
        *,
        global_daily_cap: int,
        reserve: int = 1_000_000_000,
        message_ttl: int = 60,
        settle_seconds: float = 120.0,
        confirm_timeout: float = 30.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ton = ton
        self._key = key
        self._store = store
        self.wallet = WalletV4R2(key.public_key)
        self.address = self.wallet.address.to_raw()
        self._global_cap = global_daily_cap
        self._reserve = reserve
        self._ttl = message_ttl
        self._settle = settle_seconds
        self._confirm_timeout = confirm_timeout
        self._poll = poll_interval
        self._clock = clock
        self._sleep = sleep

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _load(self) -> tuple[Ledger, str | None]:
        ledger, version = await self._store.load()
        if ledger is None:
            return Ledger(treasury=self.address), None
        if ledger.treasury != self.address:
            raise TreasuryMismatchError(
                f"the funding ledger belongs to treasury {ledger.treasury}, not {self.address}"
            )
        return ledger, version

    async def _save(self, ledger: Ledger, version: str | None) -> str:
        return await self._store.save(ledger.pruned(self._now()), version)

    # ------------------------------------------------------------------ chain lookups

    async def _landed(self, intent: Intent) -> bool:
        wanted = base64.b64encode(bytes.fromhex(intent.message_hash)).decode()
        txs = await self._ton.get_transactions(self.address, limit=LOOKUP_DEPTH)
        return any(tx.in_msg is not None and tx.in_msg.hash == wanted for tx in txs)

    async def _seqno(self) -> int:
        info = await self._ton.get_wallet_information(self.address)
        return info.seqno or 0

    async def _send(self, intent: Intent) -> None:
        try:
            await self._ton.send_boc(base64.b64decode(intent.boc))
        except TonMessageRejectedError as exc:
            # Usually: an earlier copy was applied (seqno moved on) or it
            # expired. Either way the lookup decides; nothing new is signed.
            log.info("intent %s: message refused (%s); resolving by lookup", intent.id, exc)

    # ------------------------------------------------------------------ resolution

    async def _resolve_one(self, intent: Intent) -> IntentState:
        if await self._landed(intent):
            return IntentState.CONFIRMED
        now = self._clock()
        if now <= intent.valid_until:
            await self._send(intent)  # same BOC: applied at most once
            return IntentState.CONFIRMED if await self._landed(intent) else IntentState.PENDING
        if await self._seqno() == intent.seqno:
            return IntentState.EXPIRED  # the seqno is unused and the message is dead
        # The seqno moved on but the message is not among recent transactions:
        # only this treasury's key signs, so look no further and hold.
        log.warning("intent %s: seqno used but its transaction not found; holding", intent.id)
        return IntentState.PENDING

    async def _resolve(
        self, ledger: Ledger, version: str | None, report: FundingReport
    ) -> tuple[Ledger, str | None]:
        changed = False
        intents = []
        for stored in ledger.intents:
            intent = stored
            if stored.state is IntentState.PENDING:
                state = await self._resolve_one(stored)
                if state is not IntentState.PENDING:
                    intent = stored.model_copy(update={"state": state, "resolved_at": self._now()})
                    changed = True
                bucket = {
                    IntentState.CONFIRMED: report.confirmed,
                    IntentState.EXPIRED: report.expired,
                    IntentState.PENDING: report.pending,
                }[state]
                bucket.extend(stored.transfers)
            intents.append(intent)
        if changed:
            ledger = ledger.model_copy(update={"intents": intents})
            version = await self._save(ledger, version)
        return ledger, version

    # ------------------------------------------------------------------ planning

    async def _fresh(self, requests: Sequence[TopUpRequest]) -> list[TopUpRequest]:
        """The requests with balances read now, after pending intents were resolved.

        A caller's balance may predate a top-up this cycle just confirmed;
        trusting it would pay twice.
        """
        out = []
        for req in requests:
            if req.balance < req.minimum:
                balance = await self._ton.get_address_balance(req.address)
                req = dataclasses.replace(req, balance=balance)  # noqa: PLW2901
            out.append(req)
        return out

    def _settling(self, ledger: Ledger) -> frozenset[str]:
        now = self._now()
        return frozenset(
            t.worker
            for i in ledger.intents
            if i.state is IntentState.CONFIRMED
            and i.resolved_at is not None
            and (now - i.resolved_at).total_seconds() < self._settle
            for t in i.transfers
        )

    # ------------------------------------------------------------------ sending

    def _sign(self, batch: Sequence[PlannedTransfer], seqno: int) -> Intent:
        now = self._now()
        valid_until = int(self._clock()) + self._ttl
        signed = self.wallet.create_transfer(
            self._key,
            # Node wallets may not be deployed yet: non-bounceable, or the
            # value would come straight back.
            [Transfer(t.address, Nanoton(t.amount), bounce=False) for t in batch],
            seqno=seqno,
            valid_until=valid_until,
        )
        return Intent(
            id=uuid.uuid4().hex,
            seqno=seqno,
            valid_until=valid_until,
            message_hash=signed.message_hash_hex,
            boc=base64.b64encode(signed.boc).decode(),
            transfers=list(batch),
            created_at=now,
        )

    async def _confirm(self, intent: Intent) -> IntentState:
        deadline = time.monotonic() + self._confirm_timeout
        while True:
            if await self._landed(intent):
                return IntentState.CONFIRMED
            if time.monotonic() >= deadline:
                return IntentState.PENDING
            await self._sleep(self._poll)

    async def settle(self) -> FundingReport:
        """Resolve pending intents only: at start after a crash, and while any remain."""
        report = FundingReport()
        ledger, version = await self._load()
        if ledger.pending():
            await self._resolve(ledger, version, report)
        return report

    async def fund(self, requests: Sequence[TopUpRequest]) -> FundingReport:
        """One cycle: resolve pending intents, then top up who needs it, batch by batch."""
        report = FundingReport()
        ledger, version = await self._load()
        ledger, version = await self._resolve(ledger, version, report)
        if ledger.pending():
            return report  # never sign past an unresolved message
        info = await self._ton.get_wallet_information(self.address)
        seqno = info.seqno or 0
        transfers, refusals = plan_topups(
            await self._fresh(requests),
            ledger,
            day=self._now().date().isoformat(),
            global_daily_cap=self._global_cap,
            available=info.balance - self._reserve,
            settling=self._settling(ledger),
        )
        report.refused.extend(refusals)
        for start in range(0, len(transfers), MESSAGES_PER_EXTERNAL):
            batch = transfers[start : start + MESSAGES_PER_EXTERNAL]
            intent = self._sign(batch, seqno)
            ledger = ledger.model_copy(update={"intents": [*ledger.intents, intent]})
            version = await self._save(ledger, version)  # durable before it can be sent
            failpoint("funding.after-record")
            await self._send(intent)
            report.messages_sent += 1
            failpoint("funding.after-send")
            state = await self._confirm(intent)
            if state is IntentState.PENDING:
                report.pending.extend(batch)
                break  # the rest waits for the next cycle
            resolved = intent.model_copy(update={"state": state, "resolved_at": self._now()})
            ledger = ledger.model_copy(update={"intents": [*ledger.intents[:-1], resolved]})
            version = await self._save(ledger, version)
            report.confirmed.extend(batch)
            seqno += 1
        return report
