"""Turn raw API objects into the typed facts policies take (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cocoon_operator.api.labels import (
    ANNOTATION_CONTROL_KEY,
    ANNOTATION_DRAIN_STARTED,
    ANNOTATION_PAYOUT_INTENT,
    ANNOTATION_PAYOUT_REQUESTED,
    LABEL_INSTANCE,
    LABEL_REVISION,
    READINESS_GATE,
)
from cocoon_operator.api.v1alpha1 import ConditionStatus
from cocoon_operator.desired.launcher import MODEL_INIT_CONTAINER
from cocoon_operator.policy.payouts import parse_intent
from cocoon_operator.policy.worker import PodFacts


def _status(value: Any) -> ConditionStatus | None:
    try:
        return ConditionStatus(value)
    except ValueError:
        return None


def _launch_error(container_status: Mapping[str, Any]) -> str | None:
    """Why the launcher exited, when it failed: its last words (the container's
    termination message, which ``FallbackToLogsOnError`` fills from its stderr, e.g.
    "launch: release file image.img ... has sha256 ..., the spec expects ...")."""
    for state in (container_status.get("state"), container_status.get("lastState")):
        terminated = (state or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            message = str(terminated.get("message") or "").strip()
            last = message.splitlines()[-1] if message else ""
            code = terminated.get("exitCode")
            return (last or f"exit code {code}")[:512]
    return None


def model_init(status: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The init container ``model`` (``model ensure``): "running", "done", "failed" or
    None (not started, or not reported), and its last failure's last words."""
    for cs in status.get("initContainerStatuses", []) or []:
        if cs.get("name") != MODEL_INIT_CONTAINER:
            continue
        state = cs.get("state") or {}
        error = _launch_error(cs)
        if "running" in state:
            return "running", error
        terminated = state.get("terminated")
        if terminated is not None and terminated.get("exitCode", 1) == 0:
            return "done", None
        return ("failed", error) if error else (None, None)
    return None, None


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {}) or {}
    conditions = {c.get("type"): c for c in status.get("conditions", []) or []}
    scheduled = conditions.get("PodScheduled", {})
    gate = conditions.get(READINESS_GATE, {})
    waiting = None
    launch_error = None
    for cs in status.get("containerStatuses", []) or []:
        reason = (cs.get("state") or {}).get("waiting", {}).get("reason")
        if reason:
            waiting = reason
        launch_error = _launch_error(cs) or launch_error
    labels = meta.get("labels", {}) or {}
    annotations = meta.get("annotations", {}) or {}
    instance = labels.get(LABEL_INSTANCE)
    init, init_error = model_init(status)
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
        launch_error=launch_error,
        revision=labels.get(LABEL_REVISION),
        instance=int(instance) if instance and instance.isdigit() else None,
        host_ip=status.get("hostIP") or None,
        started_at=status.get("startTime"),
        drain_started=annotations.get(ANNOTATION_DRAIN_STARTED),
        payout_requested=ANNOTATION_PAYOUT_REQUESTED in annotations,
        payout_intent=parse_intent(annotations.get(ANNOTATION_PAYOUT_INTENT)),
        model_init=init,
        model_init_error=init_error,
        control_key=annotations.get(ANNOTATION_CONTROL_KEY),
    )
