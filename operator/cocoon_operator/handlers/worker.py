"""kopf handlers for CocoonWorker and its launcher Pods.

Every cause (create, update, resume, timer, a launcher Pod changing) runs the
same level-based reconcile: gather from kopf's in-memory indexes (no list
calls), ``reconcile.worker.plan``, then execute the plan. Pods are watched, not
polled, so a fleet at rest costs no API requests beyond the watches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.conditions import Phase
from cocoon_operator.api.nodereport import NodeReport
from cocoon_operator.desired.launcher import COMMON_LABELS, LABEL_INSTANCE, LABEL_WORKER, WorkerRef
from cocoon_operator.handlers import admission
from cocoon_operator.handlers.controlkey import DEFAULT_SECRET_NAME, load_control_keys
from cocoon_operator.handlers.looplag import LoopLag, OverloadNotice
from cocoon_operator.handlers.probes import DEFAULT_LIMIT, ProbeBudget
from cocoon_operator.handlers.retry import quiet_outages
from cocoon_operator.handlers.trust import TrustState
from cocoon_operator.k8s.diffbase import MemoryDiffBaseStorage
from cocoon_operator.k8s.events import record
from cocoon_operator.k8s.kubeconfig import exec_credentials, load
from cocoon_operator.k8s.latest import LatestObjects
from cocoon_operator.k8s.objects import (
    annotate_pod,
    create_if_absent,
    delete_pod,
    patch_pod_condition,
    patch_worker_status,
)
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.metrics import Metrics
from cocoon_operator.policy import backpressure
from cocoon_operator.policy import nodes as policy_nodes
from cocoon_operator.policy.admission import address_errors
from cocoon_operator.policy.instances import instance_room, slots_coming
from cocoon_operator.policy.launcherimages import LauncherImages
from cocoon_operator.policy.nodereports import model_on, nodes_with_model
from cocoon_operator.policy.pool import Expectations
from cocoon_operator.policy.sealserver import SealFacts
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.gather import pod_facts

if TYPE_CHECKING:
    from cocoon_operator.handlers.nodes import NodeReports
from cocoon_operator.handlers.parsed import forget_worker
from cocoon_operator.reconcile.worker import (
    DRAIN_HELD_EVENTS,
    Observed,
    Plan,
    apply_merge_patch,
    plan,
)
from cocoon_operator.workerapi import ControlKeys, WorkerClient

FIELD_MANAGER = "cocoon-operator"
PAUSE_ANNOTATION = f"{v1alpha1.GROUP}/paused"
KOPF_PREFIX = f"kopf.{v1alpha1.GROUP}"
RESYNC_SECONDS = 600.0
LAUNCHER_SELECTOR = {
    "app.kubernetes.io/managed-by": COMMON_LABELS["app.kubernetes.io/managed-by"],
    "app.kubernetes.io/component": COMMON_LABELS["app.kubernetes.io/component"],
}
# The same, as the apiserver's labelSelector for every watch and list of pods
# (see startup): kopf's ``labels=`` filters only in the process.
LAUNCHER_LABEL_SELECTOR = ",".join(f"{k}={v}" for k, v in sorted(LAUNCHER_SELECTOR.items()))
WORKERS = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)


@dataclass
class Deps:
    """What handlers need, created at startup and kept in kopf's memo."""

    api: Kube
    clock: Callable[[], dt.datetime]
    metrics: Metrics = field(default_factory=Metrics)
    # One reconcile at a time per worker: the worker's own handlers and its
    # pods' events would otherwise race on creating the same launcher.
    locks: defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    # Launcher pods this operator is creating or created that the pods' watch has
    # not shown yet, as created, by (namespace, worker) then pod name. Counted
    # when choosing the next instance index, so a burst of creations still
    # spreads indexes; and as their worker's pods, or a reconcile that came
    # before the watch planned the pod again (at 3,000 workers 612 times: a
    # 409 each, a LauncherCreated Event and a status write for nothing).
    unindexed_pods: dict[tuple[str, str], dict[str, PodFacts]] = field(default_factory=dict)
    # The coefficient each worker's running pod is known to have: (pod, per mille).
    # Spares a TLS round trip per worker per check when nothing changed. Set and
    # cleared by every reading of the worker's stats (see :meth:`saw_coefficient`).
    coefficients: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    # Our own status writes, until kopf's watch delivers them: every step
    # decides on the newest copy, never on one that predates our last write.
    latest: LatestObjects = field(default_factory=LatestObjects)
    # The same for launcher pods whose readiness gate we wrote: the pods'
    # index lags too, and a gate not yet seen there would be verified again.
    latest_pods: LatestObjects = field(default_factory=LatestObjects)
    latest_pools: LatestObjects = field(default_factory=LatestObjects)
    # Each pool's own creates and deletes its members' index has not shown yet.
    # Here and not in ``memo``: kopf gives every object a shallow copy of the
    # memo, so a dict added to it by one object's handler is that object's
    # alone, and each member's event would plan with expectations of its own.
    pool_expectations: dict[tuple[str, str], Expectations] = field(default_factory=dict)
    # Pools with a member-event pass waiting for the pool's lock (see
    # handlers/pool.py: pool_worker_changed).
    pools_queued: set[tuple[str, str]] = field(default_factory=set)
    # Worker probes at once, process-wide (see handlers/probes.py).
    probes: ProbeBudget = field(default_factory=ProbeBudget)
    # How late the event loop runs (see handlers/looplag.py), measured by a task
    # of its own from startup to cleanup: Ready workers' re-checks give way
    # when it is high (see routine_stretch).
    lag: LoopLag = field(default_factory=LoopLag)
    max_stretch: float = backpressure.MAX_STRETCH  # --max-recheck-stretch
    # The certificate (SHA-256) each worker endpoint last presented to a pinned
    # connection that succeeded, and when: the chain step's stats read proves
    # what the attestation check's own handshake would (see
    # handlers/attestation.py), so the check takes it instead of a second one.
    pinned: dict[tuple[str, int], tuple[str, dt.datetime]] = field(default_factory=dict)
    # Pods being stopped whose worker did not answer the drain's last read, and
    # since when (see policy/drain.py: when_unreachable).
    unreachable: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    # kopf's diff bases of workers and pools (its settings hold the same object):
    # an object's entry goes when the object does (see worker_gone).
    diffbase: MemoryDiffBaseStorage = field(default_factory=MemoryDiffBaseStorage)
    # What this operator verified and read itself: the only inputs of funding and
    # registration (status is output; see handlers/trust.py).
    trust: TrustState = field(default_factory=TrustState)
    # The launcher images the operator's configuration allows (--launcher-image).
    # The default allows none: an operator told nothing starts nothing.
    launcher_images: LauncherImages = field(default_factory=LauncherImages)
    # The PriorityClass of the launcher pods it creates (--launcher-priority-class).
    launcher_priority_class: str | None = None
    # The operator runs the nodes' seal servers: which enclaves are ready somewhere,
    # replaced by each seal-server sweep (handlers/sealserver.py); None: it does not.
    seal: SealFacts | None = None
    # The operator's control keys (handlers/controlkey.py, loaded at startup): launcher
    # pods trust the current one, and their relays forward only what it signed.
    control: ControlKeys | None = None

    def control_keys(self) -> ControlKeys:
        """The loaded control keys; no launcher pod is built or driven without them."""
        if self.control is None:
            raise RuntimeError("the operator's control keys are not loaded (startup)")
        return self.control

    def worker_client(self, pod: PodFacts) -> WorkerClient | None:
        """A client for ``pod``'s worker through its launcher's control relay, signing
        with the key the pod trusts; None while the pod has no address yet, or trusts
        a key this operator does not hold (made with a key since retired)."""
        endpoint = pod.control_endpoint()
        signer = self.control_keys().for_pod(pod.control_key)
        if endpoint is None or signer is None or not pod.uid:
            return None
        return WorkerClient(*endpoint, signer=signer, audience=pod.uid)

    def fresh(
        self, body: kopf.Body, store: LatestObjects | None = None, *, delivered: bool = True
    ) -> kopf.Body:
        """``body``, or the newer copy of it this operator's last status write returned
        (kept in ``store``: :attr:`latest` for workers, :attr:`latest_pools` for pools).
        ``delivered``: ``body`` is kopf's, not a copy a step already got from here
        (see :meth:`LatestObjects.freshest`)."""
        newest = (self.latest if store is None else store).freshest(body, delivered=delivered)
        return body if newest is body else kopf.Body(cast(kopf.RawBody, newest))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch a worker's status and remember the answer (see :attr:`latest`)."""
        self.latest.wrote(await patch_worker_status(self.api, namespace, name, status))

    async def patch_pod_condition(
        self, namespace: str, pod: str, condition: dict[str, Any]
    ) -> None:
        """Set a launcher pod's condition and remember the answer (see :attr:`latest_pods`)."""
        self.latest_pods.wrote(await patch_pod_condition(self.api, namespace, pod, condition))

    async def annotate_pod(self, namespace: str, pod: str, annotations: dict[str, str]) -> bool:
        """Merge ``annotations`` into a launcher pod's and remember the answer (the
        drain's and the payouts' records are read back from the pods' index, which
        lags); False if the pod is gone."""
        patched = await annotate_pod(self.api, namespace, pod, annotations)
        self.latest_pods.wrote(patched)
        return patched is not None

    def saw_certificate(self, endpoint: tuple[str, int], certificate_sha256: str) -> None:
        """A pinned connection to ``endpoint`` succeeded just now (see :attr:`pinned`)."""
        self.pinned[endpoint] = (certificate_sha256, self.clock())

    def certificate_seen(self, endpoint: tuple[str, int], *, within: float) -> str | None:
        """The certificate ``endpoint`` presented to a pinned connection in the last
        ``within`` seconds; None when none did."""
        seen = self.pinned.get(endpoint)
        if seen is None or (self.clock() - seen[1]).total_seconds() >= within:
            return None
        return seen[0]

    def saw_coefficient(
        self, key: tuple[str, str], pod: str, *, wanted: int, seen: int | None
    ) -> bool:
        """A reading of ``pod``'s stats showed its coefficient ``seen``; True when that
        is ``wanted`` (or the worker does not report one, so there is nothing to set).

        Whichever step read the stats (the chain step does every check), the
        coefficient check then has nothing to do; and a value that moved away
        from the spec since it was applied (the worker restarted inside its VM
        and read its configuration file again, or someone set it by hand on the
        worker) sends that check back to apply the spec's value.
        """
        applied = seen is None or seen == wanted
        if applied:
            self.coefficients[key] = (pod, wanted)
        else:
            self.coefficients.pop(key, None)
        return applied

    def worker_pods(self, pods: PodIndex, namespace: str, worker: str) -> list[PodFacts]:
        """A worker's launcher pods from the index, each replaced by our newer copy if
        any, and those this operator created that the index does not show yet."""
        out = []
        indexed: list[PodFacts] = list(pods.get((namespace, worker), []))
        for facts in indexed:
            seen = {
                "metadata": {
                    "namespace": namespace,
                    "name": facts.name,
                    "uid": facts.uid,
                    "resourceVersion": facts.resource_version,
                }
            }
            newest = self.latest_pods.freshest(seen)
            out.append(facts if newest is seen else pod_facts(newest))
        created = self.unindexed_pods.get((namespace, worker))
        if created:
            names = {facts.name for facts in indexed}
            out.extend(facts for name, facts in created.items() if name not in names)
        return out

    def reserve_pod(self, namespace: str, worker: str, pod: dict[str, Any]) -> None:
        """A launcher pod about to be created: counted (its instance, and as the worker's)
        until the pods' watch shows it (see :attr:`unindexed_pods`)."""
        facts = pod_facts(pod)
        self.unindexed_pods.setdefault((namespace, worker), {})[facts.name] = facts

    def release_pod(self, namespace: str, worker: str, pod: str) -> None:
        """The pods' watch showed ``pod`` (or its deletion), so the index speaks for it
        now; or its create failed."""
        created = self.unindexed_pods.get((namespace, worker))
        if created is not None:
            created.pop(pod, None)
            if not created:
                del self.unindexed_pods[namespace, worker]

    def slot_usage(self, pods: PodIndex, nodes: NodeIndex) -> _Usage:
        """What the launcher pods hold, from the pods' and nodes' indexes and the pods
        this operator created that the index does not show yet."""
        usage = _Usage({node: gpus for node in nodes for gpus in list(nodes.get(node, []))[:1]})
        seen: set[str] = set()
        for key in pods:
            for facts in pods.get(key, []):
                seen.add(facts.name)
                usage.hold(facts)
        for created in self.unindexed_pods.values():
            for facts in created.values():
                if facts.name not in seen:
                    usage.hold(facts)
        return usage

    def instances_in_use(self, index: kopf.Index[int, str]) -> dict[int, int]:
        seen = {name for i in index for name in index.get(i, [])}
        counts = {i: len(index.get(i, [])) for i in index}
        for created in self.unindexed_pods.values():
            for facts in created.values():
                if facts.name not in seen and facts.instance is not None:
                    counts[facts.instance] = counts.get(facts.instance, 0) + 1
        return counts


@dataclass
class _Usage:
    """What the launcher pods hold: the input of ``policy.instances.instance_room``
    and ``slots_coming``."""

    free: dict[str, int]  # eligible nodes' GPUs, less those held
    taken: dict[str, set[int]] = field(default_factory=dict)
    waiting: dict[int, int] = field(default_factory=dict)
    stopping: dict[int, int] = field(default_factory=dict)

    def hold(self, pod: PodFacts) -> None:
        """Count a launcher pod: its GPU and index on its node (until it is gone, and
        as stopping once deleted or drained), or its index as waiting for a node."""
        index = pod.instance
        if index is None:
            return
        if not pod.node:
            if not pod.deleting:
                self.waiting[index] = self.waiting.get(index, 0) + 1
            return
        if pod.node not in self.free:
            return  # a node no new VM may go to (cordoned, say): its slot comes to nothing
        self.taken.setdefault(pod.node, set()).add(index)
        self.free[pod.node] -= 1
        if pod.deleting or pod.drain_started:
            self.stopping[index] = self.stopping.get(index, 0) + 1

    def room(self) -> dict[int, int]:
        return instance_room(self.free, self.taken, self.waiting, self.stopping)

    def coming(self) -> dict[int, int]:
        return slots_coming(self.stopping, self.waiting)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG (local stack, dev).

    kopf's kubeconfig login takes the server, CA and static credentials but runs
    no ``exec`` plugin (an OIDC or cloud login): for such a user the plugin's
    token or certificate is added, with its expiry, after which kopf calls this
    again (k8s/kubeconfig.py runs the plugin, as the operator's own client does).
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        **kwargs
    ) or kopf.login_with_kubeconfig(**kwargs)
    if info is None or info.token or info.certificate_path or info.certificate_data:
        return info
    plugin = exec_credentials()
    if plugin is None:
        return info
    return dataclasses.replace(
        info,
        token=plugin.token,
        certificate_data=plugin.certificate,
        private_key_data=plugin.key,
        expiration=plugin.expires,
    )


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator (no I/O: the startup handler's first step)."""
    settings.persistence.finalizer = v1alpha1.WORKER_FINALIZER
    # kopf ignores annotations under its own prefix when it diffs objects, so
    # its prefix must not be ours: the pause annotation has to count as a change.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    # Our own Events explain each change; kopf's per-handler log Events would
    # add a write per handler run for nothing.
    settings.posting.level = logging.WARNING
    # kopf waits this long for the watch to show its own last patch before it
    # takes an older body as current, and an older body without its diff-base
    # annotation reads as a new object: at 1,000 workers the watch ran more
    # than kopf's 5 s behind, and a quarter of the workers were "created" twice.
    settings.persistence.consistency_timeout = 60
    # Launcher pods only, selected by the apiserver. In a cluster shared with
    # other workloads every other pod's changes would otherwise reach the
    # operator, each decoded and queued by kopf only to match no handler.
    settings.watching.label_selectors["pods"] = LAUNCHER_LABEL_SELECTOR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


def _warn_about_images(images: LauncherImages) -> None:
    """Say at startup what the launcher-image allow-list lets run, loudly when unusual."""
    log = logging.getLogger("cocoon_operator")
    if images.allow_any:
        log.warning(
            "--allow-any-launcher-image: ANY spec.release.image runs as a privileged pod on"
            " the GPU nodes; for development clusters only"
        )
    elif not images.digests:
        log.warning("no --launcher-image given: no worker's launcher pod will be started")
    else:
        log.info("launcher images allowed: %s", ", ".join(sorted(images.digests)))


@kopf.on.startup()
async def startup(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure(settings)
    metrics = memo.get("metrics") or Metrics()
    max_stretch: float = memo.get("max_recheck_stretch", backpressure.MAX_STRETCH)
    deps = memo["deps"] = Deps(
        api=Kube(load()),
        clock=_utcnow,
        metrics=metrics,
        probes=ProbeBudget(memo.get("probe_limit", DEFAULT_LIMIT), on_change=metrics.set_probes),
        lag=LoopLag(on_change=_lag_reporter(metrics, max_stretch)),
        max_stretch=max_stretch,
        launcher_images=memo.get("launcher_images") or LauncherImages(),
        launcher_priority_class=memo.get("launcher_priority_class"),
    )
    _warn_about_images(deps.launcher_images)
    namespace, name = memo.get("control_key_secret") or ("default", DEFAULT_SECRET_NAME)
    deps.control = await load_control_keys(deps.api, namespace, name)
    memo["lag_task"] = asyncio.create_task(deps.lag.run(), name="loop-lag")
    # In the process, not an annotation: a metadata patch per handled change
    # saved (see k8s/diffbase.py). Every handler is level-based, so a new
    # process handles each object once as created, then only its changes.
    settings.persistence.diffbase_storage = deps.diffbase
    webhook: admission.WebhookOptions | None = memo.get("webhook")
    if webhook is not None:
        admission.configure(settings, webhook, _utcnow())


def _lag_reporter(metrics: Metrics, max_stretch: float) -> Callable[[float], None]:
    consequence = (
        f"Ready workers' re-checks are spaced out (up to {max_stretch:g}x their"
        " intervals) until it catches up"
        if max_stretch > 1
        else "--max-recheck-stretch 1: Ready workers' re-checks keep their intervals"
    )
    notice = OverloadNotice(
        backpressure.TOLERATED_LAG_SECONDS,
        logging.getLogger("cocoon_operator.backpressure"),
        consequence,
    )

    def report(seconds: float) -> None:
        metrics.loop_lag.set(seconds)
        notice(seconds)

    return report


@kopf.on.cleanup()
async def cleanup(*, memo: Any, **_: Any) -> None:
    lag_task: asyncio.Task[None] | None = memo.get("lag_task")
    if lag_task is not None:
        lag_task.cancel()
    deps: Deps | None = memo.get("deps")
    if deps is not None:
        webhook: admission.WebhookOptions | None = memo.get("webhook")
        if webhook is not None:
            await admission.remove_config(deps.api, webhook.config_name)
        await deps.api.close()


def routine_stretch(body: Mapping[str, Any], memo: Any) -> float:
    """How many intervals a worker's next periodic check waits (``checks.Stretch``):
    more than one only for a Ready worker while the event loop lags (see
    policy/backpressure.py); a worker on its way to Ready is never slowed."""
    deps: Deps | None = memo.get("deps")
    if deps is None or not_ready(body):
        return 1.0
    return backpressure.stretch(deps.lag.seconds, ceiling=deps.max_stretch)


def not_ready(body: Mapping[str, Any]) -> bool:
    """Whether a worker's checks must keep their own pace (``checks.Hurry``): one that
    has left Ready (its pod lost, its attestation gone) is on its way back, and its
    checks stretched while it was Ready are pulled back at once."""
    return bool((body.get("status") or {}).get("phase") != Phase.READY.value)


Logger = logging.Logger | logging.LoggerAdapter[Any]
PodIndex = kopf.Index[tuple[str, str], PodFacts]
InstanceIndex = kopf.Index[int, str]
NodeIndex = kopf.Index[str, int]
WorkerIndex = kopf.Index[tuple[str, str], dict[str, Any]]


# The index functions and event handlers below do no I/O, yet are async: kopf
# runs a sync handler in a thread pool (a thread hop, a context copy and a
# shielding task per call), and the three pod indexes alone are called for
# every launcher pod event.


@kopf.index("pods", labels=LAUNCHER_SELECTOR)
async def launcher_pods(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], PodFacts]:
    """Launcher pods by (namespace, worker)."""
    return {(namespace or "", labels.get(LABEL_WORKER, "")): pod_facts(body)}


@kopf.index("pods", labels=LAUNCHER_SELECTOR)
async def launcher_instances(*, labels: kopf.Labels, name: str, **_: Any) -> dict[int, str] | None:
    """Launcher pods by instance index, to spread indexes over the fleet."""
    value = labels.get(LABEL_INSTANCE, "")
    return {int(value): name} if value.isdigit() else None


@kopf.index("pods", labels=LAUNCHER_SELECTOR)
async def launcher_pods_by_node(
    *, namespace: str | None, labels: kopf.Labels, name: str, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[str, str, str]] | None:
    """Launcher pods by node: (namespace, worker, pod)."""
    node = spec.get("nodeName")
    if not node:
        return None
    return {node: (namespace or "", labels.get(LABEL_WORKER, ""), name)}


@kopf.index("nodes")
async def cc_nodes(
    *, name: str, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, int] | None:
    """Nodes that may host a worker VM, with their passthrough GPUs: where an instance
    index has room (see policy/instances.py). A node the node controller marked
    unreachable or not ready is left out: no VM goes there, and a pod stuck
    terminating on it frees no slot. Called for every node event (a heartbeat
    too): a label and a resource lookup, no I/O."""
    if policy_nodes.out_of_service(spec):
        return None
    verdict = policy_nodes.eligibility(
        policy_nodes.NodeFacts(
            name=name,
            labels=dict(labels),
            allocatable=status.get("allocatable") or {},
            unschedulable=bool(spec.get("unschedulable")),
        )
    )
    return {name: verdict.passthrough_gpus} if verdict.eligible else None


@kopf.index(*WORKERS)
async def workers(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """A snapshot of each worker, for reconciles triggered by its pods.

    It also drops ``metadata.managedFields`` from the body kopf keeps of every
    worker for its timer (the index sees that very body, each watch event):
    they are 20 of a worker's 37 KB decoded, 20 MB at 1,000 workers, and
    neither kopf nor the operator reads them. The apiserver offers no watch
    that leaves them out.
    """
    body["metadata"].pop("managedFields", None)
    return {(namespace or "", name): dict(body)}


class InstanceCounts(Mapping[int, int]):
    """Launcher pods per instance index, counted on first use.

    Counting reads every launcher pod in the index, and every reconcile of every
    worker observes the counts; only one that starts a VM reads them. Counted
    eagerly, a tick of the fleet's checks cost O(N^2).
    """

    def __init__(self, count: Callable[[], dict[int, int]]) -> None:
        self._count = count
        self._counts: dict[int, int] | None = None

    def _get(self) -> dict[int, int]:
        if self._counts is None:
            self._counts = self._count()
        return self._counts

    def __getitem__(self, index: int) -> int:
        return self._get()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@dataclass(frozen=True)
class Indexes:
    pods: PodIndex
    instances: InstanceIndex
    nodes: NodeIndex

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> Indexes:
        """kopf passes indexes as keyword arguments named after their functions."""
        return cls(kwargs["launcher_pods"], kwargs["launcher_instances"], kwargs["cc_nodes"])

    def usage(self, deps: Deps) -> tuple[InstanceCounts, InstanceCounts, InstanceCounts]:
        """Instance indexes in use, with room and with slots coming free, each counted on
        first use: a reconcile that neither starts a VM nor finds one waiting for its
        host ports counts none."""
        slots = functools.cache(lambda: deps.slot_usage(self.pods, self.nodes))
        return (
            InstanceCounts(lambda: deps.instances_in_use(self.instances)),
            InstanceCounts(lambda: slots().room()),
            InstanceCounts(lambda: slots().coming()),
        )


def paused(body: kopf.Body) -> bool:
    """Paused by ``spec.paused`` or the pause annotation: no step acts on the worker's VM."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    return bool(body.get("spec", {}).get("paused")) or annotations.get(PAUSE_ANNOTATION) == "true"


def _observe(
    body: kopf.Body,
    pods: list[PodFacts],
    usage: tuple[Mapping[int, int], Mapping[int, int], Mapping[int, int]],
    *,
    control_key: str,
    deleting: bool = False,
    chain_enabled: bool = False,
    images: LauncherImages,
    seal: SealFacts | None = None,
    priority_class: str | None = None,
) -> Observed:
    meta = body["metadata"]
    # Not parse_worker: a reconcile may be handed a copy of the body with a step's
    # just-learned facts merged into its status under the same resourceVersion.
    parsed = v1alpha1.CocoonWorker.model_validate(dict(body))
    ref = WorkerRef(meta["name"], meta["namespace"], meta["uid"])
    return Observed(
        ref=ref,
        generation=int(meta.get("generation", 0)),
        spec=parsed.spec,
        status=parsed.status,
        pods=tuple(pods),
        instances_in_use=usage[0],
        control_key=control_key,
        instance_room=usage[1],
        instance_coming=usage[2],
        paused=paused(body),
        spec_errors=tuple(address_errors(body.get("spec", {}))),
        deleting=deleting or meta.get("deletionTimestamp") is not None,
        chain_enabled=chain_enabled,
        image_refused=images.refusal(parsed.spec.release.image),
        seal=seal,
        priority_class=priority_class,
    )


def with_models(observed: Observed, tracker: NodeReports | None) -> Observed:
    """``observed`` with the node agents' word on its model (see handlers/nodes.py): on
    its pods' nodes, and, when a new pod is due, the nodes that hold it Ready."""
    if tracker is None:
        return observed
    # Fresh reports only: a node whose agent went quiet vouches for no model either.
    # Every node's only when a new pod is to be placed (at every reconcile, that
    # read of every node was 3-5% of the operator's CPU at 1,000 workers).
    verity = observed.spec.model.verity_hash
    nodes = {p.node for p in observed.pods if p.node}
    new_pod_due = all(p.deleting for p in observed.pods)
    reports = (
        tracker.fresh_reports()
        if new_pod_due
        else {n: r for n in nodes if isinstance(r := tracker.current(n), NodeReport)}
    )
    return dataclasses.replace(
        observed,
        node_models={n: model_on(reports[n], verity) for n in nodes if n in reports},
        model_nodes=tuple(nodes_with_model(reports, verity)) if new_pod_due else (),
    )


async def _execute(deps: Deps, body: kopf.Body, result: Plan, logger: Logger) -> None:
    namespace, worker = body["metadata"]["namespace"], body["metadata"]["name"]
    events = result.events
    for obj in result.apply:
        try:
            created = await create_if_absent(deps.api, obj)
        except Exception:
            deps.release_pod(namespace, worker, obj["metadata"]["name"])
            raise
        if not created:
            # Another reconcile (or replica) made it first: its Event said so.
            name = obj["metadata"]["name"]
            events = [e for e in events if e.creates != name]
    for name in result.delete_pods:
        await delete_pod(deps.api, namespace, name)
    if result.status:
        await deps.patch_status(namespace, worker, result.status)
    for event in events:
        await record(
            deps.api,
            body,
            reason=event.reason,
            message=event.message,
            warning=event.warning,
            now=deps.clock(),
        )
        logger.info("%s: %s", event.reason, event.message)


async def _reconcile(
    body: kopf.Body,
    memo: Any,
    indexes: Indexes,
    logger: Logger,
    *,
    deleting: bool = False,
    recorded: Mapping[str, Any] | None = None,
    first: Callable[[], Awaitable[None]] | None = None,
    delivered: bool = True,
) -> Plan:
    """Plan on the newest copy of ``body`` and execute the plan.

    ``recorded``: status fields a step has just learned (a merge patch). The
    plan sees them as already stored, and they go out in the same status
    write as the conditions they imply: one watch event per step, not two.
    ``first``: a step's own writes, made under the worker's lock before the
    plan, so that the watch events they cause reconcile after this one.
    ``delivered``: False when ``body`` is a copy a step already took from
    :attr:`Deps.latest` (see :meth:`LatestObjects.freshest`).
    """
    deps: Deps = memo["deps"]
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    async with deps.locks[key]:
        if first is not None:
            await first()
        # After the lock: a reconcile that held it may have just written status.
        body = deps.fresh(body, delivered=delivered)
        if recorded:
            raw = dict(body)
            raw["status"] = apply_merge_patch(raw.get("status") or {}, recorded)
            body = kopf.Body(cast(kopf.RawBody, raw))
        try:
            observed = _observe(
                body,
                deps.worker_pods(indexes.pods, *key),
                indexes.usage(deps),
                control_key=deps.control_keys().current.public_key,
                deleting=deleting,
                chain_enabled=memo.get("chain") is not None,
                images=deps.launcher_images,
                seal=deps.seal,
                priority_class=deps.launcher_priority_class,
            )
        except ValidationError as err:
            # The CRD schema should have refused this; name the fields, act on nothing.
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors())
            kopf.warn(body, reason="InvalidSpec", message=f"cannot parse fields: {fields}")
            raise kopf.PermanentError(f"invalid spec fields: {fields}") from None
        started = time.monotonic()
        read_lists = memo.get("allowlists")
        if read_lists is not None and not (
            observed.deleting or observed.paused or observed.spec_errors or observed.image_refused
        ):
            # The chain step's reading of the root's allow-lists (cached there):
            # taken before any VM is started for this revision. Instance usage
            # is counted again after this await: others may have reserved some.
            in_use, room, coming = indexes.usage(deps)
            observed = dataclasses.replace(
                await read_lists(observed),
                instances_in_use=in_use,
                instance_room=room,
                instance_coming=coming,
            )
        result = plan(with_models(observed, memo.get("node_reports")), now=deps.clock())
        if recorded:
            result.status = {**recorded, **result.status}
        drain = memo.get("drain")
        if result.delete_pods and drain is not None:
            # Deletion or rotation: whichever path gets here, a worker's VM is
            # stopped only once it is drained and paid out (or a bound passed).
            stale = [p for p in observed.pods if p.name in result.delete_pods]
            waiting = await drain(body, stale, deps, logger)
            if waiting:
                result.waiting = waiting
                result.delete_pods = []
                result.events = [e for e in result.events if e.reason not in DRAIN_HELD_EVENTS]
        # Reserve the pod (and its instance) before the first await, so a concurrent
        # reconcile of another worker already counts it.
        for obj in result.apply:
            if obj["kind"] == "Pod":
                deps.reserve_pod(*key, obj)
        try:
            await _execute(deps, body, result, logger)
        except Exception as exc:
            deps.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            raise
        finally:
            deps.metrics.reconcile_seconds.observe(time.monotonic() - started)
        phase = result.status.get("phase", observed.status.phase)
        deps.metrics.set_phase(key[0], key[1], phase)
    return result


async def reconcile_body(
    body: kopf.Body,
    memo: Any,
    indexes: Indexes,
    logger: Logger,
    *,
    recorded: Mapping[str, Any] | None = None,
    first: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Reconcile ``body`` now: for steps that learned facts its status derives from.

    ``recorded`` (a status merge patch) is written together with the
    conditions and phase the reconcile derives from it; ``first`` runs under
    the worker's lock before the plan (see :func:`_reconcile`). ``body`` is
    the step's own copy, taken through :meth:`Deps.fresh`: it does not prove
    that the watch has caught up with this operator's writes.
    """
    await _reconcile(body, memo, indexes, logger, recorded=recorded, first=first, delivered=False)


@kopf.on.resume(*WORKERS)
@kopf.on.create(*WORKERS)
@kopf.on.update(*WORKERS, field="spec")
@kopf.on.update(*WORKERS, field=("metadata", "annotations", PAUSE_ANNOTATION))
async def reconcile_worker(*, body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
    result = await _reconcile(body, memo, Indexes.of(kwargs), logger)
    if result.waiting:
        # Retried by kopf until the old worker is drained and its pod deleted.
        raise kopf.TemporaryError(result.waiting, delay=2)


async def resync_worker(*, body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
    """A slow safety net (every :data:`RESYNC_SECONDS`, one of the shared timer's
    checks: see handlers/checks.py); changes are handled from watch events."""
    await _reconcile(body, memo, Indexes.of(kwargs), logger)


@kopf.on.event("pods", labels=LAUNCHER_SELECTOR)
@quiet_outages
async def launcher_pod_changed(
    *,
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    memo: Any,
    logger: Logger,
    **kwargs: Any,
) -> None:
    """A launcher pod moved (scheduled, running, gate flipped, gone): reconcile its worker."""
    deps: Deps = memo["deps"]
    deps.release_pod(namespace or "", labels.get(LABEL_WORKER, ""), body["metadata"]["name"])
    if type == "DELETED":
        deps.latest_pods.forget(LatestObjects.key(body))
        deps.unreachable.pop(LatestObjects.key(body), None)
    else:
        deps.latest_pods.freshest(body)  # forgets our copy once the watch has it
    snapshots: WorkerIndex = kwargs["workers"]
    for snapshot in snapshots.get((namespace or "", labels.get(LABEL_WORKER, "")), []):
        body = kopf.Body(cast(kopf.RawBody, snapshot))
        await _reconcile(body, memo, Indexes.of(kwargs), logger)


@kopf.on.delete(*WORKERS)
async def delete_worker(*, body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
    """Drain the worker, stop the VM and release the GPU before the finalizer goes.

    The drain (disable, wait for in-flight requests, final payout; each bounded)
    is injected at start as ``memo["drain"]`` by the control step; the
    finalizer stays until no launcher pod of this worker is left, so no GPU is
    left held.
    """
    indexes = Indexes.of(kwargs)
    meta = body["metadata"]
    result = await _reconcile(body, memo, indexes, logger, deleting=True)
    if result.waiting:
        raise kopf.TemporaryError(result.waiting, delay=2)
    remaining = list(indexes.pods.get((meta["namespace"], meta["name"]), []))
    if remaining:
        names = ", ".join(sorted(p.name for p in remaining))
        raise kopf.TemporaryError(f"waiting for launcher pods to stop: {names}", delay=2)
    deps: Deps = memo["deps"]
    deps.metrics.set_phase(meta["namespace"], meta["name"], None)
    deps.coefficients.pop((meta["namespace"], meta["name"]), None)
    deps.latest.forget((meta["namespace"], meta["name"]))


def gone(*, type: str | None, **_: Any) -> bool:
    """kopf's filter for the handlers of an object's DELETED event (checked in line)."""
    return type == "DELETED"


@kopf.on.event(*WORKERS, when=gone)
async def worker_gone(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Forget a deleted worker's diff base (a pool's: see handlers/pool.py), what this
    operator verified and read for it, and its parsed body."""
    deps: Deps = memo["deps"]
    deps.diffbase.forget(body)
    meta = body.get("metadata") or {}
    deps.trust.forget((meta.get("namespace", ""), meta.get("name", "")))
    forget_worker(meta.get("uid"))


def being_drained(*, spec: kopf.Spec, **_: Any) -> bool:
    """kopf's filter for :func:`node_changed`: checked in line for every node event,
    so the node heartbeats of a large cluster cost no handler run (and no log line)."""
    return policy_nodes.cordoned(spec)


@kopf.on.event("nodes", when=being_drained)
@quiet_outages
async def node_changed(
    *, name: str, spec: kopf.Spec, memo: Any, logger: Logger, **kwargs: Any
) -> None:
    """Move workers off a cordoned (or draining) node.

    The launcher pod is deleted with its grace period, in which the launcher
    disables the worker and drains in-flight requests; the worker's reconcile
    then creates a pod at the same revision, which the scheduler places on
    another node. Nodes are never modified: whoever cordoned one uncordons it.
    """
    deps: Deps = memo["deps"]
    placed: kopf.Index[str, tuple[str, str, str]] = kwargs["launcher_pods_by_node"]
    snapshots: WorkerIndex = kwargs["workers"]
    pods: PodIndex = kwargs["launcher_pods"]
    for namespace, worker, pod in list(placed.get(name, [])):
        facts = [p for p in pods.get((namespace, worker), []) if p.name == pod]
        if not facts or facts[0].deleting:
            continue
        if await delete_pod(deps.api, namespace, pod):
            for snapshot in snapshots.get((namespace, worker), []):
                await record(
                    deps.api,
                    snapshot,
                    reason="NodeCordoned",
                    message=f"node {name} is cordoned: stopping pod {pod} to move the worker",
                    now=deps.clock(),
                )
            logger.info("node %s cordoned: moving %s/%s off it", name, namespace, worker)
