"""Merging conditions: ``lastTransitionTime`` moves only when a status flips.

A reconcile computes every condition afresh; this function keeps the previous
transition time when the status is unchanged, so a condition that has been
True for a week says so, and re-running a reconcile changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cocoon_operator.api.conditions import CONDITION_ORDER, ConditionType
from cocoon_operator.api.v1alpha1 import Condition, ConditionStatus


@dataclass(frozen=True)
class ObservedCondition:
    """A freshly computed condition, before merging with what status holds."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""


def rfc3339(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: object) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or an offset, fractions allowed) as an aware
    datetime, UTC when it has no offset; None when absent or unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def merge(
    previous: Sequence[Condition],
    observed: Iterable[ObservedCondition],
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Conditions to store: observed values, transition times kept unless flipped.

    Conditions of types not observed this time are kept as they were, so
    conditions owned by other parts of the operator are not lost.
    """
    by_type = {c.type: c for c in previous}
    for obs in observed:
        old = by_type.get(obs.type)
        if old is not None and old.status == obs.status:
            since = old.last_transition_time
        else:
            since = rfc3339(now)
        by_type[obs.type] = Condition(
            type=obs.type,
            status=obs.status,
            reason=obs.reason,
            message=obs.message,
            observed_generation=generation,
            last_transition_time=since,
        )
    order = {t.value: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(by_type.values(), key=lambda c: (order.get(c.type, len(order)), c.type))
