"""COCOON's node wallet (the ``CocoonWallet`` contract): key, data, StateInit, address.

A COCOON worker pays its fees from a wallet of its own: not a standard wallet but
COCOON's ``CocoonWallet`` contract, deployed by the worker's first message and
owned by the worker's ``owner_address``. Its address follows from the worker's
``node_wallet_key`` and the owner address alone, so it can be computed before the
worker boots: the wallet can be funded before the worker starts waiting for
2.1 TON on it (``BaseRunner::min_wallet_balance()``, runners/BaseRunner.hpp:335-337,
passed at runners/worker/WorkerRunner.cpp:230-231 and waited for in
``BaseRunner::cocoon_wallet_check_balance``, runners/BaseRunner.cpp:1037-1054), and
the address a worker reports can be checked against the key it was given.

Facts used here, from COCOON (TelegramMessenger/cocoon at b75d444, paths from its
root) and TON (ton-blockchain/ton):

* ``node_wallet_key`` is an ``int256`` of the runner's TL config
  (tl/generate/scheme/cocoon_api.tl:64, ``workerRunner.config``), read from JSON
  (runners/worker/WorkerRunner.cpp:89-92) by TON's ``from_json`` for a
  ``BitArray``: ``td::base64_decode`` of the string, which must give exactly 32
  bytes (TON's tl/tl/tl_json.h, "Wrong length for UInt"). ``td::base64_decode``
  takes the standard alphabet only, insists on ``=`` padding to a multiple of 4
  and refuses non-zero bits after the last byte (TON's tdutils/td/utils/base64.cpp),
  so the one spelling of 32 bytes it takes is 43 base64 digits and one ``=``.
* The 32 bytes are the Ed25519 private key seed: the worker builds a
  ``td::Ed25519::PrivateKey`` from them and takes its public key
  (runners/worker/WorkerRunner.cpp:116-117), which goes into the wallet's data
  (runners/smartcontracts/CocoonWallet.cpp:36-40).
* The code is ``CocoonWallet::code_str()`` (CocoonWallet.cpp:17-31), shipped here
  byte for byte as ``contracts/cocoon_wallet.code.boc``; its representation hash is
  :data:`COCOON_WALLET_CODE_HASH`, checked when this module is imported.
* The data (c4) of a new wallet is ``CocoonWallet::init_data_cell``
  (CocoonWallet.cpp:225-231): ``seqno:uint32 = 0``, ``subwallet:uint32 = 0``,
  ``public_key:bits256``, 32 zero bits, then the owner as ``addr_std`` without
  anycast (``store_address``, cocoon-tl-utils/parsers.cpp:65-67).
* The StateInit holds code and data only: no split depth, no special flag, no
  libraries (runners/smartcontracts/SmartContract.hpp:97-101). The address is its
  hash in workchain 0, rendered non-bounceable with the testnet flag of the
  runner's network (runners/smartcontracts/SmartContract.cpp:164-170), base64url.
* The code answers three get-methods (its method dictionary; the tests run them
  in the TVM): ``seqno``, ``get_public_key`` (as a 256-bit unsigned integer) and
  ``get_owner_address`` (a slice). COCOON's own runner calls none of them: it reads
  the seqno straight from the account's data (CocoonWallet.cpp:52-61).
* Requests (CocoonWallet.cpp:122-125 and ``BaseRunner::sign_message``,
  runners/BaseRunner.cpp:932-946) are signed like a v4r2 wallet's but carry
  ``subwallet valid_until seqno`` and no op byte. Run on the local chain, the code
  refuses a request before accepting it, so nobody pays, with exit code 1032
  (seqno is not the stored one), 1033 (subwallet is not 0), 1034 (signature is not
  by the stored key) or 1035 (the wallet holds under 2 TON).

Everything here is pure: bytes and :class:`~cocoon_operator.ton.address.Address`
values in and out, no network, no Kubernetes.
"""

from __future__ import annotations

import base64
import importlib.resources
import string

from .address import Address, to_address
from .cells import (
    Cell,
    begin_cell,
    cell_from_boc,
    cell_hash,
    cell_to_boc,
    contract_address,
    state_init_cell,
    to_core_address,
)
from .errors import NodeWalletKeyError, WalletError
from .wallet import WalletKey

#: Representation hash (hex) of ``CocoonWallet::code_str()``: it identifies a COCOON
#: node wallet on chain, as the v4r2/v5r1 hashes identify standard wallets.
COCOON_WALLET_CODE_HASH = "7a48f05ceef40f06cabbaa39c1c5a67b24e8bb59d8cf8a74e49988a5f44cf66a"
#: The workchain COCOON puts every node wallet in (SmartContract.cpp:166).
NODE_WALLET_WORKCHAIN = 0
#: Bytes of a ``node_wallet_key``: an Ed25519 private key seed.
NODE_WALLET_KEY_BYTES = 32
#: The code's get-methods, by name (their ids are ``crc16(name) | 0x10000``).
GET_SEQNO = "seqno"
GET_PUBLIC_KEY = "get_public_key"
GET_OWNER_ADDRESS = "get_owner_address"

_STANDARD_BASE64 = frozenset(string.ascii_letters + string.digits + "+/")


def _load_code() -> bytes:
    resource = importlib.resources.files(__package__ or "cocoon_operator.ton").joinpath(
        "contracts/cocoon_wallet.code.boc"
    )
    boc = resource.read_bytes()
    # A wrong file would give every worker a wallet address nobody can fund: refuse it.
    if cell_hash(cell_from_boc(boc)).hex() != COCOON_WALLET_CODE_HASH:
        raise WalletError("contracts/cocoon_wallet.code.boc is not COCOON's CocoonWallet code")
    return boc


#: ``CocoonWallet::code_str()`` as a BOC (CocoonWallet.cpp:17-31).
COCOON_WALLET_CODE_BOC: bytes = _load_code()
_CODE: Cell = cell_from_boc(COCOON_WALLET_CODE_BOC)


def parse_node_wallet_key(text: str) -> WalletKey:
    """The Ed25519 key of a ``node_wallet_key``, accepting exactly what COCOON accepts.

    That is standard base64 of 32 bytes with its ``=`` padding (44 characters),
    nothing around it: the runner reads the value through ``td::base64_decode``,
    which refuses whitespace, base64url, missing padding and non-zero trailing
    bits, and then wants 32 bytes. A key the worker would refuse is refused here
    first, with a :class:`~cocoon_operator.ton.errors.NodeWalletKeyError` saying
    what is wrong and never quoting the key: an error message ends up in logs.
    Callers reading the key from a file strip the whitespace around it first, as
    the launcher does before writing it into the worker's config.
    """
    if not isinstance(text, str):
        raise NodeWalletKeyError(f"node_wallet_key must be text, not {type(text).__name__}")
    if not text:
        raise NodeWalletKeyError("node_wallet_key is empty")
    digits = text.rstrip("=")
    padding = len(text) - len(digits)
    if not all(char in _STANDARD_BASE64 for char in digits):
        raise NodeWalletKeyError(
            "node_wallet_key is not standard base64: only A-Z, a-z, 0-9, '+' and '/'"
            " followed by '=' padding are accepted (no whitespace, no base64url '-' or '_')"
        )
    if padding > 2 or (len(digits) + padding) % 4:
        raise NodeWalletKeyError(
            f"node_wallet_key is not padded base64: {len(text)} characters with"
            f" {padding} '=', expected {4 * -(-NODE_WALLET_KEY_BYTES // 3)} characters"
            " ending in one '='"
        )
    size = len(digits) // 4 * 3 + (len(digits) % 4 + 1) // 2  # what td::base64_decode yields
    if size != NODE_WALLET_KEY_BYTES:
        raise NodeWalletKeyError(
            f"node_wallet_key decodes to {size} bytes, expected {NODE_WALLET_KEY_BYTES}"
            " (an Ed25519 private key seed)"
        )
    seed = base64.b64decode(text, validate=True)
    if base64.b64encode(seed).decode("ascii") != text:
        raise NodeWalletKeyError(
            "node_wallet_key has non-zero bits after its 32nd byte (in the character"
            " before '='); COCOON's base64 decoder refuses that"
        )
    return WalletKey(seed)


def _public_key(public_key: bytes) -> bytes:
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise WalletError("a node wallet's public key is 32 bytes")
    return public_key


def _data_cell(public_key: bytes, owner: Address | str) -> Cell:
    return (
        begin_cell()
        .store_uint(0, 32)  # seqno
        .store_uint(0, 32)  # subwallet
        .store_bytes(_public_key(public_key))
        .store_uint(0, 32)
        .store_address(to_core_address(to_address(owner)))
        .end_cell()
    )


def node_wallet_data_boc(public_key: bytes, owner: Address | str) -> bytes:
    """The data (c4) of a new node wallet of ``public_key`` owned by ``owner``."""
    return cell_to_boc(_data_cell(public_key, owner))


def node_wallet_state_init_boc(public_key: bytes, owner: Address | str) -> bytes:
    """The StateInit the worker's first message carries: COCOON's code and the new data."""
    return cell_to_boc(state_init_cell(_CODE, _data_cell(public_key, owner)))


def node_wallet_address(public_key: bytes, owner: Address | str) -> Address:
    """The node wallet's address: the hash of its StateInit, in workchain 0.

    Render it with ``to_friendly(bounceable=False, testnet=...)`` as COCOON does; a
    transfer to it before the worker's first message must not bounce, since the
    account has no code until then.
    """
    return contract_address(_CODE, _data_cell(public_key, owner), NODE_WALLET_WORKCHAIN)


def node_wallet_address_of_key(key_text: str, owner: Address | str) -> Address:
    """The node wallet address of a ``node_wallet_key`` (see :func:`parse_node_wallet_key`)."""
    return node_wallet_address(parse_node_wallet_key(key_text).public_key, owner)
