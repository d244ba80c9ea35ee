"""A payout asked for at most once per purpose, across operator crashes (pure).

A forced payout costs the node wallet a fee, and COCOON's proxies take a
second request for a payout that has already completed as a new one. So
"ask, then write down that we asked" pays twice when the operator dies in
between, and "write down, then ask" never pays when it dies the other way.

The operator therefore writes an *intent* on the launcher pod before it asks:
what the request is for (the final payout of a drain, or the value of a
person's payout-request annotation) and each proxy's count of completed
payouts at that moment. Whoever finds an intent for the same purpose after a
restart asks again only the proxies that show no trace of the first request:
none running, no payout completed since. A proxy not in the intent is not
asked: it was not there when the request was made.

An intent that cannot be read (the annotation is anyone's to edit) asks
nobody for the payout at hand: a payout not made can be asked for again, a
fee paid twice cannot be taken back. It is replaced by a readable one that
asks nobody, so the payouts after it are asked for as usual.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Final

from cocoon_operator import jsondoc

# The purpose of a drain's payout; a person's request is named by its annotation value.
FINAL: Final = "final"


@dataclass(frozen=True)
class PayoutIntent:
    """A payout about to be asked for: what for, and each proxy's payout count before it.

    ``purpose`` None: the recorded intent could not be read (it stands for any purpose).
    """

    purpose: str | None
    before: Mapping[str, int] = field(default_factory=dict)

    def is_for(self, purpose: str) -> bool:
        return self.purpose is None or self.purpose == purpose

    def to_annotation(self) -> str:
        return json.dumps({"for": self.purpose, "before": dict(self.before)}, sort_keys=True)


UNREADABLE: Final = PayoutIntent(None)


def parse_intent(raw: str | None) -> PayoutIntent | None:
    """The intent an annotation holds: None when there is none, :data:`UNREADABLE`
    when it holds something else than what :meth:`PayoutIntent.to_annotation` writes."""
    if raw is None:
        return None
    try:
        doc = jsondoc.loads(raw)
    except ValueError:
        return UNREADABLE
    if not isinstance(doc, dict):
        return UNREADABLE
    purpose, before = doc.get("for"), doc.get("before")
    if not isinstance(purpose, str) or not isinstance(before, dict):
        return UNREADABLE
    counts = {
        k: v
        for k, v in before.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }
    if len(counts) != len(before):
        return UNREADABLE
    return PayoutIntent(purpose, counts)


def still_to_ask(intent: PayoutIntent, payouts: Mapping[str, int], running: Set[str]) -> list[str]:
    """The proxies of ``intent`` whose request left no trace: still listed by the worker
    (``payouts``: completed payouts per proxy, now), not running, and no payout
    completed since the intent was written."""
    return [
        proxy
        for proxy, before in intent.before.items()
        if proxy in payouts and proxy not in running and payouts[proxy] <= before
    ]


@dataclass(frozen=True)
class PayoutPlan:
    """What to do for one payout: write ``record`` first (None: the pod's intent
    stands), then ask ``ask``; ``not_asked`` says why each other proxy was not."""

    record: PayoutIntent | None
    ask: list[str]
    not_asked: dict[str, str]


def plan_payout(
    recorded: PayoutIntent | None,
    purpose: str,
    payouts: Mapping[str, int],
    running: Set[str],
) -> PayoutPlan:
    """The payout for ``purpose``, given the intent on the pod (``recorded``) and the
    worker's proxies now (``payouts``: completed per proxy; ``running``)."""
    if recorded is None or not recorded.is_for(purpose):
        return PayoutPlan(PayoutIntent(purpose, dict(payouts)), list(payouts), {})
    if recorded.purpose is None:
        # Replaced by an intent that asks nobody for this purpose (and only this
        # one), so that the next payout gets an intent of its own.
        why = "not asked: the payout-intent annotation could not be read"
        return PayoutPlan(PayoutIntent(purpose), [], dict.fromkeys(payouts, why))
    ask = still_to_ask(recorded, payouts, running)
    not_asked = {}
    for proxy in payouts:
        if proxy in ask:
            continue
        if proxy not in recorded.before:
            not_asked[proxy] = "not asked: not listed when this payout was asked for"
        elif proxy in running:
            not_asked[proxy] = "asked before the operator restarted (payout running)"
        else:
            not_asked[proxy] = "asked before the operator restarted (paid out since)"
    return PayoutPlan(None, ask, not_asked)
