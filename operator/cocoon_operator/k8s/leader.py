"""Lease-based leader election (coordination.k8s.io/v1), compare-and-swap by resourceVersion.

kopf's own peering only pauses handlers when it sees another operator; it
does not elect one. Here a replica acquires the Lease before it starts kopf,
renews it every ``renew_seconds``, and stops (exit, to be restarted as a
follower) when it cannot renew within ``lease_seconds``: it never acts
without the Lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from cocoon_operator.k8s.rest import MERGE_PATCH, ApiError, Kube, path
from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.policy.leader import may_take

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
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self._lease_seconds = lease_seconds
        self._renew = renew_seconds
        self._clock = clock

    def _spec(self, now: dt.datetime, transitions: int) -> dict[str, Any]:
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._lease_seconds,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }

    def _path(self, name: str | None = None) -> str:
        return path("coordination.k8s.io/v1", "leases", namespace=self.namespace, name=name)

    async def try_acquire(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        now = self._clock()
        try:
            lease = await self._api.request("GET", self._path(self.name))
        except ApiError as err:
            if err.status != 404:
                raise
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, 0),
            }
            try:
                await self._api.request("POST", self._path(), body=body)
            except ApiError as create_err:
                if create_err.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = parse_rfc3339(spec.get("renewTime"))  # a MicroTime
        duration = spec.get("leaseDurationSeconds") or self._lease_seconds
        if not may_take(holder, renewed, duration, identity=self.identity, now=now):
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
        except ApiError as err:
            if err.status == 409:
                return False  # someone else wrote it first
            raise
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
            await asyncio.sleep(self._renew)

    async def hold(self) -> None:
        """Renew until renewal fails for a whole lease duration; then return (leadership lost)."""
        last_renewal = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self._renew)
            try:
                if await self.try_acquire():
                    last_renewal = asyncio.get_running_loop().time()
                    continue
                log.error("leader election: another replica holds the Lease")
                return
            except _FAILED as exc:
                log.warning("leader election: renewal failed: %s", exc)
            if asyncio.get_running_loop().time() - last_renewal >= self._lease_seconds:
                log.error("leader election: could not renew for %ss", self._lease_seconds)
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
