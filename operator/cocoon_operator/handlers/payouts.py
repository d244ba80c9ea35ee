"""Asking a worker's proxies for a payout at most once per purpose, across crashes.

The drain's final payout and a person's payout request both come here; the
rules are in :mod:`cocoon_operator.policy.payouts`. The intent is written on
the launcher pod before the first request leaves, so a ``kill -9`` anywhere
between the two writes and the requests neither loses the payout nor pays
the fee twice. The failpoints let the crash tests stop the operator on
either side of the requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from cocoon_operator.api.labels import ANNOTATION_PAYOUT_INTENT
from cocoon_operator.funding import failpoint
from cocoon_operator.handlers.runtime import Deps
from cocoon_operator.policy.payouts import ProxyNow, plan_payout
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.workerapi import WorkerClient, WorkerStats


async def ask_for_payouts(
    deps: Deps,
    namespace: str,
    pod: PodFacts,
    client: WorkerClient,
    stats: WorkerStats,
    *,
    purpose: str,
) -> list[str]:
    """Ask the proxies ``stats`` lists that are owed something for a payout for
    ``purpose``; a line per proxy for the Event (the worker's answer, or why it
    was not asked).

    Raises what the worker client raises; the intent stays, so the next attempt
    asks only the proxies the failed one did not reach.
    """
    plan = plan_payout(pod.payout_intent, purpose, proxies_now(stats))
    if plan.record is not None:
        recorded = await deps.annotate_pod(
            namespace, pod.name, {ANNOTATION_PAYOUT_INTENT: plan.record.to_annotation()}
        )
        if not recorded:
            return [f"pod {pod.name} is gone: nobody asked"]
        failpoint("payout.after-intent")
    answers = await ask_proxies(deps, client, plan.ask)
    failpoint("payout.after-send")
    return answers + [f"{proxy}: {why}" for proxy, why in plan.not_asked.items()]


def proxies_now(stats: WorkerStats) -> dict[str, ProxyNow]:
    """The policy's view of each proxy the worker lists."""
    return {
        p.address: ProxyNow(expected=p.expected_cashed_out, owed=p.to_pay_out, running=p.running)
        for p in stats.proxies
    }


async def ask_proxies(deps: Deps, client: WorkerClient, proxies: Sequence[str]) -> list[str]:
    """Ask each of ``proxies`` for a payout, one after another; a line per proxy with
    the worker's answer (counted in ``cocoon_payout_requests_total`` as it goes)."""
    answers = []
    for proxy in proxies:
        answers.append(f"{proxy}: {await client.payout(proxy)}")
        deps.metrics.payout_requests.inc()
    return answers
