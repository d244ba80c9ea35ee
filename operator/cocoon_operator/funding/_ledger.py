"""The durable record of what the treasury signed, and where it is kept."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

KEEP_RESOLVED = timedelta(days=2)  # long enough to answer "what was sent today"


class IntentState(StrEnum):
    PENDING = "pending"  # recorded; maybe sent; not yet seen on chain
    CONFIRMED = "confirmed"  # the message's transaction is on chain
    EXPIRED = "expired"  # can never be applied: valid_until passed, seqno unused
    # Applied (its seqno is used) but no transfer left the wallet: the wallets
    # send with mode 3, whose +2 ("ignore errors") skips an unaffordable
    # message in the action phase without failing the transaction
    # (docs.ton.org/foundations/messages/modes). Nothing was paid, and this
    # message can never apply again, so its transfers may be signed anew.
    FAILED = "failed"


#: Intents whose transfers were, or may yet be, paid. (A confirmed intent's
#: ``transfers`` are the ones that left; the skipped ones are in ``unsent``.)
_MAY_PAY = (IntentState.PENDING, IntentState.CONFIRMED)


class PlannedTransfer(BaseModel):
    model_config = ConfigDict(frozen=True)

    worker: str  # namespace/name
    address: str  # raw form
    amount: int = Field(gt=0)  # nanoTON
    # A contract call rather than a top-up: bounceable, with a body (base64
    # BOC), and a purpose naming what it does, so nobody asks for it twice.
    bounce: bool = False
    body: str | None = None
    purpose: str | None = None


class Intent(BaseModel):
    """One signed external message of the treasury wallet."""

    id: str
    seqno: int
    valid_until: int  # unix seconds
    message_hash: str  # hex of the external message cell hash
    boc: str  # base64 of the signed message: re-sending it is harmless
    transfers: list[PlannedTransfer]
    created_at: datetime
    state: IntentState = IntentState.PENDING
    resolved_at: datetime | None = None
    # Confirmed: the logical time its transfers left the treasury. A node
    # wallet's state whose last transaction is not later predates the credit.
    sent_lt: int | None = None
    # Confirmed: the logical time of the treasury's transaction that sent them.
    # Its out-messages, and only they, have created_lt in (tx_lt, sent_lt]:
    # a node wallet's credit is recognised by that, not by a later lt alone.
    tx_lt: int | None = None
    # The treasury's last transaction when the message was signed: the one that
    # applies it comes later, so the lookup pages back to here and no further.
    after_lt: int | None = None
    # Confirmed, but the wallet skipped these (the balance did not cover them
    # in the action phase): never paid, so they count for no cap.
    unsent: list[PlannedTransfer] = []

    @property
    def day(self) -> str:
        return self.created_at.astimezone(UTC).date().isoformat()

    @property
    def total(self) -> int:
        return sum(t.amount for t in self.transfers)


class Ledger(BaseModel):
    treasury: str  # raw address of the treasury wallet the intents belong to
    intents: list[Intent] = []
    # Purposes of confirmed intents that :meth:`pruned` dropped: a purpose is asked
    # for once, ever, not once per two days (a registration the root's owner
    # removed is never sent again). One short string per registered hash.
    done_purposes: list[str] = []

    def pending(self) -> list[Intent]:
        return [i for i in self.intents if i.state is IntentState.PENDING]

    def next_seqno(self) -> int:
        """One past the highest seqno an applied intent used (0 when none is kept).

        A failed intent's message was applied too (its seqno is used up), it
        only sent nothing."""
        return max(
            (
                i.seqno + 1
                for i in self.intents
                if i.state in (IntentState.CONFIRMED, IntentState.FAILED)
            ),
            default=0,
        )

    def has_purpose(self, purpose: str) -> bool:
        """Whether a pending or confirmed intent carries a transfer for ``purpose``,
        including confirmed ones pruned long ago (:attr:`done_purposes`)."""
        return purpose in self.done_purposes or any(
            t.purpose == purpose for i in self.intents if i.state in _MAY_PAY for t in i.transfers
        )

    def confirmed_purpose(self, purpose: str) -> datetime | None:
        """When a transfer for ``purpose`` was confirmed on chain (the epoch for one
        pruned long ago); None when it never was (pending, expired or unknown)."""
        if purpose in self.done_purposes:
            return datetime.fromtimestamp(0, UTC)
        for i in self.intents:
            if i.state is IntentState.CONFIRMED and any(t.purpose == purpose for t in i.transfers):
                return i.resolved_at or i.created_at
        return None

    def _counting(self, day: str) -> list[Intent]:
        # Pending intents count as spent: they may yet land.
        return [i for i in self.intents if i.state in _MAY_PAY and i.day == day]

    def spent(self, worker: str, day: str) -> int:
        return sum(t.amount for i in self._counting(day) for t in i.transfers if t.worker == worker)

    def spent_total(self, day: str) -> int:
        return sum(i.total for i in self._counting(day))

    def spent_on(self, worker: str, address: str, day: str) -> int:
        """What went to ``worker`` or to the wallet ``address`` on ``day``: a worker's
        cap holds for its wallet too, so workers sharing a wallet share its cap."""
        return sum(
            t.amount
            for i in self._counting(day)
            for t in i.transfers
            if t.worker == worker or t.address == address
        )

    def funded_for(self, day: str) -> dict[str, str]:
        """Each wallet topped up on ``day`` (pending or confirmed), and the worker it
        was first topped up for."""
        out: dict[str, str] = {}
        for i in sorted(self._counting(day), key=lambda i: i.created_at):
            for t in i.transfers:
                if t.purpose is None:
                    out.setdefault(t.address, t.worker)
        return out

    def spent_in_namespace(self, namespace: str, day: str) -> int:
        """What went to workers of ``namespace`` (``worker`` is ``namespace/name``) on ``day``."""
        prefix = f"{namespace}/"
        counting = self._counting(day)
        return sum(t.amount for i in counting for t in i.transfers if t.worker.startswith(prefix))

    def pruned(self, now: datetime) -> Ledger:
        """Resolved intents only as long as the caps look back, and without their signed
        message: only a pending one may be sent again. (Kept whole, 250 messages
        for a 1,000-worker fleet made a 360 KB ConfigMap, rewritten twice per
        message, and about 550 would pass the 1 MiB object limit.)"""

        def kept(i: Intent) -> bool:
            return (
                i.state is IntentState.PENDING
                or i.resolved_at is None
                or now - i.resolved_at < KEEP_RESOLVED
            )

        keep = [
            i if i.state is IntentState.PENDING or not i.boc else i.model_copy(update={"boc": ""})
            for i in self.intents
            if kept(i)
        ]
        done = list(self.done_purposes)
        for i in self.intents:
            if not kept(i) and i.state is IntentState.CONFIRMED:
                done.extend(t.purpose for t in i.transfers if t.purpose and t.purpose not in done)
        return self.model_copy(update={"intents": keep, "done_purposes": done})


class LedgerConflictError(Exception):
    """Someone else wrote the ledger since it was read: re-read, never overwrite."""


class LedgerStore(Protocol):
    """Durable storage with compare-and-swap. ``version`` is opaque to callers."""

    async def load(self) -> tuple[Ledger | None, str | None]: ...

    async def save(self, ledger: Ledger, version: str | None) -> str:
        """Write ``ledger`` if the stored version is still ``version`` (None: absent)."""
        ...


class MemoryLedgerStore:
    """A store in memory (tests, and what a crash would wipe: never for real money)."""

    def __init__(self) -> None:
        self._doc: str | None = None
        self._version = 0

    async def load(self) -> tuple[Ledger | None, str | None]:
        if self._doc is None:
            return None, None
        return Ledger.model_validate_json(self._doc), str(self._version)

    async def save(self, ledger: Ledger, version: str | None) -> str:
        current = None if self._doc is None else str(self._version)
        if version != current:
            raise LedgerConflictError(f"ledger version {current}, expected {version}")
        self._doc = ledger.model_dump_json()
        self._version += 1
        return str(self._version)


class FileLedgerStore:
    """A ledger in one JSON file, replaced atomically (the CLI, tests, single hosts).

    The version is the SHA-256 of the file's bytes, so a writer that read an
    older file is refused rather than overwriting what it never saw.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def _read(self) -> bytes | None:
        try:
            return self._path.read_bytes()
        except FileNotFoundError:
            return None

    async def load(self) -> tuple[Ledger | None, str | None]:
        raw = self._read()
        if raw is None:
            return None, None
        return Ledger.model_validate_json(raw), hashlib.sha256(raw).hexdigest()

    async def save(self, ledger: Ledger, version: str | None) -> str:
        raw = self._read()
        current = None if raw is None else hashlib.sha256(raw).hexdigest()
        if version != current:
            raise LedgerConflictError(f"ledger file changed since it was read ({self._path})")
        data = ledger.model_dump_json(indent=1).encode()
        tmp = self._path.with_name(self._path.name + ".tmp")
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self._path)
        return hashlib.sha256(data).hexdigest()
