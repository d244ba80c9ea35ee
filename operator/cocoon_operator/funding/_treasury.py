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
from cocoon_operator.ton.address import normalize_address
from cocoon_operator.ton.amounts import Nanoton
from cocoon_operator.ton.cells import cell_from_boc, cell_hash, core
from cocoon_operator.ton.client import TonClient, TransactionId, TransactionInfo
from cocoon_operator.ton.errors import AddressError, TonMessageRejectedError
from cocoon_operator.ton.wallet import Transfer, Wallet, WalletKey, WalletV4R2

log = logging.getLogger(__name__)

FAILPOINTS_ENV = "COCOON_FAILPOINTS"
LOOKUP_PAGE = 64  # treasury transactions asked for per getTransactions call
#: Pages searched at most for one intent (64 x 100 transactions). Past the
#: intent's own ``after_lt`` nothing is searched at all; this only bounds an
#: intent recorded before ``after_lt`` existed, or an API that pages badly.
LOOKUP_PAGES = 100
#: How far before an intent's ``created_at`` an intent without ``after_lt`` is
#: looked for: the chain's clock may lag the operator's.
LOOKUP_SLACK_SECONDS = 3600
#: Fee estimates (nanoTON), kept on top of the operator's ``reserve`` so the
#: treasury never signs a message its balance cannot carry: with send mode 3
#: an unaffordable transfer is skipped, not refused (see IntentState.FAILED).
#: Each transfer is charged both (0.02 TON). Measured on the local chain (the
#: real executor under pytvm's test config), what a message cost the treasury
#: beyond its amounts: 0.0058 TON for one v4r2 transfer, 0.0031 TON per transfer
#: in a full v4r2 message, 0.0077 TON for one v5r1 transfer and 0.0024 TON per
#: transfer in a full v5r1 message (0.61 TON for 255): the bound is 3 to 8
#: times that. A chain whose prices rise past it shows as FAILED intents and
#: the CocoonFundingTransfersFailed alert, never as a payment counted twice.
FEE_PER_MESSAGE = 10_000_000  # 0.01 TON
FEE_PER_TRANSFER = 10_000_000  # 0.01 TON


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
    # Applied on chain without leaving the wallet (the balance did not cover
    # them): nothing paid; they may be asked for again.
    failed: list[PlannedTransfer] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    messages_sent: int = 0
    # How long the oldest intent still pending has been (seconds): nothing new
    # is signed while one is, so a figure that keeps growing is a stalled fleet.
    oldest_pending_seconds: float | None = None


@dataclass(frozen=True)
class Resolution:
    """What the chain says of one intent."""

    state: IntentState
    sent_lt: int | None = None
    unsent: tuple[PlannedTransfer, ...] = ()  # confirmed, but skipped by the wallet
    tx_lt: int | None = None


def body_hash(boc: bytes) -> bytes:
    """The hash of a signed external message's body: what the wallet's signature covers.

    The envelope is not signed: anyone who has the BOC may send it again with
    another ``src``, ``import_fee`` or StateInit, or with the body inline rather
    than in a reference, and the wallet applies it all the same under another
    message hash. TEP-467's normalised hash fixes those fields (src addr_none,
    import_fee 0, no StateInit, the body as a reference); for one wallet the
    body is what varies, so its hash identifies the message whichever envelope
    carried it (docs.ton.org, "Message lookup").
    """
    lib = core()
    message = lib.MessageAny.deserialize(cell_from_boc(boc).begin_parse())
    return cell_hash(message.body)


def _tx_body_hash(tx: TransactionInfo) -> bytes | None:
    msg = tx.in_msg
    if msg is None or msg.source:  # only external-in messages (no source) apply intents
        return None
    if msg.body is not None:
        try:
            return cell_hash(cell_from_boc(msg.body))
        except Exception:  # a body that does not parse is no message of ours
            return None
    try:
        return base64.b64decode(msg.body_hash) if msg.body_hash else None
    except ValueError:
        return None


def _raw(address: str) -> str | None:
    try:
        return normalize_address(address)
    except AddressError:
        return None


def split_sent(
    transfers: Sequence[PlannedTransfer], tx: TransactionInfo
) -> tuple[list[PlannedTransfer], list[PlannedTransfer]]:
    """The intent's transfers that left in ``tx`` (an out-message to that address with
    that value, each message matched once), and those the wallet skipped.

    With send mode 3 (+2: ignore errors) a transfer the balance cannot cover is
    dropped in the action phase while the transaction, and the seqno, go through
    (docs.ton.org/foundations/messages/modes); the out-messages are the proof.
    Fees are paid separately (+1), so each message carries exactly the amount.
    """
    left = [(_raw(m.destination), int(m.value)) for m in tx.out_msgs]
    sent, unsent = [], []
    for t in transfers:
        key = (t.address, t.amount)
        if key in left:
            left.remove(key)
            sent.append(t)
        else:
            unsent.append(t)
    return sent, unsent


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
        fee_per_message: int = FEE_PER_MESSAGE,
        fee_per_transfer: int = FEE_PER_TRANSFER,
        message_ttl: int = 60,
        settle_seconds: float = 120.0,
        clean_trust_seconds: float = 300.0,
        confirm_timeout: float = 30.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
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
        # Every transfer carries a whole message's fee too: a conservative
        # share whatever the batching.
        self._fee_per_transfer = fee_per_transfer + fee_per_message
        self._ttl = message_ttl
        self._settle = settle_seconds
        self._confirm_timeout = confirm_timeout
        self._poll = poll_interval
        self._clock = clock
        self._sleep = sleep
        # How long a confirmation is waited for (injected: tests of a message that
        # never lands need not wait the timeout out).
        self._monotonic = monotonic
        # When this process last read or wrote the ledger with no intent pending
        # (monotonic); None since start, or while one is. :meth:`settle` does not read
        # it again within ``clean_trust_seconds`` of that: this process is its only
        # writer (under the senders' lock), so an intent of its own never goes
        # unseen, and :meth:`fund` and :meth:`send` always read it. A clean pass read
        # the whole ledger (every transfer of the last days) every 10 s: 1.4% of the
        # operator's steady profile at 1,000 workers (docs/bench.md), growing with
        # the fleet.
        self._clean_trust = clean_trust_seconds
        self._clean_at: float | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _load(self) -> tuple[Ledger, str | None]:
        self._clean_at = None  # until this read says otherwise
        ledger, version = await self._store.load()
        if ledger is None:
            ledger = Ledger(treasury=self.address)
        elif ledger.treasury != self.address:
            raise TreasuryMismatchError(
                f"the funding ledger belongs to treasury {ledger.treasury}, not {self.address}"
            )
        self._saw(ledger)
        return ledger, version

    async def _save(self, ledger: Ledger, version: str | None) -> str:
        self._clean_at = None  # a write that fails may have landed all the same
        saved = await self._store.save(ledger.pruned(self._now()), version)
        self._saw(ledger)
        return saved

    def _saw(self, ledger: Ledger) -> None:
        self._clean_at = None if ledger.pending() else self._monotonic()

    def _known_clean(self) -> bool:
        """This process read or wrote the ledger with nothing pending, and recently."""
        return self._clean_at is not None and self._monotonic() - self._clean_at < self._clean_trust

    # ------------------------------------------------------------------ chain lookups

    async def _find(self, intent: Intent) -> TransactionInfo | None:
        """The treasury's transaction that applied the intent's message, if any.

        Matched by the body hash (:func:`body_hash`), not the raw message hash,
        and searched page by page (getTransactions' ``lt``/``hash`` cursor,
        newest first) back to the treasury's last transaction when the intent
        was signed (``after_lt``): anyone may send the treasury dust, and a
        fixed window of the newest transactions would lose the message behind
        them and hold the intent forever.
        """
        wanted = body_hash(base64.b64decode(intent.boc))
        floor_utime = int(intent.created_at.timestamp()) - LOOKUP_SLACK_SECONDS
        cursor: tuple[int, str] | None = None
        for _ in range(LOOKUP_PAGES):
            if cursor is None:
                txs = await self._ton.get_transactions(self.address, limit=LOOKUP_PAGE)
            else:
                txs = await self._ton.get_transactions(
                    self.address, limit=LOOKUP_PAGE + 1, lt=cursor[0], tx_hash=cursor[1]
                )
                txs = [t for t in txs if t.transaction_id.lt < cursor[0]]  # cursor is inclusive
            for tx in txs:
                if intent.after_lt is not None and tx.transaction_id.lt <= intent.after_lt:
                    return None
                if intent.after_lt is None and tx.utime < floor_utime:
                    return None
                if _tx_body_hash(tx) == wanted:
                    return tx
            if not txs:
                return None
            last = txs[-1].transaction_id
            cursor = (last.lt, last.hash)
        log.warning("intent %s: not found in %d pages of transactions", intent.id, LOOKUP_PAGES)
        return None

    async def _landed(self, intent: Intent) -> Resolution | None:
        """If the intent's message was applied: what left the wallet, and when."""
        tx = await self._find(intent)
        if tx is None:
            return None
        sent, unsent = split_sent(intent.transfers, tx)
        if not sent:
            log.warning(
                "intent %s: applied (seqno %d used) but no transfer left the treasury:"
                " its balance did not cover them; nothing was paid",
                intent.id,
                intent.seqno,
            )
            return Resolution(IntentState.FAILED, unsent=tuple(unsent))
        if unsent:
            log.warning(
                "intent %s: %d of %d transfers left the treasury; the rest were skipped",
                intent.id,
                len(sent),
                len(intent.transfers),
            )
        sent_lt = max((m.created_lt for m in tx.out_msgs), default=tx.transaction_id.lt)
        return Resolution(IntentState.CONFIRMED, sent_lt, tuple(unsent), tx.transaction_id.lt)

    async def _seqno_after(self, valid_until: int) -> int | None:
        """The treasury's seqno in a state later than ``valid_until`` (chain time), or
        None when the API's state is not that late (it lags, or the chain's clock
        has not got there): only such a state proves an unapplied message dead."""
        state = await self._ton.get_address_information(self.address)
        if state.sync_utime is None or state.sync_utime <= valid_until:
            # No time on the state (the field is optional in API v2) is no
            # proof either: it may be any old state of a lagging node.
            return None
        if state.data is None:
            return 0  # not deployed: nothing was ever applied
        return self.wallet.seqno_of(state.data)

    async def _state(self, ledger: Ledger) -> tuple[int, int, int]:
        """The seqno to sign with next, the balance, and the last transaction's lt.

        Read from the account's own data (any wallet version, whatever the API
        knows of wallet types). An API that lags may show an older seqno; a
        seqno our own confirmed message has used is never signed again, since
        a message with it could only be refused, and would then sit pending.
        """
        state = await self._ton.get_address_information(self.address)
        seqno = self.wallet.seqno_of(state.data) if state.data else 0
        last_lt = state.last_transaction_id.lt if state.last_transaction_id else 0
        return max(seqno, ledger.next_seqno()), state.balance, last_lt

    async def _send(self, intent: Intent) -> None:
        try:
            await self._ton.send_boc(base64.b64decode(intent.boc))
        except TonMessageRejectedError as exc:
            # Usually: an earlier copy was applied (seqno moved on) or it
            # expired. Either way the lookup decides; nothing new is signed.
            log.info("intent %s: message refused (%s); resolving by lookup", intent.id, exc)

    # ------------------------------------------------------------------ resolution

    async def _resolve_one(self, intent: Intent) -> Resolution:
        """The intent's state now: what the chain shows of it."""
        landed = await self._landed(intent)
        if landed is not None:
            return landed
        now = self._clock()
        if now <= intent.valid_until:
            await self._send(intent)  # same BOC: applied at most once
            landed = await self._landed(intent)
            return landed if landed is not None else Resolution(IntentState.PENDING)
        seqno = await self._seqno_after(intent.valid_until)
        if seqno is None:
            # A lagging API (or a chain clock behind ours): its state predates
            # valid_until, so the message may yet be, or already be, applied.
            return Resolution(IntentState.PENDING)
        if seqno <= intent.seqno:
            # The seqno is unused (or not even reached, as after a chain reset)
            # in a state past valid_until: the message can never be applied.
            return Resolution(IntentState.EXPIRED)
        # The seqno moved on but no transaction back to the intent's signing
        # applied it: only this treasury's key signs, so hold for a person.
        log.warning("intent %s: seqno used but its transaction not found; holding", intent.id)
        return Resolution(IntentState.PENDING)

    def _resolved(self, intent: Intent, found: Resolution) -> Intent:
        """The stored intent once resolved: a confirmed one keeps as ``transfers``
        only what left the wallet (what the caps count), the rest in ``unsent``."""
        unsent = set(found.unsent)
        update: dict[str, object] = {
            "state": found.state,
            "resolved_at": self._now(),
            "sent_lt": found.sent_lt,
            "tx_lt": found.tx_lt,
        }
        if found.state is IntentState.CONFIRMED and unsent:
            update["transfers"] = [t for t in intent.transfers if t not in unsent]
            update["unsent"] = list(found.unsent)
        return intent.model_copy(update=update)

    def _report(self, report: FundingReport, intent: Intent, found: Resolution) -> None:
        unsent = set(found.unsent)
        if found.state is IntentState.CONFIRMED:
            report.confirmed.extend(t for t in intent.transfers if t not in unsent)
            report.failed.extend(found.unsent)
        elif found.state is IntentState.FAILED:
            report.failed.extend(intent.transfers)
        elif found.state is IntentState.EXPIRED:
            report.expired.extend(intent.transfers)
        else:
            report.pending.extend(intent.transfers)

    async def _resolve(
        self, ledger: Ledger, version: str | None, report: FundingReport
    ) -> tuple[Ledger, str | None]:
        changed = False
        intents = []
        for stored in ledger.intents:
            intent = stored
            if stored.state is IntentState.PENDING:
                found = await self._resolve_one(stored)
                if found.state is not IntentState.PENDING:
                    intent = self._resolved(stored, found)
                    changed = True
                self._report(report, stored, found)
            intents.append(intent)
        if changed:
            ledger = ledger.model_copy(update={"intents": intents})
            version = await self._save(ledger, version)
        now = self._now()
        ages = [(now - i.created_at).total_seconds() for i in ledger.pending()]
        report.oldest_pending_seconds = max(ages) if ages else None
        return ledger, version

    # ------------------------------------------------------------------ planning

    async def _fresh(
        self, requests: Sequence[TopUpRequest], ledger: Ledger
    ) -> tuple[list[TopUpRequest], frozenset[str]]:
        """The requests with balances read now, after pending intents were resolved,
        and the workers whose balance does not show their last confirmed top-up yet.

        A caller's balance may predate a top-up this cycle just confirmed, and
        an API node may lag behind the chain; trusting either would pay twice.
        Whether a balance includes a top-up is decided by the chain's own
        record, not by a clock: the wallet's state must include the transaction
        that received it (:meth:`_credited`). Only a top-up of the same wallet
        counts: a worker whose node wallet changed (a new VM, a new key) waits
        for nothing sent to the old one; a worker sharing its wallet with another
        waits for that one's top-up too.
        """
        sent: dict[str, Intent] = {}
        for intent in ledger.intents:
            if intent.state is IntentState.CONFIRMED and intent.sent_lt is not None:
                for t in intent.transfers:
                    if t.address not in sent or (sent[t.address].sent_lt or 0) < intent.sent_lt:
                        sent[t.address] = intent
        out, unsettled = [], set()
        for req in requests:
            if req.balance < req.minimum:
                last_topup = sent.get(req.address)
                if last_topup is not None:
                    state = await self._ton.get_address_information(req.address)
                    if not await self._credited(req.address, last_topup, state.last_transaction_id):
                        unsettled.add(req.worker)
                    balance = state.balance
                else:
                    balance = await self._ton.get_address_balance(req.address)
                req = dataclasses.replace(req, balance=balance)  # noqa: PLW2901
            out.append(req)
        return out, frozenset(unsettled)

    async def _credited(self, address: str, intent: Intent, last: TransactionId | None) -> bool:
        """Whether the wallet state whose last transaction is ``last`` includes the
        credit of ``intent``'s transfer to ``address``.

        Logical time orders a message before the transaction that receives it
        and nothing more: the node wallet may sit in another shard whose lt runs
        ahead, so a later lt on the wallet is no proof the credit arrived
        (docs/funding.md). The proof is the receiving transaction itself: an
        internal message from the treasury created in (``tx_lt``, ``sent_lt``],
        which only that treasury transaction's out-messages are, found at or
        before ``last``. Intents recorded before ``tx_lt`` existed keep the
        older rule (any later transaction).
        """
        if last is None or intent.sent_lt is None:
            return False
        if intent.tx_lt is None:
            return last.lt > intent.sent_lt
        low, high = intent.tx_lt, intent.sent_lt
        cursor: TransactionId = last
        for page in range(LOOKUP_PAGES):
            txs = await self._ton.get_transactions(
                address, limit=LOOKUP_PAGE, lt=cursor.lt, tx_hash=cursor.hash, to_lt=low
            )
            if page:
                txs = [t for t in txs if t.transaction_id.lt < cursor.lt]  # inclusive cursor
            for tx in txs:
                msg = tx.in_msg
                if (
                    msg is not None
                    and msg.source
                    and _raw(msg.source) == self.address
                    and low < msg.created_lt <= high
                ):
                    return True
            if not txs or txs[-1].transaction_id.lt <= low:
                return False
            cursor = txs[-1].transaction_id
        return False

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

    def _sign(self, batch: Sequence[PlannedTransfer], seqno: int, after_lt: int) -> Intent:
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
            after_lt=after_lt,
        )

    async def _confirm(self, intent: Intent) -> Resolution:
        deadline = self._monotonic() + self._confirm_timeout
        while True:
            landed = await self._landed(intent)
            if landed is not None:
                return landed
            if self._monotonic() >= deadline:
                return Resolution(IntentState.PENDING)
            await self._sleep(self._poll)

    async def settle(self) -> FundingReport:
        """Resolve pending intents only: at start after a crash, and while any remain.
        Nothing is read while this process knows the ledger has none (see
        ``clean_trust_seconds``)."""
        report = FundingReport()
        if self._known_clean():
            return report
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
        seqno, balance, after_lt = await self._state(ledger)
        fresh, unsettled = await self._fresh(requests, ledger)
        transfers, refusals = plan_topups(
            fresh,
            ledger,
            day=self._now().date().isoformat(),
            global_daily_cap=self._global_cap,
            available=balance - self._reserve,
            settling=self._settling(ledger, fresh) | unsettled,
            fee_per_transfer=self._fee_per_transfer,
            namespace_daily_cap=self._namespace_cap,
        )
        report.refused.extend(refusals)
        await self._deliver(
            ledger, version, transfers, seqno, after_lt, report=report, on_confirmed=on_confirmed
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
        seqno, balance, after_lt = await self._state(ledger)
        cost = sum(t.amount + self._fee_per_transfer for t in transfers)
        if cost > balance - self._reserve:
            # Signed anyway, mode 3 would use the seqno and send nothing.
            report.refused.extend(
                Refusal(t.worker, "the treasury cannot cover it with fees") for t in transfers
            )
            return report
        await self._deliver(ledger, version, list(transfers), seqno, after_lt, report=report)
        return report

    async def _deliver(
        self,
        ledger: Ledger,
        version: str | None,
        transfers: list[PlannedTransfer],
        seqno: int,
        after_lt: int,
        *,
        report: FundingReport,
        on_confirmed: Callable[[Sequence[PlannedTransfer]], None] | None = None,
    ) -> None:
        size = self.wallet.max_messages
        for start in range(0, len(transfers), size):
            batch = transfers[start : start + size]
            intent = self._sign(batch, seqno, after_lt)
            ledger = ledger.model_copy(update={"intents": [*ledger.intents, intent]})
            version = await self._save(ledger, version)  # durable before it can be sent
            failpoint("funding.after-record")
            await self._send(intent)
            report.messages_sent += 1
            failpoint("funding.after-send")
            found = await self._confirm(intent)
            self._report(report, intent, found)
            if found.state is IntentState.PENDING:
                report.oldest_pending_seconds = 0.0
                break  # the rest waits for the next cycle
            resolved = self._resolved(intent, found)
            ledger = ledger.model_copy(update={"intents": [*ledger.intents[:-1], resolved]})
            version = await self._save(ledger, version)
            if on_confirmed is not None and resolved.state is IntentState.CONFIRMED:
                on_confirmed(resolved.transfers)
            seqno += 1
            if found.state is IntentState.FAILED:
                break  # the balance fell short of the plan: re-read it next cycle


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
