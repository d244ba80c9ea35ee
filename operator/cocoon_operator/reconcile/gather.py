"""Turn raw API objects into the typed facts policies take (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cocoon_operator.api.v1alpha1 import ConditionStatus
from cocoon_operator.desired.launcher import (
    ANNOTATION_DRAIN_STARTED,
    ANNOTATION_PAYOUT_INTENT,
    ANNOTATION_PAYOUT_REQUESTED,
    LABEL_INSTANCE,
    LABEL_REVISION,
    READINESS_GATE,
)
from cocoon_operator.policy.payouts import parse_intent
from cocoon_operator.policy.worker import PodFacts


def _status(value: Any) -> ConditionStatus | None:
    try:
        return ConditionStatus(value)
    except ValueError:
        return None


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {}) or {}
    conditions = {c.get("type"): c for c in status.get("conditions", []) or []}
    scheduled = conditions.get("PodScheduled", {})
    gate = conditions.get(READINESS_GATE, {})
    waiting = None
    for cs in status.get("containerStatuses", []) or []:
        reason = (cs.get("state") or {}).get("waiting", {}).get("reason")
        if reason:
            waiting = reason
    labels = meta.get("labels", {}) or {}
    annotations = meta.get("annotations", {}) or {}
    instance = labels.get(LABEL_INSTANCE)
    return PodFacts(
        name=meta.get("name", ""),
        uid=meta.get("uid") or None,
        resource_version=meta.get("resourceVersion") or None,
        node=spec.get("nodeName") or None,
        phase=status.get("phase"),
        scheduled=_status(scheduled.get("status")),
        scheduled_reason=scheduled.get("reason"),
        scheduled_message=scheduled.get("message"),
        attested_gate=_status(gate.get("status")),
        attested_reason=gate.get("reason") or None,
        attested_message=gate.get("message") or None,
        deleting=meta.get("deletionTimestamp") is not None,
        waiting_reason=waiting,
        revision=labels.get(LABEL_REVISION),
        instance=int(instance) if instance and instance.isdigit() else None,
        host_ip=status.get("hostIP") or None,
        started_at=status.get("startTime"),
        drain_started=annotations.get(ANNOTATION_DRAIN_STARTED),
        payout_requested=ANNOTATION_PAYOUT_REQUESTED in annotations,
        payout_intent=parse_intent(annotations.get(ANNOTATION_PAYOUT_INTENT)),
    )
