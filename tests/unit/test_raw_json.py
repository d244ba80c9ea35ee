"""Answers read raw (no typed models built): JSON out, and the client's ApiException on
an error status, as the callers' 404/409/403 handling expects (pure)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.k8s.objects import raw_json


class Response:
    def __init__(self, status: int, body: bytes, reason: str = "") -> None:
        self.status, self._body, self.reason = status, body, reason
        self.released = False

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        self.released = True


async def answer(response: Response) -> Any:
    return response


def test_a_success_is_its_json_and_the_connection_is_released() -> None:
    response = Response(200, b'{"metadata": {"resourceVersion": "7"}}')
    got = asyncio.run(raw_json(answer(response)))
    assert got == {"metadata": {"resourceVersion": "7"}}
    assert response.released


def test_an_error_status_raises_the_clients_exception_with_its_body() -> None:
    response = Response(404, b'{"reason": "NotFound"}', "Not Found")
    with pytest.raises(ApiException) as raised:
        asyncio.run(raw_json(answer(response)))
    assert raised.value.status == 404
    assert "NotFound" in raised.value.body
    assert response.released
