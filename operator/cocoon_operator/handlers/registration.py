"""Registration of attested hashes on a root contract this operator owns (opt-in).

A fleet owner who runs their own COCOON root (a private network, a test
network) gives the operator the root owner's wallet key
(``--root-owner-secret``). For each worker with ``spec.registerOnRoot`` whose
VM is attested, the chain step asks :class:`Registrar` to add the worker's
attested image hash and model hash to the root's lists when the operator's own
reading found them missing. Nothing is registered that was not verified, and
only on a root whose owner is this key's wallet of the configured version
(``--root-owner-wallet``, v4r2 or v5r1). The owner is read from the root's
account data in COCOON's layout, as COCOON's runners read it
(:func:`~cocoon_operator.ton.root.parse_root_data`): COCOON's root has no
``get_owner`` get-method.

Every command goes through the same machinery as funding
(:class:`~cocoon_operator.funding.Treasury` over its own ledger ConfigMap): a
durable intent is recorded before the message can leave, confirmed by the
wallet's transactions, resent only as the identical BOC, and each
``(root, list, hash)`` is asked for once, ever (:meth:`Ledger.has_purpose`;
the ledger keeps the purposes of confirmed messages after it prunes them), so a
crash or a fleet of workers of one model never registers twice, and a hash the
root's owner removed after this operator registered it is never added again.

The operator's configuration bounds what a worker's ``spec.registerOnRoot``
can make the owner's key do (:class:`~cocoon_operator.policy.treasury.RegistrationPolicy`):
only workers of the namespaces it names, only image hashes it names, and at
most ``daily_cap`` nanoTON of owner messages per UTC day, pending ones
included (counted in the same durable ledger, so a restart forgets nothing).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cocoon_operator.funding import FundingReport, Ledger, PlannedTransfer, Treasury, settle_forever
from cocoon_operator.policy.treasury import (
    RegistrationPolicy,
    owner_cap_refusal,
    registration_refusal,
)
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.errors import RootContractError, TonError
from cocoon_operator.ton.root import AllowList, RootContract, allowlist_body
from cocoon_operator.ton.wallet import WalletVersion

COMMAND_NANOTON = 50_000_000  # 0.05 TON with each owner command: gas, the rest stays
# A confirmed registration the root still does not list this long after is taken
# as removed by the root's owner (an internal message lands within seconds).
REMOVAL_GRACE = timedelta(seconds=60)


def purpose(root: str, kind: AllowList, hash_hex: str) -> str:
    return f"register:{root}:{kind.value}:{hash_hex}"


def _outcome(report: FundingReport, wanted: list[str]) -> str:
    sent = {t.purpose for t in report.confirmed}
    if sent and all(p in sent for p in wanted):
        return "registered"
    if report.pending:
        return "registration in flight"
    if report.failed or report.refused:
        return "not registered: the owner wallet's balance does not cover the command and its fees"
    return "registration waits for an earlier owner message to resolve"


@dataclass
class Registrar:
    """The root owner's wallet, sending allow-list additions at most once each."""

    ton: TonClient
    owner: Treasury
    #: This key's wallet address under each version: a root owned by another
    #: version's wallet is refused by name, so the fix is plain.
    key_wallets: Mapping[WalletVersion, str] = field(default_factory=dict)
    _owners: dict[str, str] = field(default_factory=dict)
    policy: RegistrationPolicy = field(default_factory=RegistrationPolicy)
    clock: Callable[[], float] = time.time
    removal_grace: timedelta = REMOVAL_GRACE
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The ledger as last read: when each purpose was confirmed (for refusal()).
    _ledger: Ledger | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def load(self) -> None:
        """Read the ledger (at start, so :meth:`refusal` knows what was registered)."""
        async with self._lock:
            self._ledger = await self.owner.ledger()

    def removed(self, root: str, kind: AllowList, hash_hex: str) -> str | None:
        """Why ``hash_hex`` is never registered again: this operator's registration of
        it was confirmed and the root, read since, does not list it (its owner took
        it off). Only for a hash the caller found unlisted."""
        if self._ledger is None:
            return None
        when = self._ledger.confirmed_purpose(purpose(root, kind, hash_hex))
        if when is None or self._now() - when < self.removal_grace:
            return None
        what = "image" if kind is AllowList.WORKER else kind.value
        return (
            f"{what} hash {hash_hex} was registered by this operator and the root no"
            " longer lists it: its owner removed it, and it is never registered again"
        )

    def refusal(self, worker: str, root: str, needed: list[tuple[AllowList, str]]) -> str | None:
        """Why ``needed`` (hashes found unlisted) of ``worker`` (``namespace/name``) is not
        registered, from the operator's configuration and the ledger; None: it may be."""
        namespace = worker.partition("/")[0]
        refused = registration_refusal(self.policy, namespace, [(k.value, h) for k, h in needed])
        if refused is not None:
            return refused
        for kind, value in needed:
            gone = self.removed(root, kind, value)
            if gone is not None:
                return gone
        return None

    async def owner_refusal(self, root: str) -> str | None:
        """None when the root's owner is this operator's owner wallet, else why not.

        The owner is read once per root from its account data (COCOON's layout);
        a change of owner needs an operator restart to be seen.
        """
        if root not in self._owners:
            try:
                self._owners[root] = (await RootContract(self.ton, root).owner()).to_raw()
            except RootContractError as exc:  # not COCOON's layout, or not deployed
                return f"not registered: {exc}"
        owner = self._owners[root]
        mine = self.owner.address
        if owner == mine:
            return None
        signing = self.owner.wallet.version
        for version, address in self.key_wallets.items():
            if address == owner and version != signing:
                return (
                    f"not registered: root {root} is owned by {owner}, this key's {version}"
                    f" wallet; the operator signs as {signing} (set --root-owner-wallet {version})"
                )
        return (
            f"not registered: root {root} is owned by {owner}, not by this operator's owner"
            f" wallet {mine} ({signing})"
        )

    async def settle_forever(
        self, interval: float, logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> None:
        """Resolve owner messages left pending by a crash, even when no worker
        needs a registration any more (the first pass runs at start)."""

        def report(done: FundingReport) -> None:
            for transfer in done.confirmed:
                logger.info("registration %s confirmed on chain", transfer.purpose)
            for transfer in done.expired:
                logger.info("registration %s expired unsent", transfer.purpose)
            for transfer in done.failed:
                logger.warning(
                    "registration %s applied unsent: owner wallet too low", transfer.purpose
                )

        await settle_forever(self.owner, self._lock, interval, report)

    async def register(self, worker: str, root: str, needed: list[tuple[AllowList, str]]) -> str:
        """Add ``needed`` (list, hex hash) to ``root``; a note on what happened.

        Raises :class:`TonError` when the chain cannot be read or written now.
        """
        async with self._lock:
            ledger = self._ledger = await self.owner.ledger()
            refused = self.refusal(worker, root, needed)
            if refused is not None:
                return f"not registered: {refused}"
            refused = await self.owner_refusal(root)
            if refused is not None:
                return refused
            todo = [(k, h) for k, h in needed if not ledger.has_purpose(purpose(root, k, h))]
            if not todo:
                return "registration asked for before; the root does not list it (yet)"
            day = self._now().date().isoformat()
            over = owner_cap_refusal(
                ledger.spent_total(day), COMMAND_NANOTON * len(todo), self.policy.daily_cap
            )
            if over is not None:
                return f"not registered: {over}"
            transfers = [
                PlannedTransfer(
                    worker=worker,
                    address=root,
                    amount=COMMAND_NANOTON,
                    bounce=True,  # the root exists; a refusal brings the value back
                    body=base64.b64encode(
                        allowlist_body(kind, bytes.fromhex(value), add=True)
                    ).decode(),
                    purpose=purpose(root, kind, value),
                )
                for kind, value in todo
            ]
            report = await self.owner.send(transfers)
            self._ledger = await self.owner.ledger()
            return _outcome(report, [t.purpose or "" for t in transfers])


__all__ = ["COMMAND_NANOTON", "REMOVAL_GRACE", "Registrar", "TonError", "purpose"]
