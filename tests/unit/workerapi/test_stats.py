"""Reading a worker's /jsonstats: only from the attested certificate, never guessing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cocoon_operator.simulator import start_simulator
from cocoon_operator.workerapi import (
    WorkerStatsError,
    fetch_stats,
    parse_gpu_evidence,
    parse_stats,
)


async def test_stats_come_over_the_attested_channel_and_another_certificate_is_refused() -> None:
    async with await start_simulator(proxies=2) as sim:
        pin = hashlib.sha256(sim.evidence.certificate_der()).hexdigest()
        stats = await fetch_stats(sim.host, sim.tls_port, certificate_sha256=pin)
        assert stats.wallet_address == sim.jsonstats()["wallet"]["address"]
        assert stats.image_hash_listed and stats.model_listed and stats.enabled
        sim.rotate_certificate()  # now presents a certificate nobody verified
        with pytest.raises(WorkerStatsError, match="another certificate"):
            await fetch_stats(sim.host, sim.tls_port, certificate_sha256=pin)


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": {"enabled": True, "actual_image_hash": True, "actual_model": False},
        "wallet": {"address": "0:" + "ab" * 32},
        "proxies": [
            {
                "earned_tokens_committed_to_blockchain": 3000,
                "cached_out_tokens": 1000,
                "payouts": 1,
            },
            {"earned_tokens_committed_to_blockchain": 2000, "running_request": True},
        ],
    }
    base.update(changes)
    return base


def test_token_counts_are_summed_over_proxies() -> None:
    stats = parse_stats(doc())
    assert (stats.earned_tokens, stats.paid_out_tokens, stats.payouts) == (5000, 1000, 1)
    assert stats.payout_running and not stats.model_listed


def test_payouts_are_also_read_per_proxy_address() -> None:
    a, b = "0:" + "01" * 32, "0:" + "02" * 32
    proxies = [
        {"proxy_sc_address": a, "payouts": 3},
        {"proxy_sc_address": b, "payouts": 0, "running_request": True},
        {"payouts": 7, "running_request": True},  # no address: nobody to ask or match
    ]
    stats = parse_stats(doc(proxies=proxies))
    assert stats.proxies == (a, b)
    assert stats.proxy_payouts == {a: 3, b: 0}
    assert stats.running_payouts == {b}
    assert (stats.payouts, stats.payout_running) == (10, True)  # the sums count every proxy


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ([], "not an object"),
        (doc(wallet={}), "no wallet address"),
        (doc(status=None), "lacks status"),
        (doc(proxies=[{"earned_tokens_committed_to_blockchain": "lots"}]), "not an integer"),
    ],
)
def test_a_malformed_document_is_an_error_not_zeros(broken: Any, message: str) -> None:
    with pytest.raises(WorkerStatsError, match=message):
        parse_stats(broken)


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ([], "not a JSON object"),
        ({"certificateChain": "-----BEGIN CERTIFICATE-----"}, "'evidence'"),
        ({"evidence": "zz", "certificateChain": "-----BEGIN CERTIFICATE-----"}, "not hex"),
        ({"evidence": "11e0"}, "'certificateChain'"),
        ({"evidence": "11e0", "certificateChain": "not pem"}, "'certificateChain'"),
    ],
)
def test_gpu_evidence_document_errors_name_the_field(doc: object, names: str) -> None:
    with pytest.raises(WorkerStatsError, match=names):
        parse_gpu_evidence(doc)


def test_gpu_evidence_document_is_decoded() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    parsed = parse_gpu_evidence({"evidence": "11e0ff", "certificateChain": pem})
    assert parsed.evidence == b"\x11\xe0\xff"
    assert parsed.certificate_chain == pem.encode()
