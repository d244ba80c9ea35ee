"""Reading a worker's /jsonstats and /stats as COCOON writes them, never guessing.

Each document here is shaped as COCOON's worker writes it (runners/ in
COCOON's repository, WorkerRunner.cpp unless named), with its layout and
types; the tests cite the lines.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cocoon_operator.workerapi import (
    WorkerStatsError,
    parse_gpu_evidence,
    parse_stats,
    parse_status_page,
)
from tests.unit.workerapi.helpers import JSONSTATS, A, B


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = json.loads(JSONSTATS)
    base.update(changes)
    return base


def test_the_fields_cocoon_writes_are_read() -> None:
    stats = parse_stats(json.loads(JSONSTATS))
    assert stats.wallet_address == "UQCt3_wallet_address_000000000000000000000000000"  # :1082
    assert stats.image_hash_listed and not stats.model_listed  # :672-683
    assert stats.coefficient == 1500  # :714, the int32 per mille
    assert [p.address for p in stats.proxies] == [A, B]  # WorkerProxyInfo.cpp:76


def test_token_counts_are_summed_over_proxies() -> None:
    stats = parse_stats(json.loads(JSONSTATS))
    assert stats.earned_tokens == 5000  # earned_tokens_committed_to_blockchain, :79
    assert stats.paid_out_tokens == 1000  # cached_out_tokens, :82


def test_what_is_owed_is_cocoons_to_payout_not_committed_minus_cashed_out() -> None:
    # to_payout() = committed - max(cashed out, expected) (WorkerProxyInfo.h:64-67):
    # B's payout was sent (expected 2000), so it owes nothing more though 0 is cashed out.
    stats = parse_stats(json.loads(JSONSTATS))
    assert [p.to_pay_out for p in stats.proxies] == [2000, 0]
    assert stats.unpaid_tokens == 2000
    assert stats.payout_running  # running_request, :84
    assert stats.proxy(B) is not None and stats.proxy(B).running  # type: ignore[union-attr]


def test_enabled_is_not_read_from_jsonstats_where_it_is_always_true() -> None:
    # :688 writes the constant true; a disabled worker says the same.
    stats = parse_stats(json.loads(JSONSTATS))
    assert not hasattr(stats, "enabled")
    assert not hasattr(stats, "active_requests")  # not in the JSON at all (:663-730)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ([], "not an object"),
        (doc(wallet={}), "wallet.address"),
        (doc(wallet={"address": ""}), "no wallet address"),
        (doc(status=None), "lacks status"),
        (doc(localconfig={"coefficient": 1.5}), "localconfig.coefficient"),
        (doc(proxies=[{"proxy_sc_address": A}]), r"proxies\[0\]\.sc_inited"),
        (
            doc(proxies=[{**json.loads(JSONSTATS)["proxies"][0], "cached_out_tokens": "lots"}]),
            r"proxies\[0\]\.cached_out_tokens",
        ),
        (doc(proxies=[{**json.loads(JSONSTATS)["proxies"][0], "running_request": 1}]), "running"),
    ],
)
def test_a_malformed_document_is_an_error_not_zeros(broken: Any, message: str) -> None:
    with pytest.raises(WorkerStatsError, match=message):
        parse_stats(broken)


# http_generate_main (:521-661), the rows it writes for the enabled state
# (:583-589) and the requests in flight (:628).
ENABLED_ROW = (
    '<tr><td>enabled</td><td><span style="background-color:Green;">yes '
    '<a href="/request/disable">disable</a></span></td></tr>\n'
)
DISABLED_ROW = (
    '<tr><td>enabled</td><td><span style="background-color:Crimson;">no '
    '<a href="/request/enable">enable</a></span></td></tr>\n'
)


def page(enabled_row: str, active: int) -> str:
    return (
        "<!DOCTYPE html>\n<html><body>\n<h1>STATUS</h1>\n<table>\n"
        + enabled_row
        + '<tr><td>model connection</td><td><span style="background-color:Green;">'
        "connected</a></span></td></tr>\n</table>\n<h1>LOCAL CONFIG</h1>\n<table>\n"
        '<tr><td>coefficient</td><td>1.5 <a href="/request/change_coefficient">change</a>'
        "</td></tr>\n<tr><td>max_active_requests</td><td>60</td></tr>\n"
        f"<tr><td>active_requests</td><td>{active}</td></tr>\n"
        "<tr><td>check proxy hash</td><td>YES</td></tr>\n</table>\n</body></html>\n"
    )


def test_the_status_page_gives_the_real_enabled_state_and_requests_in_flight() -> None:
    shown = parse_status_page(page(ENABLED_ROW, 7))
    assert (shown.enabled, shown.active_requests) == (True, 7)
    shown = parse_status_page(page(DISABLED_ROW, 0))
    assert (shown.enabled, shown.active_requests) == (False, 0)


def test_a_page_without_the_rows_says_nothing_rather_than_guessing() -> None:
    shown = parse_status_page("<html><body>something else</body></html>")
    assert (shown.enabled, shown.active_requests) == (None, None)
    # max_active_requests is not active_requests.
    other_row = "<tr><td>max_active_requests</td><td>60</td></tr>"
    assert parse_status_page(other_row).active_requests is None


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
