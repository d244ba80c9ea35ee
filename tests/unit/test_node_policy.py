"""Node eligibility: only TDX hosts with a CC-mode passthrough Hopper GPU qualify."""

from __future__ import annotations

import pytest

from cocoon_operator.api import labels
from cocoon_operator.api.nodereport import GpuDevice, HostCheck, NodeReport, SealServerState
from cocoon_operator.policy.nodes import (
    Ineligible,
    NodeFacts,
    cordoned,
    eligibility,
    host_summary,
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


def _report(**changes: object) -> NodeReport:
    base: dict[str, object] = {
        "node": "n1",
        "agent_version": "0",
        "checks": [
            HostCheck(name="quote-service", ok=False, message="TDX quote service: refused"),
            HostCheck(name="seal-server", ok=True, message="answers"),
        ],
        "gpus": [
            GpuDevice(
                pci="0000:1b:00.0", device_id="10de:2330", driver="vfio-pci", iommu_group="3"
            ),
            GpuDevice(pci="0000:9a:00.0", device_id="10de:2330", driver="nvidia", iommu_group="4"),
        ],
    }
    return NodeReport.model_validate({**base, **changes})


def test_host_summary_shows_quote_service_seal_server_and_gpus_on_vfio() -> None:
    seal = SealServerState(enclave="e" * 64, ready=True, message="ok")
    node_labels = {labels.SEAL_ENCLAVE: "e" * 16, labels.CC_MODE_STATE: "on"}
    h = host_summary(node_labels, _report(seal_server=seal))
    assert h.quote_service == "TDX quote service: refused"
    assert h.seal_server == f"{'e' * 16} ready"
    assert (h.seal_label, h.cc_mode, h.vfio) == ("e" * 16, "on", "1/2")
    assert h.gpus == (("0000:1b:00.0", "vfio-pci", True), ("0000:9a:00.0", "nvidia", False))


def test_host_summary_of_an_unreported_node_says_so() -> None:
    h = host_summary({}, None)
    assert (h.reported, h.quote_service, h.seal_server, h.vfio) == (False, "-", "-", "-")


def test_nodes_table_adds_the_host_columns_only_with_reports() -> None:
    from cocoon_operator.cli import _nodes_table  # noqa: PLC0415

    row = eligibility(NodeFacts("n1", {}, {}, unschedulable=False))
    assert "QUOTE" not in _nodes_table([row])
    table = _nodes_table([row], {"n1": host_summary({}, _report())})
    header, line = table.splitlines()
    assert header.split()[-5:] == ["QUOTE", "SEAL", "SEAL-LABEL", "VFIO", "CC"]
    assert "1/2" in line
