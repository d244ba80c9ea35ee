"""A worker's ``/jsonstats`` and controls, over its attested RA-TLS channel."""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cocoon_operator import jsondoc


class WorkerStatsError(Exception):
    """The worker answered, but not with the document COCOON workers serve."""


class CertificateChangedError(WorkerStatsError):
    """The worker presented another certificate than the attested one (it may have
    rotated it since: COCOON does hourly), so nothing it said was accepted."""


@dataclass(frozen=True)
class GpuEvidenceDocument:
    """``GET /attestation/gpu?nonce=HEX``: the GPU's SPDM exchange and its device chain."""

    evidence: bytes  # GET_MEASUREMENTS request || signed MEASUREMENTS response
    certificate_chain: bytes  # PEM, leaf first


def parse_gpu_evidence(doc: Any) -> GpuEvidenceDocument:
    """The document's two fields, or :class:`WorkerStatsError` naming the bad one."""
    if not isinstance(doc, dict):
        raise WorkerStatsError("GPU evidence: not a JSON object")
    evidence, chain = doc.get("evidence"), doc.get("certificateChain")
    if not isinstance(evidence, str):
        raise WorkerStatsError("GPU evidence: 'evidence' (hex) is missing")
    if not isinstance(chain, str) or "BEGIN CERTIFICATE" not in chain:
        raise WorkerStatsError("GPU evidence: 'certificateChain' (PEM) is missing")
    try:
        raw = bytes.fromhex(evidence)
    except ValueError:
        raise WorkerStatsError("GPU evidence: 'evidence' is not hex") from None
    return GpuEvidenceDocument(raw, chain.encode())


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
    coefficient: int | None  # per-mille, as configured in the worker
    active_requests: int | None  # requests in flight, when the worker reports it
    proxies: tuple[str, ...] = ()  # proxy contract addresses, for payouts
    # Per proxy address: payouts completed, and those with a payout running now
    # (a payout asked for before a crash is recognised by them).
    proxy_payouts: Mapping[str, int] = field(default_factory=dict)
    running_payouts: frozenset[str] = frozenset()


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WorkerStatsError(f"{key} is not an integer")
    return value


def _optional_int(doc: Any, key: str) -> int | None:
    if not isinstance(doc, dict) or key not in doc:
        return None
    return _int(doc, key)


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
    named = [p for p in proxy_docs if isinstance(p.get("proxy_sc_address"), str)]
    return WorkerStats(
        wallet_address=address,
        enabled=status.get("enabled") is True,
        image_hash_listed=status.get("actual_image_hash") is True,
        model_listed=status.get("actual_model") is True,
        earned_tokens=sum(_int(p, "earned_tokens_committed_to_blockchain") for p in proxy_docs),
        paid_out_tokens=sum(_int(p, "cached_out_tokens") for p in proxy_docs),
        payouts=sum(_int(p, "payouts") for p in proxy_docs),
        payout_running=any(p.get("running_request") is True for p in proxy_docs),
        coefficient=_optional_int(doc.get("localconfig"), "coefficient"),
        active_requests=_optional_int(status, "active_requests"),
        proxies=tuple(p["proxy_sc_address"] for p in named),
        proxy_payouts={p["proxy_sc_address"]: _int(p, "payouts") for p in named},
        running_payouts=frozenset(
            p["proxy_sc_address"] for p in named if p.get("running_request") is True
        ),
    )


@functools.cache
def _pinned_context() -> ssl.SSLContext:
    """One TLS context for every worker connection, made once.

    No CA bundle is loaded (``create_default_context`` would read the system
    store on every call, which dominated the operator's CPU at 100 workers):
    the certificate's fingerprint pin decides, not a CA.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class WorkerClient:
    """HTTP to a worker over TLS, accepted only from the certificate that was attested.

    Pinning the verified certificate's SHA-256 means answers come from the
    attested VM's key, not from whatever listens on the port, and controls
    reach that VM only. Use as ``async with WorkerClient(...) as worker:``.
    """

    def __init__(
        self, host: str, port: int, *, certificate_sha256: str, timeout_seconds: float = 5.0
    ) -> None:
        self._base = f"https://{host}:{port}"
        self._pin = aiohttp.Fingerprint(bytes.fromhex(certificate_sha256))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_pinned_context()),
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        )

    async def __aenter__(self) -> WorkerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def _get(self, path: str, params: dict[str, str] | None = None) -> str:
        try:
            async with self._session.get(self._base + path, params=params, ssl=self._pin) as resp:
                if resp.status != 200:
                    raise WorkerStatsError(f"{path}: HTTP {resp.status}")
                return await resp.text()
        except aiohttp.ServerFingerprintMismatch:
            raise CertificateChangedError(
                "the worker presented another certificate than the attested one"
            ) from None

    async def stats(self) -> WorkerStats:
        text = await self._get("/jsonstats")
        try:
            doc = jsondoc.loads(text)
        except ValueError as exc:
            raise WorkerStatsError(f"jsonstats is not JSON: {exc}") from None
        return parse_stats(doc)

    async def gpu_evidence(self, nonce: bytes) -> GpuEvidenceDocument:
        """The GPU's measurements signed over ``nonce`` (not a COCOON endpoint: only
        workers that serve it support ``spec.attestation.gpu.mode: Verify``)."""
        text = await self._get("/attestation/gpu", {"nonce": nonce.hex()})
        try:
            doc = jsondoc.loads(text)
        except ValueError as exc:
            raise WorkerStatsError(f"GPU evidence is not JSON: {exc}") from None
        return parse_gpu_evidence(doc)

    async def set_coefficient(self, per_mille: int) -> None:
        """COCOON takes a multiplier: 1500 per mille is ``1.5``."""
        value = f"{per_mille / 1000:g}"
        answer = await self._get("/request/change_coefficient", {"coefficient": value})
        if "coefficient set" not in answer:
            raise WorkerStatsError(f"change_coefficient: unexpected answer {_strip(answer)!r}")

    async def disable(self) -> None:
        await self._get("/request/disable")

    async def enable(self) -> None:
        await self._get("/request/enable")

    async def payout(self, proxy: str) -> str:
        """Ask for a payout from ``proxy``; the worker's one-line answer."""
        return _strip(await self._get("/request/payout", {"proxy": proxy}))


def _strip(html: str) -> str:
    """The text of COCOON's tiny answer pages."""
    return re.sub(r"<[^>]+>", " ", html).split("return to stats")[0].strip()


async def fetch_stats(
    host: str, port: int, *, certificate_sha256: str, timeout_seconds: float = 5.0
) -> WorkerStats:
    """``GET /jsonstats`` from the attested certificate's holder (see :class:`WorkerClient`)."""
    async with WorkerClient(
        host, port, certificate_sha256=certificate_sha256, timeout_seconds=timeout_seconds
    ) as client:
        return await client.stats()
