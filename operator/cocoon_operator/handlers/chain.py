"""The chain step: allow-lists, the node wallet and its funding, earnings.

Allow-lists: the worker's reconcile asks :func:`read_lists` (injected as
``Runtime.read_lists``) for the root contract's verdict on the revision's
model hash and attested image hash before it starts a VM and on every pass
after; readings are cached per hash for a check interval and shared by the
fleet (:class:`AllowListReader`), so a thousand workers of one model cost one
get-method call per interval. :mod:`cocoon_operator.policy.allowlist` decides.

The wallet part runs only for attested workers (the pod's gate is True and this
operator's own verification of that pod holds), so nothing unverified is ever
funded. What decides a top-up or a registration is this operator's own
memory (:class:`~cocoon_operator.handlers.trust.TrustState`: the image hash it
verified, the lists it read), never the worker's status, which anyone with
``cocoonworkers/status`` patch rights can write; after a restart nothing moves
until the evidence is verified and the lists read again. A timer per worker:

1. reads ``/jsonstats`` on the worker's plain HTTP port (the only one a COCOON
   worker serves; see ``workerapi``): the node wallet it names and token
   counts. A worker whose runner has not initialised yet answers 400 "not
   found" there (it waits for 2.1 TON first), and is read again next check;
   a Ready worker whose readings ask nothing is read less often, and the
   checks between go by its last reading
   (:func:`~cocoon_operator.policy.chain.stats_read_due`);
2. picks the wallet to fund: the address the pod's launcher derived from the
   node wallet key and owner as COCOON's ``CocoonWallet`` does, from the node
   agent's report (:func:`~cocoon_operator.policy.chain.wallet_to_fund`); a
   worker naming another wallet is funded nothing (``WalletFunded=False,
   WalletMismatch``). Without node reports, the worker's own word is used.
   Then reads that wallet's balance from the chain (authoritative, unlike the
   worker's own figure);
3. when the operator found both hashes listed and the balance is below
   ``funding.minimum``, asks the fleet's :class:`FundingBatcher` for a
   top-up, which the treasury sends crash-safely, 4 (v4r2) or 255 (v5r1)
   transfers per message;
4. writes ``status.wallet`` and ``status.earnings`` and runs the worker's
   reconcile, which derives OnChainAllowed, WalletFunded, Ready; a check that
   learned nothing skips it while the fleet's reader still holds, unexpired,
   the verdicts on the worker's hashes it was derived from
   (:func:`listing_holds`), so the lists are still read each interval.

A worker held for unlisted hashes has no pod; the timer re-runs its reconcile,
which re-reads the lists, so it starts once they are listed.

Funding before start (namespaces named by ``--fund-before-start-namespace``,
:meth:`~cocoon_operator.policy.treasury.FundingLimits.funds_before_start`):
while a worker whose model hash the root lists has no launcher pod, the timer
derives its node wallet itself, offline, from the key Secret and the owner
exactly as the launcher does (``ton/cocoonwallet.py``; the private key is read
only to compute the public key, and kept nowhere), reads that wallet's balance
from the chain and, below COCOON's 2.1 TON start floor, asks the same
:class:`FundingBatcher` for a top-up to the floor alone
(:func:`~cocoon_operator.policy.treasury.start_funding_bounds`): the same
ledger, caps and wallet-once rule as every top-up. The reconcile creates the
launcher pod only once the chain shows the floor
(:func:`~cocoon_operator.policy.chain.start_hold`). The top-up to the target
still waits for attestation and listed hashes, and from then on the launcher's
and the worker's word on the wallet must equal the operator's own derivation.

Enabled by ``cocoon-operator run --ton-endpoint`` (see :func:`register`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.conditions import Phase
from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR, EarningsStatus, WalletStatus
from cocoon_operator.desired.launcher import pod_name, revision
from cocoon_operator.funding import (
    BalanceBook,
    FundingReport,
    Limit,
    PlannedTransfer,
    TopUpRequest,
    Treasury,
    settle_forever,
)
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.nodetracker import NodeReports
from cocoon_operator.handlers.payouts import ask_for_payouts, ask_proxies, proxies_now
from cocoon_operator.handlers.reconciler import reconcile_body
from cocoon_operator.handlers.registration import Registrar
from cocoon_operator.handlers.runtime import Deps, Logger, Runtime, Tick
from cocoon_operator.handlers.trust import TrustState
from cocoon_operator.k8s.ledger import ConfigMapLedgerStore
from cocoon_operator.k8s.rest import Forbidden, Kube, NotFound, path
from cocoon_operator.metrics import Metrics
from cocoon_operator.policy import allowlist
from cocoon_operator.policy.attestation import LastVerification
from cocoon_operator.policy.chain import (
    BalanceReading,
    StartFunding,
    StatsReading,
    WalletChoice,
    balance_read_due,
    earnings_due,
    next_reading,
    next_stats_reading,
    payout_due,
    start_hold,
    stats_read_due,
    wallet_to_fund,
)
from cocoon_operator.policy.conditions import rfc3339
from cocoon_operator.policy.treasury import (
    TREASURY_TCB_DEFAULT,
    Bounds,
    FundingLimits,
    PolicyCode,
    RegistrationPolicy,
    funding_bounds,
    start_funding_bounds,
    tcb_refusal,
)
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.worker import ObservedWorker
from cocoon_operator.ton.address import normalize_address
from cocoon_operator.ton.amounts import Nanoton, format_ton
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.cocoonwallet import node_wallet_address, parse_node_wallet_key
from cocoon_operator.ton.errors import TonError
from cocoon_operator.ton.root import AllowList, RootContract
from cocoon_operator.ton.wallet import MAINNET_GLOBAL_ID, WalletKey, WalletVersion, make_wallet
from cocoon_operator.workerapi import (
    WorkerNotInitialisedError,
    WorkerStats,
    WorkerStatsError,
)

SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class ChainOptions:
    """What ``cocoon-operator run`` was told about the chain and the treasury."""

    endpoint: str
    api_key_file: Path | None = None
    treasury_secret: tuple[str, str] | None = None  # namespace, name
    treasury_wallet: WalletVersion = WalletVersion.V4R2
    ton_global_id: int = MAINNET_GLOBAL_ID
    global_daily_cap: int = 1000 * v1alpha1.NANO_PER_TON
    ledger: tuple[str, str] = ("default", "cocoon-funding-ledger")
    check_seconds: float = 30.0
    root_owner_secret: tuple[str, str] | None = None  # namespace, name
    root_owner_wallet: WalletVersion = WalletVersion.V4R2
    registration_ledger: tuple[str, str] = ("default", "cocoon-registration-ledger")
    # The operator's own money policy (policy/treasury.py): never a worker's spec.
    funding_limits: FundingLimits = field(default_factory=FundingLimits)
    treasury_tcb: frozenset[v1alpha1.TcbStatus] = TREASURY_TCB_DEFAULT
    registration: RegistrationPolicy = field(default_factory=RegistrationPolicy)


@dataclass(frozen=True)
class TopUpAnswer:
    """What the treasury's cycle did for one worker: a note for status, and the
    operator's limit behind it, if one was (a :class:`PolicyCode` value)."""

    note: str
    limit: str | None = None


# Treasury refusals that are the operator's own limits (the rest are transient).
_LIMIT_CODES = {
    Limit.WORKER_DAILY_CAP: PolicyCode.FUNDING_LIMITED,
    Limit.NAMESPACE_DAILY_CAP: PolicyCode.FUNDING_LIMITED,
    Limit.GLOBAL_DAILY_CAP: PolicyCode.FUNDING_LIMITED,
    Limit.SHARED_WALLET: PolicyCode.SHARED_WALLET,
}


# The operator flag each of its limits comes from, named where it applies.
_LIMIT_FLAGS = {
    Limit.WORKER_DAILY_CAP: "--funding-worker-daily-cap, or spec.funding.dailyCap",
    Limit.NAMESPACE_DAILY_CAP: "--funding-namespace-daily-cap",
    Limit.GLOBAL_DAILY_CAP: "--funding-daily-cap",
}


def _describe(report: FundingReport, worker: str) -> TopUpAnswer:
    for transfer in report.confirmed:
        if transfer.worker == worker:
            return TopUpAnswer(f"topped up {format_ton(transfer.amount)} TON")
    for transfer in report.pending:
        if transfer.worker == worker:
            return TopUpAnswer("a top-up is in flight")
    for transfer in report.failed:
        if transfer.worker == worker:
            return TopUpAnswer(
                "not topped up: the treasury's balance did not cover it (nothing was paid)"
            )
    for refusal in report.refused:
        if refusal.worker == worker:
            code = _LIMIT_CODES.get(refusal.code) if refusal.code is not None else None
            flag = _LIMIT_FLAGS.get(refusal.code) if refusal.code is not None else None
            why = f"{refusal.reason} ({flag})" if flag else refusal.reason
            return TopUpAnswer(f"not topped up: {why}", code.value if code else None)
    return TopUpAnswer("no top-up needed")


@dataclass
class FundingBatcher:
    """Collects top-up requests for a moment and funds them in one treasury cycle.

    Cycles never overlap: the treasury's ledger is the single writer's.
    """

    treasury: Treasury
    metrics: Metrics = field(default_factory=Metrics)
    window_seconds: float = 0.5
    _waiting: list[tuple[TopUpRequest, asyncio.Future[TopUpAnswer]]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _flusher: asyncio.Task[None] | None = None

    async def request(self, req: TopUpRequest) -> str:
        return (await self.answer(req)).note

    async def answer(self, req: TopUpRequest) -> TopUpAnswer:
        """The cycle's answer for ``req``, with the operator's limit behind it."""
        future: asyncio.Future[TopUpAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((req, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def settle_forever(self, interval: float, logger: Logger) -> None:
        """Resolve intents left pending (by a crash, a lost response) without waiting
        for another worker to need funds; the first pass runs at start."""

        def report(done: FundingReport) -> None:
            self._count(done)
            for transfer in done.confirmed:
                logger.info("funding of %s confirmed on chain", transfer.worker)
            for transfer in done.expired:
                logger.info("funding of %s expired unsent", transfer.worker)
            for transfer in done.failed:
                logger.warning(
                    "funding of %s applied without paying: the treasury could not cover it",
                    transfer.worker,
                )

        await settle_forever(self.treasury, self._lock, interval, report)

    async def _flush(self) -> None:
        # Requests that arrive while a cycle runs are taken by the next pass of
        # this loop: their callers wait on them and would ask nothing else, so
        # leaving them to a later request's flusher could leave them forever.
        while True:
            await asyncio.sleep(self.window_seconds)
            async with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    return  # no await follows: a new request starts a new flusher
                await self._cycle(batch)

    async def _cycle(self, batch: list[tuple[TopUpRequest, asyncio.Future[TopUpAnswer]]]) -> None:
        waiting = {req.worker: future for req, future in batch}

        def confirmed(transfers: Sequence[PlannedTransfer]) -> None:
            # Answered as each message confirms, not when the whole cycle ends.
            for transfer in transfers:
                future = waiting.get(transfer.worker)
                if future is not None and not future.done():
                    future.set_result(TopUpAnswer(f"topped up {format_ton(transfer.amount)} TON"))

        try:
            report = await self.treasury.fund([req for req, _ in batch], confirmed)
        except Exception as exc:  # every waiter must get an answer
            # Exception texts of the TON client are redacted; keys never reach them.
            for _, future in batch:
                if not future.done():
                    future.set_result(TopUpAnswer(f"funding failed: {type(exc).__name__}: {exc}"))
            return
        self._count(report)
        for req, future in batch:
            if not future.done():
                future.set_result(_describe(report, req.worker))

    def _count(self, report: FundingReport) -> None:
        m = self.metrics
        m.funding_transfers.labels("confirmed").inc(len(report.confirmed))
        m.funding_transfers.labels("pending").inc(len(report.pending))
        m.funding_transfers.labels("expired").inc(len(report.expired))
        m.funding_transfers.labels("failed").inc(len(report.failed))
        m.funding_transfers.labels("refused").inc(len(report.refused))
        m.funding_nanoton.inc(sum(t.amount for t in report.confirmed))
        m.funding_pending_seconds.set(report.oldest_pending_seconds or 0.0)


class AllowListReader:
    """Root-contract membership reads, cached per (root, list, hash) for ``ttl`` seconds.

    Concurrent askers of one key share one in-flight call; a failed call is not
    cached, so the next asker tries again.
    """

    def __init__(
        self,
        ton: TonClient,
        *,
        ttl: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ton = ton
        self._ttl = ttl
        self._metrics = metrics
        self._clock = clock
        self._cache: dict[tuple[str, AllowList, bytes], tuple[float, asyncio.Task[bool]]] = {}

    async def listed(self, root: str, kind: AllowList, value: bytes) -> bool:
        key = (root, kind, value)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is None or hit[0] <= now or (hit[1].done() and hit[1].exception() is not None):
            hit = (now + self._ttl, asyncio.ensure_future(self._read(root, kind, value)))
            self._cache[key] = hit
            if len(self._cache) > 4096:  # drop what expired
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        return await asyncio.shield(hit[1])

    def cached(self, root: str, kind: AllowList, value: bytes) -> bool | None:
        """The verdict a call now would return without reading the chain; None when it
        would read (never asked, expired, failed, or still in flight)."""
        hit = self._cache.get((root, kind, value))
        if hit is None or hit[0] <= self._clock() or not hit[1].done():
            return None
        return None if hit[1].exception() is not None else hit[1].result()

    def forget(self, root: str, kind: AllowList, value: bytes) -> None:
        """Read ``value`` afresh next time (after this operator changed the list)."""
        self._cache.pop((root, kind, value), None)

    async def _read(self, root: str, kind: AllowList, value: bytes) -> bool:
        try:
            with self._metrics.chain_seconds.labels("runGetMethod").time():
                return await RootContract(self._ton, root).is_allowed(kind, value)
        except TonError:
            self._metrics.chain_errors.labels("runGetMethod").inc()
            raise


@dataclass
class Chain:
    ton: TonClient
    batcher: FundingBatcher | None
    lists: AllowListReader
    settlers: list[asyncio.Task[None]] = field(default_factory=list)
    registrar: Registrar | None = None
    check_seconds: float = 30.0
    # Each worker's last balance reading (see policy.chain.balance_read_due).
    balances: dict[tuple[str, str], BalanceReading] = field(default_factory=dict)
    # Each worker's last /jsonstats reading (see policy.chain.stats_read_due).
    stats: dict[tuple[str, str], StatsReading] = field(default_factory=dict)
    # The fleet's node wallet balances, read in batches (funding/_balances.py); None (a
    # test's Chain): each check reads its own, backing off while it holds.
    book: BalanceBook | None = None
    # The operator's funding limits and the TCB statuses its treasury pays for.
    funding_limits: FundingLimits = field(default_factory=FundingLimits)
    treasury_tcb: frozenset[v1alpha1.TcbStatus] = TREASURY_TCB_DEFAULT
    # The last policy refusal announced per worker (an Event each time it changes,
    # not at every check).
    announced: dict[tuple[str, str], str] = field(default_factory=dict)
    # Each node wallet the chain step funds, and the worker it funds it for: the
    # first seen with it. Workers sharing a node wallet key share one wallet
    # (CocoonWallet.cpp derives it from key and owner) and get one top-up.
    wallet_users: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Its reverse: the one address each worker holds in wallet_users, so that a check
    # finds a worker's old claim without a scan of every wallet (a scan per check is
    # quadratic in the fleet's size: docs/bench.md).
    wallet_claims: dict[tuple[str, str], str] = field(default_factory=dict)
    # Each worker's last look at its node wallet before its VM started (funded before
    # start), with the address this operator derived itself: the only one funded.
    start_funding: dict[tuple[str, str], StartFunding] = field(default_factory=dict)

    def funds_before_start(self, namespace: str) -> bool:
        """Whether workers of ``namespace`` get their start floor before their VM starts
        (the operator's choice, and only with a treasury to pay it)."""
        return self.batcher is not None and self.funding_limits.funds_before_start(namespace)

    def own_wallet(self, key: tuple[str, str], rev: str) -> str | None:
        """The node wallet this operator derived itself for ``rev``'s VM, if it did."""
        look = self.start_funding.get(key)
        return look.address if look is not None and look.revision == rev else None

    def wallet_user(
        self, key: tuple[str, str], address: str, alive: Callable[[tuple[str, str]], bool]
    ) -> tuple[str, str]:
        """The worker ``address`` is funded for: ``key`` unless another worker that
        still has pods (``alive``) claimed it first."""
        old = self.wallet_claims.pop(key, None)
        if old is not None and old != address and self.wallet_users.get(old) == key:
            del self.wallet_users[old]  # this worker's wallet changed
        first = self.wallet_users.setdefault(address, key)
        if first != key and not alive(first):
            self.wallet_claims.pop(first, None)
            first = self.wallet_users[address] = key
        if first == key:
            self.wallet_claims[key] = address
        return first

    def forget(self, key: tuple[str, str]) -> None:
        """A deleted worker's readings and wallet claim."""
        self.balances.pop(key, None)
        self.stats.pop(key, None)
        self.announced.pop(key, None)
        self.start_funding.pop(key, None)
        address = self.wallet_claims.pop(key, None)
        if address is not None and self.wallet_users.get(address) == key:
            del self.wallet_users[address]


async def read_lists(
    state: Chain, trust: TrustState, now: dt.datetime, observed: ObservedWorker
) -> ObservedWorker:
    """``observed`` with the root contract's verdict on its revision's hashes, also kept
    in ``trust`` (the reading the chain step funds and registers by), and whether the
    operator registers the missing ones (its policy, not the spec alone).

    The image hash asked about is the one this operator verified for the current
    revision's pod (``trust``), never ``status.attestation``.
    """
    spec, ref, lists = observed.spec, observed.ref, state.lists
    observed = dataclasses.replace(
        observed, registering=state.registrar is not None and spec.register_on_root
    )
    rev = revision(spec)
    model = allowlist.model_hash(spec.model)
    name = pod_name(ref, rev)
    uid = next((p.uid for p in observed.pods if p.name == name and not p.deleting), None)
    key = (ref.namespace, ref.name)
    image = trust.verified_image(key, uid, now)
    if image is None and uid is None:
        # No pod of this revision: stopped because its image is unlisted. Ask about the
        # image it ran, so the hold stands and the VM is not started again only to be
        # stopped once it attests (check_chain funds and registers nothing without a
        # pod verified now).
        image = trust.held_image(key, rev)
    root = normalize_address(spec.root_contract_address)
    try:
        model_listed = await lists.listed(root, AllowList.MODEL, bytes.fromhex(model))
        image_listed = (
            await lists.listed(root, AllowList.WORKER, bytes.fromhex(image)) if image else None
        )
    except (TonError, ValueError) as exc:
        # Redacted by the TON client; never a key. The reading is simply not taken.
        return dataclasses.replace(observed, listing_error=f"{type(exc).__name__}: {exc}"[:300])
    listing = allowlist.Listing(rev, model, model_listed, image, image_listed)
    trust.listings[key] = listing
    refused = None
    if state.registrar is not None and spec.register_on_root:
        needed = [(AllowList.MODEL, model)] if not model_listed else []
        if image and image_listed is False:
            needed.append((AllowList.WORKER, image))
        refused = state.registrar.refusal(f"{ref.namespace}/{ref.name}", root, needed)
    # Funded before start: no launcher pod until the chain shows the start floor. Only
    # once the model is listed (nothing unlisted is funded); a worker registering its
    # model starts unfunded, as elsewhere, rather than wait for a listing that needs
    # its attestation.
    start_held = None
    if model_listed and state.funds_before_start(ref.namespace):
        start_held = start_hold(state.start_funding.get(key), rev)
    return dataclasses.replace(
        observed,
        listing=listing,
        registering=observed.registering and refused is None,
        registration_refused=refused,
        start_funding=start_held,
    )


async def _wallet_key(api: Kube, namespace: str, name: str) -> WalletKey:
    secret = await api.request("GET", path("v1", "secrets", namespace=namespace, name=name))
    data: dict[str, str] = secret.get("data") or {}
    if "seed" in data:
        return WalletKey(bytes.fromhex(base64.b64decode(data["seed"]).decode().strip()))
    if "mnemonic" in data:
        return WalletKey.from_mnemonic(base64.b64decode(data["mnemonic"]).decode().split())
    raise kopf.PermanentError(f"secret {namespace}/{name} has neither 'seed' nor 'mnemonic'")


async def started(options: ChainOptions, deps: Deps, logger: Logger) -> Chain:
    """The step's state at startup: the TON client, the treasury and its batcher, the
    allow-list reader and the registrar, with their settling tasks running."""
    api_key = options.api_key_file.read_text().strip() if options.api_key_file else None
    ton = TonClient(options.endpoint, api_key=api_key, timeout=10.0)
    batcher = None
    if options.treasury_secret is not None:
        key = await _wallet_key(deps.api, *options.treasury_secret)
        store = ConfigMapLedgerStore(deps.api, *options.ledger)
        wallet = make_wallet(
            options.treasury_wallet, key.public_key, network_global_id=options.ton_global_id
        )
        treasury = Treasury(
            ton,
            key,
            store,
            global_daily_cap=options.global_daily_cap,
            namespace_daily_cap=options.funding_limits.namespace_daily_cap,
            wallet=wallet,
        )
        batcher = FundingBatcher(treasury, deps.metrics)
        logger.info(
            "funding node wallets from treasury %s (wallet %s, ledger %s/%s)",
            treasury.address,
            wallet.version,
            *options.ledger,
        )
    settlers = (
        [asyncio.create_task(batcher.settle_forever(SETTLE_SECONDS, logger))] if batcher else []
    )
    lists = AllowListReader(ton, ttl=options.check_seconds, metrics=deps.metrics)
    registrar = None
    if options.root_owner_secret is not None:
        owner_key = await _wallet_key(deps.api, *options.root_owner_secret)
        store = ConfigMapLedgerStore(deps.api, *options.registration_ledger)
        # Owner commands go through Treasury.send, uncapped there: the registrar
        # caps them per day itself (options.registration.daily_cap).
        key_wallets = {
            v: make_wallet(v, owner_key.public_key, network_global_id=options.ton_global_id)
            for v in WalletVersion
        }
        owner = Treasury(
            ton,
            owner_key,
            store,
            global_daily_cap=0,
            wallet=key_wallets[options.root_owner_wallet],
        )
        registrar = Registrar(
            ton,
            owner,
            policy=options.registration,
            key_wallets={v: w.address.to_raw() for v, w in key_wallets.items()},
        )
        await registrar.load()
        settlers.append(asyncio.create_task(registrar.settle_forever(SETTLE_SECONDS, logger)))
        logger.info("registering attested hashes on roots owned by %s", owner.address)
    book = BalanceBook(ton, interval=options.check_seconds, stretch=deps.max_stretch)
    # The fleet's node wallets, read in one sweep a period (funding/_balances.py).
    settlers.append(asyncio.create_task(book.sweep_forever(), name="balance-sweeps"))
    state = Chain(
        ton,
        batcher,
        lists,
        settlers,
        registrar,
        options.check_seconds,
        funding_limits=options.funding_limits,
        treasury_tcb=options.treasury_tcb,
        book=book,
    )
    return state


async def stopped(state: Chain) -> None:
    for task in state.settlers:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await state.ton.close()


def _attested_pod(pods: list[PodFacts], rev: str) -> PodFacts | None:
    for pod in pods:
        if (
            pod.revision == rev
            and not pod.deleting
            and pod.attested_gate is v1alpha1.ConditionStatus.TRUE
            and pod.host_ip
            and pod.instance is not None
        ):
            return pod
    return None


async def _read_stats(
    worker: v1alpha1.CocoonWorker,
    pod: PodFacts,
    *,
    key: tuple[str, str],
    deps: Deps,
    logger: Logger,
) -> WorkerStats | None:
    """The worker's ``/jsonstats``; None when it cannot be read (logged). A runner that
    has not initialised (it waits for 2.1 TON, BaseRunner.cpp) is no error here: its
    wallet is funded from the derived address all the same."""
    client = deps.worker_client(pod)
    if client is None:
        logger.warning(
            "chain check of %s/%s: pod %s trusts no control key this operator holds",
            *key,
            pod.name,
        )
        return None
    try:
        # Urgent until the worker is Ready: this reading may make it so. The
        # slot is not held while a top-up is awaited (by the caller).
        async with deps.probes.slot(urgent=worker.status.phase != Phase.READY), client:
            return await client.stats()
    except WorkerNotInitialisedError as exc:
        logger.info("chain check of %s/%s: %s; read again next check", *key, exc)
    except (WorkerStatsError, OSError, TimeoutError) as exc:
        logger.warning("chain check of %s/%s: %s", *key, exc)
    return None


async def _read_balance(
    state: Chain,
    worker: v1alpha1.CocoonWorker,
    address: str,
    *,
    key: tuple[str, str],
    deps: Deps,
    now: dt.datetime,
    logger: Logger,
) -> BalanceReading | None:
    """The node wallet's balance: from the fleet's balance book (at most one interval
    old), or without one read from the chain when due
    (:func:`~cocoon_operator.policy.chain.balance_read_due`), else the last reading."""
    last = state.balances.get(key)
    # The fleet's balance book serves the reading (at most one interval old).
    if state.book is not None:
        try:
            seen = await state.book.balance(address)
        except TonError as exc:  # the v3 read failed, and so did the v2 one after it
            deps.metrics.chain_errors.labels("getAddressBalance").inc()
            logger.warning("chain check of %s/%s: %s", *key, exc)
            return None
        read_at = now - dt.timedelta(seconds=seen.age)
        if last is not None and last.address == address and last.read_at >= read_at:
            return last  # this check's own later reading (after a top-up) is newer
        reading = state.balances[key] = next_reading(last, address, seen.balance, read_at)
        return reading
    minimum = worker.spec.funding.minimum
    interval = state.check_seconds
    if last is not None and not balance_read_due(
        last, address=address, minimum=minimum, now=now, interval=interval
    ):
        return last
    try:
        with deps.metrics.chain_seconds.labels("getAddressBalance").time():
            balance = await state.ton.get_address_balance(address)
    except TonError as exc:
        deps.metrics.chain_errors.labels("getAddressBalance").inc()
        logger.warning("chain check of %s/%s: %s", *key, exc)
        return None
    reading = state.balances[key] = next_reading(last, address, balance, now)
    return reading


def _verified(deps: Deps, key: tuple[str, str], pod: PodFacts) -> LastVerification | None:
    """This operator's own last verification of ``pod`` (its trust store, never the
    status); None when it has not verified that pod since it started."""
    last = deps.trust.verified.get(key)
    return last if last is not None and last.pod_uid == pod.uid else None


NOT_VERIFIED_YET = "not verified by this operator process yet; looked at again once it is"


async def _announce(
    state: Chain,
    deps: Deps,
    body: kopf.Body,
    *,
    key: tuple[str, str],
    reason: str,
    message: str,
    logger: Logger,
) -> None:
    """A warning Event for an operator policy that held something back, once per change
    (the checks repeat every few seconds; the condition carries it meanwhile)."""
    if state.announced.get(key) == f"{reason}:{message}":
        return
    state.announced[key] = f"{reason}:{message}"
    logger.warning("%s/%s: %s: %s", *key, reason, message)
    await deps.record(body, reason, message, warning=True)


def _derived_wallet(reports: NodeReports | None, pod: PodFacts) -> str | None:
    """The address the pod's launcher derived from its node wallet key, if reported."""
    return reports.node_wallet(pod.node, pod.uid) if reports is not None else None


async def _wallet_facts(
    state: Chain,
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    pod: PodFacts,
    rev: str,
    *,
    reading: allowlist.Listing | None,
    image: str,
    tick: Tick,
    now: dt.datetime,
    alive: Callable[[tuple[str, str]], bool],
) -> tuple[WalletStatus, EarningsStatus | None] | None:
    """Read the worker and its node wallet, fund the wallet when due (the derived
    address only: :func:`~cocoon_operator.policy.chain.wallet_to_fund`), and return
    what status should say; None when nothing could be read. ``alive``: whether a
    worker still has launcher pods (a wallet's first user that is gone yields it)."""
    deps, key, logger = tick.deps, tick.key, tick.logger
    stats, reported = await _stats_if_due(state, body, worker, pod, tick=tick, now=now)
    choice = wallet_to_fund(
        _derived_wallet(tick.runtime.node_reports, pod), reported, state.own_wallet(key, rev)
    )
    if choice.address is None:
        return None  # no derived address and none reported yet: nothing to read
    seen = await _read_balance(
        state, worker, choice.address, key=key, deps=deps, now=now, logger=logger
    )
    if seen is None:
        return None
    address, balance = seen.address, seen.balance
    if stats is not None and reported is not None:
        await _act_on_stats(
            state,
            body,
            worker,
            pod,
            stats=stats,
            reported=reported,
            choice=choice,
            tick=tick,
            now=now,
        )
    note = worker.status.wallet.funding if worker.status.wallet else None
    limit = worker.status.wallet.limit if worker.status.wallet else None
    if choice.mismatch is not None:
        note = limit = None
        logger.warning("chain check of %s/%s: %s", *key, choice.mismatch)
    elif not allowlist.listed(reading, rev, image):
        note = "not funded until the root contract lists the image and model hashes"
        limit = None
    elif (first := state.wallet_user(key, address, alive)) != key:
        note = (
            f"node wallet {address} is also worker {first[0]}/{first[1]}'s (the same node"
            " wallet key and owner): funded once, for that worker"
        )
        limit = PolicyCode.SHARED_WALLET.value
        await _announce(state, deps, body, key=key, reason=limit, message=note, logger=logger)
    elif balance < worker.spec.funding.minimum:
        verified = _verified(deps, key, pod)
        refused = tcb_refusal(verified.tcb_status, state.treasury_tcb) if verified else None
        if verified is None:
            note, limit = f"not topped up: {NOT_VERIFIED_YET}", None
        elif refused is not None:
            note, limit = f"not topped up: {refused}", PolicyCode.TCB_NOT_FUNDED.value
        else:
            answer, balance = await _top_up(
                state, worker.spec.funding, key, address, balance, logger=logger
            )
            note, limit = answer.note, answer.limit
            seen = state.balances[key] = next_reading(seen, address, balance, now)
        if limit is not None and note is not None:
            await _announce(state, deps, body, key=key, reason=limit, message=note, logger=logger)
    wallet = WalletStatus(
        address=address,
        balance=balance,
        funding=note,
        mismatch=choice.mismatch,
        limit=limit,
        checked_at=rfc3339(seen.read_at),
    )
    deps.metrics.balance.labels(*key).set(balance)
    if stats is None:
        return wallet, None
    deps.metrics.earned_tokens.labels(*key).set(stats.earned_tokens)
    earnings = EarningsStatus(
        earned_tokens=stats.earned_tokens,
        paid_out_tokens=stats.paid_out_tokens,
        checked_at=rfc3339(now),
    )
    return wallet, earnings


async def check_chain(state: Chain, tick: Tick) -> None:
    """One worker's chain facts, and a top-up when it is due."""
    key = tick.key
    if tick.deleting:
        state.forget(key)
        return
    current = tick.current()
    if current is None:
        return
    body, worker = current
    deps, logger, runtime = tick.deps, tick.logger, tick.runtime
    rev = revision(worker.spec)
    now = deps.clock()
    pod = _attested_pod(tick.pods(), rev)
    # Attested by this operator itself, and still so: a gate someone else opened
    # (pods/status), or one held open from before a restart, funds nothing until
    # the attestation step has verified the pod's evidence again.
    image = deps.trust.verified_image(key, pod.uid, now) if pod is not None else None
    if image is None:
        pod = None
    reading = deps.trust.listings.get(key)
    if pod is not None and (
        reading is None or reading.revision != rev or reading.image_hash != image
    ):
        # No reading of this operator's own for the image it verified (a restart, a
        # new verdict): the reconcile takes one (read_lists), and decides with it.
        await reconcile_body(runtime, body, tick.indexes, logger)
        reading = deps.trust.listings.get(key)
    needed = allowlist.unregistered(reading, rev)
    if needed:
        # Registered together, in one owner message, once the image is attested.
        complete = reading is not None and image is not None and reading.image_hash == image
        if pod and complete and state.registrar is not None and worker.spec.register_on_root:
            refused = _registration_refused(deps, state, key, pod, needed)
            if refused is None:
                await _register(
                    state, state.registrar, body, worker, needed, deps=deps, logger=logger
                )
            elif refused != NOT_VERIFIED_YET:
                await _announce(
                    state,
                    deps,
                    body,
                    key=key,
                    reason="NotRegistered",
                    message=f"not registered: {refused}",
                    logger=logger,
                )
        # Registered, or held: the reconcile re-reads the lists (and starts a
        # held worker's VM once they are listed).
        await reconcile_body(runtime, body, tick.indexes, logger)
        return
    if pod is None or image is None:
        if pod is None and _before_start_due(state, tick, rev=rev, reading=reading):
            await _start_funding_step(state, body, worker, rev, tick=tick)
        return

    def alive(other: tuple[str, str]) -> bool:
        return bool(deps.worker_pods(tick.indexes.pods, *other))

    facts = await _wallet_facts(
        state,
        body,
        worker,
        pod,
        rev,
        reading=reading,
        image=image,
        tick=tick,
        now=now,
        alive=alive,
    )
    if facts is None:
        return
    wallet, earnings = facts
    changes = status_changes(worker.status, wallet, earnings, now=now)
    if not changes and listing_holds(state.lists, worker, deps.trust.listings.get(key)):
        # Nothing learned: the wallet and earnings stand as written, and so does the
        # reading of the lists the worker's conditions were derived from. A reconcile
        # here was 12% of the operator's CPU at rest at 1,000 workers (docs/bench.md).
        return
    await reconcile_body(runtime, body, tick.indexes, logger, recorded=changes)


def listing_holds(
    lists: AllowListReader, worker: v1alpha1.CocoonWorker, listing: allowlist.Listing | None
) -> bool:
    """Whether the root contract's verdicts on the worker's hashes, as the fleet's reader
    holds them now without reading the chain, are those its conditions were derived
    from. An expired verdict (every check interval) is False: the reconcile reads
    it again (:func:`read_lists`), so a hash taken off the list is seen as before."""
    if listing is None:
        return False
    root = normalize_address(worker.spec.root_contract_address)
    model = lists.cached(root, AllowList.MODEL, bytes.fromhex(listing.model_hash))
    if model is None or model != listing.model_listed:
        return False
    if listing.image_hash is None:
        return True
    image = lists.cached(root, AllowList.WORKER, bytes.fromhex(listing.image_hash))
    return image is not None and image == listing.image_listed


def _registration_refused(
    deps: Deps, state: Chain, key: tuple[str, str], pod: PodFacts, needed: list[tuple[str, str]]
) -> str | None:
    """Why an attested worker's missing hashes are not registered now, from this
    operator's own verification of its pod: its TCB status must be one the
    treasury accepts, and the image hash to register the one it verified."""
    verified = _verified(deps, key, pod)
    if verified is None:
        return NOT_VERIFIED_YET
    refused = tcb_refusal(verified.tcb_status, state.treasury_tcb)
    if refused is not None:
        return refused
    for kind, value in needed:
        if kind == AllowList.WORKER.value and value != verified.image_hash:
            return f"image hash {value} is not the one this operator verified for the pod"
    return None


async def _stats_if_due(
    state: Chain,
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    pod: PodFacts,
    *,
    tick: Tick,
    now: dt.datetime,
) -> tuple[WorkerStats | None, str | None]:
    """The worker's stats when a reading is due (:func:`stats_read_due`), and the wallet
    it names: just read, or from the last reading while none is due. (None, None)
    when a reading was due and failed: read again next check."""
    key = tick.key
    last = state.stats.get(key)
    due = stats_read_due(
        last,
        pod=pod.name,
        ready=worker.status.phase == Phase.READY,
        payout_requested=_payout_requested(body, worker) is not None,
        now=now,
        interval=state.check_seconds,
    )
    if not due and last is not None:
        tick.deps.metrics.worker_stats_reads.labels("kept").inc()
        return None, last.wallet
    tick.deps.metrics.worker_stats_reads.labels("read").inc()
    stats = await _read_stats(worker, pod, key=key, deps=tick.deps, logger=tick.logger)
    if stats is None:
        state.stats.pop(key, None)
        return None, None
    return stats, normalize_address(stats.wallet_address)


async def _act_on_stats(
    state: Chain,
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    pod: PodFacts,
    *,
    stats: WorkerStats,
    reported: str,
    choice: WalletChoice,
    tick: Tick,
    now: dt.datetime,
) -> None:
    """What a fresh reading asks for (the coefficient check's cue, a payout), and the
    reading kept: whether it asked anything decides when the next one is due."""
    deps, key = tick.deps, tick.key
    # The same reading tells the coefficient check whether it has anything to do.
    applied = deps.saw_coefficient(
        key, pod.name, wanted=worker.spec.coefficient, seen=stats.coefficient
    )
    payout = await _payout_if_due(body, worker, pod, stats, deps=deps, logger=tick.logger)
    asked = payout or stats.payout_running or not applied or choice.mismatch is not None
    state.stats[key] = next_stats_reading(
        state.stats.get(key),
        pod.name,
        reported,
        now,
        asked=asked,
        ready=worker.status.phase == Phase.READY,
    )


async def _payout_if_due(
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    pod: PodFacts,
    stats: WorkerStats,
    *,
    deps: Deps,
    logger: Logger,
) -> bool:
    """A payout when a person asked for one (annotation) or spec.payout says so; whether
    one was due.

    A person's request is asked for at most once, across restarts
    (:mod:`.payouts`); the threshold needs no record: a payout sent raises the
    worker's ``expected_cached_out_tokens`` at once (WorkerProxyInfo.h:84-86),
    so the unpaid figure drops below the threshold with the request.
    """
    meta = body["metadata"]
    person = _payout_requested(body, worker)
    why = payout_due(
        worker.spec.payout,
        unpaid_tokens=stats.unpaid_tokens,
        running=stats.payout_running,
        requested=person,
    )
    if why is None:
        return False
    try:
        client = deps.worker_client(pod)
        if client is None:
            logger.warning(
                "payout of %s/%s: pod %s trusts no control key this operator holds",
                meta["namespace"],
                meta["name"],
                pod.name,
            )
            return True
        async with client as w:
            if person is not None:
                answers = await ask_for_payouts(
                    deps, meta["namespace"], pod, w, stats, purpose=person
                )
            else:
                owed = [a for a, p in proxies_now(stats).items() if p.owed > 0 and not p.running]
                answers = await ask_proxies(deps, w, owed)
    except (WorkerStatsError, OSError, TimeoutError) as exc:
        # Asked again at the next check: a person's request stays unhandled.
        logger.warning(
            "payout of %s/%s: worker unreachable (%s)", meta["namespace"], meta["name"], exc
        )
        return True
    await deps.record(body, "PayoutRequested", f"{why}; " + "; ".join(answers))
    if person is not None:
        await deps.patch_status(meta["namespace"], meta["name"], {"payoutRequestHandled": person})
    return True


def _payout_requested(body: kopf.Body, worker: v1alpha1.CocoonWorker) -> str | None:
    """A person's payout request (the annotation's value) not acted upon yet, or None."""
    annotations = body["metadata"].get("annotations") or {}
    requested = annotations.get(v1alpha1.PAYOUT_REQUEST_ANNOTATION)
    return requested if requested and requested != worker.status.payout_request_handled else None


async def _register(
    state: Chain,
    registrar: Registrar,
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    needed: list[tuple[str, str]],
    *,
    deps: Deps,
    logger: Logger,
) -> None:
    """Register the missing hashes of an attested worker; an Event when something went."""
    meta = body["metadata"]
    root = normalize_address(worker.spec.root_contract_address)
    wanted = [(AllowList(kind), value) for kind, value in needed]
    try:
        note = await registrar.register(f"{meta['namespace']}/{meta['name']}", root, wanted)
    except TonError as exc:
        deps.metrics.chain_errors.labels("register").inc()
        logger.warning("registration for %s/%s: %s", meta["namespace"], meta["name"], exc)
        return
    for kind, value in wanted:
        state.lists.forget(root, kind, bytes.fromhex(value))
    what = " and ".join(f"{k.value} hash {v}" for k, v in wanted)
    logger.info("%s/%s: %s: %s", meta["namespace"], meta["name"], note, what)
    if note in {"registered", "registration in flight"}:
        await deps.record(
            body,
            "Registered" if note == "registered" else "RegistrationSent",
            f"{note} on root {root}: {what}",
        )
    elif note.startswith("not registered"):
        await deps.record(body, "NotRegistered", note, warning=True)


def _before_start_due(
    state: Chain,
    tick: Tick,
    *,
    rev: str,
    reading: allowlist.Listing | None,
) -> bool:
    """Whether the worker's wallet is looked at (and funded) before its VM starts now: a
    namespace funded before start, this operator's own reading lists the revision's
    model hash, and no launcher pod of the revision exists yet."""
    return (
        state.funds_before_start(tick.key[0])
        and reading is not None
        and reading.revision == rev
        and reading.model_listed
        and not any(p.revision == rev for p in tick.pods())
    )


async def _start_funding_step(
    state: Chain,
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    rev: str,
    *,
    tick: Tick,
) -> None:
    """Fund before start (:func:`_fund_before_start`), then write what was seen as
    ``status.wallet`` with the conditions it implies; the reconcile creates the launcher
    pod in the same pass when the chain shows the start floor."""
    deps, key, logger = tick.deps, tick.key, tick.logger
    await _fund_before_start(state, body, worker, rev, key=key, deps=deps, logger=logger)
    look = state.start_funding[key]
    now = deps.clock()
    wallet = WalletStatus(
        address=look.address,
        balance=look.balance,
        funding=look.note,
        limit=look.limit,
        checked_at=rfc3339(now),
    )
    changes = status_changes(worker.status, wallet, None, now=now)
    await reconcile_body(tick.runtime, body, tick.indexes, logger, recorded=changes)


async def _derive_node_wallet(
    api: Kube, worker: v1alpha1.CocoonWorker, namespace: str
) -> tuple[str | None, str]:
    """The worker's node wallet address (raw), derived offline from its key Secret and
    owner exactly as the launcher does (``launcher/_run.py: node_wallet``, COCOON's
    ``CocoonWallet``, ``ton/cocoonwallet.py``), or None and why not.

    The Secret holds the private key seed: it is read to compute the public key and
    nothing else, never logged or kept (errors never quote it: ``parse_node_wallet_key``
    says what is wrong without the key, and the apiserver's refusals carry no data).
    Whitespace around the value is stripped, as the launcher strips the mounted file.
    """
    ref = worker.spec.node_wallet_key_secret_ref
    try:
        secret = await api.request("GET", path("v1", "secrets", namespace=namespace, name=ref.name))
    except (Forbidden, NotFound) as exc:
        return (
            None,
            f"cannot read its node wallet key Secret {ref.name}: {exc.status} {exc.reason}",
        )
    encoded = (secret.get("data") or {}).get(ref.key)
    if not isinstance(encoded, str):
        return None, f"Secret {ref.name} has no key {ref.key!r}"
    try:
        text = base64.b64decode(encoded).decode("ascii").strip()
        public_key = parse_node_wallet_key(text).public_key
        address = node_wallet_address(public_key, worker.spec.owner_address).to_raw()
    except (ValueError, TonError) as exc:  # NodeWalletKeyError and AddressError are both
        return None, f"Secret {ref.name} key {ref.key!r}: {type(exc).__name__}: {exc}"[:300]
    return address, "derived from its key Secret and owner"


async def _fund_before_start(
    state: Chain,
    body: kopf.Body,
    worker: v1alpha1.CocoonWorker,
    rev: str,
    *,
    key: tuple[str, str],
    deps: Deps,
    logger: Logger,
) -> None:
    """Look at a worker's node wallet before its VM starts, and top it up to COCOON's start
    floor when short, within the operator's limits; the look goes to
    ``state.start_funding`` (the reconcile's :func:`start_hold` reads it).

    The same treasury path as every top-up (:class:`FundingBatcher`, the ledger's
    intents, the caps counted against this worker and this wallet), so a crash
    between intent and confirmation never pays twice, and the later top-up to the
    target after attestation counts against the same daily cap.
    """
    address, why = await _derive_node_wallet(deps.api, worker, key[0])
    if address is None:
        logger.warning("funding %s/%s before start: %s", *key, why)
        state.start_funding[key] = StartFunding(rev, None, None, f"not funded: {why}")
        return
    try:
        balance = await state.ton.get_address_balance(address)
    except TonError as exc:
        deps.metrics.chain_errors.labels("getAddressBalance").inc()
        logger.warning("funding %s/%s before start: %s", *key, exc)
        state.start_funding[key] = StartFunding(rev, address, None, f"balance not read: {exc}")
        return
    if balance >= FUNDING_FLOOR:
        state.start_funding[key] = StartFunding(rev, address, balance, "at the start floor")
        return
    bounds = start_funding_bounds(worker.spec.funding, key[0], state.funding_limits)
    if bounds.target <= balance or state.batcher is None:
        note = f"not topped up: {bounds.capped or 'no treasury configured'}"
        state.start_funding[key] = StartFunding(
            rev, address, balance, note, PolicyCode.FUNDING_LIMITED.value
        )
        await _announce(
            state, deps, body, key=key, reason="FundingLimited", message=note, logger=logger
        )
        return
    answer, balance = await _ask_treasury(
        state,
        state.batcher,
        key,
        address,
        balance,
        minimum=FUNDING_FLOOR,
        bounds=bounds,
        logger=logger,
        what="funding before start",
    )
    funded = answer.note.startswith("topped up")
    note = f"{answer.note} before the VM started" if funded else answer.note
    if bounds.capped is not None and funded:
        note = f"{note}; {bounds.capped}"
    state.start_funding[key] = StartFunding(rev, address, balance, note, answer.limit, funded)
    if funded:
        logger.info("%s/%s: %s (node wallet %s)", *key, note, address)
        await deps.record(
            body,
            "FundedBeforeStart",
            f"node wallet {address}: {note}; balance {format_ton(balance)} TON",
        )
    elif answer.limit is not None:
        await _announce(
            state, deps, body, key=key, reason=answer.limit, message=note, logger=logger
        )


async def _ask_treasury(
    state: Chain,
    batcher: FundingBatcher,
    key: tuple[str, str],
    address: str,
    balance: Nanoton,
    *,
    minimum: int,
    bounds: Bounds,
    logger: Logger,
    what: str,
) -> tuple[TopUpAnswer, Nanoton]:
    """One top-up request to the fleet's treasury within ``bounds`` (before the VM
    starts, or after attestation); its answer and the wallet's balance read after it
    (the one before, if that read fails)."""
    answer = await batcher.answer(
        TopUpRequest(
            worker=f"{key[0]}/{key[1]}",
            address=address,
            balance=balance,
            minimum=minimum,
            target=bounds.target,
            daily_cap=bounds.daily_cap,
        )
    )
    try:
        balance = await state.ton.get_address_balance(address)
    except TonError as exc:
        logger.warning("balance of %s/%s after %s: %s", *key, what, exc)
    return answer, balance


async def _top_up(
    state: Chain,
    funding: v1alpha1.Funding,
    key: tuple[str, str],
    address: str,
    balance: Nanoton,
    *,
    logger: Logger,
) -> tuple[TopUpAnswer, Nanoton]:
    """Ask the treasury for a top-up within the operator's limits for the worker's
    namespace (:func:`~cocoon_operator.policy.treasury.funding_bounds`); the answer
    and the balance after it."""
    if state.batcher is None:
        return TopUpAnswer("below the minimum; no treasury configured"), balance
    bounds = funding_bounds(funding, key[0], state.funding_limits)
    if bounds.target <= balance:
        # Below the spec's minimum but at the operator's capped target already.
        return TopUpAnswer(
            f"not topped up: {bounds.capped}", PolicyCode.FUNDING_LIMITED.value
        ), balance
    answer, balance = await _ask_treasury(
        state,
        state.batcher,
        key,
        address,
        balance,
        minimum=funding.minimum,
        bounds=bounds,
        logger=logger,
        what="funding",
    )
    if answer.note.startswith("topped up"):
        logger.info("%s/%s: %s", *key, answer.note)
        if bounds.capped is not None:
            answer = TopUpAnswer(
                f"{answer.note}; {bounds.capped}", PolicyCode.FUNDING_LIMITED.value
            )
    return answer, balance


def _dump(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def _changed(old: Any, new: Any, *, ignore: str = "checkedAt") -> bool:
    before = _dump(old) if old is not None else {}
    after = _dump(new)
    before.pop(ignore, None)
    after.pop(ignore, None)
    return before != after


def status_changes(
    status: v1alpha1.CocoonWorkerStatus,
    wallet: WalletStatus,
    earnings: EarningsStatus | None,
    *,
    now: dt.datetime,
) -> dict[str, Any]:
    """The wallet and earnings fields worth a write (a merge patch; empty when a
    check found the same facts), against ``status``: the worker's parsed status,
    not a second parse of it at every check (2.9% of the steady state at 1,000
    workers, docs/bench.md). The reconcile writes them with the conditions."""
    patch: dict[str, Any] = {}
    if _changed(status.wallet, wallet):
        patch["wallet"] = _dump(wallet)
    if earnings is not None and earnings_due(status.earnings, earnings, now=now):
        patch["earnings"] = _dump(earnings)
    return patch


def register(
    registry: kopf.OperatorRegistry, runtime: Runtime, options: ChainOptions, interval: float
) -> Check:
    """Add the chain step's start and stop to ``registry``; its state lives here, made at
    startup, and every reconcile reads the allow-lists through ``runtime.read_lists``
    from then on; the check of each attested worker, every ``interval`` s, for the
    checks' scheduler (:mod:`.checks`)."""
    step: list[Chain] = []

    async def start(*, logger: Logger, **_: Any) -> None:
        deps = runtime.deps
        state = await started(options, deps, logger)
        step.append(state)

        async def lists_for(observed: ObservedWorker) -> ObservedWorker:
            return await read_lists(state, deps.trust, deps.clock(), observed)

        runtime.read_lists = lists_for

    async def stop(**_: Any) -> None:
        for state in step:
            await stopped(state)

    async def check(tick: Tick) -> None:
        if step:
            await check_chain(step[0], tick)

    kopf.on.startup(id="chain-start", registry=registry)(start)
    kopf.on.cleanup(id="chain-stop", registry=registry)(stop)
    return Check("chain", check, interval)


__all__ = ["ChainOptions", "FundingBatcher", "register"]
