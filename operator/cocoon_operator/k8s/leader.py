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

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.k8s.objects import MERGE_PATCH
from cocoon_operator.policy.leader import may_take

log = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
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

    async def try_acquire(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        now = self._clock()
        try:
            lease = await self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            body: Any = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, 0),
            }
            try:
                await self._api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_err:
                if create_err.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity if spec else None
        renewed = spec.renew_time if spec else None
        duration = (spec.lease_duration_seconds if spec else None) or self._lease_seconds
        if not may_take(holder, renewed, duration, identity=self.identity, now=now):
            return False
        transitions = (spec.lease_transitions or 0) if spec else 0
        new_spec = self._spec(now, transitions if holder == self.identity else transitions + 1)
        if holder == self.identity and spec is not None and spec.acquire_time is not None:
            new_spec["acquireTime"] = spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        replacement: Any = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": new_spec,
        }
        try:
            await self._api.replace_namespaced_lease(self.name, self.namespace, replacement)
        except ApiException as err:
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
            except (ApiException, OSError) as exc:
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
            except (ApiException, OSError) as exc:
                log.warning("leader election: renewal failed: %s", exc)
            if asyncio.get_running_loop().time() - last_renewal >= self._lease_seconds:
                log.error("leader election: could not renew for %ss", self._lease_seconds)
                return

    async def release(self) -> None:
        """Hand over at once on a clean shutdown: expire our own Lease."""
        try:
            lease = await self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            body: Any = {"spec": {"holderIdentity": None}}
            await self._api.patch_namespaced_lease(self.name, self.namespace, body, **MERGE_PATCH)
        except (ApiException, OSError) as exc:
            log.warning("leader election: release failed: %s", exc)
