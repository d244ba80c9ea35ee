"""Driving a running worker through COCOON's controls, through its launcher's control relay.

- The price coefficient is applied live: a change of ``spec.coefficient`` does
  not change the revision, so the VM keeps running and the timer here sets
  the new value through ``/request/change_coefficient``.
- Before a worker's VM is stopped for deletion, :func:`drain` disables it,
  waits (bounded) for its in-flight requests, requests a payout from each
  proxy and waits (bounded) for it; the delete handler calls it before it
  deletes the launcher pod.

Only workers whose attestation opened their pod's gate are driven; the
requests themselves are COCOON's unauthenticated HTTP (see
:class:`~cocoon_operator.workerapi.WorkerClient`), signed with the operator's
control key for the launcher's relay, the only published way to them
(``launcher/_controlrelay.py``).
"""

from __future__ import annotations

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import ANNOTATION_DRAIN_STARTED, ANNOTATION_PAYOUT_REQUESTED
from cocoon_operator.desired.launcher import revision
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.payouts import ask_for_payouts
from cocoon_operator.handlers.runtime import Deps, Logger, Runtime, Tick, paused
from cocoon_operator.policy.conditions import parse_rfc3339, rfc3339
from cocoon_operator.policy.drain import (
    DrainFacts,
    DrainStep,
    next_step,
    resend_disable,
    when_not_initialised,
    when_unreachable,
)
from cocoon_operator.policy.payouts import FINAL
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.workerapi import WorkerClient, WorkerNotInitialisedError, WorkerStatsError

T = v1alpha1.ConditionStatus.TRUE


def _client(deps: Deps, pod: PodFacts) -> WorkerClient | None:
    if pod.attested_gate is not T:
        return None
    return deps.worker_client(pod)


def _parse(body: kopf.Body) -> v1alpha1.CocoonWorker | None:
    """``body`` parsed afresh (not the shared parse of handlers/parsed.py): the drain runs
    inside the reconcile, on a copy that may carry a step's facts under the same
    resourceVersion."""
    try:
        return v1alpha1.CocoonWorker.model_validate(dict(body))
    except ValidationError:
        return None


async def sync_coefficient(tick: Tick) -> None:
    """Apply ``spec.coefficient`` to the running worker when it differs."""
    current = tick.current()
    if current is None or paused(current[0]):
        return
    body, worker = current
    deps, logger, meta = tick.deps, tick.logger, body["metadata"]
    rev = revision(worker.spec)
    pod = next((p for p in tick.pods() if p.revision == rev), None)
    key = tick.key
    wanted = worker.spec.coefficient
    if pod is None or deps.coefficients.get(key) == (pod.name, wanted):
        return
    client = _client(deps, pod)
    if client is None:
        return
    async with deps.probes.slot(urgent=False), client:
        try:
            stats = await client.stats()
            if deps.saw_coefficient(key, pod.name, wanted=wanted, seen=stats.coefficient):
                return
            await client.set_coefficient(wanted)
        except WorkerNotInitialisedError:
            return  # its controls do not exist yet: applied once they do
        except (WorkerStatsError, OSError, TimeoutError) as exc:
            logger.warning("coefficient of %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
    deps.coefficients[key] = (pod.name, wanted)
    message = f"coefficient {stats.coefficient} -> {wanted} per mille, applied live"
    await deps.record(body, "CoefficientApplied", message)
    logger.info("%s", message)


async def drain(body: kopf.Body, pods: list[PodFacts], deps: Deps, logger: Logger) -> str | None:
    """Take the next step of stopping each of ``pods``' workers.

    Returns why the caller must wait (try again shortly), or None when every
    pod may be deleted now. The start of the drain and the payout request are
    recorded as pod annotations, so the bounds hold across operator restarts.
    """
    worker = _parse(body)
    if worker is None:
        return None
    now = deps.clock()
    namespace = body["metadata"]["namespace"]
    for pod in pods:
        client = _client(deps, pod) if not pod.deleting else None
        if client is None:
            if pod.attested_gate is T and not pod.deleting and pod.control_endpoint():
                # Made with a control key since retired (docs/deploy.md, rotation):
                # its relay would refuse every request of ours.
                why = "trusts a control key this operator does not hold: stopped undrained"
                await deps.record(body, "DrainSkipped", f"pod {pod.name} {why}")
            continue
        # Unparsable (the annotation is anyone's to edit): the drain starts over.
        started = parse_rfc3339(pod.drain_started)
        if started is None:
            await deps.annotate_pod(namespace, pod.name, {ANNOTATION_DRAIN_STARTED: rfc3339(now)})
            started = now
        async with client:
            try:
                stats = await client.stats()
                page = await client.status_page()
            except WorkerNotInitialisedError:
                deps.unreachable.pop((namespace, pod.name), None)
                _, why = when_not_initialised()
                await deps.record(body, "DrainSkipped", f"pod {pod.name} {why}")
                continue
            except (WorkerStatsError, OSError, TimeoutError) as exc:
                since = deps.unreachable.setdefault((namespace, pod.name), now)
                step, why = when_unreachable((now - since).total_seconds())
                if step is DrainStep.RETRY:
                    return f"pod {pod.name}: {why} ({exc})"
                del deps.unreachable[namespace, pod.name]
                await deps.record(body, "DrainSkipped", f"pod {pod.name} {why} ({exc})")
                continue
            deps.unreachable.pop((namespace, pod.name), None)
            facts = DrainFacts(
                enabled=page.enabled,
                active_requests=page.active_requests,
                payout_running=stats.payout_running,
                payout_requested=pod.payout_requested,
                elapsed_seconds=(now - started).total_seconds(),
            )
            step, why = next_step(facts)
            if resend_disable(facts) and step is not DrainStep.DISABLE:
                await client.disable()
            if step is DrainStep.DISABLE:
                await client.disable()
                await deps.record(body, "Draining", f"pod {pod.name}: {why}")
                return why
            if step in (DrainStep.WAIT_FOR_REQUESTS, DrainStep.WAIT_FOR_PAYOUT):
                return f"pod {pod.name}: {why}"
            if step is DrainStep.REQUEST_PAYOUT:
                answers = await ask_for_payouts(deps, namespace, pod, client, stats, purpose=FINAL)
                await deps.annotate_pod(
                    namespace, pod.name, {ANNOTATION_PAYOUT_REQUESTED: rfc3339(now)}
                )
                await deps.record(body, "PayoutRequested", f"{why}; " + "; ".join(answers))
                return why
            logger.info("pod %s: %s", pod.name, why)
    return None


def register(registry: kopf.OperatorRegistry, runtime: Runtime, interval: float) -> Check:
    """Drain before stop (``runtime.drain``); the check that applies coefficient changes
    live (every ``interval`` s), for the checks' scheduler (:mod:`.checks`)."""
    runtime.drain = drain
    return Check("coefficient", sync_coefficient, interval)
