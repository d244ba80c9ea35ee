"""The chain step: allow-lists, the node wallet and its funding, earnings.

Runs only for attested workers (the pod's gate is True), so nothing unverified
is ever funded. A timer per worker:

1. reads ``/jsonstats`` over the RA-TLS channel pinned to the certificate the
   attestation step verified: the node wallet's address, whether the worker
   finds its image and model hashes on the root contract, token counts;
2. reads the wallet's balance from the chain (authoritative, unlike the
   worker's own figure);
3. when both hashes are listed and the balance is below ``funding.minimum``,
   asks the fleet's :class:`FundingBatcher` for a top-up, which the treasury
   sends crash-safely, four transfers per message;
4. writes ``status.chain``, ``status.wallet`` and ``status.earnings`` and runs
   the worker's reconcile, which derives OnChainAllowed, WalletFunded, Ready.

Enabled by ``cocoon-operator run --ton-endpoint`` (see :func:`register`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
from kubernetes_asyncio import client
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.v1alpha1 import ChainStatus, EarningsStatus, WalletStatus
from cocoon_operator.desired.launcher import revision
from cocoon_operator.funding import FundingReport, TopUpRequest, Treasury
from cocoon_operator.handlers.worker import (
    WORKERS,
    Deps,
    Indexes,
    Logger,
    PodIndex,
    reconcile_body,
)
from cocoon_operator.k8s.ledger import ConfigMapLedgerStore
from cocoon_operator.k8s.objects import patch_worker_status
from cocoon_operator.metrics import Metrics
from cocoon_operator.policy.chain import earnings_due
from cocoon_operator.policy.conditions import rfc3339
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.ton.address import normalize_address
from cocoon_operator.ton.amounts import format_ton
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.errors import TonError
from cocoon_operator.ton.wallet import WalletKey
from cocoon_operator.workerapi import WorkerStatsError, fetch_stats

SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class ChainOptions:
    """What ``cocoon-operator run`` was told about the chain and the treasury."""

    endpoint: str
    api_key_file: Path | None = None
    treasury_secret: tuple[str, str] | None = None  # namespace, name
    global_daily_cap: int = 1000 * v1alpha1.NANO_PER_TON
    ledger: tuple[str, str] = ("default", "cocoon-funding-ledger")
    check_seconds: float = 30.0


def _describe(report: FundingReport, worker: str) -> str:
    for transfer in report.confirmed:
        if transfer.worker == worker:
            return f"topped up {format_ton(transfer.amount)} TON"
    for transfer in report.pending:
        if transfer.worker == worker:
            return "a top-up is in flight"
    for refusal in report.refused:
        if refusal.worker == worker:
            return f"not topped up: {refusal.reason}"
    return "no top-up needed"


@dataclass
class FundingBatcher:
    """Collects top-up requests for a moment and funds them in one treasury cycle.

    Cycles never overlap: the treasury's ledger is the single writer's.
    """

    treasury: Treasury
    metrics: Metrics = field(default_factory=Metrics)
    window_seconds: float = 0.5
    _waiting: list[tuple[TopUpRequest, asyncio.Future[str]]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _flusher: asyncio.Task[None] | None = None

    async def request(self, req: TopUpRequest) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((req, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def settle_forever(self, interval: float, logger: Logger) -> None:
        """Resolve intents left pending (by a crash, a lost response) without waiting
        for another worker to need funds; the first pass runs at start."""
        while True:
            async with self._lock:
                try:
                    report = await self.treasury.settle()
                except Exception as exc:  # a transient chain error: try again later
                    logger.warning("settling pending funding intents: %s", exc)
                else:
                    self._count(report)
                    for transfer in report.confirmed:
                        logger.info("funding of %s confirmed on chain", transfer.worker)
                    for transfer in report.expired:
                        logger.info("funding of %s expired unsent", transfer.worker)
            await asyncio.sleep(interval)

    async def _flush(self) -> None:
        await asyncio.sleep(self.window_seconds)
        async with self._lock:
            batch, self._waiting = self._waiting, []
            if not batch:
                return
            try:
                report = await self.treasury.fund([req for req, _ in batch])
            except Exception as exc:  # every waiter must get an answer
                # Exception texts of the TON client are redacted; keys never reach them.
                for _, future in batch:
                    future.set_result(f"funding failed: {type(exc).__name__}: {exc}")
                return
            self._count(report)
            for req, future in batch:
                future.set_result(_describe(report, req.worker))

    def _count(self, report: FundingReport) -> None:
        m = self.metrics
        m.funding_transfers.labels("confirmed").inc(len(report.confirmed))
        m.funding_transfers.labels("pending").inc(len(report.pending))
        m.funding_transfers.labels("expired").inc(len(report.expired))
        m.funding_transfers.labels("refused").inc(len(report.refused))
        m.funding_nanoton.inc(sum(t.amount for t in report.confirmed))


@dataclass
class Chain:
    ton: TonClient
    batcher: FundingBatcher | None
    settler: asyncio.Task[None] | None = None


async def _treasury_key(api: client.ApiClient, namespace: str, name: str) -> WalletKey:
    secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    data: dict[str, str] = secret.data or {}
    if "seed" in data:
        return WalletKey(bytes.fromhex(base64.b64decode(data["seed"]).decode().strip()))
    if "mnemonic" in data:
        return WalletKey.from_mnemonic(base64.b64decode(data["mnemonic"]).decode().split())
    raise kopf.PermanentError(f"secret {namespace}/{name} has neither 'seed' nor 'mnemonic'")


async def start(*, memo: Any, logger: Logger, **_: Any) -> None:
    options: ChainOptions | None = memo.get("chain_options")
    if options is None:
        return
    deps: Deps = memo["deps"]
    api_key = options.api_key_file.read_text().strip() if options.api_key_file else None
    ton = TonClient(options.endpoint, api_key=api_key, timeout=10.0)
    batcher = None
    if options.treasury_secret is not None:
        key = await _treasury_key(deps.api, *options.treasury_secret)
        store = ConfigMapLedgerStore(deps.api, *options.ledger)
        treasury = Treasury(ton, key, store, global_daily_cap=options.global_daily_cap)
        batcher = FundingBatcher(treasury, deps.metrics)
        logger.info(
            "funding node wallets from treasury %s (ledger %s/%s)",
            treasury.address,
            *options.ledger,
        )
    settler = (
        asyncio.create_task(batcher.settle_forever(SETTLE_SECONDS, logger)) if batcher else None
    )
    memo["chain"] = Chain(ton, batcher, settler)


async def stop(*, memo: Any, **_: Any) -> None:
    state: Chain | None = memo.get("chain")
    if state is not None:
        if state.settler is not None:
            state.settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.settler
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


async def check_chain(*, body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
    """One worker's chain facts, and a top-up when it is due."""
    state: Chain | None = memo.get("chain")
    if state is None or body["metadata"].get("deletionTimestamp"):
        return
    deps: Deps = memo["deps"]
    try:
        worker = v1alpha1.CocoonWorker.model_validate(dict(body))
    except ValidationError:
        return
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    pods: PodIndex = kwargs["launcher_pods"]
    pod = _attested_pod(list(pods.get(key, [])), revision(worker.spec))
    summary = worker.status.attestation
    if pod is None or summary is None or not summary.certificate_sha256:
        return
    assert pod.host_ip is not None and pod.instance is not None
    now = deps.clock()
    try:
        stats = await fetch_stats(
            pod.host_ip,
            InstanceSlot(pod.instance).ratls_port,
            certificate_sha256=summary.certificate_sha256,
        )
        address = normalize_address(stats.wallet_address)
        with deps.metrics.chain_seconds.labels("getAddressBalance").time():
            balance = await state.ton.get_address_balance(address)
    except TonError as exc:
        deps.metrics.chain_errors.labels("getAddressBalance").inc()
        logger.warning("chain check of %s/%s: %s", *key, exc)
        return
    except (WorkerStatsError, OSError, TimeoutError) as exc:
        logger.warning("chain check of %s/%s: %s", *key, exc)
        return
    model_hash = hashlib.sha256(worker.spec.model.cocoon_id.encode()).hexdigest()
    chain = ChainStatus(
        image_hash_listed=stats.image_hash_listed,
        model_hash_listed=stats.model_listed,
        model_hash=model_hash,
        source="worker",
        checked_at=rfc3339(now),
    )
    funding = worker.spec.funding
    note = worker.status.wallet.funding if worker.status.wallet else None
    listed = stats.image_hash_listed and stats.model_listed
    if listed and balance < funding.minimum:
        if state.batcher is None:
            note = "below the minimum; no treasury configured"
        else:
            note = await state.batcher.request(
                TopUpRequest(
                    worker=f"{key[0]}/{key[1]}",
                    address=address,
                    balance=balance,
                    minimum=funding.minimum,
                    target=funding.target,
                    daily_cap=funding.daily_cap,
                )
            )
            try:
                balance = await state.ton.get_address_balance(address)
            except TonError as exc:
                logger.warning("balance of %s/%s after funding: %s", *key, exc)
            if note.startswith("topped up"):
                logger.info("%s/%s: %s", *key, note)
    wallet = WalletStatus(address=address, balance=balance, funding=note, checked_at=rfc3339(now))
    deps.metrics.balance.labels(*key).set(balance)
    deps.metrics.earned_tokens.labels(*key).set(stats.earned_tokens)
    earnings = EarningsStatus(
        earned_tokens=stats.earned_tokens,
        paid_out_tokens=stats.paid_out_tokens,
        payouts=stats.payouts,
        checked_at=rfc3339(now),
    )
    await _record(deps, body, chain, wallet, earnings, now=now)
    await reconcile_body(
        _with_status(body, chain, wallet, earnings), memo, Indexes.of(kwargs), logger
    )


def _dump(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def _changed(old: Any, new: Any, *, ignore: str = "checkedAt") -> bool:
    before = _dump(old) if old is not None else {}
    after = _dump(new)
    before.pop(ignore, None)
    after.pop(ignore, None)
    return before != after


async def _record(
    deps: Deps,
    body: kopf.Body,
    chain: ChainStatus,
    wallet: WalletStatus,
    earnings: EarningsStatus,
    *,
    now: dt.datetime,
) -> None:
    """Write what changed; a check that finds the same facts writes nothing."""
    status = body.get("status") or {}
    parsed = v1alpha1.CocoonWorkerStatus.model_validate(dict(status))
    patch: dict[str, Any] = {}
    if _changed(parsed.chain, chain):
        patch["chain"] = _dump(chain)
    if _changed(parsed.wallet, wallet):
        patch["wallet"] = _dump(wallet)
    if earnings_due(parsed.earnings, earnings, now=now):
        patch["earnings"] = _dump(earnings)
    if patch:
        meta = body["metadata"]
        await patch_worker_status(deps.api, meta["namespace"], meta["name"], patch)


def _with_status(
    body: kopf.Body, chain: ChainStatus, wallet: WalletStatus, earnings: EarningsStatus
) -> kopf.Body:
    raw = dict(body)
    status = dict(raw.get("status") or {})
    status.update(chain=_dump(chain), wallet=_dump(wallet), earnings=_dump(earnings))
    raw["status"] = status
    return kopf.Body(cast(kopf.RawBody, raw))


def register(registry: kopf.OperatorRegistry, interval: float) -> None:
    """Add the chain step to ``registry``, checking each attested worker every ``interval`` s."""
    kopf.on.startup(id="chain-start", registry=registry)(start)
    kopf.on.cleanup(id="chain-stop", registry=registry)(stop)
    kopf.timer(*WORKERS, interval=interval, id="chain", registry=registry)(check_chain)


__all__ = ["ChainOptions", "FundingBatcher", "register"]
