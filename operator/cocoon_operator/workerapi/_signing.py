"""Signed control requests: the operator's Ed25519 signature, checked by the launcher's relay.

COCOON's worker port is plain, unauthenticated HTTP (``BaseRunner.cpp:735-790``
answers whoever connects; ``WorkerRunner.cpp:195-228`` registers the controls),
so the operator does not publish it: the launcher forwards it to the pod's
loopback only and publishes a relay (``launcher/_controlrelay.py``) that
forwards a request only when it carries the operator's signature. The relay
knows only the public key (from the pod spec); the private key stays in a
Secret only the operator reads (``docs/deploy.md``).

What is signed (:func:`signed_message`), one field per line after a domain tag:
the audience (the launcher pod's UID, so a request signed for one worker is
refused by every other), the method, the request target exactly as sent
(path and raw query: COCOON never decodes it, BaseRunner.cpp:758-790), the
SHA-256 of the body, the timestamp (Unix seconds) and a random nonce. The relay
refuses a timestamp outside its window and a nonce it has seen, so a request
seen on the wire cannot be sent again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DOMAIN: Final = b"cocoon-operator control request v1"
HEADER_TIMESTAMP: Final = "X-Cocoon-Control-Timestamp"
HEADER_NONCE: Final = "X-Cocoon-Control-Nonce"
HEADER_SIGNATURE: Final = "X-Cocoon-Control-Signature"
# On the relay's own refusals: a stable code (launcher/_controlrelay.py).
HEADER_REFUSAL: Final = "X-Cocoon-Control-Refusal"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64


class ControlKeyError(ValueError):
    """A control key that is not a base64 Ed25519 key; the message never holds the key."""


def signed_message(
    *, audience: str, method: str, target: str, body: bytes, timestamp: int, nonce: str
) -> bytes:
    """The bytes the operator signs and the relay verifies (module docstring).

    No field may hold a newline, so no two requests give the same message.
    """
    fields = (audience, method.upper(), target, str(timestamp), nonce)
    if any("\n" in f or "\r" in f for f in fields):
        raise ValueError("a control request field holds a line break")
    return b"\n".join(
        [
            DOMAIN,
            audience.encode(),
            method.upper().encode(),
            target.encode(),
            hashlib.sha256(body).hexdigest().encode(),
            str(timestamp).encode(),
            nonce.encode(),
        ]
    )


def _raw_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ControlKeyError(f"{what} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ControlKeyError(f"{what} is {len(raw)} bytes, an Ed25519 key is {KEY_BYTES}")
    return raw


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key as the pod spec carries it: base64 of the raw 32 bytes."""
    return Ed25519PublicKey.from_public_bytes(_raw_key(text, "the control public key"))


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def generate_private_key_text() -> str:
    """A new private key, as the operator's Secret stores it: base64 of the raw seed."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@dataclass(frozen=True)
class ControlSigner:
    """Signs the operator's control requests with one private key."""

    key: Ed25519PrivateKey
    clock: Callable[[], float] = time.time

    @classmethod
    def from_text(cls, text: str, clock: Callable[[], float] = time.time) -> ControlSigner:
        seed = _raw_key(text, "the control private key")
        return cls(Ed25519PrivateKey.from_private_bytes(seed), clock)

    @property
    def public_key(self) -> str:
        """Base64 of the raw public key: what the launcher pod is given."""
        return public_key_text(self.key.public_key())

    def headers(
        self, *, audience: str, method: str, target: str, body: bytes = b""
    ) -> dict[str, str]:
        """The headers that make one request acceptable to ``audience``'s relay, once."""
        timestamp = int(self.clock())
        nonce = secrets.token_hex(NONCE_BYTES)
        message = signed_message(
            audience=audience,
            method=method,
            target=target,
            body=body,
            timestamp=timestamp,
            nonce=nonce,
        )
        return {
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_NONCE: nonce,
            HEADER_SIGNATURE: base64.b64encode(self.key.sign(message)).decode(),
        }


def verify(public_key: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    """Whether ``signature_b64`` is ``public_key``'s signature of ``message``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


class ControlKeys:
    """The operator's control keys: the current one (new pods trust it) and the ones
    it replaced, kept while pods made with them still run (``docs/deploy.md``)."""

    def __init__(self, current: ControlSigner, previous: Iterable[ControlSigner] = ()) -> None:
        self.current = current
        self._by_public = {s.public_key: s for s in (*previous, current)}

    @classmethod
    def from_secret_data(
        cls, data: Mapping[str, str], clock: Callable[[], float] = time.time
    ) -> ControlKeys:
        """From the Secret's decoded keys: ``current`` and, optionally, ``previous``."""
        if "current" not in data:
            raise ControlKeyError("the control key Secret has no 'current' key")
        previous = []
        if data.get("previous", "").strip():
            previous.append(ControlSigner.from_text(data["previous"], clock))
        return cls(ControlSigner.from_text(data["current"], clock), previous)

    def for_pod(self, public_key: str | None) -> ControlSigner | None:
        """The signer a pod made with ``public_key`` accepts; None if the operator
        no longer (or never) held that key."""
        if public_key is None:
            return None
        return self._by_public.get(public_key.strip())
