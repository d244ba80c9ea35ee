"""What the treasury tests share: a local chain with the treasury's wallet deployed
(see the ``env`` fixture in conftest.py), the requests a worker's top-up makes, and
the treasury's seqno as the chain's API reads it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from cocoon_operator.funding import MemoryLedgerStore, TopUpRequest, Treasury
from cocoon_operator.ton.address import Address
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.localchain import RunningLocalChain
from cocoon_operator.ton.wallet import Wallet, WalletKey
from tests.unit.clocks import OffsetClock

TON = 1_000_000_000


TREASURY_SEED = bytes(range(32))


@dataclass
class Env:
    chain: RunningLocalChain
    ton: TonClient
    clock: OffsetClock
    treasury_key: WalletKey
    wallet: Wallet

    def nodes(self, count: int) -> list[str]:
        """Addresses of ``count`` node wallets, not deployed (as a new worker's)."""
        return [Address(0, hashlib.sha256(b"node %d" % i).digest()).to_raw() for i in range(count)]

    def treasury(
        self, store: MemoryLedgerStore, cap: int, monotonic: Callable[[], float] = time.monotonic
    ) -> Treasury:
        return Treasury(
            self.ton,
            self.treasury_key,
            store,
            global_daily_cap=cap,
            clock=self.clock,
            wallet=self.wallet,
            confirm_timeout=2,
            poll_interval=0.05,
            monotonic=monotonic,
        )


async def requests_for(env: Env, addresses: list[str]) -> list[TopUpRequest]:
    return [
        TopUpRequest(f"ns/w{i}", a, await env.ton.get_address_balance(a), 5 * TON, 10 * TON)
        for i, a in enumerate(addresses)
    ]


async def treasury_seqno(env: Env) -> int:
    """The seqno as the API's wallet reading has it (the contract's get-method)."""
    info = await env.ton.get_wallet_information(env.wallet.address)
    return info.seqno or 0
