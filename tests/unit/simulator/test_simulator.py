"""The worker simulator over loopback: COCOON's worker HTTP port as COCOON's source has it
(runners/, WorkerRunner.cpp unless named), the RA-TLS stand-in's evidence end to end,
faults, rotation."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from cocoon_operator.attestation import (
    CollateralCache,
    PolicyRule,
    RaTlsCertificate,
    TdxPolicy,
    TdxVerifier,
    VerifiedTdxQuote,
    check_ratls_binding,
    cocoon_image_hash,
    evaluate_tdx_policy,
    model_hash,
    parse_ratls_certificate,
)
from cocoon_operator.attestation.errors import QuoteSignatureError
from cocoon_operator.attestation.pccs import PccsCollateralSource
from cocoon_operator.attestation.testing.pki import DcapTestPki, generate_test_pki
from cocoon_operator.simulator import (
    DEFAULT_MODEL,
    LoadModel,
    SimulatorConfig,
    WorkerSimulator,
    fetch_peer_certificate,
    payout_requests,
    start_simulator,
    worker_http_port,
)
from cocoon_operator.ton.cocoonwallet import node_wallet_address_of_key
from cocoon_operator.ton.localchain import LocalChain, start_local_chain
from cocoon_operator.workerapi import parse_status_page
from tests.unit.clocks import FakeClock

TON = 1_000_000_000

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> DcapTestPki:
    return generate_test_pki(now=START.replace(hour=0))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def sim(pki: DcapTestPki, clock: FakeClock) -> AsyncIterator[WorkerSimulator]:
    load = LoadModel(load=3, drain_seconds=10.0, payout_seconds=2.0)
    simulator = await start_simulator(pki=pki, clock=clock, load=load)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def _text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url, ssl=False) as resp:
        assert resp.status == 200
        return await resp.text()


async def _page(
    http: aiohttp.ClientSession, sim: WorkerSimulator
) -> tuple[bool | None, int | None]:
    shown = parse_status_page(await _text(http, f"{sim.http_url}/stats"))
    return shown.enabled, shown.active_requests


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with http.get(url, ssl=False) as resp:
        return resp.status, resp.reason or "", await resp.text()


async def _tls_certificate(sim: WorkerSimulator) -> RaTlsCertificate:
    return parse_ratls_certificate(await fetch_peer_certificate(sim.host, sim.tls_port))


async def _verify(
    sim: WorkerSimulator, cert: RaTlsCertificate, http: aiohttp.ClientSession, now: datetime
) -> VerifiedTdxQuote:
    verifier = TdxVerifier(sim.trusted_root)  # the test root, selected explicitly
    quote = verifier.parse(cert.quote)
    cache = CollateralCache(PccsCollateralSource(sim.http_url, http))
    collateral = await cache.get(verifier.collateral_key(quote, now=now), now=now)
    return verifier.verify(quote, collateral, now=now)


async def test_ratls_certificate_verifies_end_to_end(
    sim: WorkerSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    cert = await _tls_certificate(sim)
    pem = await _text(http, f"{sim.tls_url}/attestation/certificate")  # the stand-in's
    assert parse_ratls_certificate(pem.encode()).certificate == cert.certificate
    cert.check(now=clock.now)
    verified = await _verify(sim, cert, http, clock.now)
    assert verified.tcb_status == "UpToDate"
    check_ratls_binding(cert, verified.report_data)  # REPORTDATA = SHA-512(RA-TLS key)
    m = SimulatorConfig().measurements
    expected_image = cocoon_image_hash(m.mrtd, m.mrconfigid, m.mrowner, m.mrownerconfig, m.rtmr)
    stats = await _json(http, f"{sim.http_url}/jsonstats")
    assert (await _json(http, f"{sim.http_url}/simulator/state"))["image_hash"] == (
        expected_image.hex()
    )
    policy = TdxPolicy(
        require_production_root=False,
        allowed_mrtd=frozenset({m.mrtd}),
        allowed_image_hashes=frozenset({expected_image}),
        allowed_model_hashes=frozenset({model_hash(DEFAULT_MODEL)}),
    )
    model = stats["localconfig"]["model"]
    verdict = evaluate_tdx_policy(verified, policy, binding=cert.binding, model=model)
    assert verdict.trusted, verdict.reason
    refused = evaluate_tdx_policy(verified, TdxPolicy(), binding=cert.binding, model=model)
    assert refused.failed_rule is PolicyRule.TRUST_ROOT


async def test_tampered_evidence_fails_with_quote_signature(
    sim: WorkerSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    good = await _tls_certificate(sim)
    sim.set_faults(tampered_evidence=True)
    bad = await _tls_certificate(sim)
    assert bad.public_key == good.public_key
    assert bad.quote != good.quote
    bad.check(now=clock.now)  # still a well-formed, self-signed certificate
    with pytest.raises(QuoteSignatureError) as info:
        await _verify(sim, bad, http, clock.now)
    assert info.value.code == "quote_signature"
    pem = await _text(http, f"{sim.tls_url}/attestation/certificate")
    assert parse_ratls_certificate(pem.encode()).quote == bad.quote

    state = await _json(http, f"{sim.http_url}/simulator/fault?name=tampered_evidence&enabled=0")
    assert state["faults"]["tampered_evidence"] is False
    restored = await _tls_certificate(sim)
    assert (await _verify(sim, restored, http, clock.now)).tcb_status == "UpToDate"


async def test_control_endpoints_answer_as_cocoon_does(
    sim: WorkerSimulator,
    http: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cocoon_operator.simulator")
    base = sim.http_url
    stats = await _json(http, f"{base}/jsonstats")
    assert stats["status"]["enabled"] is True
    assert stats["localconfig"]["coefficient"] == 1000
    assert stats["status"]["wallet_balance"] == stats["wallet"]["balance"] == 5_500_000_000
    assert stats["status"]["actual_image_hash"] is True
    assert stats["status"]["actual_model"] is True
    assert stats["status"]["ton_last_synced_at"] == int(clock.t - 3)

    # WorkerRunner.h:168-171; the state shows on /stats (:583-589) and never in
    # /jsonstats, whose enabled is the constant true (:688).
    assert "state updated" in await _text(http, f"{base}/request/disable")
    assert (await _page(http, sim))[0] is False
    assert (await _json(http, f"{base}/jsonstats"))["status"]["enabled"] is True
    assert "state updated" in await _text(http, f"{base}/request/enable")
    assert (await _page(http, sim))[0] is True

    answer = await _text(http, f"{base}/request/change_coefficient?coefficient=1.25")
    assert "coefficient set to 1.25<br/>" in answer  # WorkerRunner.h:182
    assert (await _json(http, f"{base}/jsonstats"))["localconfig"]["coefficient"] == 1250
    assert "failed to parse 'lots' as double" in await _text(
        http, f"{base}/request/change_coefficient?coefficient=lots"
    )
    assert "<form" in await _text(http, f"{base}/request/change_coefficient")

    clock.advance(20)  # 20 requests x 120 tokens, spread over two proxies
    stats = await _json(http, f"{base}/jsonstats")
    proxy = stats["proxies"][0]
    assert proxy["earned_tokens_max_known"] == 1200
    assert proxy["earned_tokens_committed_to_blockchain"] == 1000
    assert proxy["cached_out_tokens"] == 0
    seqno = stats["wallet"]["seqno"]
    address = proxy["proxy_sc_address"]
    assert "proxy not found" in await _text(http, f"{base}/request/payout?proxy=unknown")
    # A payout sent raises the expected cash-out at once (WorkerProxyInfo.h:84-86).
    assert "request sent" in await _text(http, f"{base}/request/payout?proxy={address}")
    assert "already running" in await _text(http, f"{base}/request/payout?proxy={address}")
    # Each request is logged, and read back as the crash tests count payouts.
    assert payout_requests(caplog.text) == {
        ("worker", "unknown"): ["proxy not found"],
        ("worker", address): ["request sent", "request is already running"],
    }
    stats = await _json(http, f"{base}/jsonstats")
    assert stats["proxies"][0]["running_request"] is True
    assert stats["proxies"][0]["expected_cached_out_tokens"] == 1000
    assert stats["wallet"]["seqno"] == seqno + 1
    clock.advance(2.5)
    stats = await _json(http, f"{base}/jsonstats")
    assert stats["proxies"][0]["running_request"] is False
    assert stats["proxies"][0]["cached_out_tokens"] == 1000
    assert "payouts" not in stats["proxies"][0]  # COCOON counts none (WorkerProxyInfo.cpp:73-87)
    assert (await _json(http, f"{base}/simulator/state"))["payouts"] == 1  # the harness's count
    assert stats["stats"]["success"][0] == pytest.approx(22.5)

    wallet = await _json(http, f"{base}/simulator/wallet?balance=2100000000")
    assert wallet["balance"] == 2_100_000_000
    assert (await _json(http, f"{base}/jsonstats"))["status"]["wallet_balance"] == 2_100_000_000
    async with http.get(f"{base}/simulator/wallet?balance=-5") as resp:
        assert resp.status == 400


async def test_disable_drains_in_flight_to_zero(
    sim: WorkerSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # active_requests_ as /stats prints it (:628).
    assert await _page(http, sim) == (True, 3)
    await _text(http, f"{sim.http_url}/request/disable")
    assert await _page(http, sim) == (False, 3)
    clock.advance(5)
    assert await _page(http, sim) == (False, 2)
    clock.advance(5)
    assert await _page(http, sim) == (False, 0)
    await _text(http, f"{sim.http_url}/request/enable")
    assert await _page(http, sim) == (True, 3)


async def test_drain_in_real_time(pki: DcapTestPki, http: aiohttp.ClientSession) -> None:
    load = LoadModel(load=2, drain_seconds=0.3)
    async with await start_simulator(pki=pki, load=load) as sim:
        await _text(http, f"{sim.http_url}/request/disable")
        deadline = time.monotonic() + 5
        while (await _page(http, sim))[1] != 0:
            assert time.monotonic() < deadline, "in-flight requests did not drain"
            await asyncio.sleep(0.05)


async def test_rotation_yields_a_new_key_that_verifies(
    sim: WorkerSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    first = await _tls_certificate(sim)
    clock.advance(3600)
    evidence = sim.rotate_certificate()
    second = await _tls_certificate(sim)
    assert second.public_key == evidence.public_key != first.public_key
    assert second.quote != first.quote
    for cert in (first, second):
        verified = await _verify(sim, cert, http, clock.now)
        verdict = evaluate_tdx_policy(
            verified, TdxPolicy(require_production_root=False), binding=cert.binding
        )
        assert verdict.trusted, verdict.reason
    state = await _json(http, f"{sim.http_url}/simulator/state")
    assert state["ratls_public_key"] == second.public_key.hex()
    assert state["certificate_generation"] == 2
    rotated = await _json(http, f"{sim.http_url}/simulator/rotate")
    assert rotated["certificate_generation"] == 3
    assert (await _tls_certificate(sim)).public_key.hex() == rotated["public_key"]


async def test_wrong_model_and_garbage_json(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(wrong_model=True)
    stats = await _json(http, f"{sim.http_url}/jsonstats")
    assert stats["localconfig"]["model"] != DEFAULT_MODEL
    assert stats["status"]["actual_model"] is False
    assert sim.harness_facts()["faults"] == ["wrong_model"]
    sim.set_faults(wrong_model=False, garbage_json=True)
    async with http.get(f"{sim.http_url}/jsonstats") as resp:
        assert resp.status == 200
        with pytest.raises(ValueError):
            await resp.json()
    with pytest.raises(ValueError):
        sim.set_faults(explode=True)


async def test_hang_never_answers_until_cleared(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(hang=True)
    short = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(f"{sim.http_url}/jsonstats", timeout=short):
            pass
    # The collateral service and the admin endpoints keep answering.
    assert (await _json(http, f"{sim.http_url}/simulator/state"))["faults"]["hang"] is True
    pending = asyncio.create_task(_json(http, f"{sim.http_url}/jsonstats"))
    await asyncio.sleep(0.1)
    assert not pending.done()
    await _json(http, f"{sim.http_url}/simulator/fault?name=hang&enabled=false")
    assert (await asyncio.wait_for(pending, 5))["status"]["enabled"] is True


async def test_stop_releases_hanging_requests(
    pki: DcapTestPki, http: aiohttp.ClientSession
) -> None:
    sim = await start_simulator(pki=pki)
    sim.set_faults(hang=True)
    pending = asyncio.create_task(http.get(f"{sim.http_url}/jsonstats"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 5
    try:
        resp = await asyncio.wait_for(pending, 5)
        assert resp.status == 503
        resp.release()
    except aiohttp.ClientError:
        pass  # the connection may be closed instead


async def test_the_pages_carry_cocoons_rows_and_perf_is_text(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    page = await _text(http, f"{sim.http_url}/stats")
    assert (
        '<tr><td>enabled</td><td><span style="background-color:Green;">yes '
        '<a href="/request/disable">disable</a></span></td></tr>\n' in page
    )  # :583-589
    assert "<tr><td>active_requests</td><td>3</td></tr>\n" in page  # :628
    assert '<tr><td>coefficient</td><td>1 <a href="/request/change_coefficient">' in page
    async with http.get(f"{sim.http_url}/perf") as resp:  # BaseRunner.cpp:580-583, 695-699
        assert (resp.status, resp.content_type) == (200, "text/plain")


async def test_jsonstats_has_exactly_cocoons_fields(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    stats = await _json(http, f"{sim.http_url}/jsonstats")
    assert list(stats) == ["status", "stats", "wallet", "localconfig", "proxies"]  # :663-730
    assert list(stats["status"]) == [  # :667-690
        "wallet_balance",
        "actual_image_hash",
        "actual_model",
        "ton_last_synced_at",
        "enabled",
        "git_commit",
        "git_commit_data",
    ]
    assert list(stats["localconfig"]) == [  # :708-717
        "root_address",
        "owner_address",
        "model",
        "coefficient",
        "check_proxy_hash",
    ]
    assert list(stats["proxies"][0]) == [  # WorkerProxyInfo.cpp:73-87
        "sc_inited",
        "proxy_sc_address",
        "proxy_public_key",
        "sc_address",
        "earned_tokens_committed_to_blockchain",
        "earned_tokens_committed_to_proxy_db",
        "earned_tokens_max_known",
        "cached_out_tokens",
        "expected_cached_out_tokens",
        "running_request",
        "params_version",
    ]
    assert all(len(row) == 7 for row in stats["stats"].values())  # AmortCounter.h:80-91


async def test_before_initialisation_every_worker_path_is_400_not_found(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(not_initialised=True)
    for path in ("/jsonstats", "/stats", "/request/disable", "/request/payout?proxy=x"):
        # WorkerRunner.cpp:381-386: the reason phrase, an empty body.
        assert await _status(http, f"{sim.http_url}{path}") == (400, "not found", "")
    assert (await _status(http, f"{sim.http_url}/perf"))[0] == 200  # BaseRunner.cpp:580-583
    assert (await _json(http, f"{sim.http_url}/simulator/state"))["initialised"] is False
    assert sim.state.enabled  # the disable above never reached the runner
    sim.set_faults(not_initialised=False)
    assert (await _status(http, f"{sim.http_url}/jsonstats"))[0] == 200


async def test_paths_the_worker_does_not_serve_are_400_not_found(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    for path in ("/attestation/certificate", "/attestation/gpu?nonce=00", "/", "/jsonstats/"):
        assert await _status(http, f"{sim.http_url}{path}") == (400, "not found", "")
    # The RA-TLS stand-in serves its two paths and none of the worker's.
    async with http.get(f"{sim.tls_url}/jsonstats", ssl=False) as resp:
        assert resp.status == 404


async def test_the_coefficient_is_parsed_and_truncated_as_cocoon_does(
    sim: WorkerSimulator, http: aiohttp.ClientSession
) -> None:
    base = f"{sim.http_url}/request/change_coefficient?coefficient="

    async def applied(raw: str) -> int:
        await _text(http, base + raw)
        return int((await _json(http, f"{sim.http_url}/jsonstats"))["localconfig"]["coefficient"])

    assert await applied("1.001") == 1000  # (int32)(1.001 * 1000), WorkerRunner.h:180
    assert await applied("1.0010000000000001") == 1001
    assert await applied("2") == 2000
    assert await applied("") == 0  # strtod of "" takes it all, as 0.0
    # Sent as-is (yarl would decode %2E): COCOON decodes nothing (BaseRunner.cpp:758-790).
    for raw in ("1%2E5", "1.5%20"):
        async with http.get(URL(base + raw, encoded=True)) as resp:
            assert f"failed to parse '{raw}' as double" in await resp.text()
    await _text(http, base + "1.5&coefficient=3")  # the first of a name stands
    assert sim.state.coefficient == 1500


def test_config_is_checked() -> None:
    for host in ("0.0.0.0", "10.0.0.1", "localhost", "example.org"):
        with pytest.raises(ValueError):
            SimulatorConfig(host=host)
    SimulatorConfig(host="::1")
    with pytest.raises(ValueError):
        SimulatorConfig(instance=10)
    with pytest.raises(ValueError):
        SimulatorConfig(model="no-commit")
    assert worker_http_port(3) == 12030


async def test_the_harness_listener_serves_the_harness_alone_and_the_worker_by_hand() -> None:
    sim = await start_simulator(proxies=1, harness_port=0, worker_host="127.0.0.1")
    base = f"http://127.0.0.1:{sim.harness_port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/request/disable") as resp:
                assert resp.status == 404  # no worker path on the harness listener
            assert sim.state.enabled is True
            sim.set_faults(garbage_json=True)
            async with session.get(base + "/simulator/jsonstats") as resp:
                assert (await resp.json())["localconfig"]["coefficient"] == 1000
            # kubectl exec's stand-in: the worker's own control, unsigned.
            async with session.post(base + "/simulator/worker/request/disable") as resp:
                assert "state updated" in await resp.text()
            assert sim.state.enabled is False
    finally:
        await sim.stop()


async def test_a_runner_given_a_chain_waits_there_for_its_start_floor_before_serving(
    pki: DcapTestPki, http: aiohttp.ClientSession
) -> None:
    # BaseRunner.cpp:1037-1054 waits for min_wallet_balance(), 2.1 TON
    # (BaseRunner.hpp:335-337), before the runner initialises; until then every
    # worker path answers 400 "not found" (WorkerRunner.cpp:381-386).
    chain = LocalChain()
    running = await start_local_chain(chain)
    key = base64.b64encode(bytes(range(32))).decode()
    owner = "0:" + "11" * 32
    sim = await start_simulator(
        pki=pki, ton_endpoint=running.api_url, node_wallet_key=key, owner_address=owner
    )
    try:
        wallet = node_wallet_address_of_key(key, owner)
        assert await _status(http, f"{sim.http_url}/jsonstats") == (400, "not found", "")
        chain.mint(wallet, 2 * TON)

        async def balance_reads() -> int:
            async with http.get(running.calls_url) as resp:
                return int((await resp.json())["result"].get("getAddressBalance", 0))

        # Two more looks at the chain (one a second, as COCOON's runner): still short.
        looked = await balance_reads()
        for _ in range(100):
            if await balance_reads() >= looked + 2:
                break
            await asyncio.sleep(0.05)
        assert await balance_reads() >= looked + 2
        assert await _status(http, f"{sim.http_url}/jsonstats") == (400, "not found", "")
        chain.mint(wallet, TON // 5)

        async def served() -> bool:
            return (await _status(http, f"{sim.http_url}/jsonstats"))[0] == 200

        for _ in range(50):
            if await served():
                break
            await asyncio.sleep(0.1)
        stats = await _json(http, f"{sim.http_url}/jsonstats")
        assert stats["wallet"]["balance"] == chain.balance(wallet) >= 2_100_000_000
    finally:
        await sim.stop()
        await running.close()
