"""The treasury tests' chain: the local chain (real TVM) with the treasury's wallet
deployed, once for each wallet version a treasury can be (a test file may define an
``env`` of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.localchain import LocalChain, start_local_chain
from cocoon_operator.ton.wallet import WalletKey, WalletVersion, make_wallet
from tests.unit.clocks import OffsetClock
from tests.unit.funding.helpers import TON, TREASURY_SEED, Env


@pytest.fixture(params=[WalletVersion.V4R2, WalletVersion.V5R1])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    clock = OffsetClock()
    chain = LocalChain(clock=clock)
    key = WalletKey(TREASURY_SEED)
    wallet = make_wallet(request.param, key.public_key)
    chain.deploy_wallet(key, 10_000 * TON, version=wallet.version)
    running = await start_local_chain(chain)
    ton = TonClient(running.api_url, timeout=10)
    try:
        yield Env(running, ton, clock, key, wallet)
    finally:
        await ton.close()
        await running.close()
