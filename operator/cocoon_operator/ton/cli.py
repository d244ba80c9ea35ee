"""``ton`` subcommands: look at addresses, wallets and root allow-lists; one JSON object out.

* ``ton address ADDR``: validate and normalise an address, print all its forms;
* ``ton node-wallet --key-file FILE --owner ADDRESS [--testnet]``: the address of
  the COCOON node wallet a worker with that ``node_wallet_key`` and owner uses,
  computed offline; two labelled text lines (``raw:`` and ``non-bounceable:``),
  not JSON, so a shell can ``grep``/``cut`` them;
* ``ton wallet --endpoint URL ADDRESS``: state, balance, seqno (when a wallet);
* ``ton allowlist --endpoint URL --root ADDRESS [--image-hash HEX]...
  [--model Name@commit:verity | --model-hash HEX]... [--proxy-hash HEX]...``:
  whether each hash is on the root contract's allow-list.

Exit status: 0 done (for ``allowlist`` also when a hash is not listed: see
``all_allowed``), 1 failure (invalid address for ``ton address``, the API or
the contract failed), 2 usage (bad arguments, unreadable API key file; for
``node-wallet`` a bad key file or owner, as one line on stderr naming the flag).

The toncenter API key comes from ``--api-key-file`` or ``$TONCENTER_API_KEY``
and is only ever sent as a header: it is never printed. Nor is the node wallet
key: ``node-wallet`` errors say what is wrong with it, never what it is.

Wiring: ``register(subparsers)`` adds the ``ton`` group to an existing argparse
sub-parser set; each subcommand sets ``func`` (Namespace -> exit status).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .address import Address, ParsedAddress, parse_address
from .amounts import format_ton
from .client import TonClient
from .cocoonwallet import node_wallet_address, parse_node_wallet_key
from .errors import AddressError, NodeWalletKeyError, RootContractError, TonError
from .root import AllowList, RootContract, model_hash, parse_hash

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
API_KEY_ENV = "TONCENTER_API_KEY"
#: A key file is 44 characters and a newline; anything much bigger is not one.
MAX_KEY_FILE_BYTES = 4096


class UsageError(Exception):
    """Bad arguments: exit status 2."""


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()


def _forms(address: Address, *, testnet: bool) -> dict[str, Any]:
    return {
        "raw": address.to_raw(),
        "workchain": address.workchain,
        "bounceable": address.to_friendly(bounceable=True, testnet=testnet),
        "non_bounceable": address.to_friendly(bounceable=False, testnet=testnet),
    }


def _parsed(text: str, what: str) -> ParsedAddress:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _api_key(args: argparse.Namespace) -> str | None:
    path: Path | None = args.api_key_file
    if path is not None:
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --api-key-file: {exc.strerror or exc}") from None
        if not key:
            raise UsageError("--api-key-file is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def _run(args: argparse.Namespace, body: Callable[[TonClient], Awaitable[dict[str, Any]]]) -> int:
    """Open a client for ``args``, run ``body`` and print its result or the failure."""
    try:
        api_key = _api_key(args)
    except UsageError as exc:
        _emit({"ok": False, "error": "usage", "detail": str(exc)})
        return EXIT_USAGE

    async def main() -> dict[str, Any]:
        async with TonClient(args.endpoint, api_key=api_key, timeout=args.timeout) as client:
            return await body(client)

    try:
        payload = asyncio.run(main())
    except TonError as exc:  # the client redacts the API key from every message
        _emit({"ok": False, "error": type(exc).__name__, "detail": str(exc)})
        return EXIT_FAILURE
    _emit({"ok": True, **payload})
    return EXIT_OK


# ------------------------------------------------------------------ address


def cmd_address(args: argparse.Namespace) -> int:
    """Validate and normalise one address."""
    try:
        parsed = parse_address(args.address, allowed_workchains=None)
    except AddressError as exc:
        _emit({"ok": False, "valid": False, "error": "AddressError", "detail": str(exc)})
        return EXIT_FAILURE
    testnet = bool(parsed.testnet)
    _emit(
        {
            "ok": True,
            "valid": True,
            "input_form": parsed.form,
            "input_bounceable": parsed.bounceable,
            "testnet": testnet,
            **_forms(parsed.address, testnet=testnet),
            "forms": {
                "mainnet": _forms(parsed.address, testnet=False),
                "testnet": _forms(parsed.address, testnet=True),
            },
        }
    )
    return EXIT_OK


# ------------------------------------------------------------------ wallet


def cmd_wallet(args: argparse.Namespace) -> int:
    """Account state, balance and, for a wallet, its seqno."""
    try:
        parsed = _parsed(args.address, "ADDRESS")
    except UsageError as exc:
        _emit({"ok": False, "error": "usage", "detail": str(exc)})
        return EXIT_USAGE

    async def body(client: TonClient) -> dict[str, Any]:
        info = await client.get_wallet_information(parsed.address)
        return {
            "address": _forms(parsed.address, testnet=bool(parsed.testnet)),
            "state": info.account_state,
            "balance_nanoton": str(info.balance),
            "balance_ton": format_ton(info.balance),
            "wallet": info.wallet,
            "wallet_type": info.wallet_type,
            "seqno": info.seqno if info.wallet else None,
            "wallet_id": info.wallet_id if info.wallet else None,
        }

    return _run(args, body)


# ------------------------------------------------------------------ node-wallet


def _read_key_file(path: Path) -> str:
    """The key text of ``path``, whitespace around it stripped as the launcher does
    before handing it to COCOON (``launcher._run._read_secret``), so any file the
    launcher accepts is read the same here. Errors name the file, not its content."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--key-file: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise UsageError(
            f"--key-file: {path} is over {MAX_KEY_FILE_BYTES} bytes, not a node_wallet_key"
        )
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"--key-file: {path} is not UTF-8 text") from None


def cmd_node_wallet(args: argparse.Namespace) -> int:
    """Print the node wallet address of a key file and an owner (no network)."""
    try:
        owner = _parsed(args.owner, "--owner")
        try:
            key = parse_node_wallet_key(_read_key_file(args.key_file))
        except NodeWalletKeyError as exc:
            raise UsageError(f"--key-file: {exc}") from None
    except UsageError as exc:
        sys.stderr.write(f"cocoon-operator ton node-wallet: {exc}\n")
        return EXIT_USAGE
    address = node_wallet_address(key.public_key, owner.address)
    # COCOON's generate-cocoon-wallet-address takes the testnet flag from the owner
    # (runners/utils/generate-cocoon-wallet-address.cpp:63); --testnet forces it.
    testnet = bool(args.testnet or owner.testnet)
    sys.stdout.write(f"raw: {address.to_raw()}\n")
    sys.stdout.write(f"non-bounceable: {address.to_friendly(bounceable=False, testnet=testnet)}\n")
    return EXIT_OK


# ------------------------------------------------------------------ allowlist


def _checks(args: argparse.Namespace) -> list[tuple[AllowList, bytes, str | None]]:
    checks: list[tuple[AllowList, bytes, str | None]] = []
    try:
        for text in args.image_hash or []:
            checks.append((AllowList.WORKER, parse_hash(text), None))
        for model in args.model or []:
            checks.append((AllowList.MODEL, model_hash(model), model))
        for text in args.model_hash or []:
            checks.append((AllowList.MODEL, parse_hash(text), None))
        for text in args.proxy_hash or []:
            checks.append((AllowList.PROXY, parse_hash(text), None))
    except RootContractError as exc:
        raise UsageError(str(exc)) from None
    if not checks:
        raise UsageError(
            "nothing to check: give --image-hash, --model, --model-hash or --proxy-hash"
        )
    return checks


def cmd_allowlist(args: argparse.Namespace) -> int:
    """Whether each given hash is on the root contract's allow-list."""
    try:
        root_address = _parsed(args.root, "--root").address
        checks = _checks(args)
    except UsageError as exc:
        _emit({"ok": False, "error": "usage", "detail": str(exc)})
        return EXIT_USAGE

    async def body(client: TonClient) -> dict[str, Any]:
        root = RootContract(client, root_address)
        results: list[dict[str, Any]] = []
        for kind, value, model in checks:
            entry: dict[str, Any] = {
                "list": str(kind),
                "hash": value.hex(),
                "allowed": await root.is_allowed(kind, value),
            }
            if model is not None:
                entry["model"] = model
            results.append(entry)
        return {
            "root": root_address.to_raw(),
            "checks": results,
            "all_allowed": all(r["allowed"] for r in results),
        }

    return _run(args, body)


# ------------------------------------------------------------------ wiring


def _add_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", required=True, help="toncenter-compatible API v2 base URL (…/api/v2)"
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help=f"file holding the API key (default: ${API_KEY_ENV}, else none)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP attempt")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ton {address,wallet,node-wallet,allowlist}`` to an ``add_subparsers()`` result."""
    ton: argparse.ArgumentParser = subparsers.add_parser(
        "ton",
        help="TON addresses, wallets, node wallet addresses and root allow-lists"
        " (one JSON object on stdout; node-wallet: labelled text lines)",
    )
    sub = ton.add_subparsers(dest="ton_command", required=True)

    address = sub.add_parser("address", help="validate and normalise an address; all its forms")
    address.add_argument(
        "address", metavar="ADDR", help="raw or user-friendly; put '--' before a raw '-1:...'"
    )
    address.set_defaults(func=cmd_address)

    wallet = sub.add_parser("wallet", help="state, balance and seqno of an account")
    _add_endpoint(wallet)
    wallet.add_argument("address", metavar="ADDRESS", help="raw or user-friendly")
    wallet.set_defaults(func=cmd_wallet)

    node = sub.add_parser(
        "node-wallet",
        help="address of a COCOON node wallet from its key and owner (offline; text lines)",
    )
    node.add_argument(
        "--key-file",
        type=Path,
        required=True,
        metavar="FILE",
        help="file holding the node_wallet_key: base64 of the 32-byte Ed25519 seed",
    )
    node.add_argument(
        "--owner", required=True, metavar="ADDRESS", help="the worker's owner_address"
    )
    node.add_argument(
        "--testnet",
        action="store_true",
        help="testnet user-friendly form (also implied by a testnet-form --owner)",
    )
    node.set_defaults(func=cmd_node_wallet)

    allow = sub.add_parser("allowlist", help="check hashes against a root contract's allow-lists")
    _add_endpoint(allow)
    allow.add_argument("--root", required=True, metavar="ADDRESS", help="root contract")
    allow.add_argument(
        "--image-hash", action="append", metavar="HEX", help="worker image hash (repeatable)"
    )
    models = allow.add_mutually_exclusive_group()
    models.add_argument(
        "--model",
        action="append",
        metavar="Name@commit:verity",
        help="model id; its SHA-256 is checked (repeatable)",
    )
    models.add_argument(
        "--model-hash", action="append", metavar="HEX", help="model hash (repeatable)"
    )
    allow.add_argument(
        "--proxy-hash", action="append", metavar="HEX", help="proxy hash (repeatable)"
    )
    allow.set_defaults(func=cmd_allowlist)
    return ton
