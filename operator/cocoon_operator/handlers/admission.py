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

In a namespace-scoped install (``--namespace``) both act only on workers in
the watched namespaces. kopf's managed configurations carry no
``namespaceSelector`` (kopf rewrites their ``webhooks`` list whole), so the
apiserver still sends requests from every namespace; the handlers let those
through untouched. A finalizer added to a worker no replica watches would never
be removed, and the worker could never be deleted.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from cocoon_operator.api import pool, v1alpha1
from cocoon_operator.k8s.rest import Kube, path
from cocoon_operator.k8s.webhook_tls import self_signed
from cocoon_operator.policy.admission import introduced_errors
from cocoon_operator.policy.launcherimages import (
    LauncherImages,
    introduced_image_errors,
    introduced_template_image_errors,
)

WORKERS = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
POOLS = (v1alpha1.GROUP, v1alpha1.VERSION, pool.POOL_PLURAL)


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


#: A check of a request's spec against the stored one (None on a create): its errors.
SpecCheck = Callable[[Mapping[str, Any], Mapping[str, Any] | None], list[str]]


def spec_checks(images: LauncherImages | None, *, allow_gpu_verify: bool) -> dict[str, SpecCheck]:
    """The validating handlers' checks by handler id (their webhook paths), for kopf's
    handlers and a follower's :func:`standby_review` alike; no image checks without
    ``images``."""
    checks: dict[str, SpecCheck] = {
        "addresses": lambda spec, old: introduced_errors(
            spec, old, allow_gpu_verify=allow_gpu_verify
        ),
    }
    if images is not None:
        checks["launcher-image"] = lambda spec, old: introduced_image_errors(spec, old, images)
        # A pool's template, refused once rather than on each worker it would make.
        checks["pool-launcher-image"] = lambda spec, old: introduced_template_image_errors(
            spec, old, images
        )
    return checks


def validator(check: SpecCheck) -> Any:
    """``check`` as a kopf validating handler (kopf passes the stored object as ``old``
    on an update)."""

    def validate(*, spec: kopf.Spec, **kwargs: Any) -> None:
        stored = kwargs.get("old") or {}
        old_spec = stored.get("spec") or {} if kwargs.get("operation") == "UPDATE" else None
        errors = check(spec, old_spec)
        if errors:
            raise kopf.AdmissionError("; ".join(errors), code=422)

    return validate


def image_validator(images: LauncherImages) -> Any:
    """The launcher-image check, bound to the operator's allow-list (its configuration)."""
    return validator(spec_checks(images, allow_gpu_verify=False)["launcher-image"])


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


def watched(namespaces: Collection[str]) -> Callable[..., bool]:
    """kopf's ``when`` filter: True for an object in one of ``namespaces``, or for any
    object when none are given (a cluster-wide install)."""
    allowed = frozenset(namespaces)

    def check(*, namespace: str | None = None, **_: Any) -> bool:
        return not allowed or namespace in allowed

    return check


def standby_review(
    handler_id: str,
    review: Mapping[str, Any],
    namespaces: Collection[str] = (),
    images: LauncherImages | None = None,
    *,
    allow_gpu_verify: bool = False,
) -> dict[str, Any]:
    """The answer to one AdmissionReview (v1) for handler ``handler_id``, as kopf gives
    it for :func:`validate_addresses`, the launcher-image check (``images``: the
    operator's allow-list) and :func:`add_finalizer` (its URL path is the handler's
    id), for a follower to serve while it waits for the Lease.

    Behind a Service every replica is called; a follower runs no kopf, and a review
    it did not answer would fail open. Both handlers need only the request, so
    a follower answers exactly as the leader would.
    """
    request = review.get("request") or {}
    obj = request.get("object") or {}
    answer: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    out = {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": answer,
    }
    namespace = request.get("namespace") or (obj.get("metadata") or {}).get("namespace")
    if not watched(namespaces)(namespace=namespace):
        return out
    operation = request.get("operation")
    check = spec_checks(images, allow_gpu_verify=allow_gpu_verify).get(handler_id)
    if check is not None and operation in ("CREATE", "UPDATE"):
        old = request.get("oldObject") or {}
        old_spec = (old.get("spec") or {}) if operation == "UPDATE" else None
        errors = check(obj.get("spec") or {}, old_spec)
        if errors:
            answer["allowed"] = False
            answer["status"] = {"message": "; ".join(errors), "code": 422}
    elif handler_id == "finalizer" and operation == "CREATE":
        present = (obj.get("metadata") or {}).get("finalizers")
        if with_finalizer(present) is not None:
            op = (
                {"op": "add", "path": "/metadata/finalizers/-", "value": v1alpha1.WORKER_FINALIZER}
                if present
                else {
                    "op": "add",
                    "path": "/metadata/finalizers",
                    "value": [v1alpha1.WORKER_FINALIZER],
                }
            )
            answer["patchType"] = "JSONPatch"
            answer["patch"] = base64.b64encode(json.dumps([op]).encode()).decode("ascii")
    return out


def register(
    registry: kopf.OperatorRegistry,
    images: LauncherImages,
    namespaces: Collection[str] = (),
    *,
    allow_gpu_verify: bool = False,
) -> None:
    """Add the admission handlers to ``registry``, acting in ``namespaces`` only
    (all when empty, as the operator watches them); ``images``: the launcher images
    the operator's configuration allows (``--launcher-image``); ``allow_gpu_verify``:
    its ``--allow-gpu-verify-mode`` (see
    :func:`~cocoon_operator.policy.admission.gpu_mode_errors`).

    Registered only when a webhook server is configured: kopf refuses to start
    when admission handlers exist but nothing serves them.
    """
    when = watched(namespaces)
    checks = spec_checks(images, allow_gpu_verify=allow_gpu_verify)
    # Not DELETE: an object that got in with a bad address or image must stay deletable.
    for resource, handler_id in (
        (WORKERS, "addresses"),
        (WORKERS, "launcher-image"),
        (POOLS, "pool-launcher-image"),
    ):
        kopf.on.validate(
            *resource,
            id=handler_id,
            operations=["CREATE", "UPDATE"],
            ignore_failures=True,
            when=when,
            registry=registry,
        )(validator(checks[handler_id]))
    kopf.on.mutate(
        *WORKERS,
        id="finalizer",
        operations=["CREATE"],
        ignore_failures=True,
        side_effects=False,
        when=when,
        registry=registry,
    )(add_finalizer)
