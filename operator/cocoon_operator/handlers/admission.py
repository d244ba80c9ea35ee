"""The admission webhooks: what the CRD schema and CEL cannot check, and the finalizer.

Served by kopf's admission server when ``cocoon-operator run`` is given a
webhook address (handed over in kopf's memo as :class:`WebhookOptions`); kopf
keeps the ValidatingWebhookConfiguration and the MutatingWebhookConfiguration
(both named by ``--webhook-config``) pointed at it. Both fail open (failure
policy Ignore): the schema and CEL rules still hold when the operator is
down, reconcile re-checks the same rules before acting, and kopf adds the
finalizer itself to a worker created without it.

The mutating one gives a new CocoonWorker the operator's finalizer as it is
created. Without it kopf patches the finalizer on when it first sees the
worker, then waits for its watch to bring that patch back before it handles
the creation: one write per worker, and at 3,000 workers a wait of minutes
while the watch ran behind. A pool's members already carry it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from cocoon_operator.api import v1alpha1
from cocoon_operator.k8s.rest import Kube, path
from cocoon_operator.k8s.webhook_tls import self_signed
from cocoon_operator.policy.admission import introduced_errors
from cocoon_operator.policy.launcherimages import LauncherImages, introduced_image_errors

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


async def remove_config(api: Kube, name: str) -> None:
    """Drop the managed configurations on shutdown, so nothing points at a closed port."""
    for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        url = path("admissionregistration.k8s.io/v1", plural, name=name)
        await api.request_unless_gone("DELETE", url)


def validate_addresses(*, spec: kopf.Spec, **kwargs: Any) -> None:
    # kopf passes the stored object as ``old`` on an update.
    stored = kwargs.get("old") or {}
    old_spec = stored.get("spec") or {} if kwargs.get("operation") == "UPDATE" else None
    errors = introduced_errors(spec, old_spec)
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


def image_validator(images: LauncherImages) -> Any:
    """The launcher-image check, bound to the operator's allow-list (its configuration)."""

    def validate_launcher_image(*, spec: kopf.Spec, **kwargs: Any) -> None:
        stored = kwargs.get("old") or {}
        old_spec = stored.get("spec") or {} if kwargs.get("operation") == "UPDATE" else None
        errors = introduced_image_errors(spec, old_spec, images)
        if errors:
            raise kopf.AdmissionError("; ".join(errors), code=422)

    return validate_launcher_image


def with_finalizer(finalizers: list[str] | None) -> list[str] | None:
    """The finalizers a new worker should have, or None when it has them already."""
    present = list(finalizers or [])
    if v1alpha1.WORKER_FINALIZER in present:
        return None
    return [*present, v1alpha1.WORKER_FINALIZER]


def add_finalizer(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    wanted = with_finalizer(body.metadata.get("finalizers"))
    if wanted is not None:
        patch.metadata["finalizers"] = wanted


def register(registry: kopf.OperatorRegistry, images: LauncherImages) -> None:
    """Add the admission handlers to ``registry``; ``images``: the launcher images the
    operator's configuration allows (``--launcher-image``).

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
    kopf.on.validate(
        *WORKERS,
        id="launcher-image",
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
        registry=registry,
    )(image_validator(images))
    kopf.on.mutate(
        *WORKERS,
        id="finalizer",
        operations=["CREATE"],
        ignore_failures=True,
        side_effects=False,
        registry=registry,
    )(add_finalizer)
