"""Which nodes may host a COCOON worker VM, and why the others may not.

A worker needs an Intel TDX host and a whole NVIDIA GPU in confidential-
computing mode bound for VM passthrough. The decision is made from the node's
labels and allocatable resources alone, so it can be shown to a person
(``cocoon-operator nodes``) and turned into a scheduling constraint for the
launcher Pod; the real kube-scheduler then does the placing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from cocoon_operator.api import labels

if TYPE_CHECKING:  # the CLI imports this module; pydantic only when reports are read
    from cocoon_operator.api.nodereport import NodeReport


class Ineligible(StrEnum):
    """Why a node cannot host a worker; values are stable reasons for status."""

    NO_TDX = "NoTDX"
    CC_MODE_OFF = "GPUNotInCCMode"
    NOT_PASSTHROUGH = "GPUNotVMPassthrough"
    NO_PASSTHROUGH_GPU = "NoPassthroughGPU"
    WRONG_PRODUCT = "GPUProductNotAllowed"
    UNSCHEDULABLE = "NodeUnschedulable"


# GPUs COCOON runs on: Hopper with confidential computing (H100, H200).
SUPPORTED_PRODUCT_PREFIXES: tuple[str, ...] = ("NVIDIA-H100", "NVIDIA-H200")


@dataclass(frozen=True)
class NodeFacts:
    """What the policy needs of a Node, gathered by the caller."""

    name: str
    labels: Mapping[str, str]
    allocatable: Mapping[str, str]
    unschedulable: bool = False


@dataclass(frozen=True)
class Eligibility:
    node: str
    reasons: tuple[Ineligible, ...]
    passthrough_gpus: int
    product: str | None

    @property
    def eligible(self) -> bool:
        return not self.reasons


def _quantity_int(value: str | None) -> int:
    """Extended resources are integers; anything else counts as none."""
    if value is None:
        return 0
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


def eligibility(node: NodeFacts, products: tuple[str, ...] | None = None) -> Eligibility:
    """Decide whether ``node`` can host a worker VM.

    ``products`` restricts the GPU product label to exact values (the worker's
    ``gpu.product``); by default any supported CC-capable product is accepted.
    """
    reasons: list[Ineligible] = []
    node_labels = node.labels
    if node_labels.get(labels.TDX_ENABLED) != "true":
        reasons.append(Ineligible.NO_TDX)
    if node_labels.get(labels.CC_MODE_STATE) != "on":
        reasons.append(Ineligible.CC_MODE_OFF)
    if node_labels.get(labels.GPU_WORKLOAD_CONFIG) != "vm-passthrough":
        reasons.append(Ineligible.NOT_PASSTHROUGH)
    gpus = _quantity_int(node.allocatable.get(labels.PASSTHROUGH_GPU_RESOURCE))
    if gpus < 1:
        reasons.append(Ineligible.NO_PASSTHROUGH_GPU)
    product = node_labels.get(labels.GPU_PRODUCT)
    if products is not None:
        if product not in products:
            reasons.append(Ineligible.WRONG_PRODUCT)
    elif product is None or not product.startswith(SUPPORTED_PRODUCT_PREFIXES):
        reasons.append(Ineligible.WRONG_PRODUCT)
    if node.unschedulable:
        reasons.append(Ineligible.UNSCHEDULABLE)
    return Eligibility(node.name, tuple(reasons), gpus, product)


def required_node_labels() -> dict[str, str]:
    """The label equalities a launcher Pod's node affinity must require."""
    return {
        labels.TDX_ENABLED: "true",
        labels.CC_MODE_STATE: "on",
        labels.GPU_WORKLOAD_CONFIG: "vm-passthrough",
    }


def cordoned(spec: Mapping[str, object]) -> bool:
    """A node being drained: cordoned, or tainted so running pods must leave."""
    if spec.get("unschedulable") is True:
        return True
    return any(t.get("effect") == "NoExecute" and not _kubelet_taint(t) for t in _taints(spec))


# Taints the node lifecycle controller puts on a node it has lost touch with.
OUT_OF_SERVICE_TAINTS = frozenset(
    {"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"}
)


def out_of_service(spec: Mapping[str, object]) -> bool:
    """The node lifecycle controller has marked the node unreachable or not ready."""
    return any(t.get("key") in OUT_OF_SERVICE_TAINTS for t in _taints(spec))


def _taints(spec: Mapping[str, object]) -> list[Mapping[str, object]]:
    """The node's taints, leaving out anything in the list that is not one."""
    taints = spec.get("taints") or []
    if not isinstance(taints, list):
        return []
    return [t for t in taints if isinstance(t, Mapping)]


def _kubelet_taint(taint: Mapping[str, object]) -> bool:
    """Taints the node lifecycle controller manages itself (not-ready, unreachable)."""
    key = taint.get("key")
    return isinstance(key, str) and key.startswith("node.kubernetes.io/")


@dataclass(frozen=True)
class HostSummary:
    """A node's host services as its agent reports them, and the seal label the
    operator keeps (``cocoon-operator nodes --reports-namespace``)."""

    reported: bool
    quote_service: str  # "ok", or the check's message; "-" unreported
    seal_server: str  # "<enclave id> ready" / "... not ready: why" / "-"
    seal_label: str | None  # seal.cocoon.network/enclave: where the operator places VMs
    cc_mode: str | None  # nvidia.com/cc.mode.state (node-wide: the GPU Operator's)
    gpus: tuple[tuple[str, str | None, bool], ...]  # (pci, driver, on vfio-pci)

    @property
    def vfio(self) -> str:
        if not self.reported:
            return "-"
        return f"{sum(1 for g in self.gpus if g[2])}/{len(self.gpus)}"


def host_summary(
    node_labels: Mapping[str, str], report: NodeReport | None, vfio_driver: str = "vfio-pci"
) -> HostSummary:
    """What ``cocoon-operator nodes`` shows of a node's host (pure)."""
    seal_label = node_labels.get(labels.SEAL_ENCLAVE)
    cc_mode = node_labels.get(labels.CC_MODE_STATE)
    if report is None:
        return HostSummary(False, "-", "-", seal_label, cc_mode, ())
    quote = next((c for c in report.checks if c.name == "quote-service"), None)
    quote_text = "-" if quote is None else ("ok" if quote.ok else quote.message)
    seal = report.seal_server
    if seal is None:
        check = next((c for c in report.checks if c.name == "seal-server"), None)
        seal_text = "-" if check is None else ("answers" if check.ok else check.message)
    else:
        state = "ready" if seal.ready else f"not ready: {seal.message}"
        seal_text = f"{seal.enclave[:16]} {state}"
    gpus = tuple((g.pci, g.driver, g.driver == vfio_driver) for g in report.gpus)
    return HostSummary(True, quote_text, seal_text, seal_label, cc_mode, gpus)
