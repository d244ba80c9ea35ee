"""The operator's evidence path on a simulated worker's relayed quote: PCCS fetch through
the cache (the simulator's on loopback), DCAP (dcap-qvl) and policy."""

from __future__ import annotations

import hashlib
import socket
from datetime import datetime, timedelta

import aiohttp
import pytest

from cocoon_operator.api.v1alpha1 import AttestationPolicy
from cocoon_operator.attestation import (
    Collateral,
    CollateralCache,
    EngineReport,
    QuoteVerifierEngine,
)
from cocoon_operator.attestation.errors import AttestationError
from cocoon_operator.attestation.pccs import PccsCollateralSource
from cocoon_operator.evidence import EvidenceChecker
from cocoon_operator.policy.attestation import UNREACHABLE, Rejected, TrustMode, Verified
from cocoon_operator.simulator import WorkerSimulator
from tests.unit.evidence.helpers import START, check, checker_for


async def test_simulated_evidence_verifies_with_the_test_root_selected(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, source = checker_for(sim, session)
    outcome = await check(checker, sim)
    assert isinstance(outcome, Verified), outcome
    assert outcome.image_hash == sim.image_hash.hex()
    assert outcome.tcb_status == "UpToDate"
    assert outcome.quote_sha256 == hashlib.sha256(sim.evidence.quote).hexdigest()
    # REPORTDATA, recorded for people: the SHA-512 of the guest's RA-TLS key.
    assert outcome.report_data == hashlib.sha512(sim.evidence.public_key).hexdigest()
    assert outcome.valid_until <= START + timedelta(
        seconds=AttestationPolicy().quote_max_age_seconds
    )
    # Collateral is fetched once and then served from the cache.
    assert isinstance(await check(checker, sim), Verified)
    assert source.calls == 1


async def test_the_same_evidence_is_rejected_under_intels_root(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session, TrustMode.INTEL)
    outcome = await check(checker, sim)
    assert isinstance(outcome, Rejected)
    assert outcome.step == "trust_root"


def test_a_test_root_cannot_be_used_without_choosing_test_mode(sim: WorkerSimulator) -> None:
    with pytest.raises(ValueError, match=r"TrustMode\.TEST"):
        EvidenceChecker(
            root=sim.trusted_root,
            trust=TrustMode.INTEL,
            collateral=CollateralCache(PccsCollateralSource(sim.http_url, None)),  # type: ignore[arg-type]
        )


async def test_tampered_evidence_fails_the_quote_signature(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    sim.set_faults(tampered_evidence=True)
    checker, _ = checker_for(sim, session)
    outcome = await check(checker, sim)
    assert isinstance(outcome, Rejected)
    assert outcome.step == "quote_signature"
    assert outcome.quote_sha256 is not None


async def test_a_quote_of_other_report_data_than_the_guest_asked_for_is_rejected(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session)
    asked = hashlib.sha512(sim.evidence.public_key).digest()
    assert isinstance(await check(checker, sim, requested=asked), Verified)
    outcome = await check(checker, sim, requested=b"\x00" * 64)
    assert isinstance(outcome, Rejected) and outcome.step == "report_data", outcome


async def test_policy_rules_name_what_failed(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session)
    other_image = AttestationPolicy(allowed_image_hashes=["00" * 32])
    outcome = await check(checker, sim, other_image)
    assert isinstance(outcome, Rejected) and outcome.step == "image_hash"
    listed = AttestationPolicy(allowed_image_hashes=[sim.image_hash.hex()])
    assert isinstance(await check(checker, sim, listed), Verified)
    strict = AttestationPolicy(accepted_tcb_statuses=["SWHardeningNeeded"])
    outcome = await check(checker, sim, strict)
    assert isinstance(outcome, Rejected) and outcome.step == "tcb_status"


async def test_a_refreshed_quote_is_new_evidence(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session)
    first = await check(checker, sim)
    sim.rotate_certificate()
    second = await check(checker, sim)
    assert isinstance(first, Verified) and isinstance(second, Verified)
    assert first.quote_sha256 != second.quote_sha256
    assert first.report_data != second.report_data


async def test_nothing_listening_is_unreachable_not_an_exception(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, _ = checker_for(sim, session)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        fetched = await checker.fetch("127.0.0.1", port)
    assert isinstance(fetched, Rejected)
    assert fetched.step == UNREACHABLE
    assert f"127.0.0.1:{port}" in fetched.message


class CountingEngine:
    """The real engine, counted."""

    def __init__(self, inner: QuoteVerifierEngine) -> None:
        self.inner, self.calls, self.name = inner, 0, inner.name

    def verify(
        self, quote: bytes, collateral: Collateral, *, root_ca_der: bytes, now: datetime
    ) -> EngineReport:
        self.calls += 1
        return self.inner.verify(quote, collateral, root_ca_der=root_ca_der, now=now)


async def counted(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> tuple[EvidenceChecker, CountingEngine, bytes]:
    """A checker whose engine calls are counted, and the quote ``sim``'s guest obtained."""
    checker, _ = checker_for(sim, session)
    engine = CountingEngine(checker._verifier.engine)
    checker._verifier.engine = engine
    return checker, engine, sim.relayed_quote()[0]


async def test_reattesting_an_unchanged_quote_reuses_the_engines_verdict(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, engine, _ = await counted(sim, session)
    for minutes in (0, 15, 30):
        outcome = await check(checker, sim, now=START + timedelta(minutes=minutes))
        assert isinstance(outcome, Verified), outcome
    assert engine.calls == 1
    # A new quote is verified by the engine again.
    sim.rotate_certificate()
    assert isinstance(await check(checker, sim), Verified)
    assert engine.calls == 2


async def test_the_engine_runs_again_for_new_collateral_and_when_time_goes_back(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker, engine, raw = await counted(sim, session)
    fingerprint = hashlib.sha256(raw).hexdigest()
    quote = checker._quote(fingerprint, raw)
    first = sim.collateral
    same_content = Collateral.from_json(sim.pki.collateral_json())
    later = START + timedelta(minutes=10)
    checker._engine_verdict(fingerprint, quote, first, later)
    checker._engine_verdict(fingerprint, quote, first, later)
    assert engine.calls == 1
    checker._engine_verdict(fingerprint, quote, same_content, later)  # refreshed by the cache
    assert engine.calls == 2
    checker._engine_verdict(fingerprint, quote, same_content, START)  # the clock went back
    assert engine.calls == 3
    # Every collateral window is still checked on a reused verdict.
    with pytest.raises(AttestationError) as raised:
        checker._engine_verdict(fingerprint, quote, same_content, START + timedelta(days=400))
    assert raised.value.code == "collateral_expired"
    assert engine.calls == 3
