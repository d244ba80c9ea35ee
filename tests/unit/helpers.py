"""Builders the unit tests share: the example worker's spec and the objects the
reconcile plan is given, the launcher's worker reference, allow-list readings, an
attestation verdict, a node agent's report, the operator's handler registry, and a
stand-in Kubernetes API on loopback.

Test files import these from here, never from one another (tests/unit/test_test_imports.py
holds that): a test file is run, not a library.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import yaml
from aiohttp import web

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.nodereport import GuestHealthReport, NodeReport, VmRecord
from cocoon_operator.api.v1alpha1 import AttestationSummary, CocoonWorkerStatus, ConditionStatus
from cocoon_operator.cli import register_core
from cocoon_operator.desired.launcher import WorkerRef, revision
from cocoon_operator.handlers.runtime import Runtime
from cocoon_operator.policy import allowlist
from cocoon_operator.policy.allowlist import Listing
from cocoon_operator.policy.attestation import LastVerification, TrustMode, Verified, decide
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.worker import ObservedWorker
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text

# --- A worker: its spec and what the reconcile plan observes of it --------------------------------


REPO = Path(__file__).resolve().parents[2]


CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


T1 = T0 + dt.timedelta(minutes=5)


REF = WorkerRef("w", "ns", "uid-1")


def spec(**changes: Any) -> v1alpha1.CocoonWorkerSpec:
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    raw = next(d for d in docs if d["kind"] == v1alpha1.KIND)["spec"]
    return v1alpha1.CocoonWorkerSpec.model_validate({**raw, **changes})


def running_pod(rev: str, **changes: Any) -> PodFacts:
    base: dict[str, Any] = {
        "name": f"w-{rev}",
        "node": "n1",
        "phase": "Running",
        "scheduled": ConditionStatus.TRUE,
        "revision": rev,
        "instance": 0,
    }
    return PodFacts(**{**base, **changes})


PORTS_MESSAGE = (
    "0/6 nodes are available: 3 node(s) didn't have free ports for the requested pod ports,"
    " 3 node(s) didn't match Pod's node affinity/selector."
)


def blocked_pod(rev: str, instance: int = 1, message: str = PORTS_MESSAGE) -> PodFacts:
    return running_pod(
        rev,
        node=None,
        phase="Pending",
        scheduled=ConditionStatus.FALSE,
        scheduled_reason="Unschedulable",
        scheduled_message=message,
        instance=instance,
    )


def observed(pods: tuple[PodFacts, ...] = (), **changes: Any) -> ObservedWorker:
    base: dict[str, Any] = {
        "ref": REF,
        "generation": 1,
        "spec": spec(),
        "status": CocoonWorkerStatus(),
        "pods": pods,
        "instances_in_use": {0: 5},
        "control_key": CONTROL_KEY,
    }
    return ObservedWorker(**{**base, **changes})


# --- The launcher's view of a worker --------------------------------------------------------------


WORKER = WorkerRef(name="worker-0", namespace="gpu", uid="00000000-0000-0000-0000-000000000001")


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    result: dict[str, Any] = only
    return result


# --- Allow-list readings (policy/allowlist.py) ----------------------------------------------------


REV = revision(spec())


MODEL = allowlist.model_hash(spec().model)


IMAGE = "ab" * 32


def reading(*, model: bool = True, image: bool | None = None, rev: str = REV) -> Listing:
    return Listing(rev, MODEL, model, IMAGE if image is not None else None, image)


# --- An attestation verdict (policy/attestation.py) -----------------------------------------------


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


QUOTE = "aa" * 32


GOOD = Verified(
    quote_sha256=QUOTE,
    image_hash="11" * 32,
    mrtd="22" * 48,
    tcb_status="UpToDate",
    report_data="33" * 64,
    captured_at=NOW - timedelta(minutes=10),
    valid_until=NOW + timedelta(days=1),
)


# What the operator remembers of GOOD, verified at NOW for pod uid "u1".
LAST = LastVerification(
    pod_uid="u1",
    quote_sha256=QUOTE,
    image_hash=GOOD.image_hash,
    verified_at=NOW,
    valid_until=NOW + timedelta(seconds=1800),
    gpu_checked=False,
)


def verified_summary(
    at: datetime = NOW, *, pod: str = "p1", reattest: int = 900
) -> AttestationSummary:
    return decide(
        GOOD,
        previous=None,
        pod=pod,
        gate=None,
        trust=TrustMode.TEST,
        reattest_seconds=reattest,
        now=at,
    ).summary


# --- The operator's handlers as cli.py registers them ---------------------------------------------


def node_report(
    *instances: int, node: str = "node-a", health: GuestHealthReport | None = None
) -> NodeReport:
    """A node agent's report of ``node`` with a running VM at each of ``instances``."""
    vms = [
        VmRecord(
            instance=i,
            namespace="tenant",
            worker=f"w{i}",
            pod=f"w{i}-pod",
            pod_uid=f"uid-{i}",
            pci=None,
            pid=100 + i,
            running=True,
            health=health,
        )
        for i in instances
    ]
    return NodeReport(node=node, agent_version="test", vms=vms)


def operator_registry() -> kopf.OperatorRegistry:
    """A registry with the handlers every operator process runs (cli.py), as it wires them."""
    registry = kopf.OperatorRegistry()
    register_core(registry, Runtime())
    return registry


def per_object_handlers(registry: kopf.OperatorRegistry) -> list[Any]:
    """Every handler kopf runs for an object's events (indexes, watches, changes,
    daemons and timers) in ``registry``."""
    return [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]


# --- A stand-in API server on loopback, and a kubeconfig naming it ---------------------------


async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path
