"""The operator's control signatures (workerapi/_signing.py) and its keys' Secret
(handlers/controlkey.py): what is signed, which key signs for which pod, and the
Secret created once, never rewritten, never echoed."""

from __future__ import annotations

import base64
from typing import Any, cast

import pytest

from cocoon_operator.handlers.controlkey import ControlKeySecretError, load_control_keys
from cocoon_operator.k8s.rest import ApiError, Kube
from cocoon_operator.workerapi import (
    ControlKeyError,
    ControlKeys,
    ControlSigner,
    generate_private_key_text,
)
from cocoon_operator.workerapi._signing import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    parse_public_key,
    signed_message,
    verify,
)

FIELDS: dict[str, Any] = {
    "audience": "uid-1",
    "method": "GET",
    "target": "/request/payout?proxy=EQabc",
    "body": b"",
    "timestamp": 1_800_000_000,
    "nonce": "00" * 16,
}


def signer(at: float = 1_800_000_000.0) -> ControlSigner:
    return ControlSigner(ControlSigner.from_text(generate_private_key_text()).key, lambda: at)


def test_a_signature_verifies_with_the_public_key_the_pod_is_given() -> None:
    s = signer()
    headers = s.headers(audience="uid-1", method="GET", target="/request/disable")
    message = signed_message(
        audience="uid-1",
        method="GET",
        target="/request/disable",
        body=b"",
        timestamp=int(headers[HEADER_TIMESTAMP]),
        nonce=headers[HEADER_NONCE],
    )
    assert verify(parse_public_key(s.public_key), headers[HEADER_SIGNATURE], message)
    assert not verify(parse_public_key(signer().public_key), headers[HEADER_SIGNATURE], message)
    assert not verify(parse_public_key(s.public_key), "not base64!", message)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("audience", "uid-2"),
        ("method", "POST"),
        ("target", "/request/payout?proxy=EQabd"),
        ("body", b"x"),
        ("timestamp", 1_800_000_001),
        ("nonce", "01" * 16),
    ],
)
def test_every_field_is_signed(field: str, other: object) -> None:
    assert signed_message(**FIELDS) != signed_message(**{**FIELDS, field: other})


def test_a_field_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        signed_message(**{**FIELDS, "target": "/jsonstats\nGET"})


def test_each_request_gets_a_new_nonce() -> None:
    s = signer()
    one = s.headers(audience="u", method="GET", target="/jsonstats")
    two = s.headers(audience="u", method="GET", target="/jsonstats")
    assert one[HEADER_NONCE] != two[HEADER_NONCE]


def test_a_pod_is_signed_for_with_the_key_it_trusts_current_or_previous() -> None:
    current, previous = signer(), signer()
    keys = ControlKeys(current, [previous])
    assert keys.for_pod(current.public_key) is current
    assert keys.for_pod(previous.public_key) is previous
    assert keys.for_pod(signer().public_key) is None
    assert keys.for_pod(None) is None


def test_a_key_that_is_not_one_names_itself_never_its_value() -> None:
    bad = base64.b64encode(b"short").decode()
    with pytest.raises(ControlKeyError, match="5 bytes") as raised:
        ControlSigner.from_text(bad)
    assert bad not in str(raised.value)
    with pytest.raises(ControlKeyError, match="no 'current'"):
        ControlKeys.from_secret_data({"previous": generate_private_key_text()})


class FakeSecrets:
    """The two calls load_control_keys makes, on one Secret; ``race``: another replica
    creates it between our read and our create."""

    def __init__(self, data: dict[str, str] | None = None, *, race: bool = False) -> None:
        self.data = data
        self.race = race
        self.posts = 0

    async def request_unless_gone(self, method: str, url: str, **_: Any) -> dict[str, Any] | None:
        assert method == "GET" and url.endswith("/secrets/key")
        return None if self.data is None else {"data": dict(self.data)}

    async def request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET":
            assert self.data is not None
            return {"data": dict(self.data)}
        assert method == "POST" and url == "/api/v1/namespaces/ops/secrets"
        self.posts += 1
        if self.race:
            self.data = {"current": base64.b64encode(generate_private_key_text().encode()).decode()}
            raise ApiError(409, "Conflict")
        assert self.data is None
        self.data = kwargs["body"]["data"]
        return {"data": dict(self.data)}


async def test_the_secret_is_created_once_and_read_back_the_same() -> None:
    fake = FakeSecrets()
    api = cast(Kube, fake)
    first = await load_control_keys(api, "ops", "key")
    again = await load_control_keys(api, "ops", "key")
    assert fake.posts == 1
    assert first.current.public_key == again.current.public_key


async def test_a_replica_that_loses_the_race_reads_the_winners_key() -> None:
    fake = FakeSecrets(race=True)
    keys = await load_control_keys(cast(Kube, fake), "ops", "key")
    assert fake.data is not None
    winner = ControlSigner.from_text(base64.b64decode(fake.data["current"]).decode())
    assert keys.current.public_key == winner.public_key


async def test_an_existing_secret_is_never_rewritten_and_a_broken_one_is_named() -> None:
    fake = FakeSecrets({"current": base64.b64encode(b"not a key").decode()})
    with pytest.raises(ControlKeySecretError, match="Secret ops/key") as raised:
        await load_control_keys(cast(Kube, fake), "ops", "key")
    assert "not a key" not in str(raised.value)
    assert fake.posts == 0
