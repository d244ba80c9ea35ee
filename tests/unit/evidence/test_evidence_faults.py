"""The simulator's evidence-endpoint faults, seen through the operator's checker: an
RA-TLS port that never completes a handshake is unreachable (bounded by the
checker's timeout) and answers again once cleared (the port serves GPU evidence
only); garbage where the quote belongs and a certificate whose key REPORTDATA
does not bind are rejected, naming the step."""

from __future__ import annotations

import time
from datetime import timedelta

import aiohttp

from cocoon_operator.api.v1alpha1 import AttestationPolicy
from cocoon_operator.attestation import CollateralCache
from cocoon_operator.attestation.pccs import PccsCollateralSource
from cocoon_operator.evidence import EvidenceChecker
from cocoon_operator.policy.attestation import UNREACHABLE, Rejected, TrustMode, Verified
from cocoon_operator.simulator import WorkerSimulator, fetch_peer_certificate
from tests.unit.evidence.helpers import START, check, checker_for


async def test_a_hanging_ratls_port_is_unreachable_within_the_timeout_then_recovers(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    collateral = CollateralCache(PccsCollateralSource(sim.http_url, session))
    checker = EvidenceChecker(
        root=sim.trusted_root, trust=TrustMode.TEST, collateral=collateral, timeout_seconds=0.5
    )
    port = sim.tls_port
    sim.set_faults(ratls_hang=True)
    await sim.faults_applied()
    started = time.monotonic()
    fetched = await checker.fetch(sim.host, port)
    assert time.monotonic() - started < 3
    assert isinstance(fetched, Rejected) and fetched.step == UNREACHABLE
    assert "TimeoutError" in fetched.message

    sim.set_faults(ratls_hang=False)
    await sim.faults_applied()
    assert sim.tls_port == port  # the same port serves TLS again
    assert isinstance(await check(checker, sim), Verified)
    assert await fetch_peer_certificate(sim.host, port, timeout_seconds=2)


async def test_garbage_evidence_is_rejected_as_a_quote_format_error(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session)
    sim.set_faults(garbage_evidence=True)
    outcome = await check(checker, sim)
    assert isinstance(outcome, Rejected) and outcome.step == "quote_format", outcome
    sim.set_faults(garbage_evidence=False)
    assert isinstance(await check(checker, sim), Verified)


async def test_gpu_evidence_from_a_certificate_whose_key_the_quote_does_not_bind_is_refused(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session)
    verify_gpu = AttestationPolicy(gpu={"mode": "Verify"})
    sim.set_faults(foreign_key=True)
    outcome = await check(checker, sim, verify_gpu)
    # The quote itself is genuine (signature, chain, TCB pass); the certificate the
    # GPU request would be pinned to is not the attested VM's: no GPU verdict.
    assert isinstance(outcome, Rejected) and outcome.step == UNREACHABLE, outcome
    assert "not the one the verified quote binds" in outcome.message
    assert outcome.quote_sha256 is not None
    assert isinstance(await check(checker, sim), Verified)  # InGuest asks nothing of it


async def test_a_skewed_clock_fails_a_date_step_never_verifies(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    """The same genuine quote checked with the operator's clock a year off."""
    checker, _ = checker_for(sim, session)
    assert isinstance(await check(checker, sim), Verified)
    for now in (START + timedelta(days=365), START - timedelta(days=365)):
        outcome = await check(checker, sim, now=now)
        assert isinstance(outcome, Rejected), outcome
        assert outcome.step in (
            "certificate_validity",
            "collateral_expired",
            "collateral_not_yet_valid",
        ), outcome
