"""Which key the operator signs a pod's control requests with (Deps.worker_client), and a
pod that trusts a retired key: not driven, its drain skipped with an Event saying why."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

import kopf
import pytest
import yaml

from cocoon_operator.api import v1alpha1
from cocoon_operator.handlers.control import drain
from cocoon_operator.handlers.runtime import Deps
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.workerapi import ControlKeys, ControlSigner, generate_private_key_text
from tests.cluster.helpers import EXAMPLE

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
CURRENT = ControlSigner.from_text(generate_private_key_text())
PREVIOUS = ControlSigner.from_text(generate_private_key_text())
RETIRED = ControlSigner.from_text(generate_private_key_text())


class Events:
    """The apiserver as record() uses it: Events posted."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        assert method == "POST" and url.endswith("/events")
        self.posted.append(kwargs["body"])
        return {}


def deps(api: Any = None) -> Deps:
    return Deps(api=api, clock=lambda: NOW, control=ControlKeys(CURRENT, [PREVIOUS]))


def pod(key: str | None, **changes: Any) -> PodFacts:
    base: dict[str, Any] = {
        "name": "w-abc",
        "node": "n1",
        "phase": "Running",
        "attested_gate": v1alpha1.ConditionStatus.TRUE,
        "instance": 2,
        "host_ip": "127.3.0.5",
        "uid": "uid-1",
        "control_key": key,
    }
    return PodFacts(**{**base, **changes})


async def test_a_pod_is_reached_on_its_relay_port_signed_with_the_key_it_names() -> None:
    for signer in (CURRENT, PREVIOUS):
        client = deps().worker_client(pod(signer.public_key))
        assert client is not None
        async with client:
            assert client._base == "http://127.3.0.5:12022"  # InstanceSlot(2).control_port
            assert client._signer is signer and client._audience == "uid-1"


@pytest.mark.parametrize(
    "changes",
    [{"control_key": RETIRED.public_key}, {"control_key": None}, {"uid": None}, {"host_ip": None}],
)
async def test_no_client_for_a_pod_without_a_held_key_an_address_or_a_uid(
    changes: dict[str, Any],
) -> None:
    assert deps().worker_client(pod(CURRENT.public_key, **changes)) is None


def test_no_pod_is_driven_before_the_keys_are_loaded() -> None:
    with pytest.raises(RuntimeError, match="control keys"):
        Deps(api=cast(Any, None), clock=lambda: NOW).worker_client(pod(CURRENT.public_key))


async def test_a_pod_trusting_a_retired_key_is_stopped_undrained_with_an_event() -> None:
    events = Events()
    worker = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "CocoonWorker")
    worker["metadata"] |= {"namespace": "ns", "uid": "w-uid"}
    body = kopf.Body(cast(kopf.RawBody, worker))
    waiting = await drain(body, [pod(RETIRED.public_key)], deps(events), logging.getLogger("t"))
    assert waiting is None
    (event,) = events.posted
    assert event["reason"] == "DrainSkipped"
    assert "does not hold" in event["message"]
