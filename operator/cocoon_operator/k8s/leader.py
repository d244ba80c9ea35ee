"""Lease-based leader election (coordination.k8s.io/v1), compare-and-swap by resourceVersion.

kopf's own peering only pauses handlers when it sees another operator; it
does not elect one. Here a replica acquires the Lease before it starts kopf,
renews it every ``retry`` seconds, and stops (exit, to be restarted as a
follower) when no renewal succeeded within ``renew_deadline``, which is
shorter than the lease: a follower takes over only a whole lease after it
last saw the record change (by its own clock, :mod:`cocoon_operator.policy.leader`),
so the old leader has stopped acting ``lease - renew_deadline`` before.
These are client-go's semantics (k8s.io/client-go/tools/leaderelection:
``observedTime``, ``RenewDeadline``, ``RetryPeriod``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from cocoon_operator.k8s.rest import MERGE_PATCH, ApiError, Conflict, Kube, NotFound, path
from cocoon_operator.policy.leader import LeaseObserver, LeaseTimes, may_take, renew_timeout

log = logging.getLogger(__name__)

# A Lease request that failed: an error status, or no answer in time.
_FAILED = (ApiError, OSError, aiohttp.ClientError, asyncio.TimeoutError)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    def __init__(
        self,
        api: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        times: LeaseTimes | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.times = times or LeaseTimes.for_lease(15)
        self._clock = clock  # only to stamp the Lease for humans; never compared
        self._monotonic = monotonic
        self._observer = LeaseObserver()
        # When the request of the last successful acquire/renew was sent (monotonic).
        self.renewed_at: float | None = None

    def _spec(self, now: dt.datetime, transitions: int) -> dict[str, Any]:
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.times.lease)),
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }

    def _path(self, name: str | None = None) -> str:
        return path("coordination.k8s.io/v1", "leases", namespace=self.namespace, name=name)

    async def try_acquire(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        now = self._clock()
        sent = self._monotonic()
        try:
            lease = await self._api.request("GET", self._path(self.name))
        except NotFound:
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, 0),
            }
            try:
                await self._api.request("POST", self._path(), body=body)
            except Conflict:
                return False
            self.renewed_at = sent
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds") or self.times.lease
        # The holder's renewTime is read only as part of the record: any change
        # restarts the wait; its value is the holder's clock, not ours.
        record = tuple(
            str(spec.get(k))
            for k in ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions")
        )
        observed_at = self._observer.observe(record, sent)
        if not may_take(holder, observed_at, duration, identity=self.identity, now=sent):
            return False
        transitions = spec.get("leaseTransitions") or 0
        new_spec = self._spec(now, transitions if holder == self.identity else transitions + 1)
        if holder == self.identity and spec.get("acquireTime"):
            new_spec["acquireTime"] = spec["acquireTime"]
        replacement = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease["metadata"]["resourceVersion"],
            },
            "spec": new_spec,
        }
        try:
            await self._api.request("PUT", self._path(self.name), body=replacement)
        except Conflict:
            return False  # someone else wrote it first
        self.renewed_at = sent
        return True

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        while True:
            try:
                if await self.try_acquire():
                    log.info(
                        "leader election: %s leads (Lease %s/%s)",
                        self.identity,
                        self.namespace,
                        self.name,
                    )
                    return
            except _FAILED as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.times.retry)

    async def hold(self) -> None:
        """Renew every retry period; return (leadership lost) as soon as the renew
        deadline passes without a successful renewal, even while a renewal is still
        in flight: a slow apiserver must not keep this replica acting."""
        deadline = self.times.renew_deadline
        if self.renewed_at is None:
            self.renewed_at = self._monotonic()
        while True:
            left = renew_timeout(self.renewed_at, deadline, now=self._monotonic())
            await asyncio.sleep(max(0.0, min(self.times.retry, left)))
            left = renew_timeout(self.renewed_at, deadline, now=self._monotonic())
            if left <= 0:
                log.error("leader election: could not renew within %ss", deadline)
                return
            try:
                held = await asyncio.wait_for(self.try_acquire(), timeout=left)
            except _FAILED as exc:
                # Not refused: retried until the deadline (a timeout is the deadline).
                log.warning("leader election: renewal failed: %s", str(exc) or type(exc).__name__)
                continue
            if not held:
                log.error("leader election: another replica holds the Lease")
                return

    async def release(self) -> None:
        """Hand over at once on a clean shutdown: expire our own Lease."""
        try:
            lease = await self._api.request("GET", self._path(self.name))
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            await self._api.request(
                "PATCH",
                self._path(self.name),
                body={"spec": {"holderIdentity": None}},
                content_type=MERGE_PATCH,
            )
        except _FAILED as exc:
            log.warning("leader election: release failed: %s", exc)
