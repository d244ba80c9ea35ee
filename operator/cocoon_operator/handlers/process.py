"""The operator process: kopf's login and settings, the shared state at startup,
and its release at cleanup; how far Ready workers' re-checks stretch under load."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.conditions import Phase
from cocoon_operator.api.labels import KOPF_PREFIX, LAUNCHER_LABEL_SELECTOR
from cocoon_operator.handlers import admission
from cocoon_operator.handlers.controlkey import load_control_keys
from cocoon_operator.handlers.looplag import LoopLag, OverloadNotice
from cocoon_operator.handlers.probes import ProbeBudget
from cocoon_operator.handlers.runtime import Deps, Runtime, utcnow
from cocoon_operator.k8s.diffbase import LeanAnnotationsProgressStorage
from cocoon_operator.k8s.kubeconfig import exec_credentials, load
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.metrics import Metrics
from cocoon_operator.policy import backpressure
from cocoon_operator.policy.launcherimages import LauncherImages


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG (local stack, dev).

    kopf's kubeconfig login takes the server, CA and static credentials but runs
    no ``exec`` plugin (an OIDC or cloud login): for such a user the plugin's
    token or certificate is added, with its expiry, after which kopf calls this
    again (k8s/kubeconfig.py runs the plugin, as the operator's own client does).
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        **kwargs
    ) or kopf.login_with_kubeconfig(**kwargs)
    if info is None or info.token or info.certificate_path or info.certificate_data:
        return info
    plugin = exec_credentials()
    if plugin is None:
        return info
    return dataclasses.replace(
        info,
        token=plugin.token,
        certificate_data=plugin.certificate,
        private_key_data=plugin.key,
        expiration=plugin.expires,
    )


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator (no I/O: the startup handler's first step)."""
    settings.persistence.finalizer = v1alpha1.WORKER_FINALIZER
    # kopf ignores annotations under its own prefix when it diffs objects, so
    # its prefix must not be ours: the pause annotation has to count as a change.
    settings.persistence.progress_storage = LeanAnnotationsProgressStorage(prefix=KOPF_PREFIX)
    # Our own Events explain each change; kopf's per-handler log Events would
    # add a write per handler run for nothing.
    settings.posting.level = logging.WARNING
    # kopf waits this long for the watch to show its own last patch before it
    # takes an older body as current, and an older body without its diff-base
    # annotation reads as a new object: under a large fleet's load the watch ran
    # more than kopf's default 5 s behind, and workers were "created" twice.
    settings.persistence.consistency_timeout = 60
    # Launcher pods only, selected by the apiserver. In a cluster shared with
    # other workloads every other pod's changes would otherwise reach the
    # operator, each decoded and queued by kopf only to match no handler.
    settings.watching.label_selectors["pods"] = LAUNCHER_LABEL_SELECTOR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


def _warn_about_images(images: LauncherImages) -> None:
    """Say at startup what the launcher-image allow-list lets run, loudly when unusual."""
    log = logging.getLogger("cocoon_operator")
    if images.allow_any:
        log.warning(
            "--allow-any-launcher-image: ANY spec.release.image runs as a privileged pod on"
            " the GPU nodes; for development clusters only"
        )
    elif not images.digests:
        log.warning("no --launcher-image given: no worker's launcher pod will be started")
    else:
        log.info("launcher images allowed: %s", ", ".join(sorted(images.digests)))


async def startup(
    rt: Runtime,
    webhook: admission.WebhookOptions | None,
    *,
    settings: kopf.OperatorSettings,
    **_: Any,
) -> None:
    """kopf's settings, then the shared state (:class:`Deps`): the API client exists
    only inside the event loop."""
    configure(settings)
    flags = rt.settings
    metrics = flags.metrics
    deps = rt.started = Deps(
        api=Kube(load()),
        clock=utcnow,
        metrics=metrics,
        probes=ProbeBudget(flags.probe_limit, on_change=metrics.set_probes),
        lag=LoopLag(on_change=_lag_reporter(metrics, flags.max_stretch)),
        max_stretch=flags.max_stretch,
        launcher_images=flags.launcher_images,
        launcher_priority_class=flags.launcher_priority_class,
    )
    _warn_about_images(deps.launcher_images)
    deps.control = await load_control_keys(deps.api, *flags.control_key_secret)
    rt.tasks.append(asyncio.create_task(deps.lag.run(), name="loop-lag"))
    # In the process, not an annotation: a metadata patch per handled change
    # saved (see k8s/diffbase.py). Every handler is level-based, so a new
    # process handles each object once as created, then only its changes.
    settings.persistence.diffbase_storage = deps.diffbase
    if webhook is not None:
        admission.configure(settings, webhook, utcnow())


def _lag_reporter(metrics: Metrics, max_stretch: float) -> Callable[[float], None]:
    consequence = (
        f"Ready workers' re-checks are spaced out (up to {max_stretch:g}x their"
        " intervals) until it catches up"
        if max_stretch > 1
        else "--max-recheck-stretch 1: Ready workers' re-checks keep their intervals"
    )
    notice = OverloadNotice(
        backpressure.TOLERATED_LAG_SECONDS,
        logging.getLogger("cocoon_operator.backpressure"),
        consequence,
    )

    def report(seconds: float) -> None:
        metrics.loop_lag.set(seconds)
        notice(seconds)

    return report


async def cleanup(rt: Runtime, webhook: admission.WebhookOptions | None, **_: Any) -> None:
    for task in rt.tasks:
        task.cancel()
    deps = rt.started
    if deps is not None:
        if webhook is not None:
            await admission.remove_config(deps.api, webhook.config_name)
        await deps.api.close()


def routine_stretch(runtime: Runtime, body: Mapping[str, Any]) -> float:
    """How many intervals a worker's next periodic check waits (``checks.Stretch``):
    more than one only for a Ready worker while the event loop lags (see
    policy/backpressure.py); a worker on its way to Ready is never slowed."""
    deps = runtime.started
    if deps is None or not_ready(body):
        return 1.0
    return backpressure.stretch(deps.lag.seconds, ceiling=deps.max_stretch)


def not_ready(body: Mapping[str, Any]) -> bool:
    """Whether a worker's checks must keep their own pace (``checks.Hurry``): one that
    has left Ready (its pod lost, its attestation gone) is on its way back, and its
    checks stretched while it was Ready are pulled back at once."""
    return bool((body.get("status") or {}).get("phase") != Phase.READY.value)


def register(
    registry: kopf.OperatorRegistry,
    runtime: Runtime,
    *,
    webhook: admission.WebhookOptions | None = None,
) -> None:
    """Add the process's login, startup and cleanup to ``registry``; ``webhook``: the
    admission webhook's address, served from startup when given."""
    kopf.on.login(id="login", registry=registry)(login)
    kopf.on.startup(id="startup", registry=registry)(functools.partial(startup, runtime, webhook))
    kopf.on.cleanup(id="cleanup", registry=registry)(functools.partial(cleanup, runtime, webhook))
