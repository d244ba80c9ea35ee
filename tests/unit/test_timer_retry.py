"""Timers ride out an apiserver outage: connection errors, 5xx and 429 become a
one-line kopf.TemporaryError retried after the timer's interval (kopf's default
is a traceback and 60 s of backoff); other errors reach kopf unchanged. Found by
the apiserver-restart fault test (tests/cluster/test_faults.py)."""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf
import pytest
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.handlers import attestation, chain, control
from cocoon_operator.handlers.retry import riding_out_outages, transient_api_error


def refused() -> aiohttp.ClientConnectorError:
    key: Any = type("Key", (), {"ssl": True, "host": "127.0.0.1", "port": 6443})()
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    "exc",
    [refused(), ApiException(status=503), ApiException(status=429), ConnectionResetError()],
    ids=["refused", "503", "429", "reset"],
)
async def test_an_unavailable_apiserver_is_retried_after_the_interval(exc: Exception) -> None:
    async def timer(**_: Any) -> None:
        raise exc

    assert transient_api_error(exc)
    with pytest.raises(kopf.TemporaryError) as caught:
        await riding_out_outages(timer, delay=2.0)(body={})
    assert caught.value.delay == 2.0
    assert "Kubernetes API unavailable" in str(caught.value)


@pytest.mark.parametrize(
    "exc", [ApiException(status=404), ApiException(status=422), ValueError("bug")]
)
async def test_other_errors_reach_kopf_unchanged(exc: Exception) -> None:
    async def timer(**_: Any) -> None:
        raise exc

    assert not transient_api_error(exc)
    with pytest.raises(type(exc)):
        await riding_out_outages(timer, delay=2.0)()


async def test_results_pass_through() -> None:
    async def timer(*, x: int, **_: Any) -> int:
        return x + 1

    assert await riding_out_outages(timer, delay=1.0)(x=1) == 2


def test_the_per_worker_timers_are_registered_riding_out_outages() -> None:
    registry = kopf.OperatorRegistry()
    attestation.register(registry, 2.0)
    chain.register(registry, 2.0)
    control.register(registry, 2.0)
    timers = {h.id: h.fn for h in registry._spawning.get_all_handlers()}
    wrapped = {
        "attestation": attestation.attest_worker,
        "chain": chain.check_chain,
        "coefficient": control.sync_coefficient,
    }
    for handler_id, fn in wrapped.items():
        assert getattr(timers[handler_id], "__wrapped__", None) is fn, handler_id
