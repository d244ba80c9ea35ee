"""toncenter's v3 ``accountStates`` over a local chain: the one v3 endpoint the
operator reads (the fleet's balance book, funding/_balances.py), in the index's
shape, so the balance book is tested against what toncenter answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from cocoon_operator.ton.address import to_address
from cocoon_operator.ton.cells import cell_from_boc, cell_hash
from cocoon_operator.ton.errors import AddressError

from .chain import LocalChain
from .v2 import LocalChainApi, _ApiError, _b64, _friendly

#: toncenter v3 answers at most this many accounts per request (docs: "Maximum 1000
#: addresses allowed"; the index's query ends in ``limit 1000``). toncenter cuts
#: silently; the local chain refuses, so that a client asking more fails in tests.
V3_MAX_ADDRESSES = 1000
#: v3's account status names (toncenter/ton-indexer, the ``account_status`` enum).
_V3_STATUS = {"active": "active", "uninitialized": "uninit", "frozen": "frozen"}


def v3_account_states(
    chain: LocalChain, addresses: Sequence[str], *, include_boc: bool = True
) -> dict[str, Any]:
    """toncenter v3's ``GET /api/v3/accountStates`` answer over ``chain``: the same
    shape (https://docs.ton.org/ecosystem/api/toncenter/v3/accounts/get-account-states).

    As the index, it lists only accounts that exist on chain (an address never
    touched has no row there: left out here too), addresses in raw upper-case hex
    (``0:ABC...``, the index's form), hashes in base64, and an ``address_book``
    mapping each to its user-friendly form. Raises :class:`_ApiError` 422, the
    index's status for a request it cannot parse."""
    if not addresses:
        raise _ApiError(422, "address of account is required")
    if len(addresses) > V3_MAX_ADDRESSES:
        raise _ApiError(422, f"at most {V3_MAX_ADDRESSES} addresses, got {len(addresses)}")
    try:
        parsed = list(dict.fromkeys(to_address(a) for a in addresses))
    except AddressError as exc:
        raise _ApiError(422, f"bad address: {exc}") from None
    accounts: list[dict[str, Any]] = []
    book: dict[str, Any] = {}
    for address in parsed:
        view = chain.account(address)
        if view.status == "uninitialized" and view.last_lt == 0 and view.balance == 0:
            continue  # never touched: the index holds no state for it
        raw = f"{address.workchain}:{address.account_id.hex().upper()}"
        entry: dict[str, Any] = {
            "address": raw,
            "balance": str(view.balance),
            "status": _V3_STATUS[view.status],
            "last_transaction_hash": _b64(view.last_hash) or None,
            "last_transaction_lt": str(view.last_lt),
            "code_hash": _b64(cell_hash(cell_from_boc(view.code_boc))) if view.code_boc else None,
            "data_hash": _b64(cell_hash(cell_from_boc(view.data_boc))) if view.data_boc else None,
            "extra_currencies": {},
        }
        if include_boc:
            entry["code_boc"] = _b64(view.code_boc) or None
            entry["data_boc"] = _b64(view.data_boc) or None
        accounts.append(entry)
        book[raw] = {"user_friendly": _friendly(address), "domain": None}
    return {"accounts": accounts, "address_book": book}


def v3_account_states_route(api: LocalChainApi, api_key: str | None) -> Any:
    """The aiohttp handler of ``GET /api/v3/accountStates`` (v3's bare JSON, not v2's
    envelope; errors as ``{"error": ...}``), counted in ``api.calls`` as
    ``accountStates``."""

    async def handle(request: web.Request) -> web.Response:
        if api_key is not None and request.headers.get("X-API-Key") != api_key:
            return web.json_response({"error": "API key required"}, status=401)
        include_boc = request.query.get("include_boc", "true").lower() not in ("false", "0")
        api.calls["accountStates"] += 1
        try:
            # No lock: the reading is synchronous, so no transaction interleaves it.
            answer = v3_account_states(
                api.chain, request.query.getall("address", []), include_boc=include_boc
            )
        except _ApiError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        return web.json_response(answer)

    return handle
