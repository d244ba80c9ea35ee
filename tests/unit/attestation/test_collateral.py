"""Collateral values, the FMSPC/CA cache and the sources (local, and PCCS over HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote as urlquote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cocoon_operator.attestation import (
    Collateral,
    CollateralCache,
    CollateralKey,
    LocalCollateralSource,
    TdxVerifier,
    TrustedRoot,
)
from cocoon_operator.attestation.errors import (
    CollateralFetchError,
    CollateralFormatError,
    CollateralMismatchError,
    CollateralMissingError,
)
from cocoon_operator.attestation.pccs import PccsCollateralSource

from .conftest import AT_DCAP_EXPIRED, AT_DCAP_SAMPLE, AT_OUTDATED

SAMPLE_KEY = CollateralKey("B0C06F000000", "platform")
OUTDATED_KEY = CollateralKey("90c06f000000", "PLATFORM")


def test_json_round_trip_keeps_every_byte(tdx_dir: Path, sample_collateral: Collateral) -> None:
    original = json.loads((tdx_dir / "dcap-qvl" / "tdx_quote_collateral.json").read_text())
    again = json.loads(sample_collateral.to_json())
    assert again == original
    assert Collateral.from_json(sample_collateral.to_json()) == sample_collateral


def test_info_reads_fmspc_ca_and_window(sample_collateral: Collateral) -> None:
    info = sample_collateral.info
    assert (info.tee, info.fmspc, info.ca) == ("TDX", "B0C06F000000", "platform")
    assert info.key == SAMPLE_KEY
    assert info.tcb_evaluation_data_number == 17
    assert {w[0] for w in info.windows} == {"tcb_info", "qe_identity", "root_ca_crl", "pck_crl"}
    assert info.issued_at <= AT_DCAP_SAMPLE < info.expires_at < AT_DCAP_EXPIRED
    assert info.expires_at == datetime(2025, 7, 19, 10, 0, 35, tzinfo=UTC)


def test_key_normalises_case() -> None:
    assert CollateralKey("90C06F000000", "platform") == OUTDATED_KEY


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"tcb_info": "{}"}),
    ],
)
def test_malformed_collateral(text: str) -> None:
    with pytest.raises(CollateralFormatError):
        Collateral.from_json(text)


def test_non_hex_crl_is_malformed(sample_collateral: Collateral) -> None:
    doc = json.loads(sample_collateral.to_json())
    doc["pck_crl"] = "zz"
    with pytest.raises(CollateralFormatError):
        Collateral.from_json(json.dumps(doc))


async def test_local_source_and_missing_key(
    sample_collateral: Collateral, outdated_collateral: Collateral
) -> None:
    source = LocalCollateralSource([sample_collateral, outdated_collateral])
    assert await source.fetch(SAMPLE_KEY) is sample_collateral
    assert await source.fetch(OUTDATED_KEY) is outdated_collateral
    with pytest.raises(CollateralMissingError):
        await source.fetch(CollateralKey("00906ED50000", "processor"))


async def test_cache_hits_until_expiry_then_refetches(sample_collateral: Collateral) -> None:
    source = LocalCollateralSource([sample_collateral])
    cache = CollateralCache(source)
    assert cache.peek(SAMPLE_KEY, now=AT_DCAP_SAMPLE) is None
    for _ in range(3):
        assert await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE) is sample_collateral
    assert source.fetches == 1
    assert cache.peek(SAMPLE_KEY, now=AT_DCAP_SAMPLE) is sample_collateral
    # Past the earliest nextUpdate the entry is not served; the (stale) refetch is
    # returned for verification to reject, and not cached.
    assert cache.peek(SAMPLE_KEY, now=AT_DCAP_EXPIRED) is None
    assert await cache.get(SAMPLE_KEY, now=AT_DCAP_EXPIRED) is sample_collateral
    assert source.fetches == 2
    assert cache.peek(SAMPLE_KEY, now=AT_DCAP_EXPIRED) is None


async def test_cache_refetches_a_day_after_fetching_even_long_before_next_update(
    sample_collateral: Collateral,
) -> None:
    source = LocalCollateralSource([sample_collateral])
    cache = CollateralCache(source)  # the default: at most 24 h
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE)
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE + timedelta(hours=23, minutes=59))
    assert source.fetches == 1
    assert sample_collateral.info.expires_at > AT_DCAP_SAMPLE + timedelta(days=20)
    # A TCB recovery or PCK revocation Intel published today is seen by tomorrow.
    assert cache.peek(SAMPLE_KEY, now=AT_DCAP_SAMPLE + timedelta(hours=24)) is None
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE + timedelta(hours=24))
    assert source.fetches == 2
    # The refetch starts a new day.
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE + timedelta(hours=47))
    assert source.fetches == 2


async def test_cache_max_age_is_configurable_and_positive(sample_collateral: Collateral) -> None:
    source = LocalCollateralSource([sample_collateral])
    cache = CollateralCache(source, max_age=timedelta(hours=1))
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE)
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE + timedelta(hours=1))
    assert source.fetches == 2
    with pytest.raises(ValueError, match="max_age must be positive"):
        CollateralCache(source, max_age=timedelta(0))


async def test_cache_refresh_margin(sample_collateral: Collateral) -> None:
    source = LocalCollateralSource([sample_collateral])
    cache = CollateralCache(source, refresh_before_expiry=timedelta(days=40))
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE)
    await cache.get(SAMPLE_KEY, now=AT_DCAP_SAMPLE)
    assert source.fetches == 2  # inside the margin: never served from cache


async def test_cache_refuses_a_source_answering_for_another_key(
    sample_collateral: Collateral,
) -> None:
    class Liar:
        async def fetch(self, key: CollateralKey) -> Collateral:
            return sample_collateral

    with pytest.raises(CollateralMismatchError):
        await CollateralCache(Liar()).get(OUTDATED_KEY, now=AT_OUTDATED)


async def test_cache_is_keyed_by_the_quotes_pck(
    intel_root: TrustedRoot,
    cocoon_quote: bytes,
    sample_collateral: Collateral,
    outdated_collateral: Collateral,
) -> None:
    """quote -> (FMSPC, CA) -> cached collateral -> full verification."""
    verifier = TdxVerifier(intel_root)
    cache = CollateralCache(LocalCollateralSource([sample_collateral, outdated_collateral]))
    key = verifier.collateral_key(cocoon_quote, now=AT_OUTDATED)
    collateral = await cache.get(key, now=AT_OUTDATED)
    assert collateral is outdated_collateral
    assert verifier.verify(cocoon_quote, collateral, now=AT_OUTDATED).tcb_status == "UpToDate"


def _pccs_app(collateral: Collateral, *, hex_crls: bool) -> tuple[web.Application, list[str]]:
    """A local stand-in for a PCCS (API v4), serving the sample collateral's parts."""
    seen: list[str] = []

    async def tcb(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        if request.query.get("fmspc") != collateral.info.fmspc:
            return web.Response(status=404)
        signature = collateral.tcb_info_signature.hex()
        body = f'{{"tcbInfo":{collateral.tcb_info},"signature":"{signature}"}}'
        return web.Response(
            text=body, headers={"TCB-Info-Issuer-Chain": urlquote(collateral.tcb_info_issuer_chain)}
        )

    async def qe(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        body = (
            f'{{"enclaveIdentity": {collateral.qe_identity}, '
            f'"signature": "{collateral.qe_identity_signature.hex()}"}}'
        )
        return web.Response(
            text=body,
            headers={
                "SGX-Enclave-Identity-Issuer-Chain": urlquote(collateral.qe_identity_issuer_chain)
            },
        )

    async def pckcrl(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        payload = collateral.pck_crl.hex().encode() if hex_crls else collateral.pck_crl
        return web.Response(
            body=payload,
            headers={"SGX-PCK-CRL-Issuer-Chain": urlquote(collateral.pck_crl_issuer_chain)},
        )

    async def rootcacrl(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(body=collateral.root_ca_crl.hex().encode())

    app = web.Application()
    app.router.add_get("/tdx/certification/v4/tcb", tcb)
    app.router.add_get("/tdx/certification/v4/qe/identity", qe)
    app.router.add_get("/sgx/certification/v4/pckcrl", pckcrl)
    app.router.add_get("/sgx/certification/v4/rootcacrl", rootcacrl)
    return app, seen


@pytest.mark.parametrize("hex_crls", [False, True])
async def test_pccs_source_fetches_exact_signed_collateral(
    intel_root: TrustedRoot, sample_quote: bytes, sample_collateral: Collateral, hex_crls: bool
) -> None:
    app, seen = _pccs_app(sample_collateral, hex_crls=hex_crls)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        source = PccsCollateralSource(str(server.make_url("/")), session)
        fetched = await source.fetch(SAMPLE_KEY)
        with pytest.raises(CollateralFetchError, match="HTTP 404"):
            await source.fetch(OUTDATED_KEY)
    assert fetched == sample_collateral
    assert "/sgx/certification/v4/pckcrl?ca=platform&encoding=der" in seen
    result = TdxVerifier(intel_root).verify(sample_quote, fetched, now=AT_DCAP_SAMPLE)
    assert result.tcb_status == "UpToDate"


async def test_pccs_source_unreachable_is_a_fetch_error() -> None:
    async with aiohttp.ClientSession() as session:
        source = PccsCollateralSource("http://127.0.0.1:9", session, timeout_seconds=2)
        with pytest.raises(CollateralFetchError):
            await source.fetch(SAMPLE_KEY)
