"""What the evidence tests share: the simulated clock's start, and the checker wired to
a simulated worker's PCCS through a cache that counts its fetches."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from cocoon_operator.api.v1alpha1 import AttestationPolicy
from cocoon_operator.attestation import CollateralCache, intel_sgx_root_ca
from cocoon_operator.attestation.pccs import PccsCollateralSource
from cocoon_operator.evidence import EvidenceChecker
from cocoon_operator.policy.attestation import Rejected, TrustMode, Verified
from cocoon_operator.simulator import WorkerSimulator

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class CountingSource:
    def __init__(self, inner: PccsCollateralSource) -> None:
        self.inner, self.calls = inner, 0

    async def fetch(self, key):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await self.inner.fetch(key)


def checker_for(
    sim: WorkerSimulator, session: aiohttp.ClientSession, trust: TrustMode = TrustMode.TEST
) -> tuple[EvidenceChecker, CountingSource]:
    source = CountingSource(PccsCollateralSource(sim.http_url, session))
    root = sim.trusted_root if trust is TrustMode.TEST else intel_sgx_root_ca()
    checker = EvidenceChecker(root=root, trust=trust, collateral=CollateralCache(source))
    return checker, source


async def check(
    checker: EvidenceChecker,
    sim: WorkerSimulator,
    policy: AttestationPolicy | None = None,
    *,
    now: datetime = START,
    requested: bytes | None = None,
) -> Verified | Rejected:
    """The checker's verdict on the quote ``sim``'s guest obtained through the relay."""
    quote, captured = sim.relayed_quote()
    return await checker.verify_quote(
        quote,
        captured_at=captured,
        requested_report_data=requested,
        policy=policy or AttestationPolicy(),
        now=now,
        endpoint=(sim.host, sim.tls_port),
    )
