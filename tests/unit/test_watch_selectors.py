"""The apiserver, not the operator, picks the pods the operator watches: only
launcher pods reach it. Safe only while every pod handler wants exactly those,
and while the pods the operator builds carry the labels the selector names."""

from __future__ import annotations

import kopf

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.labels import LAUNCHER_LABEL_SELECTOR, LAUNCHER_SELECTOR
from cocoon_operator.desired.launcher import launcher_pod
from cocoon_operator.handlers import nodes
from cocoon_operator.handlers.nodetracker import NodeReportOptions
from cocoon_operator.handlers.process import configure
from cocoon_operator.handlers.runtime import Runtime
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text
from tests.unit.helpers import WORKER, operator_registry, per_object_handlers, spec

# The operator's control public key the launcher pods built here trust.
CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key

PODS = kopf.Resource("", "v1", "pods", kind="Pod", singular="pod", namespaced=True)
NODES = kopf.Resource("", "v1", "nodes", kind="Node", singular="node", namespaced=False)
WORKERS = kopf.Resource(
    v1alpha1.GROUP,
    v1alpha1.VERSION,
    v1alpha1.PLURAL,
    kind=v1alpha1.KIND,
    singular="cocoonworker",
    namespaced=True,
)


def terms(selector: str) -> dict[str, str]:
    """An equality-based label selector (``k=v,k=v``) as a dict."""
    pairs = [term.split("=", 1) for term in selector.split(",")]
    assert all(len(p) == 2 for p in pairs), selector
    return {k: v for k, v in pairs}


def test_only_the_pod_watches_get_the_launcher_selector() -> None:
    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.watching.label_selectors.collect(PODS) == [LAUNCHER_LABEL_SELECTOR]
    assert settings.watching.label_selectors.collect(NODES) == []
    assert settings.watching.label_selectors.collect(WORKERS) == []
    assert terms(LAUNCHER_LABEL_SELECTOR) == LAUNCHER_SELECTOR


def test_every_pod_handler_wants_exactly_the_selected_pods() -> None:
    extra = kopf.OperatorRegistry()
    nodes.register(extra, Runtime(), NodeReportOptions(namespace="cocoon-system"))
    handlers = [
        handler
        for registry in (operator_registry(), extra)
        for handler in per_object_handlers(registry)
        if handler.selector is not None and handler.selector.check(PODS)
    ]
    ids = {h.id for h in handlers}
    assert {"launcher_pods", "launcher_pod_changed", "node-reports-pods"} <= ids, ids
    assert [h.id for h in handlers if h.labels != LAUNCHER_SELECTOR] == []


def test_the_pods_the_operator_builds_are_selected() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY)
    labels = pod["metadata"]["labels"]
    assert terms(LAUNCHER_LABEL_SELECTOR).items() <= labels.items()
