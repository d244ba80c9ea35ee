"""Fixtures shared by the evidence tests: one test PKI per module, a simulated
worker on loopback per test, and an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from cocoon_operator.attestation.testing.pki import DcapTestPki, generate_test_pki
from cocoon_operator.simulator import WorkerSimulator, start_simulator
from tests.unit.clocks import FakeClock
from tests.unit.evidence.helpers import START


@pytest.fixture(scope="module")
def pki() -> DcapTestPki:
    return generate_test_pki(now=START.replace(hour=0))


@pytest.fixture
async def sim(pki: DcapTestPki) -> AsyncIterator[WorkerSimulator]:
    async with await start_simulator(pki=pki, clock=FakeClock(START), proxies=1) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
