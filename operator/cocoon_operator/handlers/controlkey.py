"""The operator's control keys: read from their Secret at start, created there once if absent.

Launcher pods publish the worker's controls only through a relay that forwards
requests signed with the operator's Ed25519 key (``launcher/_controlrelay.py``);
a pod carries the public key, the private key lives only in this Secret, which
the operator alone reads (the chart grants ``get`` on this one name). Keys:
``current`` (base64 of the 32-byte seed; new pods trust it) and, during a
rotation, ``previous`` (still signs for the pods made with it). See
``docs/deploy.md``.

Idempotent and safe with more than one replica: the Secret is created only
when it does not exist, and a replica that loses the race (409) reads the
winner's keys; an existing Secret is never rewritten.
"""

from __future__ import annotations

import base64
import logging
from typing import Final

from cocoon_operator.k8s.rest import Conflict, Kube, path
from cocoon_operator.workerapi import ControlKeyError, ControlKeys, generate_private_key_text

log = logging.getLogger("cocoon_operator.controlkey")

DEFAULT_SECRET_NAME: Final = "cocoon-operator-control-key"  # noqa: S105 - a name


class ControlKeySecretError(Exception):
    """The Secret exists and holds no usable key; the message names the Secret and key,
    never a key's value."""


def _decoded(secret: dict[str, object], where: str) -> dict[str, str]:
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        raise ControlKeySecretError(f"{where}: data is not a map")
    out = {}
    for key in ("current", "previous"):
        if key in data:
            try:
                out[key] = base64.b64decode(str(data[key]), validate=True).decode()
            except ValueError:
                raise ControlKeySecretError(f"{where}: {key} is not base64") from None
    return out


async def load_control_keys(api: Kube, namespace: str, name: str) -> ControlKeys:
    """The keys in ``namespace/name``, the Secret created with a new key if absent."""
    where = f"Secret {namespace}/{name}"
    url = path("v1", "secrets", namespace=namespace, name=name)
    secret = await api.request_unless_gone("GET", url)
    if secret is None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "cocoon-operator"},
            },
            "type": "Opaque",
            "data": {"current": base64.b64encode(generate_private_key_text().encode()).decode()},
        }
        try:
            secret = await api.request(
                "POST", path("v1", "secrets", namespace=namespace), body=body
            )
            log.info("created %s with a new control key", where)
        except Conflict:
            secret = await api.request("GET", url)  # another replica created it first
    try:
        keys = ControlKeys.from_secret_data(_decoded(secret, where))
    except ControlKeyError as exc:
        raise ControlKeySecretError(f"{where}: {exc}") from None
    log.info("control key %s (public) from %s", keys.current.public_key, where)
    return keys
