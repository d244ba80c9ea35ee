"""Two operator replicas: only the Lease holder acts; the other takes over after a
kill -9 of the leader within the lease time, and a clean stop hands over at once."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client

from tests.cluster.helpers import create_worker, worker_pods
from tests.cluster.operator import running_operator
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually, free_port

# The leader gives up after 2/3 of it without a renewal (client-go's renew
# deadline): long enough for an apiserver on a loaded test machine.
LEASE_SECONDS = 8


async def holder(api: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = await client.CoordinationV1Api(api).read_namespaced_lease(
            "cocoon-operator", namespace
        )
    except client.ApiException:
        return None
    return lease.spec.holder_identity if lease.spec else None


async def test_only_the_leader_acts_and_a_follower_takes_over_after_kill_9(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    args = (
        "--leader-elect",
        "--leader-election-namespace",
        namespace,
        "--lease-seconds",
        str(LEASE_SECONDS),
    )
    with running_operator(stack.kubeconfig, namespace, tmp_path / "a.log", *args) as first:

        async def led() -> str | None:
            return await holder(api, namespace)

        leader = await eventually(led, within=30, what="a leader")
        assert str(first.pid) in leader
        probe = free_port()
        liveness = ("--liveness", f"http://127.0.0.1:{probe}/healthz")
        with running_operator(
            stack.kubeconfig, namespace, tmp_path / "b.log", *args, *liveness
        ) as second:

            async def standing_by() -> bool:
                try:
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"http://127.0.0.1:{probe}/healthz") as resp,
                    ):
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            # The follower answers its liveness probe while it waits.
            await eventually(standing_by, within=30, what="the follower's liveness endpoint")
            await create_worker(api, namespace, "w0")
            await eventually(
                lambda: worker_pods(api, namespace, "w0"), within=30, what="the leader's launcher"
            )

            # The leader logs its LauncherCreated after the pod exists (the pod,
            # the status, the Event, then the log line): wait for the line.
            async def leader_logged() -> bool:
                return "LauncherCreated" in (tmp_path / "a.log").read_text()

            await eventually(leader_logged, within=30, what="the leader's LauncherCreated")
            # The follower waits: it never started its handlers.
            assert "LauncherCreated" not in (tmp_path / "b.log").read_text()

            first.kill()  # kill -9: no release, the Lease must expire
            first.wait()
            killed_at = time.monotonic()

            async def taken_over() -> str | None:
                now = await holder(api, namespace)
                return now if now and str(second.pid) in now else None

            await eventually(taken_over, within=LEASE_SECONDS * 4, what="failover")
            failover = time.monotonic() - killed_at
            # Lease expiry plus one retry period, with slack for a loaded machine.
            assert failover < 2 * LEASE_SECONDS + 3, failover

            await create_worker(api, namespace, "w1")
            await eventually(
                lambda: worker_pods(api, namespace, "w1"), within=30, what="the new leader acts"
            )
            assert second.poll() is None
        # A clean stop (SIGTERM) released the Lease rather than letting it expire.
        assert await holder(api, namespace) is None
