"""TON domain library: amounts, addresses, the v2 HTTP client, wallets and a local chain.

See ``docs/ton.md``. Errors are all in :mod:`cocoon_operator.ton.errors`.
"""
