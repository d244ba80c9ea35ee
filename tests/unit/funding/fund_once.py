"""One funding cycle as its own process, so tests can kill -9 it mid-flight.

    python -m tests.unit.funding.fund_once API LEDGER SEED_HEX WALLET CLOCK_OFFSET ADDR...

Reads each node wallet's balance from the chain, asks the treasury to top up
those below 5 TON to 10 TON, prints the report as JSON. Crash points come from
$COCOON_FAILPOINTS, as in the operator. $FUND_ONCE_MINIMUM, $FUND_ONCE_TARGET and
$FUND_ONCE_DAILY_CAP (nanoTON) change the request's bounds (a top-up to the start
floor before a VM starts is one to 2.1 TON).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from cocoon_operator.funding import FileLedgerStore, TopUpRequest, Treasury
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.wallet import WalletKey, make_wallet

TON = 1_000_000_000


async def main(
    api: str, ledger: str, seed: str, wallet: str, offset: float, addresses: list[str]
) -> None:
    key = WalletKey(bytes.fromhex(seed))
    async with TonClient(api, timeout=10) as ton:
        treasury = Treasury(
            ton,
            key,
            FileLedgerStore(Path(ledger)),
            wallet=make_wallet(wallet, key.public_key),
            global_daily_cap=100_000 * TON,
            confirm_timeout=5,
            poll_interval=0.1,
            clock=lambda: time.time() + offset,
        )
        minimum = int(os.environ.get("FUND_ONCE_MINIMUM", 5 * TON))
        target = int(os.environ.get("FUND_ONCE_TARGET", 10 * TON))
        cap = os.environ.get("FUND_ONCE_DAILY_CAP")
        requests = [
            TopUpRequest(
                f"ns/w{i}",
                a,
                await ton.get_address_balance(a),
                minimum,
                target,
                int(cap) if cap else None,
            )
            for i, a in enumerate(addresses)
        ]
        report = await treasury.fund(requests)
    print(
        json.dumps(
            {
                "confirmed": sorted(t.worker for t in report.confirmed),
                "pending": sorted(t.worker for t in report.pending),
                "expired": sorted(t.worker for t in report.expired),
                "messages_sent": report.messages_sent,
            }
        )
    )


def run(argv: list[str]) -> None:
    """The command line's work: ``argv`` as after the program name."""
    api_url, ledger_path, seed_hex, version, clock_offset, *wallets = argv
    asyncio.run(main(api_url, ledger_path, seed_hex, version, float(clock_offset), wallets))


def run_captured(argv: list[str], env: dict[str, str], out: str, err: str) -> None:
    """:func:`run` in a process forked for it (tests/unit/funding/test_treasury.py):
    with the environment ``env``, its output in the files ``out`` and ``err``."""
    os.environ.clear()
    os.environ.update(env)
    for path, fd in ((out, 1), (err, 2)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own stdout
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    run(argv)
    sys.stdout.flush()


if __name__ == "__main__":
    run(sys.argv[1:])
