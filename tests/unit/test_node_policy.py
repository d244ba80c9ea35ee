"""Node eligibility: only TDX hosts with a CC-mode passthrough Hopper GPU qualify."""

from __future__ import annotations

import pytest

from cocoon_operator.api import labels
from cocoon_operator.policy.nodes import (
    Ineligible,
    NodeFacts,
    cordoned,
    eligibility,
    required_node_labels,
)

CC_LABELS = {
    labels.TDX_ENABLED: "true",
    labels.CC_MODE_STATE: "on",
    labels.GPU_WORKLOAD_CONFIG: "vm-passthrough",
    labels.GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3",
}
GPUS = {labels.PASSTHROUGH_GPU_RESOURCE: "8"}


def test_cc_ready_node_is_eligible() -> None:
    result = eligibility(NodeFacts("n", CC_LABELS, GPUS))
    assert result.eligible
    assert result.reasons == ()
    assert result.passthrough_gpus == 8
    assert result.product == "NVIDIA-H100-80GB-HBM3"


def test_plain_cpu_node_lists_every_missing_capability() -> None:
    result = eligibility(NodeFacts("n", {}, {"cpu": "64"}))
    assert not result.eligible
    assert result.reasons == (
        Ineligible.NO_TDX,
        Ineligible.CC_MODE_OFF,
        Ineligible.NOT_PASSTHROUGH,
        Ineligible.NO_PASSTHROUGH_GPU,
        Ineligible.WRONG_PRODUCT,
    )


@pytest.mark.parametrize(
    ("label", "value", "reason"),
    [
        (labels.TDX_ENABLED, "false", Ineligible.NO_TDX),
        (labels.CC_MODE_STATE, "off", Ineligible.CC_MODE_OFF),
        (labels.CC_MODE_STATE, "devtools", Ineligible.CC_MODE_OFF),
        (labels.GPU_WORKLOAD_CONFIG, "container", Ineligible.NOT_PASSTHROUGH),
        (labels.GPU_PRODUCT, "NVIDIA-A100-SXM4-80GB", Ineligible.WRONG_PRODUCT),
    ],
)
def test_one_wrong_label_gives_exactly_its_reason(label: str, value: str, reason: str) -> None:
    result = eligibility(NodeFacts("n", {**CC_LABELS, label: value}, GPUS))
    assert result.reasons == (reason,)


@pytest.mark.parametrize(
    "alloc", [{}, {labels.PASSTHROUGH_GPU_RESOURCE: "0"}, {labels.PASSTHROUGH_GPU_RESOURCE: "x"}]
)
def test_no_allocatable_passthrough_gpu(alloc: dict[str, str]) -> None:
    result = eligibility(NodeFacts("n", CC_LABELS, alloc))
    assert result.reasons == (Ineligible.NO_PASSTHROUGH_GPU,)


def test_cordoned_node_is_not_eligible() -> None:
    result = eligibility(NodeFacts("n", CC_LABELS, GPUS, unschedulable=True))
    assert result.reasons == (Ineligible.UNSCHEDULABLE,)


def test_explicit_product_list_is_exact() -> None:
    h200 = {**CC_LABELS, labels.GPU_PRODUCT: "NVIDIA-H200"}
    assert eligibility(NodeFacts("n", h200, GPUS)).eligible
    only_h100 = ("NVIDIA-H100-80GB-HBM3",)
    assert eligibility(NodeFacts("n", h200, GPUS), only_h100).reasons == (Ineligible.WRONG_PRODUCT,)
    assert eligibility(NodeFacts("n", CC_LABELS, GPUS), only_h100).eligible


def test_required_labels_are_a_subset_of_what_eligibility_checks() -> None:
    node = NodeFacts("n", {**required_node_labels(), labels.GPU_PRODUCT: "NVIDIA-H100"}, GPUS)
    assert eligibility(node).eligible


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, False),
        ({"unschedulable": True}, True),
        ({"unschedulable": False}, False),
        ({"taints": [{"key": "maintenance", "effect": "NoExecute"}]}, True),
        ({"taints": [{"key": "maintenance", "effect": "NoSchedule"}]}, False),
        ({"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}, False),
        ({"taints": "garbage"}, False),
    ],
)
def test_cordoned(spec: dict[str, object], expected: bool) -> None:
    assert cordoned(spec) is expected
