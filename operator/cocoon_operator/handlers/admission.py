"""The validating webhook: only what the CRD schema and CEL cannot check.

Served by kopf's admission server when ``cocoon-operator run`` is given a
webhook address (handed over in kopf's memo as :class:`WebhookOptions`); kopf
keeps the ValidatingWebhookConfiguration (named by ``--webhook-config``)
pointed at it. Its failure policy is Ignore: the schema
and CEL rules still hold when the operator is down, and reconcile re-checks
the same rules before acting.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.k8s.webhook_tls import self_signed
from cocoon_operator.policy.admission import introduced_errors

WORKERS = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)


@dataclass(frozen=True)
class WebhookOptions:
    addr: str
    port: int
    host: str
    config_name: str
    certfile: str | None = None
    keyfile: str | None = None


def configure(settings: kopf.OperatorSettings, options: WebhookOptions, now: Any) -> None:
    certfile, keyfile = options.certfile, options.keyfile
    if certfile is None or keyfile is None:
        tmp = Path(tempfile.mkdtemp(prefix="cocoon-webhook-"))
        cert_path, key_path = self_signed(tmp, [options.host, options.addr], now=now)
        certfile, keyfile = str(cert_path), str(key_path)
    settings.admission.server = kopf.WebhookServer(
        addr=options.addr, port=options.port, host=options.host, certfile=certfile, pkeyfile=keyfile
    )
    settings.admission.managed = options.config_name


async def remove_config(api: client.ApiClient, name: str) -> None:
    """Drop the managed configuration on shutdown, so nothing points at a closed port."""
    try:
        await client.AdmissionregistrationV1Api(api).delete_validating_webhook_configuration(name)
    except ApiException as err:
        if err.status != 404:
            raise


def validate_addresses(*, spec: kopf.Spec, **kwargs: Any) -> None:
    # kopf passes the stored object as ``old`` on an update.
    stored = kwargs.get("old") or {}
    old_spec = stored.get("spec") or {} if kwargs.get("operation") == "UPDATE" else None
    errors = introduced_errors(spec, old_spec)
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the validating handlers to ``registry``.

    Registered only when a webhook server is configured: kopf refuses to start
    when admission handlers exist but nothing serves them.
    """
    # Not DELETE: an object that got in with a bad address must stay deletable.
    kopf.on.validate(
        *WORKERS,
        id="addresses",
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
        registry=registry,
    )(validate_addresses)
