"""The attestation check spares its TLS handshake when the chain step's pinned
connection to the same endpoint, within the check's interval, showed the
certificate verified last; in every other case it fetches the certificate as
before. Steady state at 1,000 workers spent 30% of the operator's CPU in TLS
handshakes, two per worker per tick (docs/bench.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.v1alpha1 import ConditionStatus
from cocoon_operator.desired.launcher import revision
from cocoon_operator.handlers.attestation import Attestation, attest_worker
from cocoon_operator.handlers.worker import Deps
from cocoon_operator.policy.conditions import rfc3339
from cocoon_operator.policy.worker import PodFacts

REPO = Path(__file__).resolve().parents[2]
CERT = b"the RA-TLS certificate, as DER"
SHA = hashlib.sha256(CERT).hexdigest()
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
ENDPOINT = ("10.0.0.7", 12001)


class Verified(Exception):
    """Raised by the fake checker's verify: a full verification was asked for."""


class Checker:
    def __init__(self) -> None:
        self.fetches = 0
        self.pinned = 0.0  # the operator's count of checks that took a pinned read

    async def fetch(self, host: str, port: int) -> bytes:
        assert (host, port) == ENDPOINT
        self.fetches += 1
        return CERT

    async def verify(self, *_: Any, **__: Any) -> Any:
        raise Verified


def worker_body(verified_at: dt.datetime) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    body: dict[str, Any] = next(d for d in docs if d["kind"] == "CocoonWorker")
    body["metadata"].update(namespace="ns", uid="u1", resourceVersion="7")
    body["status"] = {
        "attestation": {
            "certificateSha256": SHA,
            "pod": "worker-0-abc",
            "verifiedAt": rfc3339(verified_at),
            "trustRoot": "test",
        }
    }
    return body


def serving_pod(body: dict[str, Any]) -> PodFacts:
    spec = v1alpha1.CocoonWorker.model_validate(body).spec
    return PodFacts(
        name="worker-0-abc",
        node="n1",
        phase="Running",
        attested_gate=ConditionStatus.TRUE,
        revision=revision(spec),
        instance=0,
        host_ip=ENDPOINT[0],
    )


async def check(*, seen: tuple[str, float] | None, verified_seconds_ago: float = 60) -> Checker:
    """One attestation check at NOW, after a pinned connection saw ``seen``
    (certificate, seconds before NOW), or none did."""
    clock = [NOW]
    deps = Deps(api=cast(Any, None), clock=lambda: clock[0])
    if seen is not None:
        clock[0] = NOW - dt.timedelta(seconds=seen[1])
        deps.saw_certificate(ENDPOINT, seen[0])
        clock[0] = NOW
    checker = Checker()
    state = Attestation(cast(Any, checker), cast(Any, None), check_seconds=5.0)
    body = worker_body(NOW - dt.timedelta(seconds=verified_seconds_ago))
    index = {("ns", "worker-0"): [serving_pod(body)]}
    await attest_worker(
        body=kopf.Body(cast(kopf.RawBody, body)),
        memo={"attestation": state, "deps": deps},
        logger=logging.getLogger("test"),
        launcher_pods=index,
    )
    sample = deps.metrics.registry.get_sample_value(
        "cocoon_attestation_checks_total", {"certificate": "pinned"}
    )
    checker.pinned = sample or 0.0
    return checker


async def test_without_a_pinned_connection_the_check_fetches_the_certificate() -> None:
    checker = await check(seen=None)
    assert checker.fetches == 1 and checker.pinned == 0


async def test_a_pinned_connection_in_this_interval_spares_the_handshake() -> None:
    checker = await check(seen=(SHA, 1.0))
    assert checker.fetches == 0
    assert checker.pinned == 1  # and the metric says so


async def test_one_from_an_earlier_interval_does_not() -> None:
    assert (await check(seen=(SHA, 5.0))).fetches == 1


async def test_another_certificate_seen_is_fetched_and_judged_by_the_check() -> None:
    # The chain step pins the certificate in status, so it cannot see another; if
    # the record ever disagreed, the check would still look for itself.
    assert (await check(seen=("00" * 32, 1.0))).fetches == 1


async def test_a_reattestation_due_is_verified_in_full_whatever_was_seen() -> None:
    a_day = 24 * 3600.0
    with pytest.raises(Verified):
        await check(seen=(SHA, 1.0), verified_seconds_ago=a_day)
