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
from cocoon_operator.ton.wallet import Transfer, Wallet, WalletKey, WalletV4R2

log = logging.getLogger(__name__)

FAILPOINTS_ENV = "COCOON_FAILPOINTS"
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
    """A treasury wallet (v4r2 unless told otherwise) that tops node wallets up,
    never paying twice.

    Both wallet versions refuse a message whose seqno is not the stored one,
    and apply each seqno once: the crash-safety argument below is the same for
    either; only how many transfers one message carries differs (4 or 255).
    """

    def __init__(
        self,
        ton: TonClient,
        key: WalletKey,
        store: LedgerStore,
        *,
        global_daily_cap: int,
        namespace_daily_cap: Callable[[str], int | None] = lambda _ns: None,
        wallet: Wallet | None = None,
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
        self.wallet: Wallet = wallet if wallet is not None else WalletV4R2(key.public_key)
        if self.wallet.public_key != key.public_key:
            raise ValueError("the treasury key does not belong to the treasury wallet")
        self.address = self.wallet.address.to_raw()
        self._global_cap = global_daily_cap
        self._namespace_cap = namespace_daily_cap
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

    async def _landed(self, intent: Intent) -> int | None:
        """If the intent's message is on chain: the logical time its transfers left."""
        wanted = base64.b64encode(bytes.fromhex(intent.message_hash)).decode()
        txs = await self._ton.get_transactions(self.address, limit=LOOKUP_DEPTH)
        for tx in txs:
            if tx.in_msg is not None and tx.in_msg.hash == wanted:
                return max((m.created_lt for m in tx.out_msgs), default=tx.transaction_id.lt)
        return None

    async def _seqno_after(self, valid_until: int) -> int | None:
        """The treasury's seqno in a state later than ``valid_until`` (chain time), or
        None when the API's state is not that late (it lags, or the chain's clock
        has not got there): only such a state proves an unapplied message dead."""
        state = await self._ton.get_address_information(self.address)
        if state.sync_utime is not None and state.sync_utime <= valid_until:
            return None
        if state.data is None:
            return 0  # not deployed: nothing was ever applied
        return self.wallet.seqno_of(state.data)

    async def _state(self, ledger: Ledger) -> tuple[int, int]:
        """The seqno to sign with next, and the balance.

        Read from the account's own data (any wallet version, whatever the API
        knows of wallet types). An API that lags may show an older seqno; a
        seqno our own confirmed message has used is never signed again, since
        a message with it could only be refused, and would then sit pending.
        """
        state = await self._ton.get_address_information(self.address)
        seqno = self.wallet.seqno_of(state.data) if state.data else 0
        return max(seqno, ledger.next_seqno()), state.balance

    async def _send(self, intent: Intent) -> None:
        try:
            await self._ton.send_boc(base64.b64decode(intent.boc))
        except TonMessageRejectedError as exc:
            # Usually: an earlier copy was applied (seqno moved on) or it
            # expired. Either way the lookup decides; nothing new is signed.
            log.info("intent %s: message refused (%s); resolving by lookup", intent.id, exc)

    # ------------------------------------------------------------------ resolution

    async def _resolve_one(self, intent: Intent) -> tuple[IntentState, int | None]:
        """The intent's state now, and when confirmed the logical time it was sent."""
        sent_lt = await self._landed(intent)
        if sent_lt is not None:
            return IntentState.CONFIRMED, sent_lt
        now = self._clock()
        if now <= intent.valid_until:
            await self._send(intent)  # same BOC: applied at most once
            sent_lt = await self._landed(intent)
            if sent_lt is not None:
                return IntentState.CONFIRMED, sent_lt
            return IntentState.PENDING, None
        seqno = await self._seqno_after(intent.valid_until)
        if seqno is None:
            # A lagging API (or a chain clock behind ours): its state predates
            # valid_until, so the message may yet be, or already be, applied.
            return IntentState.PENDING, None
        if seqno <= intent.seqno:
            # The seqno is unused (or not even reached, as after a chain reset)
            # in a state past valid_until: the message can never be applied.
            return IntentState.EXPIRED, None
        # The seqno moved on but the message is not among recent transactions:
        # only this treasury's key signs, so look no further and hold.
        log.warning("intent %s: seqno used but its transaction not found; holding", intent.id)
        return IntentState.PENDING, None

    async def _resolve(
        self, ledger: Ledger, version: str | None, report: FundingReport
    ) -> tuple[Ledger, str | None]:
        changed = False
        intents = []
        for stored in ledger.intents:
            intent = stored
            if stored.state is IntentState.PENDING:
                state, sent_lt = await self._resolve_one(stored)
                if state is not IntentState.PENDING:
                    intent = stored.model_copy(
                        update={"state": state, "resolved_at": self._now(), "sent_lt": sent_lt}
                    )
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

    async def _fresh(
        self, requests: Sequence[TopUpRequest], ledger: Ledger
    ) -> tuple[list[TopUpRequest], frozenset[str]]:
        """The requests with balances read now, after pending intents were resolved,
        and the workers whose balance does not show their last confirmed top-up yet.

        A caller's balance may predate a top-up this cycle just confirmed, and
        an API node may lag behind the chain; trusting either would pay twice.
        Whether a balance includes a top-up is decided by logical time (the
        wallet's last transaction against when the top-up left), not by a clock.
        Only a top-up of the same wallet counts: a worker whose node wallet
        changed (a new VM, a new key) waits for nothing sent to the old one; a
        worker sharing its wallet with another waits for that one's top-up too.
        """
        sent: dict[str, int] = {}
        for intent in ledger.intents:
            if intent.state is IntentState.CONFIRMED and intent.sent_lt is not None:
                for t in intent.transfers:
                    sent[t.address] = max(sent.get(t.address, 0), intent.sent_lt)
        out, unsettled = [], set()
        for req in requests:
            if req.balance < req.minimum:
                if req.address in sent:
                    state = await self._ton.get_address_information(req.address)
                    last = state.last_transaction_id.lt if state.last_transaction_id else 0
                    if last <= sent[req.address]:
                        unsettled.add(req.worker)
                    balance = state.balance
                else:
                    balance = await self._ton.get_address_balance(req.address)
                req = dataclasses.replace(req, balance=balance)  # noqa: PLW2901
            out.append(req)
        return out, frozenset(unsettled)

    def _settling(self, ledger: Ledger, requests: Sequence[TopUpRequest]) -> frozenset[str]:
        """Workers whose wallet was topped up moments ago by intents recorded without
        ``sent_lt`` (older ledgers): a time window stands in for the logical-time check."""
        now = self._now()
        recent = {
            t.address
            for i in ledger.intents
            if i.state is IntentState.CONFIRMED
            and i.sent_lt is None
            and i.resolved_at is not None
            and (now - i.resolved_at).total_seconds() < self._settle
            for t in i.transfers
        }
        return frozenset(r.worker for r in requests if r.address in recent)

    # ------------------------------------------------------------------ sending

    def _sign(self, batch: Sequence[PlannedTransfer], seqno: int) -> Intent:
        now = self._now()
        valid_until = int(self._clock()) + self._ttl
        signed = self.wallet.create_transfer(
            self._key,
            # Node wallets may not be deployed yet: top-ups are non-bounceable
            # (PlannedTransfer.bounce), or the value would come straight back.
            [
                Transfer(
                    t.address,
                    Nanoton(t.amount),
                    bounce=t.bounce,
                    body_boc=base64.b64decode(t.body) if t.body is not None else None,
                )
                for t in batch
            ],
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

    async def _confirm(self, intent: Intent) -> tuple[IntentState, int | None]:
        deadline = time.monotonic() + self._confirm_timeout
        while True:
            sent_lt = await self._landed(intent)
            if sent_lt is not None:
                return IntentState.CONFIRMED, sent_lt
            if time.monotonic() >= deadline:
                return IntentState.PENDING, None
            await self._sleep(self._poll)

    async def settle(self) -> FundingReport:
        """Resolve pending intents only: at start after a crash, and while any remain."""
        report = FundingReport()
        ledger, version = await self._load()
        if ledger.pending():
            await self._resolve(ledger, version, report)
        return report

    async def fund(
        self,
        requests: Sequence[TopUpRequest],
        on_confirmed: Callable[[Sequence[PlannedTransfer]], None] | None = None,
    ) -> FundingReport:
        """One cycle: resolve pending intents, then top up who needs it, batch by batch.

        ``on_confirmed`` hears of each message's transfers as soon as they are
        confirmed: a cycle for a large fleet sends many messages one after the
        other (each waits for its seqno), and the first workers need not wait
        for the last.
        """
        report = FundingReport()
        ledger, version = await self._load()
        ledger, version = await self._resolve(ledger, version, report)
        if ledger.pending():
            return report  # never sign past an unresolved message
        seqno, balance = await self._state(ledger)
        fresh, unsettled = await self._fresh(requests, ledger)
        transfers, refusals = plan_topups(
            fresh,
            ledger,
            day=self._now().date().isoformat(),
            global_daily_cap=self._global_cap,
            available=balance - self._reserve,
            settling=self._settling(ledger, fresh) | unsettled,
            namespace_daily_cap=self._namespace_cap,
        )
        report.refused.extend(refusals)
        await self._deliver(
            ledger, version, transfers, seqno, report=report, on_confirmed=on_confirmed
        )
        return report

    async def ledger(self) -> Ledger:
        """The stored ledger (to see what was asked for already)."""
        return (await self._load())[0]

    async def send(self, transfers: Sequence[PlannedTransfer]) -> FundingReport:
        """Send ``transfers`` as given (no caps, no planning), each at most once.

        As :meth:`fund`: pending intents are resolved first and nothing is
        signed while one stays unresolved; every message is recorded before it
        can leave. Callers check :meth:`Ledger.has_purpose` to ask only once.
        """
        report = FundingReport()
        ledger, version = await self._load()
        ledger, version = await self._resolve(ledger, version, report)
        if ledger.pending():
            return report
        seqno, _balance = await self._state(ledger)
        await self._deliver(ledger, version, list(transfers), seqno, report=report)
        return report

    async def _deliver(
        self,
        ledger: Ledger,
        version: str | None,
        transfers: list[PlannedTransfer],
        seqno: int,
        *,
        report: FundingReport,
        on_confirmed: Callable[[Sequence[PlannedTransfer]], None] | None = None,
    ) -> None:
        size = self.wallet.max_messages
        for start in range(0, len(transfers), size):
            batch = transfers[start : start + size]
            intent = self._sign(batch, seqno)
            ledger = ledger.model_copy(update={"intents": [*ledger.intents, intent]})
            version = await self._save(ledger, version)  # durable before it can be sent
            failpoint("funding.after-record")
            await self._send(intent)
            report.messages_sent += 1
            failpoint("funding.after-send")
            state, sent_lt = await self._confirm(intent)
            if state is IntentState.PENDING:
                report.pending.extend(batch)
                break  # the rest waits for the next cycle
            resolved = intent.model_copy(
                update={"state": state, "resolved_at": self._now(), "sent_lt": sent_lt}
            )
            ledger = ledger.model_copy(update={"intents": [*ledger.intents[:-1], resolved]})
            version = await self._save(ledger, version)
            report.confirmed.extend(batch)
            if on_confirmed is not None:
                on_confirmed(batch)
            seqno += 1


async def settle_forever(
    treasury: Treasury,
    lock: asyncio.Lock,
    interval: float,
    on_report: Callable[[FundingReport], None],
) -> None:
    """Resolve a treasury's pending intents every ``interval`` s, the first pass at once.

    Left pending by a crash or a lost response, they would otherwise wait for
    the next caller that wants to send; ``lock`` is the one the senders hold,
    so the ledger keeps a single writer. A transient error is logged and the
    next pass tries again.
    """
    while True:
        async with lock:
            try:
                report = await treasury.settle()
            except Exception as exc:
                log.warning("settling pending intents of %s: %s", treasury.address, exc)
            else:
                on_report(report)
        await asyncio.sleep(interval)
