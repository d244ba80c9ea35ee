"""The worker client against answers shaped exactly as COCOON's worker sends them.

A loopback server stands in for the worker's HTTP port and answers as
WorkerRunner.cpp / BaseRunner.cpp do (cited per test), so the client's
handling of each real outcome is checked: the 400 "not found" before the
runner initialised, the 200 pages of the controls, and what no worker sends
(non-JSON, an oversized body, silence).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from cocoon_operator.workerapi import (
    MAX_BODY_BYTES,
    WorkerClient,
    WorkerNotInitialisedError,
    WorkerStatsError,
)
from tests.unit.workerapi.helpers import JSONSTATS

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


def short(text: str) -> str:
    """wrap_short_answer_to_http (WorkerRunner.h:184-192), closing tags as COCOON orders them."""
    return (
        f'<!DOCTYPE html>\n<html><body>\n{text}<br/>\n<a href="/stats">return to stats</a>\n'
        "</html></body>\n"
    )


def html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def not_found() -> web.Response:
    # ton::http::answer_error(status_bad_request, "not found"): the reason phrase,
    # Content-Length 0 (WorkerRunner.cpp:381-386).
    return web.Response(status=400, reason="not found")


class FakeWorker:
    """Answers per path; records each request's raw path and query as sent."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(str(request.rel_url.raw_path_qs))
        answer = self.answers.get(request.rel_url.raw_path)
        return not_found() if answer is None else await answer(request)


@pytest.fixture
async def worker() -> AsyncIterator[tuple[FakeWorker, WorkerClient]]:
    fake = FakeWorker()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    # The silent handler below is cut short at cleanup, not waited out (60 s by default).
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with WorkerClient("127.0.0.1", port, timeout_seconds=1.0) as client:
        yield fake, client
    await runner.cleanup()


def answer(text: str, content_type: str = "text/html") -> Answer:
    async def reply(_: web.Request) -> web.StreamResponse:
        return web.Response(text=text, content_type=content_type)

    return reply


async def test_stats_are_read_over_plain_http(worker: tuple[FakeWorker, WorkerClient]) -> None:
    fake, client = worker
    fake.answers["/jsonstats"] = answer(JSONSTATS, "application/json")  # :186-193
    stats = await client.stats()
    assert stats.coefficient == 1500 and stats.earned_tokens == 5000
    assert fake.seen == ["/jsonstats"]


async def test_every_path_before_initialisation_is_a_distinct_outcome(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    # custom_initialize registers the handlers (:179-228); before, all is 400 not found.
    _, client = worker
    with pytest.raises(WorkerNotInitialisedError, match="not initialised"):
        await client.stats()
    with pytest.raises(WorkerNotInitialisedError):
        await client.status_page()
    with pytest.raises(WorkerNotInitialisedError):
        await client.disable()
    with pytest.raises(WorkerNotInitialisedError):
        await client.set_coefficient(1500)


async def test_another_400_is_not_taken_for_the_runner_initialising(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    # A wrong access_hash is 400 "bad request" (BaseRunner.cpp:591-593).
    fake, client = worker

    async def bad_request(_: web.Request) -> web.StreamResponse:
        return web.Response(status=400, reason="bad request")

    fake.answers["/jsonstats"] = bad_request
    with pytest.raises(WorkerStatsError, match="400 bad request") as caught:
        await client.stats()
    assert not isinstance(caught.value, WorkerNotInitialisedError)


async def test_an_answer_that_is_not_json_is_an_error(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker
    fake.answers["/jsonstats"] = answer("<http><body>OK</body></http>")
    with pytest.raises(WorkerStatsError, match="not JSON"):
        await client.stats()


async def test_a_body_over_the_bound_is_refused_unread(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker
    fake.answers["/jsonstats"] = answer(" " * (MAX_BODY_BYTES + 1), "application/json")
    with pytest.raises(WorkerStatsError, match="over"):
        await client.stats()

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the bound holds while reading
        await resp.prepare(request)
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            await resp.write(b" " * 65536)
        return resp

    fake.answers["/jsonstats"] = streamed
    with pytest.raises(WorkerStatsError, match="over"):
        await client.stats()


async def test_a_worker_that_does_not_answer_times_out(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker

    async def silent(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    fake.answers["/jsonstats"] = silent
    with pytest.raises(TimeoutError):
        await client.stats()


async def test_an_unreachable_worker_is_an_os_error() -> None:
    async with WorkerClient("127.0.0.1", 1, timeout_seconds=1.0) as client:
        with pytest.raises(OSError):
            await client.stats()


async def test_enable_and_disable_want_cocoons_state_updated(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker
    fake.answers["/request/disable"] = answer(short("state updated"))  # WorkerRunner.h:168-171
    fake.answers["/request/enable"] = answer(short("state updated"))
    await client.disable()
    await client.enable()
    assert fake.seen == ["/request/disable", "/request/enable"]
    fake.answers["/request/disable"] = answer("<http><body>OK</body></http>")
    with pytest.raises(WorkerStatsError, match="unexpected answer"):
        await client.disable()


async def test_the_coefficient_goes_out_as_a_multiplier_that_lands_on_the_value(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker
    fake.answers["/request/change_coefficient"] = answer(short("coefficient set to 1.001"))
    await client.set_coefficient(1500)
    await client.set_coefficient(1001)  # "1.001" would truncate to 1000 (WorkerRunner.h:180)
    assert fake.seen == [
        "/request/change_coefficient?coefficient=1.5",
        "/request/change_coefficient?coefficient=1.0010000000000001",
    ]


async def test_a_coefficient_the_worker_could_not_parse_is_an_error_though_http_200(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker
    fake.answers["/request/change_coefficient"] = answer(
        short("failed to parse '1.5x' as double")  # WorkerRunner.h:176-177
    )
    with pytest.raises(WorkerStatsError, match="failed to parse"):
        await client.set_coefficient(1500)


@pytest.mark.parametrize(
    "said",
    # http_payout's answers (WorkerRunner.cpp:732-755), all HTTP 200.
    ["request sent", "proxy not found", "request is already running", "proxy is not inited"],
)
async def test_a_payout_returns_the_workers_answer(
    worker: tuple[FakeWorker, WorkerClient], said: str
) -> None:
    fake, client = worker
    fake.answers["/request/payout"] = answer(short(said))
    proxy = "EQDxcX7o3ip0gD1PxW4CkLE6g-RWWQrfJUl_-Ip-ylgJ3RWH"
    assert await client.payout(proxy) == said
    # The worker compares the raw query value (no percent-decoding, BaseRunner.cpp:758-790).
    assert fake.seen == [f"/request/payout?proxy={proxy}"]


async def test_a_value_the_worker_would_not_read_back_is_never_sent(
    worker: tuple[FakeWorker, WorkerClient],
) -> None:
    fake, client = worker
    with pytest.raises(ValueError, match="as-is"):
        await client.payout("EQ a&b=c")
    assert fake.seen == []
