"""The launcher's control relay in front of a worker's unauthenticated port.

The upstream is the project's COCOON worker simulator (whose paths and answers
cite WorkerRunner.cpp) bound on loopback, as QEMU's forward is in the pod
(launcher/_plan.py, difference 5). Each refusal is checked for its status and
code, for leaving the worker untouched, and for not stopping the next good
request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from cocoon_operator.launcher._controlrelay import ControlLimits, ControlRelay
from cocoon_operator.launcher._quoterelay import InetAddress
from cocoon_operator.simulator import WorkerSimulator, start_simulator
from cocoon_operator.workerapi import (
    ControlRefusedError,
    ControlSigner,
    WorkerClient,
    WorkerNotInitialisedError,
)
from cocoon_operator.workerapi._signing import (
    HEADER_REFUSAL,
    generate_private_key_text,
    parse_public_key,
)

POD_UID = "0f6c4d1e-1111-4222-8333-944455556666"


@dataclass
class Relayed:
    sim: WorkerSimulator
    relay: ControlRelay
    signer: ControlSigner

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.relay.address.port}"

    def client(self, signer: ControlSigner | None = None, audience: str = POD_UID) -> WorkerClient:
        return WorkerClient(
            "127.0.0.1",
            self.relay.address.port,
            signer=signer,
            audience=audience if signer is not None else None,
            timeout_seconds=3.0,
        )

    def signed(self, target: str, *, method: str = "GET", body: bytes = b"") -> dict[str, str]:
        return self.signer.headers(audience=POD_UID, method=method, target=target, body=body)

    async def send(
        self,
        target: str,
        headers: dict[str, str] | None = None,
        *,
        method: str = "GET",
        body: bytes | None = None,
    ) -> tuple[int, str, str]:
        """One raw request; (status, refusal code or "", body)."""
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, URL(self.base + target, encoded=True), headers=headers, data=body
            ) as resp,
        ):
            return resp.status, resp.headers.get(HEADER_REFUSAL, ""), await resp.text()

    async def good_read_works(self) -> None:
        async with self.client(self.signer) as client:
            stats = await client.stats()
        assert stats.coefficient == self.sim.state.coefficient


def new_signer(clock: Callable[[], float] | None = None) -> ControlSigner:
    signer = ControlSigner.from_text(generate_private_key_text())
    return signer if clock is None else ControlSigner(signer.key, clock)


async def relay_in_front(
    upstream_port: int, signer: ControlSigner, limits: ControlLimits | None = None
) -> ControlRelay:
    relay = ControlRelay(
        vm="cocoon-instance-0",
        listen=InetAddress("127.0.0.1", 0),
        upstream=InetAddress("127.0.0.1", upstream_port),
        public_key=parse_public_key(signer.public_key),
        audience=POD_UID,
        limits=limits,
    )
    await relay.start()
    return relay


@pytest.fixture
async def relayed() -> AsyncIterator[Relayed]:
    sim = await start_simulator(proxies=1)
    signer = new_signer()
    relay = await relay_in_front(sim.http_port, signer, ControlLimits(upstream_timeout=1.0))
    try:
        yield Relayed(sim, relay, signer)
    finally:
        await relay.close()
        await sim.stop()


async def test_the_operators_signed_requests_reach_the_worker(relayed: Relayed) -> None:
    async with relayed.client(relayed.signer) as client:
        stats = await client.stats()
        page = await client.status_page()
        await client.disable()
        await client.set_coefficient(1500)
        proxy = stats.proxies[0].address
        answer = await client.payout(proxy)
    assert page.enabled is True
    assert relayed.sim.state.enabled is False  # WorkerRunner.cpp:209-214
    assert relayed.sim.state.coefficient == 1500
    assert answer  # the worker's own one-line answer, passed through
    assert relayed.relay.outcomes == {"forwarded": 5}


async def test_an_unsigned_control_is_refused_and_the_worker_untouched(relayed: Relayed) -> None:
    status, code, text = await relayed.send("/request/disable")
    assert (status, code) == (401, "unsigned")
    assert "no operator signature" in text
    assert relayed.sim.state.enabled is True
    async with relayed.client() as client:  # the client says why, naming the code
        with pytest.raises(ControlRefusedError) as refused:
            await client.payout("EQ" + "A" * 46)
    assert refused.value.code == "unsigned"
    await relayed.good_read_works()


async def test_a_read_is_signed_too(relayed: Relayed) -> None:
    status, code, _ = await relayed.send("/jsonstats")
    assert (status, code) == (401, "unsigned")
    await relayed.good_read_works()


async def test_a_signature_by_another_key_is_refused(relayed: Relayed) -> None:
    async with relayed.client(new_signer()) as client:
        with pytest.raises(ControlRefusedError) as refused:
            await client.disable()
    assert (refused.value.status, refused.value.code) == (403, "bad-signature")
    assert relayed.sim.state.enabled is True
    await relayed.good_read_works()


async def test_a_request_signed_for_another_pod_is_refused(relayed: Relayed) -> None:
    async with relayed.client(relayed.signer, audience="another-pod-uid") as client:
        with pytest.raises(ControlRefusedError) as refused:
            await client.disable()
    assert refused.value.code == "bad-signature"
    assert relayed.sim.state.enabled is True
    await relayed.good_read_works()


async def test_a_signed_request_with_another_query_is_refused(relayed: Relayed) -> None:
    headers = relayed.signed("/request/change_coefficient?coefficient=1.5")
    status, code, _ = await relayed.send("/request/change_coefficient?coefficient=0.1", headers)
    assert (status, code) == (403, "bad-signature")
    assert relayed.sim.state.coefficient == 1000
    await relayed.good_read_works()


@pytest.mark.parametrize("skew", [-31.0, 31.0, -3600.0])
async def test_a_request_outside_the_window_is_refused(relayed: Relayed, skew: float) -> None:
    late = new_signer(lambda: time.time() + skew)
    relay = await relay_in_front(relayed.sim.http_port, late)
    try:
        async with WorkerClient(
            "127.0.0.1", relay.address.port, signer=late, audience=POD_UID
        ) as client:
            with pytest.raises(ControlRefusedError) as refused:
                await client.disable()
    finally:
        await relay.close()
    assert (refused.value.status, refused.value.code) == (401, "stale")
    assert relayed.sim.state.enabled is True


async def test_a_replayed_request_is_refused(relayed: Relayed) -> None:
    headers = relayed.signed("/request/disable")
    assert (await relayed.send("/request/disable", headers))[:2] == (200, "")
    relayed.sim.state.set_enabled(True, 0.0)
    status, code, _ = await relayed.send("/request/disable", headers)
    assert (status, code) == (409, "replayed")
    assert relayed.sim.state.enabled is True
    await relayed.good_read_works()


@pytest.mark.parametrize(
    "target", ["/perf", "/simulator/state", "/", "/request/enable/../disable", "/stats/"]
)
async def test_a_path_the_operator_does_not_use_is_refused_even_signed(
    relayed: Relayed, target: str
) -> None:
    status, code, _ = await relayed.send(target, relayed.signed(target))
    assert (status, code) == (404, "unknown-path")
    await relayed.good_read_works()


async def test_another_method_is_refused(relayed: Relayed) -> None:
    headers = relayed.signed("/request/disable", method="POST")
    status, code, _ = await relayed.send("/request/disable", headers, method="POST")
    assert (status, code) == (405, "method")
    assert relayed.sim.state.enabled is True
    await relayed.good_read_works()


async def test_an_oversized_body_is_refused_before_it_is_read(relayed: Relayed) -> None:
    body = b"x" * 5000
    headers = relayed.signed("/jsonstats", body=body)
    status, code, _ = await relayed.send("/jsonstats", headers, body=body)
    assert (status, code) == (413, "too-large")
    await relayed.good_read_works()


async def test_an_oversized_target_is_refused(relayed: Relayed) -> None:
    target = "/request/payout?proxy=" + "A" * 2000
    status, code, _ = await relayed.send(target, relayed.signed(target))
    assert (status, code) == (414, "too-large")
    await relayed.good_read_works()


async def test_a_worker_not_listening_is_a_502_and_the_relay_recovers() -> None:
    sim = await start_simulator(proxies=1)
    port = sim.http_port
    await sim.stop()
    signer = new_signer()
    relay = await relay_in_front(port, signer)
    try:
        async with WorkerClient(
            "127.0.0.1", relay.address.port, signer=signer, audience=POD_UID
        ) as c:
            with pytest.raises(ControlRefusedError) as refused:
                await c.stats()
            assert (refused.value.status, refused.value.code) == (502, "upstream-unreachable")
            relay.upstream = InetAddress("127.0.0.1", port)
            sim = await start_simulator(proxies=1, port=port)
            try:
                assert (await c.stats()).coefficient == 1000
            finally:
                await sim.stop()
    finally:
        await relay.close()


async def test_a_hanging_worker_is_a_504(relayed: Relayed) -> None:
    relayed.sim.set_faults(hang=True)
    async with relayed.client(relayed.signer) as client:
        with pytest.raises(ControlRefusedError) as refused:
            await client.stats()
    assert (refused.value.status, refused.value.code) == (504, "upstream-timeout")
    relayed.sim.set_faults(hang=False)
    await relayed.good_read_works()


async def test_the_workers_400_before_initialisation_passes_through(relayed: Relayed) -> None:
    relayed.sim.set_faults(not_initialised=True)  # WorkerRunner.cpp:381-386
    async with relayed.client(relayed.signer) as client:
        with pytest.raises(WorkerNotInitialisedError):
            await client.stats()


async def test_an_oversized_answer_is_not_passed_on() -> None:
    async def huge(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{" + b" " * (2 << 20))

    app = web.Application()
    app.router.add_get("/jsonstats", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    signer = new_signer()
    relay = await relay_in_front(int(runner.addresses[0][1]), signer)
    try:
        async with WorkerClient(
            "127.0.0.1", relay.address.port, signer=signer, audience=POD_UID
        ) as c:
            with pytest.raises(ControlRefusedError) as refused:
                await c.stats()
        assert (refused.value.status, refused.value.code) == (502, "upstream-too-large")
    finally:
        await relay.close()
        await runner.cleanup()


async def test_remembered_nonces_are_bounded(relayed: Relayed) -> None:
    relay = await relay_in_front(relayed.sim.http_port, relayed.signer, ControlLimits(max_nonces=2))
    try:
        async with WorkerClient(
            "127.0.0.1", relay.address.port, signer=relayed.signer, audience=POD_UID
        ) as client:
            await client.stats()
            await client.stats()
            with pytest.raises(ControlRefusedError) as refused:
                await client.stats()
        assert (refused.value.status, refused.value.code) == (503, "busy")
    finally:
        await relay.close()


def test_a_relay_needs_its_pods_uid() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ValueError, match="UID"):
        ControlRelay(
            vm="v",
            listen=InetAddress("127.0.0.1", 0),
            upstream=InetAddress("127.0.0.1", 1),
            public_key=key,
            audience="",
        )
