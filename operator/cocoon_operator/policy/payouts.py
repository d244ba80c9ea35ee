"""A payout asked for at most once per purpose, across operator crashes (pure).

A forced payout costs the node wallet a fee (0.5 TON attached to the message,
WorkerRunner.cpp:33-38), and a COCOON worker sends one for every
``/request/payout`` it is not already running, whatever is owed
(WorkerRunner.cpp:732-755). So "ask, then write down that we asked" pays
twice when the operator dies in between, and "write down, then ask" never
pays when it dies the other way.

The operator therefore writes an *intent* on the launcher pod before it asks:
what the request is for (the final payout of a drain, or the value of a
person's payout-request annotation) and, for each proxy it asks, the proxy's
``expected_cached_out_tokens`` at that moment. That is the one trace a request
leaves in what the worker reports (it has no payout count): sending a payout
sets it to the tokens committed then (``run_payout``, WorkerProxyInfo.h:84-86;
``exp_tokens_cashed_out``, :56-58), above its value before whenever something
was owed; and ``running_request`` is true until the payout's transaction
comes back (WorkerProxyInfo.h:121-128). Whoever finds an intent for the same
purpose after a restart asks again only the proxies that show no trace of
the first request: none running, the expected figure not moved. A proxy not
in the intent is not asked: it was not asked when the request was made.

Nothing is asked of a proxy that is owed nothing (COCOON's ``to_payout()``,
WorkerProxyInfo.h:64-67): the fee would buy nothing.

An intent that cannot be read (the annotation is anyone's to edit, and the
count-based intents of earlier versions read as unreadable) asks nobody for
the payout at hand: a payout not made can be asked for again, a fee paid
twice cannot be taken back. It is replaced by a readable one that asks
nobody, so the payouts after it are asked for as usual.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cocoon_operator import jsondoc

# The purpose of a drain's payout; a person's request is named by its annotation value.
FINAL: Final = "final"


@dataclass(frozen=True)
class PayoutIntent:
    """A payout about to be asked for: what for, and each asked proxy's
    ``expected_cached_out_tokens`` before it.

    ``purpose`` None: the recorded intent could not be read (it stands for any purpose).
    """

    purpose: str | None
    expected: Mapping[str, int] = field(default_factory=dict)

    def is_for(self, purpose: str) -> bool:
        return self.purpose is None or self.purpose == purpose

    def to_annotation(self) -> str:
        return json.dumps({"for": self.purpose, "expected": dict(self.expected)}, sort_keys=True)


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
    purpose, expected = doc.get("for"), doc.get("expected")
    if not isinstance(purpose, str) or not isinstance(expected, dict):
        return UNREADABLE
    tokens = {
        k: v
        for k, v in expected.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }
    if len(tokens) != len(expected):
        return UNREADABLE
    return PayoutIntent(purpose, tokens)


@dataclass(frozen=True)
class ProxyNow:
    """What the worker reports of one proxy now (``workerapi.ProxyEarnings``)."""

    expected: int  # expected_cached_out_tokens
    owed: int  # to_payout(): committed - expected, at least 0
    running: bool  # running_request


@dataclass(frozen=True)
class PayoutPlan:
    """What to do for one payout: write ``record`` first (None: the pod's intent
    stands, or nobody is asked), then ask ``ask``; ``not_asked`` says why each
    other proxy was not."""

    record: PayoutIntent | None
    ask: list[str]
    not_asked: dict[str, str]


def _why_not_now(proxy: ProxyNow) -> str | None:
    if proxy.running:
        return "not asked: a payout is running"
    if proxy.owed <= 0:
        return "not asked: nothing to pay out"
    return None


def plan_payout(
    recorded: PayoutIntent | None, purpose: str, proxies: Mapping[str, ProxyNow]
) -> PayoutPlan:
    """The payout for ``purpose``, given the intent on the pod (``recorded``) and the
    worker's proxies now, by proxy contract address."""
    if recorded is None or not recorded.is_for(purpose):
        not_asked = {a: why for a, p in proxies.items() if (why := _why_not_now(p))}
        ask = [a for a in proxies if a not in not_asked]
        record = PayoutIntent(purpose, {a: proxies[a].expected for a in ask}) if ask else None
        return PayoutPlan(record, ask, not_asked)
    if recorded.purpose is None:
        # Replaced by an intent that asks nobody for this purpose (and only this
        # one), so that the next payout gets an intent of its own.
        why = "not asked: the payout-intent annotation could not be read"
        return PayoutPlan(PayoutIntent(purpose), [], dict.fromkeys(proxies, why))
    ask, not_asked = [], {}
    for address, proxy in proxies.items():
        before = recorded.expected.get(address)
        if before is None:
            not_asked[address] = "not asked: not asked when this payout was asked for"
        elif proxy.running:
            not_asked[address] = "asked before the operator restarted (payout running)"
        elif proxy.expected > before:
            not_asked[address] = "asked before the operator restarted (payout sent since)"
        elif proxy.owed <= 0:
            not_asked[address] = "not asked: nothing to pay out"
        else:
            ask.append(address)
    return PayoutPlan(None, ask, not_asked)
