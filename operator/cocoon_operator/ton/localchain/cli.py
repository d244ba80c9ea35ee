"""``python -m cocoon_operator.ton.localchain``: genesis wallets, the optional root, the server.

The genesis and root-owner seeds are well known on purpose (the demo, the
benchmarks and the cluster tests derive the same wallets from them): test chains
only, never real funds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence

from cocoon_operator.ton.amounts import Nanoton, format_ton, parse_ton
from cocoon_operator.ton.root import AllowList, allowlist_body, model_hash, parse_hash
from cocoon_operator.ton.root import deploy_local as deploy_root
from cocoon_operator.ton.root import state_init as root_state_init
from cocoon_operator.ton.wallet import Transfer, WalletKey, WalletVersion

from .chain import LocalChain
from .server import start_local_chain

#: Well-known dev seed of the default genesis wallet (test chains only!).
DEFAULT_GENESIS_SEED = hashlib.sha256(b"cocoon-operator localchain genesis v1").digest()
#: Well-known dev seed of the wallet owning the root ``--root`` deploys (test chains only!).
DEFAULT_ROOT_OWNER_SEED = hashlib.sha256(b"cocoon-operator localchain root owner v1").digest()
ROOT_OWNER_BALANCE = Nanoton(100 * 1_000_000_000)
DEFAULT_GENESIS_BALANCE = parse_ton("1000000")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cocoon_operator.ton.localchain",
        description="Local TON chain (real TVM via libemulator) with a toncenter v2 API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--genesis-seed-hex",
        default=DEFAULT_GENESIS_SEED.hex(),
        help="32-byte hex Ed25519 seed of the pre-funded genesis wallet (dev only)",
    )
    parser.add_argument(
        "--genesis-balance", default=format_ton(DEFAULT_GENESIS_BALANCE), help="TON"
    )
    parser.add_argument("--api-key", default=None, help="require this X-API-Key header")
    parser.add_argument(
        "--root",
        action="store_true",
        help="deploy the project's COCOON root contract, owned by a wallet of its own",
    )
    parser.add_argument(
        "--root-owner-seed-hex",
        default=DEFAULT_ROOT_OWNER_SEED.hex(),
        help="32-byte hex Ed25519 seed of the root owner's wallet (funded with 100 TON; dev only)",
    )
    parser.add_argument(
        "--root-model",
        action="append",
        default=[],
        metavar="NAME@COMMIT:VERITY",
        help="a model the root lists from the start (repeatable)",
    )
    parser.add_argument(
        "--root-image-hash",
        action="append",
        default=[],
        metavar="HEX",
        help="a worker image hash the root lists from the start (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def serve() -> None:
        chain = LocalChain()
        key = WalletKey(bytes.fromhex(args.genesis_seed_hex))
        wallet = chain.deploy_wallet(key, parse_ton(args.genesis_balance))
        # The same key's v5r1 wallet too, equally funded: a treasury may be either.
        wallet_v5 = chain.deploy_wallet(
            key, parse_ton(args.genesis_balance), version=WalletVersion.V5R1
        )
        root: dict[str, str] = {}
        if args.root:
            owner_key = WalletKey(bytes.fromhex(args.root_owner_seed_hex))
            owner = chain.deploy_wallet(owner_key, ROOT_OWNER_BALANCE)
            # Empty lists and COCOON's default params (ton/root.py: root_params_boc) at
            # deployment, so the address depends on the owner only
            # (examples/ name it); then listed by the owner, as on a real chain.
            address = deploy_root(chain, root_state_init(owner.address), Nanoton(1_000_000_000))
            bodies = [
                allowlist_body(AllowList.MODEL, model_hash(m), add=True) for m in args.root_model
            ]
            bodies += [
                allowlist_body(AllowList.WORKER, parse_hash(h), add=True)
                for h in args.root_image_hash
            ]
            for seqno, start in enumerate(range(0, len(bodies), 4)):
                signed = owner.create_transfer(
                    owner_key,
                    [
                        Transfer(address, Nanoton(50_000_000), bounce=True, body_boc=body)
                        for body in bodies[start : start + 4]
                    ],
                    seqno=seqno,
                    valid_until=chain.now() + 60,
                )
                chain.send_external(signed.boc)
            root = {
                "root_address": address.to_friendly(bounceable=True),
                "root_address_raw": address.to_raw(),
                "root_owner_wallet_raw": owner.address.to_raw(),
            }
        running = await start_local_chain(
            chain, host=args.host, port=args.port, api_key=args.api_key
        )
        print(
            json.dumps(
                {
                    **root,
                    "api_url": running.api_url,
                    "calls_url": running.calls_url,
                    "genesis_wallet": wallet.address.to_friendly(bounceable=False),
                    "genesis_wallet_raw": wallet.address.to_raw(),
                    "genesis_wallet_v5r1_raw": wallet_v5.address.to_raw(),
                    "genesis_public_key": key.public_key.hex(),
                    "genesis_balance_nanoton": str(chain.balance(wallet.address)),
                }
            ),
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await running.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
