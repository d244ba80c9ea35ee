"""The operator process's shared state, typed: what every handler module is given.

The entry point (cli.py ``run``) builds one :class:`Runtime` from its flags and
hands it to each handler module's ``register(registry, runtime, ...)``; kopf's
memo carries none of it. The optional steps are typed, possibly-absent
collaborators on it, set by the step that provides them:

- ``read_lists`` (the chain step): the root contract's verdict on a revision's
  hashes, taken by every reconcile before a VM is started;
- ``drain`` (the control step): a worker's VM is stopped only once drained and
  paid out;
- ``node_reports`` (the node-report step): what the node agents say, read by
  the reconcile, the attestation check and the chain step;
- ``checks`` (handlers/checks.py): the periodic checks' scheduler, told of each
  worker by its create and resume handlers.

A step absent from the process leaves its field None, and its readers say what
that means where they read it. :class:`Deps` is the state built at kopf's
startup (the API client exists only inside the event loop); :class:`Tick` is
one worker at one tick of the checks' scheduler (handlers/checks.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import kopf
from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.labels import PAUSE_ANNOTATION
from cocoon_operator.handlers.looplag import LoopLag
from cocoon_operator.handlers.nodetracker import NodeReports
from cocoon_operator.handlers.parsed import parse_worker
from cocoon_operator.handlers.probes import DEFAULT_LIMIT, ProbeBudget
from cocoon_operator.handlers.trust import TrustState
from cocoon_operator.k8s.diffbase import MemoryDiffBaseStorage
from cocoon_operator.k8s.events import record
from cocoon_operator.k8s.latest import LatestObjects
from cocoon_operator.k8s.objects import annotate_pod, patch_pod_condition, patch_worker_status
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.metrics import Metrics
from cocoon_operator.policy import backpressure
from cocoon_operator.policy.instances import instance_room, slots_coming
from cocoon_operator.policy.launcherimages import LauncherImages
from cocoon_operator.policy.pool import Expectations
from cocoon_operator.policy.sealserver import SealFacts
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.gather import pod_facts
from cocoon_operator.reconcile.worker import ObservedWorker
from cocoon_operator.workerapi import ControlKeys, WorkerClient

FIELD_MANAGER = "cocoon-operator"
WORKERS = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
# The API groups whose objects have handlers that look at kopf's essence (create,
# update and resume handlers diff it; timers reset their idling by it): only the
# operator's own. Other objects get none built (k8s/diffbase.py).
DIFFED_GROUPS = frozenset({v1alpha1.GROUP})


@dataclass
class Deps:
    """What handlers share once the process has started: its API client, clock and
    the state the steps keep between events (built by handlers/process.py).
    """

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
    # before the watch planned the pod again (hundreds of times in a large fleet's
    # start: a 409 each, a LauncherCreated Event and a status write for nothing).
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
    # Process-wide, not per object: kopf's memo is copied per object, so a dict
    # there would be each member's own, planning with expectations of its own.
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
    diffbase: MemoryDiffBaseStorage = field(
        default_factory=lambda: MemoryDiffBaseStorage(groups=DIFFED_GROUPS)
    )
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

    async def record(
        self, obj: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """An Event on ``obj`` (a worker, a pool) now, by this process's clock."""
        await record(
            self.api, obj, reason=reason, message=message, warning=warning, now=self.clock()
        )

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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


Logger = logging.Logger | logging.LoggerAdapter[Any]
PodIndex = kopf.Index[tuple[str, str], PodFacts]
InstanceIndex = kopf.Index[int, str]
NodeIndex = kopf.Index[str, int]
WorkerIndex = kopf.Index[tuple[str, str], dict[str, Any]]


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
    def of(cls, kwargs: Mapping[str, Any]) -> Indexes:
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


def gone(*, type: str | None, **_: Any) -> bool:
    """kopf's filter for the handlers of an object's DELETED event (checked in line)."""
    return type == "DELETED"


class ReadLists(Protocol):
    """The chain step's reading of the root's allow-lists for ``observed``'s revision
    (handlers/chain.py ``read_lists``), taken before any VM is started for it."""

    def __call__(self, observed: ObservedWorker, /) -> Awaitable[ObservedWorker]: ...


class CheckSchedule(Protocol):
    """The periodic checks' scheduler (handlers/checks.py ``Schedule``): told of each
    worker kopf has handled, it checks the worker from then on."""

    def track(self, body: Mapping[str, Any], /) -> None: ...


class Drain(Protocol):
    """The control step's drain of ``pods`` before they are deleted (handlers/control.py
    ``drain``): why the deletion waits, or None once it may go ahead."""

    def __call__(
        self, body: kopf.Body, pods: list[PodFacts], deps: Deps, logger: Logger, /
    ) -> Awaitable[str | None]: ...


@dataclass(frozen=True)
class Settings:
    """The process's flags that the handlers read (cli.py ``run``)."""

    metrics: Metrics = field(default_factory=Metrics)
    probe_limit: int = DEFAULT_LIMIT  # --max-concurrent-probes
    max_stretch: float = backpressure.MAX_STRETCH  # --max-recheck-stretch
    launcher_images: LauncherImages = field(default_factory=LauncherImages)
    launcher_priority_class: str | None = None
    # The Secret of the operator's control keys (handlers/controlkey.py).
    control_key_secret: tuple[str, str] = ("default", "cocoon-operator-control-key")


@dataclass
class Runtime:
    """One operator process's wiring: its settings, the state built at startup, and
    the optional steps' collaborators (see the module's docstring)."""

    settings: Settings = field(default_factory=Settings)
    started: Deps | None = None
    read_lists: ReadLists | None = None
    drain: Drain | None = None
    node_reports: NodeReports | None = None
    checks: CheckSchedule | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def deps(self) -> Deps:
        """The state built at startup; no handler runs before it (kopf runs the startup
        handlers first)."""
        if self.started is None:
            raise RuntimeError("the operator has not started (no startup handler ran)")
        return self.started

    @property
    def chain_enabled(self) -> bool:
        """The chain step runs (``--ton-endpoint``) and has started."""
        return self.read_lists is not None


@dataclass(frozen=True)
class Tick:
    """One worker at one tick of the checks' scheduler (handlers/checks.py): what
    every periodic check starts from, gathered once rather than by each check."""

    runtime: Runtime
    body: kopf.Body  # the worker's snapshot in the workers index at this tick
    logger: Logger
    indexes: Indexes

    @property
    def deps(self) -> Deps:
        return self.runtime.deps

    @property
    def key(self) -> tuple[str, str]:
        meta = self.body["metadata"]
        return (meta["namespace"], meta["name"])

    @property
    def deleting(self) -> bool:
        return bool(self.body["metadata"].get("deletionTimestamp"))

    def pods(self) -> list[PodFacts]:
        """The worker's launcher pods now (see :meth:`Deps.worker_pods`)."""
        return self.deps.worker_pods(self.indexes.pods, *self.key)

    def current(self) -> tuple[kopf.Body, v1alpha1.CocoonWorker] | None:
        """The newest copy of the worker (an earlier check may just have written its
        status) and its parse; None while it is being deleted, or when its spec does
        not parse (the reconcile reports that)."""
        body = self.deps.fresh(self.body)
        if body["metadata"].get("deletionTimestamp"):
            return None
        try:
            return body, parse_worker(body)
        except ValidationError:
            return None


# A periodic check: one worker, one tick.
CheckFn = Callable[[Tick], Awaitable[None]]
