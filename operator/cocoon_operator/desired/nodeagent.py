"""The per-node agent's report ConfigMap (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cocoon_operator.api.labels import COMMON_LABELS
from cocoon_operator.api.nodereport import (
    NODE_LABEL,
    REPORT_KEY,
    REPORT_LABEL,
    REPORTED_AT_ANNOTATION,
    NodeReport,
    report_name,
)


def report_config_map(namespace: str, report: NodeReport, now: dt.datetime) -> dict[str, Any]:
    """The ConfigMap carrying ``report``, stamped ``now``.

    The node name goes into a label only when it is a valid label value; the
    report itself always names it.
    """
    labels = {
        "app.kubernetes.io/managed-by": COMMON_LABELS["app.kubernetes.io/managed-by"],
        "app.kubernetes.io/component": "node-agent",
        REPORT_LABEL: "true",
    }
    if len(report.node) <= 63:
        labels[NODE_LABEL] = report.node
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": report_name(report.node),
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                REPORTED_AT_ANNOTATION: now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            },
        },
        "data": {REPORT_KEY: report.to_json()},
    }
