"""The simulated worker's pure state: load, draining, earnings, payouts, addresses."""

from __future__ import annotations

import base64
import binascii

import pytest

from cocoon_operator.simulator import LoadModel, ProxyState, WorkerState, friendly_address

T0 = 1_800_000_000.0


def _state(**model: object) -> WorkerState:
    return WorkerState(
        model=LoadModel(**model),  # type: ignore[arg-type]
        wallet_address="wallet",
        wallet_balance=5_000_000_000,
        coefficient=1000,
        enabled=True,
        proxies=[ProxyState(f"proxy-{i}", f"worker-sc-{i}", f"{i:064x}") for i in range(2)],
        started_at=T0,
    )


def test_disable_drains_in_flight_linearly_to_zero() -> None:
    st = _state(load=4, drain_seconds=10.0, requests_per_second=0.0)
    assert st.in_flight(T0 + 1) == 4
    st.set_enabled(False, T0 + 1)
    assert st.in_flight(T0 + 1) == 4
    assert st.in_flight(T0 + 6) == 2
    assert st.in_flight(T0 + 10.9) == 1
    assert st.in_flight(T0 + 11) == 0
    assert st.in_flight(T0 + 100) == 0
    assert st.completed == pytest.approx(4.0)  # the drained requests finished and count
    st.set_enabled(True, T0 + 101)
    assert st.in_flight(T0 + 101) == 4


def test_zero_drain_time_and_idempotent_toggles() -> None:
    st = _state(load=3, drain_seconds=0.0)
    st.set_enabled(False, T0)
    assert st.in_flight(T0) == 0
    st.set_enabled(False, T0 + 1)  # already disabled: no new drain
    assert st.in_flight(T0 + 1) == 0
    st.set_enabled(True, T0 + 2)
    st.set_enabled(True, T0 + 3)
    assert st.in_flight(T0 + 3) == 3


def test_load_is_capped_by_max_active_requests() -> None:
    assert _state(load=40, max_active_requests=8).in_flight(T0) == 8


def test_earnings_spread_over_proxies_and_commit_in_batches() -> None:
    st = _state(requests_per_second=2.0, tokens_per_request=100)
    st.advance(T0 + 10)  # 20 requests, 2000 tokens
    assert st.completed == pytest.approx(20.0)
    assert [p.earned_tokens for p in st.proxies] == [1000, 1000]
    assert [p.committed_to_blockchain for p in st.proxies] == [1000, 1000]
    st.advance(T0 + 12)  # 4 more requests: 200 tokens each, below the next batch
    assert [p.earned_tokens for p in st.proxies] == [1200, 1200]
    assert [p.committed_to_blockchain for p in st.proxies] == [1000, 1000]
    st.advance(T0 + 5)  # time never runs backwards
    assert st.completed == pytest.approx(24.0)


def test_earnings_reach_every_proxy_however_often_the_worker_is_read() -> None:
    st = _state(requests_per_second=2.0, tokens_per_request=100)
    for step in range(1, 101):  # read every 0.1 s for 10 s
        st.advance(T0 + step / 10)
    assert [p.earned_tokens for p in st.proxies] == [1000, 1000]


def test_payout_runs_then_cashes_out() -> None:
    st = _state(requests_per_second=1.0, tokens_per_request=200, payout_seconds=2.0)
    st.advance(T0 + 10)
    seqno, balance = st.wallet_seqno, st.wallet_balance
    assert st.request_payout("nope", T0 + 10) == "proxy not found"
    assert st.request_payout("proxy-0", T0 + 10) == "request sent"
    assert st.request_payout("proxy-0", T0 + 11) == "request is already running"
    assert st.wallet_seqno == seqno + 1
    assert st.wallet_balance == balance - st.model.payout_fee_nano
    proxy = st.proxies[0]
    assert proxy.payout_running_until is not None
    st.advance(T0 + 12)
    assert proxy.payout_running_until is None
    assert proxy.payouts == 1
    assert proxy.cashed_out == 1000
    assert st.payouts == 1


def test_instant_payout_and_coefficient_and_wallet() -> None:
    st = _state(payout_seconds=0.0, requests_per_second=0.0)
    assert st.request_payout("proxy-1", T0) == "request sent"
    assert st.proxies[1].payouts == 1
    st.set_coefficient(1500, T0)
    assert st.coefficient == 1500
    st.set_wallet_balance(7, T0)
    assert st.wallet_balance == 7
    with pytest.raises(ValueError):
        st.set_wallet_balance(-1, T0)


def test_window_counts() -> None:
    st = _state(requests_per_second=1.0)
    for second in range(1, 121):
        st.advance(T0 + second)
    windows = st.window_counts(T0 + 120)
    assert windows[0] == pytest.approx(1.0)
    assert windows[1] == pytest.approx(10.0)
    assert windows[2] == pytest.approx(60.0)
    assert windows[3] == pytest.approx(120.0)


def test_load_model_validation() -> None:
    with pytest.raises(ValueError):
        LoadModel(load=-1)
    with pytest.raises(ValueError):
        LoadModel(drain_seconds=-1)


def test_friendly_address_layout() -> None:
    account = bytes(range(32))
    text = friendly_address(account)
    raw = base64.urlsafe_b64decode(text)
    assert len(text) == 48
    assert raw[0] == 0x51 and raw[1] == 0 and raw[2:34] == account
    assert int.from_bytes(raw[34:], "big") == binascii.crc_hqx(raw[:34], 0)
    assert base64.urlsafe_b64decode(friendly_address(account, bounceable=True))[0] == 0x11
    with pytest.raises(ValueError):
        friendly_address(b"short")
