"""GPU evidence in the operator's path (``spec.attestation.gpu.mode: Verify``): fetched
from the simulated worker over the attested TLS channel with a fresh nonce, verified
with the real SPDM/chain verifier against the simulator's test device root."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import aiohttp
import pytest

from cocoon_operator.api.v1alpha1 import (
    AttestationPolicy,
    GpuAttestationPolicy,
    GpuEvidenceMode,
)
from cocoon_operator.attestation import GpuVerifier, NoRevocationCheck, nvidia_device_root
from cocoon_operator.attestation.testing.gpu import GpuMeasurements
from cocoon_operator.evidence import EvidenceChecker
from cocoon_operator.policy.attestation import UNREACHABLE, Rejected, TrustMode, Verified
from cocoon_operator.simulator import WorkerSimulator
from cocoon_operator.workerapi import GpuEvidenceDocument, fetch_gpu_evidence
from tests.unit.evidence.helpers import START, check, checker_for

VERIFY = AttestationPolicy(gpu=GpuAttestationPolicy(mode=GpuEvidenceMode.VERIFY))


class Nonces:
    """Distinct nonces, remembered, so a test can see which one each check used."""

    def __init__(self) -> None:
        self._counter: Iterator[int] = itertools.count(1)
        self.issued: list[bytes] = []

    def __call__(self) -> bytes:
        nonce = next(self._counter).to_bytes(32, "big")
        self.issued.append(nonce)
        return nonce


class CountingFetch:
    """The real fetch (pinned TLS to the simulator), counted; ``nonce`` overrides the one
    asked for, as a relayed or replayed report would."""

    def __init__(self, nonce: bytes | None = None) -> None:
        self.calls = 0
        self._nonce = nonce

    async def __call__(
        self, host: str, port: int, certificate_sha256: str, nonce: bytes
    ) -> GpuEvidenceDocument:
        self.calls += 1
        return await fetch_gpu_evidence(
            host, port, certificate_sha256=certificate_sha256, nonce=self._nonce or nonce
        )


def gpu_checker(
    sim: WorkerSimulator,
    session: aiohttp.ClientSession,
    *,
    device_root_is_the_simulators: bool = True,
    fetch: CountingFetch | None = None,
    nonces: Nonces | None = None,
) -> EvidenceChecker:
    base, _ = checker_for(sim, session)
    root = sim.gpu_pki.trusted_root if device_root_is_the_simulators else nvidia_device_root()
    return EvidenceChecker(
        root=sim.trusted_root,
        trust=TrustMode.TEST,
        collateral=base._collateral,
        gpu=GpuVerifier(root, revocation=NoRevocationCheck()),
        gpu_fetch=fetch,
        nonce=nonces or Nonces(),
    )


async def verify(
    checker: EvidenceChecker, sim: WorkerSimulator, policy: AttestationPolicy = VERIFY
) -> Verified | Rejected:
    return await check(checker, sim, policy)


async def test_verify_mode_checks_the_gpu_over_the_attested_channel(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    nonces = Nonces()
    checker = gpu_checker(sim, session, nonces=nonces)
    first = await verify(checker, sim)
    second = await verify(checker, sim)
    assert isinstance(first, Verified), first
    assert isinstance(second, Verified), second
    assert first.gpu is not None
    expected = GpuMeasurements()
    assert first.gpu.driver_version == expected.driver_version
    assert first.gpu.vbios_version == expected.vbios_version
    assert first.gpu.revocation == "not_checked"  # said, not implied
    assert first.gpu.device_certificate
    assert len(set(nonces.issued)) == 2  # a fresh nonce per check


async def test_in_guest_mode_asks_the_worker_nothing_about_its_gpu(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    fetch = CountingFetch()
    checker = gpu_checker(sim, session, fetch=fetch)
    outcome = await verify(checker, sim, AttestationPolicy())
    assert isinstance(outcome, Verified) and outcome.gpu is None
    assert fetch.calls == 0


async def test_tampered_gpu_evidence_fails_its_signature(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    sim.set_faults(gpu_tampered=True)
    outcome = await verify(gpu_checker(sim, session), sim)
    assert isinstance(outcome, Rejected)
    assert outcome.step == "gpu_evidence_signature", outcome


async def test_a_report_signed_over_another_nonce_is_a_replay(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    replayed = CountingFetch(nonce=b"\xee" * 32)
    outcome = await verify(gpu_checker(sim, session, fetch=replayed), sim)
    assert replayed.calls == 1
    assert isinstance(outcome, Rejected)
    assert outcome.step == "gpu_nonce_mismatch", outcome


async def test_nvidias_root_refuses_the_test_device_chain(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker = gpu_checker(sim, session, device_root_is_the_simulators=False)
    outcome = await verify(checker, sim)
    assert isinstance(outcome, Rejected)
    assert outcome.step.startswith("gpu_") and "GPU evidence" in outcome.message, outcome


@pytest.mark.parametrize(
    ("gpu", "step", "field"),
    [
        (
            GpuAttestationPolicy(mode=GpuEvidenceMode.VERIFY, allowed_driver_versions=["999.1"]),
            "gpu_driver_version",
            "allowedDriverVersions",
        ),
        (
            GpuAttestationPolicy(
                mode=GpuEvidenceMode.VERIFY, allowed_vbios_versions=["96.00.AA.00.01"]
            ),
            "gpu_vbios_version",
            "allowedVbiosVersions",
        ),
    ],
)
async def test_version_allow_lists_name_the_field(
    sim: WorkerSimulator,
    session: aiohttp.ClientSession,
    gpu: GpuAttestationPolicy,
    step: str,
    field: str,
) -> None:
    outcome = await verify(gpu_checker(sim, session), sim, AttestationPolicy(gpu=gpu))
    assert isinstance(outcome, Rejected)
    assert outcome.step == step
    assert f"spec.attestation.gpu.{field}" in outcome.message


async def test_allowed_versions_pass(sim: WorkerSimulator, session: aiohttp.ClientSession) -> None:
    expected = GpuMeasurements()
    gpu = GpuAttestationPolicy(
        mode=GpuEvidenceMode.VERIFY,
        allowed_driver_versions=[expected.driver_version],
        allowed_vbios_versions=[expected.vbios_version.lower()],
    )
    outcome = await verify(gpu_checker(sim, session), sim, AttestationPolicy(gpu=gpu))
    assert isinstance(outcome, Verified) and outcome.gpu is not None


async def test_a_key_refreshed_since_the_quote_is_checked_again_not_rejected(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    checker = gpu_checker(sim, session)
    quote, captured = sim.relayed_quote()
    sim.rotate_certificate()  # the VM now presents a key the older quote does not bind
    outcome = await checker.verify_quote(
        quote,
        captured_at=captured,
        requested_report_data=None,
        policy=VERIFY,
        now=START,
        endpoint=(sim.host, sim.tls_port),
    )
    assert isinstance(outcome, Rejected)
    assert outcome.step == UNREACHABLE  # transient: the next quote binds the new key
    assert "not the one the verified quote binds" in outcome.message


async def test_the_simulator_refuses_a_malformed_nonce(
    sim: WorkerSimulator, session: aiohttp.ClientSession
) -> None:
    # On the RA-TLS stand-in, the only listener serving it.
    url = f"{sim.tls_url}/attestation/gpu"
    async with session.get(url, params={"nonce": "abcd"}, ssl=False) as resp:
        assert resp.status == 400
        assert "nonce" in await resp.text()
