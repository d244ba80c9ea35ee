"""A local TON chain for tests and demos: real TVM, toncenter-compatible v2 API.

What is real
    Every transaction is computed by TON's own transaction executor
    (``libemulator``, see :mod:`.emulator`): storage, credit, compute (TVM),
    action and bounce phases, fees under the blockchain config, signature
    checks, ``accept_message`` semantics for external messages, bounces of
    bounceable messages to uninitialised accounts. Contracts run their real code
    (wallets v4r2 and v5r1 as published, the project's own root contract, ...).
    Get-methods run in the same TVM.

What is simplified
    One workchain-agnostic account map, no shards, no validators, no blocks
    other than a counter: each ``sendBoc`` is processed synchronously before the
    HTTP response is returned ("one block per external message"), breadth-first
    over the messages it causes, in creation order. Logical time is a global
    counter advanced by 1000 per transaction. Time comes from an injectable
    clock (unix seconds). The blockchain config is the compact test config that
    ships with ``pytvm`` (it has real gas/forwarding price parameters). Storage
    fees are charged by the executor for the time elapsed on the injected clock.

Genesis / faucet
    :meth:`LocalChain.mint` delivers an internal message carrying new coins from
    the masterchain zero address; with a StateInit it deploys the contract. The
    HTTP API adds ``POST /local/mint`` for the same purpose (not part of v2).

Run it: ``python -m cocoon_operator.ton.localchain --port 8081`` then point a
:class:`~cocoon_operator.ton.client.TonClient` at ``http://127.0.0.1:8081/api/v2``.

The package, by role (this module re-exports what the tests and hack/ use):

- :mod:`.chain`: the chain's state and execution: accounts, messages,
  transactions, get-methods (:class:`LocalChain`);
- :mod:`.emulator`: the binding to ``libemulator`` that :mod:`.chain` runs on;
- :mod:`.v2`: toncenter's v2 methods over a chain, JSON in and out
  (:class:`LocalChainApi`);
- :mod:`.v3`: toncenter's v3 ``accountStates``, the one v3 read the operator
  makes (its balance book);
- :mod:`.server`: the HTTP server: the route table (:func:`build_app`) and
  :func:`start_local_chain`;
- :mod:`.cli`: ``python -m cocoon_operator.ton.localchain``: genesis wallets,
  the optional root contract, then the server.
"""

from cocoon_operator.ton.localchain.chain import (
    MINT_SOURCE,
    AccountView,
    ExternalResult,
    LocalChain,
    MessageRecord,
    MessageRejected,
    TransactionRecord,
    default_config_boc,
    method_id,
)
from cocoon_operator.ton.localchain.cli import (
    DEFAULT_GENESIS_BALANCE,
    DEFAULT_GENESIS_SEED,
    DEFAULT_ROOT_OWNER_SEED,
    ROOT_OWNER_BALANCE,
    main,
)
from cocoon_operator.ton.localchain.server import (
    RunningLocalChain,
    build_app,
    start_local_chain,
)
from cocoon_operator.ton.localchain.v2 import LocalChainApi

__all__ = [
    "DEFAULT_GENESIS_BALANCE",
    "DEFAULT_GENESIS_SEED",
    "DEFAULT_ROOT_OWNER_SEED",
    "MINT_SOURCE",
    "ROOT_OWNER_BALANCE",
    "AccountView",
    "ExternalResult",
    "LocalChain",
    "LocalChainApi",
    "MessageRecord",
    "MessageRejected",
    "RunningLocalChain",
    "TransactionRecord",
    "build_app",
    "default_config_boc",
    "main",
    "method_id",
    "start_local_chain",
]
