"""A worker's ``/jsonstats``, read over its attested RA-TLS channel."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp


class WorkerStatsError(Exception):
    """The worker answered, but not with the document COCOON workers serve."""


@dataclass(frozen=True)
class WorkerStats:
    """What the operator uses of a worker's ``/jsonstats`` (token counts, not money)."""

    wallet_address: str
    enabled: bool
    image_hash_listed: bool  # the worker's own reading of the root contract
    model_listed: bool
    earned_tokens: int  # committed to the blockchain, summed over proxies
    paid_out_tokens: int  # cashed out, summed over proxies
    payouts: int
    payout_running: bool


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WorkerStatsError(f"{key} is not an integer")
    return value


def parse_stats(doc: Any) -> WorkerStats:
    """Pick the fields the operator needs; a malformed document is an error, not zeros."""
    if not isinstance(doc, dict):
        raise WorkerStatsError("jsonstats is not an object")
    status, wallet = doc.get("status"), doc.get("wallet")
    proxies = doc.get("proxies", [])
    if (
        not isinstance(status, dict)
        or not isinstance(wallet, dict)
        or not isinstance(proxies, list)
    ):
        raise WorkerStatsError("jsonstats lacks status, wallet or proxies")
    address = wallet.get("address")
    if not isinstance(address, str) or not address:
        raise WorkerStatsError("jsonstats has no wallet address")
    proxy_docs = [p for p in proxies if isinstance(p, dict)]
    return WorkerStats(
        wallet_address=address,
        enabled=status.get("enabled") is True,
        image_hash_listed=status.get("actual_image_hash") is True,
        model_listed=status.get("actual_model") is True,
        earned_tokens=sum(_int(p, "earned_tokens_committed_to_blockchain") for p in proxy_docs),
        paid_out_tokens=sum(_int(p, "cached_out_tokens") for p in proxy_docs),
        payouts=sum(_int(p, "payouts") for p in proxy_docs),
        payout_running=any(p.get("running_request") is True for p in proxy_docs),
    )


async def fetch_stats(
    host: str, port: int, *, certificate_sha256: str, timeout_seconds: float = 5.0
) -> WorkerStats:
    """``GET /jsonstats`` over TLS, accepted only from the certificate that was attested.

    Pinning the verified certificate's fingerprint means the answer comes
    from the attested VM's key, not from whatever listens on the port.
    """
    pin = aiohttp.Fingerprint(bytes.fromhex(certificate_sha256))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pin, not a CA, decides
    connector = aiohttp.TCPConnector(ssl=ctx)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(f"https://{host}:{port}/jsonstats", ssl=pin) as resp,
        ):
            if resp.status != 200:
                raise WorkerStatsError(f"jsonstats: HTTP {resp.status}")
            try:
                doc = await resp.json(content_type=None)
            except ValueError as exc:
                raise WorkerStatsError(f"jsonstats is not JSON: {exc}") from None
    except aiohttp.ServerFingerprintMismatch:
        raise WorkerStatsError(
            "the worker presented another certificate than the attested one"
        ) from None
    return parse_stats(doc)
