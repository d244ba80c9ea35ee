import asyncio
import base64
import random
from collections.abc import Callable

import pytest
from tests.support.ton import MockTransport

from cocoon_operator.ton.client import (
    API_KEY_HEADER,
    HttpRequest,
    HttpResponse,
    RetryPolicy,
    StackCell,
    StackNum,
    StackTuple,
    TokenBucket,
    TonClient,
)
from cocoon_operator.ton.errors import (
    TonAuthError,
    TonBadRequestError,
    TonClientError,
    TonGetMethodError,
    TonMessageRejectedError,
    TonNotFoundError,
    TonRateLimitedError,
    TonResponseError,
    TonServerError,
    TonTimeoutError,
    TonTransportError,
)

ADDR = "0:83dfd552e63729b472fcbcc8c45ebcc6691702558b68ec7527e1ba403a0f31a8"
FRIENDLY = "EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8xqB2N"
KEY = "sekret-api-key-0123456789"


def ok(result: object) -> HttpResponse:
    return HttpResponse.json(200, {"ok": True, "result": result})


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


def make_client(
    handler: Callable[[HttpRequest], HttpResponse],
    *,
    api_key: str | None = None,
    attempts: int = 4,
    timeout: float = 5.0,
) -> tuple[TonClient, MockTransport, Sleeps]:
    transport = MockTransport(handler)
    sleeps = Sleeps()
    client = TonClient(
        "http://ton.invalid/api/v2/",
        api_key=api_key,
        transport=transport,
        timeout=timeout,
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.5, max_delay=2.0),
        sleep=sleeps,
        rng=random.Random(7),
    )
    return client, transport, sleeps


def sequence(*responses: HttpResponse | Exception) -> Callable[[HttpRequest], HttpResponse]:
    queue = list(responses)

    def handler(_: HttpRequest) -> HttpResponse:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


async def test_address_information_parsed_and_address_normalised() -> None:
    client, transport, _ = make_client(
        sequence(
            ok(
                {
                    "@type": "raw.fullAccountState",
                    "balance": "2100000000",
                    "code": base64.b64encode(b"code").decode(),
                    "data": "",
                    "last_transaction_id": {
                        "@type": "internal.transactionId",
                        "lt": "42",
                        "hash": base64.b64encode(b"\x01" * 32).decode(),
                    },
                    "frozen_hash": "",
                    "sync_utime": 1700000000,
                    "state": "active",
                }
            )
        )
    )
    info = await client.get_address_information(FRIENDLY)
    assert info.balance == 2_100_000_000
    assert info.state == "active"
    assert info.code == b"code"
    assert info.data is None
    assert info.last_transaction_id is not None
    assert info.last_transaction_id.lt == 42
    assert info.last_transaction_id.hash_bytes == b"\x01" * 32
    req = transport.requests[0]
    assert req.method == "GET"
    assert req.url == "http://ton.invalid/api/v2/getAddressInformation"
    assert req.params == {"address": ADDR}


async def test_balance_state_wallet_info() -> None:
    client, _, _ = make_client(
        sequence(
            ok("123"),
            ok("uninitialized"),
            ok(
                {
                    "wallet": True,
                    "balance": "5",
                    "account_state": "active",
                    "wallet_type": "wallet v4 r2",
                    "seqno": 3,
                    "wallet_id": 698983191,
                    "last_transaction_id": {"lt": "0", "hash": ""},
                }
            ),
        )
    )
    assert await client.get_address_balance(ADDR) == 123
    assert await client.get_address_state(ADDR) == "uninitialized"
    info = await client.get_wallet_information(ADDR)
    assert (info.wallet, info.seqno, info.wallet_id, info.balance) == (True, 3, 698983191, 5)
    assert info.last_transaction_id is None


async def test_retries_transient_then_succeeds_with_bounded_backoff() -> None:
    client, transport, sleeps = make_client(
        sequence(
            HttpResponse.json(502, {"ok": False, "error": "bad gateway", "code": 502}),
            TonTransportError("connection reset"),
            HttpResponse(503, b"<html>down</html>"),
            ok("7"),
        )
    )
    assert await client.get_address_balance(ADDR) == 7
    assert len(transport.requests) == 4
    assert len(sleeps.calls) == 3
    caps = [0.5, 1.0, 2.0]
    for delay, cap in zip(sleeps.calls, caps, strict=True):
        assert 0.0 <= delay <= cap


async def test_gives_up_after_max_attempts() -> None:
    client, transport, sleeps = make_client(
        lambda _: HttpResponse.json(500, {"ok": False, "error": "liteserver timeout"}),
        attempts=3,
    )
    with pytest.raises(TonServerError, match="liteserver timeout") as info:
        await client.get_address_balance(ADDR)
    assert info.value.status == 500
    assert len(transport.requests) == 3
    assert len(sleeps.calls) == 2
    assert all(d <= 2.0 for d in sleeps.calls)


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, TonBadRequestError),
        (401, TonAuthError),
        (403, TonAuthError),
        (404, TonNotFoundError),
        (422, TonBadRequestError),
    ],
)
async def test_final_errors_not_retried(status: int, exc: type[Exception]) -> None:
    client, transport, sleeps = make_client(
        lambda _: HttpResponse.json(status, {"ok": False, "error": "nope", "code": status})
    )
    with pytest.raises(exc):
        await client.get_address_balance(ADDR)
    assert len(transport.requests) == 1
    assert sleeps.calls == []


async def test_ok_false_with_200_uses_code() -> None:
    client, _, _ = make_client(
        lambda _: HttpResponse.json(200, {"ok": False, "error": "invalid address", "code": 416})
    )
    with pytest.raises(TonBadRequestError, match="invalid address"):
        await client.get_address_state(ADDR)


async def test_rate_limited_honours_retry_after_capped() -> None:
    client, _, sleeps = make_client(
        sequence(
            HttpResponse.json(
                429, {"ok": False, "error": "Ratelimit exceed"}, {"Retry-After": "1.5"}
            ),
            HttpResponse.json(
                429, {"ok": False, "error": "Ratelimit exceed"}, {"Retry-After": "60"}
            ),
            ok("1"),
        )
    )
    assert await client.get_address_balance(ADDR) == 1
    assert sleeps.calls[0] >= 1.5
    assert sleeps.calls[1] == 2.0  # capped at max_delay


async def test_rate_limited_final_error_type() -> None:
    client, _, _ = make_client(
        lambda _: HttpResponse.json(429, {"ok": False, "error": "slow down"}), attempts=2
    )
    with pytest.raises(TonRateLimitedError):
        await client.get_address_balance(ADDR)


async def test_timeout_per_call() -> None:
    async def slow(_: HttpRequest) -> HttpResponse:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    transport = MockTransport(slow)
    sleeps = Sleeps()
    client = TonClient(
        "http://ton.invalid/api/v2",
        transport=transport,
        timeout=0.02,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        sleep=sleeps,
    )
    with pytest.raises(TonTimeoutError, match="no response within"):
        await client.get_address_balance(ADDR)
    assert len(transport.requests) == 2


async def test_send_boc_retried_by_default_not_when_disabled() -> None:
    client, transport, _ = make_client(
        sequence(HttpResponse.json(500, {"ok": False, "error": "x"}), ok({"@type": "ok"}))
    )
    await client.send_boc(b"\xb5\xee")
    assert len(transport.requests) == 2
    assert transport.requests[0].method == "POST"
    assert transport.requests[0].json_body == {"boc": base64.b64encode(b"\xb5\xee").decode()}

    client, transport, _ = make_client(lambda _: HttpResponse.json(500, {"ok": False}))
    with pytest.raises(TonServerError):
        await client.send_boc(b"\x00", retry=False)
    assert len(transport.requests) == 1


async def test_send_boc_rejection_is_final() -> None:
    client, transport, _ = make_client(
        lambda _: HttpResponse.json(
            500,
            {
                "ok": False,
                "error": "LITE_SERVER_UNKNOWN: cannot apply external message to current state",
                "code": 500,
            },
        )
    )
    with pytest.raises(TonMessageRejectedError):
        await client.send_boc(b"\x00")
    assert len(transport.requests) == 1


async def test_send_boc_return_hash() -> None:
    client, _, _ = make_client(sequence(ok({"@type": "raw.extMessageInfo", "hash": "aGFzaA=="})))
    sent = await client.send_boc_return_hash(b"\x01")
    assert sent.hash == "aGFzaA=="


async def test_api_key_sent_as_header_never_leaked() -> None:
    def handler(req: HttpRequest) -> HttpResponse:
        assert req.headers[API_KEY_HEADER] == KEY
        assert KEY not in req.url
        assert KEY not in repr(req.params)
        return HttpResponse.json(401, {"ok": False, "error": f"API key {KEY} is invalid"})

    client, transport, _ = make_client(handler, api_key=KEY)
    with pytest.raises(TonAuthError) as info:
        await client.get_address_balance(ADDR)
    assert KEY not in str(info.value)
    assert "***" in str(info.value)
    assert KEY not in repr(client)
    assert KEY not in repr(transport.requests[0])


async def test_api_key_redacted_from_transport_errors(caplog: pytest.LogCaptureFixture) -> None:
    def handler(_: HttpRequest) -> HttpResponse:
        raise OSError(f"proxy said: header X-API-Key: {KEY}")

    client, _, _ = make_client(handler, api_key=KEY, attempts=2)
    caplog.set_level("DEBUG")
    with pytest.raises(TonTransportError) as info:
        await client.get_address_balance(ADDR)
    assert KEY not in str(info.value)
    assert info.value.__cause__ is None
    assert KEY not in caplog.text


async def test_malformed_response() -> None:
    client, _, _ = make_client(sequence(HttpResponse(200, b"not json")))
    with pytest.raises(TonResponseError):
        await client.get_address_balance(ADDR)
    # Nested deeper than the JSON parser recurses (2 KB do it): refused the same way.
    client, _, _ = make_client(sequence(HttpResponse(200, b"[" * 5000 + b"]" * 5000)))
    with pytest.raises(TonResponseError):
        await client.get_address_balance(ADDR)
    client, _, _ = make_client(sequence(ok({"balance": "-5", "state": "active"})))
    with pytest.raises(TonResponseError):
        await client.get_address_information(ADDR)
    client, _, _ = make_client(sequence(ok("weird")))
    with pytest.raises(TonResponseError, match="unknown account state"):
        await client.get_address_state(ADDR)


async def test_run_get_method_stack_parsing() -> None:
    cell = base64.b64encode(b"\xb5\xee\x9c\x72").decode()

    def handler(req: HttpRequest) -> HttpResponse:
        assert req.json_body == {
            "address": ADDR,
            "method": "get_thing",
            "stack": [["num", "0x5"], ["tvm.Cell", base64.b64encode(b"c").decode()]],
        }
        return ok(
            {
                "gas_used": 100,
                "exit_code": 0,
                "stack": [
                    ["num", "0x10"],
                    ["num", "-0x2"],
                    ["cell", {"bytes": cell}],
                    [
                        "tuple",
                        {
                            "@type": "tvm.tuple",
                            "elements": [
                                {
                                    "@type": "tvm.stackEntryNumber",
                                    "number": {"number": "7"},
                                }
                            ],
                        },
                    ],
                ],
            }
        )

    client, _, _ = make_client(handler)
    res = await client.run_get_method(ADDR, "get_thing", [StackNum(5), StackCell(b"c")])
    assert res.num(0) == 16
    assert res.num(1) == -2
    assert res.stack[2] == StackCell(b"\xb5\xee\x9c\x72")
    assert res.stack[3] == StackTuple((StackNum(7),))
    with pytest.raises(TonResponseError):
        res.num(2)


async def test_run_get_method_exit_code() -> None:
    client, _, _ = make_client(lambda _: ok({"gas_used": 1, "exit_code": 11, "stack": []}))
    with pytest.raises(TonGetMethodError) as info:
        await client.run_get_method(ADDR, "seqno")
    assert info.value.exit_code == 11
    res = await client.run_get_method(ADDR, "seqno", check=False)
    assert res.exit_code == 11


async def test_get_transactions_parsing_and_params() -> None:
    tx = {
        "@type": "raw.transaction",
        "address": {"account_address": FRIENDLY},
        "utime": 1700000000,
        "data": base64.b64encode(b"txboc").decode(),
        "transaction_id": {"lt": "100", "hash": base64.b64encode(b"\x02" * 32).decode()},
        "fee": "1000",
        "storage_fee": "10",
        "other_fee": "990",
        "in_msg": {
            "source": "",
            "destination": FRIENDLY,
            "value": "0",
            "fwd_fee": "0",
            "ihr_fee": "0",
            "created_lt": "0",
            "body_hash": "x",
            "hash": "bWg=",
            "msg_data": {"@type": "msg.dataRaw", "body": base64.b64encode(b"b").decode()},
        },
        "out_msgs": [
            {
                "source": FRIENDLY,
                "destination": FRIENDLY,
                "value": "500",
                "fwd_fee": "3",
                "ihr_fee": "0",
                "created_lt": "101",
                "body_hash": "y",
            }
        ],
    }

    def handler(req: HttpRequest) -> HttpResponse:
        assert req.params == {
            "address": ADDR,
            "limit": "5",
            "lt": "100",
            "hash": "abc",
            "to_lt": "1",
            "archival": "true",
        }
        return ok([tx])

    client, _, _ = make_client(handler)
    [got] = await client.get_transactions(
        ADDR, limit=5, lt=100, tx_hash="abc", to_lt=1, archival=True
    )
    assert got.transaction_id.lt == 100
    assert (got.fee, got.storage_fee, got.other_fee) == (1000, 10, 990)
    assert got.in_msg is not None
    assert got.in_msg.hash == "bWg="
    assert got.in_msg.body == b"b"
    assert got.out_msgs[0].value == 500
    assert got.out_msgs[0].fwd_fee == 3
    assert got.data == b"txboc"


async def test_token_bucket_spaces_requests() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(6):
        await bucket.acquire()
    # 2 free (burst), then 4 more at 2/s -> 2 seconds of waiting in total
    assert now[0] == pytest.approx(2.0)
    assert all(d <= 0.5 + 1e-9 for d in slept)


async def test_client_uses_rate_limiter_for_every_attempt() -> None:
    now = [0.0]

    async def fake_sleep(delay: float) -> None:
        now[0] += delay

    bucket = TokenBucket(rate=1.0, burst=1, clock=lambda: now[0], sleep=fake_sleep)
    transport = MockTransport(sequence(HttpResponse.json(500, {"ok": False}), ok("1"), ok("2")))
    client = TonClient(
        "http://ton.invalid/api/v2",
        transport=transport,
        rate_limiter=bucket,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        sleep=fake_sleep,
    )
    assert await client.get_address_balance(ADDR) == 1
    assert await client.get_address_balance(ADDR) == 2
    assert now[0] == pytest.approx(2.0)


async def test_close_and_context_manager() -> None:
    transport = MockTransport(lambda _: ok("0"))
    async with TonClient("http://ton.invalid/api/v2", transport=transport) as client:
        assert await client.get_address_balance(ADDR) == 0
    assert transport.closed


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=0)
    with pytest.raises(ValueError):
        TonClient("http://x", transport=MockTransport(lambda _: ok(0)), timeout=0)


# --------------------------------------------------------------------------- v3 accountStates


def _raw(i: int) -> str:
    return f"0:{i:064x}"


def _v3_state(address: str, balance: int, status: str = "active") -> dict[str, object]:
    """One entry as toncenter's index writes it: raw upper-case hex, strings for numbers."""
    wc, hex_part = address.split(":")
    return {
        "address": f"{wc}:{hex_part.upper()}",
        "account_state_hash": "AAAA",
        "balance": str(balance),
        "status": status,
        "last_transaction_lt": "4200",
        "last_transaction_hash": "AAAA",
        "code_hash": "oM/CxIruFqJx8s/AtzgtgXVs7LEBfQd/qqs7tgL2how=",
        "extra_currencies": {},
    }


def v3_index(balances: dict[str, int]) -> Callable[[HttpRequest], HttpResponse]:
    """An index holding ``balances`` (raw lower-case keys): answers what it holds."""

    def handler(request: HttpRequest) -> HttpResponse:
        asked = [v for k, v in request.query if k == "address"]
        accounts = [_v3_state(a, balances[a]) for a in asked if a in balances]
        return HttpResponse.json(200, {"accounts": accounts, "address_book": {}})

    return handler


async def test_account_states_are_one_v3_get_with_an_address_per_parameter() -> None:
    index = {ADDR: 2_100_000_000, _raw(2): 5}
    client, transport, _ = make_client(v3_index(index), api_key=KEY)
    states = await client.get_account_states([FRIENDLY, _raw(2), _raw(3), ADDR])
    # Keyed by the raw lower-case form whatever form was asked or answered; an
    # address the index does not hold is absent, not zero.
    assert {a: s.balance for a, s in states.items()} == index
    assert states[ADDR].status == "active"
    assert states[ADDR].last_transaction_lt == 4200
    [request] = transport.requests
    assert request.method == "GET"
    assert request.url == "http://ton.invalid/api/v3/accountStates"
    assert request.params == {"include_boc": "false"}
    assert request.query == (("address", ADDR), ("address", _raw(2)), ("address", _raw(3)))
    assert request.headers[API_KEY_HEADER] == KEY


async def test_account_states_are_cut_where_the_url_would_outgrow_its_budget() -> None:
    addresses = [_raw(i) for i in range(250)]
    client, transport, _ = make_client(v3_index(dict.fromkeys(addresses, 7)))
    states = await client.get_account_states(addresses)
    assert len(states) == 250
    assert len(transport.requests) == 3
    for request in transport.requests:
        url = f"{request.url}?include_boc=false" + "".join(
            f"&address={a.replace(':', '%3A')}" for _, a in request.query
        )
        assert len(url) <= 8000
    sent = [a for r in transport.requests for _, a in r.query]
    assert sent == addresses  # each once, in order


async def test_account_states_never_ask_more_than_the_apis_thousand_at_once() -> None:
    addresses = [_raw(i) for i in range(2500)]
    transport = MockTransport(v3_index({}))
    client = TonClient("http://ton.invalid/api/v2", transport=transport, max_url_bytes=10**7)
    assert await client.get_account_states(addresses) == {}
    assert [len(r.query) for r in transport.requests] == [1000, 1000, 500]


async def test_account_states_raise_the_api_errors_and_retry_the_transient_ones() -> None:
    client, transport, _ = make_client(
        sequence(
            HttpResponse.json(502, {"error": "bad gateway"}),
            HttpResponse.json(422, {"error": "address of account is required"}),
        )
    )
    with pytest.raises(TonBadRequestError, match="address of account is required"):
        await client.get_account_states([ADDR])
    assert len(transport.requests) == 2
    client, _, _ = make_client(sequence(HttpResponse.json(404, {"error": "Not Found"})))
    with pytest.raises(TonNotFoundError):
        await client.get_account_states([ADDR])
    client, _, _ = make_client(sequence(HttpResponse.json(200, {"accounts": "nope"})))
    with pytest.raises(TonResponseError):
        await client.get_account_states([ADDR])


async def test_account_states_need_a_v3_url_and_find_it_beside_v2() -> None:
    assert TonClient("https://toncenter.com/api/v2/").v3_url == "https://toncenter.com/api/v3"
    other = TonClient("http://ton.invalid/rpc", transport=MockTransport(v3_index({})))
    assert other.v3_url is None
    with pytest.raises(TonClientError, match="no toncenter v3 URL"):
        await other.get_account_states([ADDR])
    given = TonClient("http://ton.invalid/rpc", v3_url="http://index.invalid/api/v3/")
    assert given.v3_url == "http://index.invalid/api/v3"
