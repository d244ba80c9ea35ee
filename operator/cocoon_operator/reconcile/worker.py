"""One CocoonWorker: from what is observed to what should be done (pure).

``plan`` takes everything the decision needs, already gathered (the parsed
spec, the current status, the worker's launcher pods, the fleet's instance
usage) and returns a :class:`Plan`: objects to apply, pods to delete, the
status fields that change and the Events that explain each change. Handlers
gather and execute; this module never performs I/O, so every branch is tested
without a cluster, and re-running it on an unchanged world yields an empty plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cocoon_operator.api.conditions import Phase
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.nodereport import ModelRecord
from cocoon_operator.api.v1alpha1 import ChainStatus, CocoonWorkerSpec, CocoonWorkerStatus
from cocoon_operator.desired.launcher import WorkerRef, launcher_pod, revision
from cocoon_operator.policy import allowlist, sealserver
from cocoon_operator.policy.conditions import merge
from cocoon_operator.policy.instances import choose_instance, ports_taken, try_another
from cocoon_operator.policy.worker import ChainFacts, ModelFacts, PodFacts, view
from cocoon_operator.reconcile.gather import pod_facts


@dataclass(frozen=True)
class ObservedWorker:
    ref: WorkerRef
    generation: int
    spec: CocoonWorkerSpec
    status: CocoonWorkerStatus
    pods: Sequence[PodFacts]
    instances_in_use: Mapping[int, int]
    # The operator's current control public key: the one new launcher pods trust.
    control_key: str
    # Per index, its room: eligible nodes with a GPU free on which it is free and
    # VMs with it being stopped, less pods waiting with it (policy/instances.py:
    # instance_room); None: not known, spreading alone.
    instance_room: Mapping[int, int] | None = None
    # Per index, this operator's VMs being stopped less the pods waiting with it
    # (policy/instances.py: slots_coming); None: not known, no wait.
    instance_coming: Mapping[int, int] | None = None
    paused: bool = False
    deleting: bool = False
    # Rule violations the webhook would have refused (it may have been down).
    spec_errors: tuple[str, ...] = ()
    chain_enabled: bool = False
    # The operator's reading of the root contract's allow-lists for this
    # revision, taken just now (None: not taken, or it failed with listing_error).
    listing: allowlist.Listing | None = None
    listing_error: str | None = None
    # The operator registers this worker's hashes on a root it owns.
    registering: bool = False
    # The node agents' word on this worker's model: per node with a report, what
    # it says of the model (None: not listed); empty without node reports.
    node_models: Mapping[str, ModelRecord | None] = field(default_factory=dict)
    # Nodes whose report lists the model Ready: a new launcher pod prefers them.
    model_nodes: tuple[str, ...] = ()
    # The GPU (PCI address) the worker's running VM holds, by its node's report
    # (policy/nodereports.py: vm_gpu), written as status.gpu with the rest of the
    # status; gpu_known False: the operator reads no node reports, and leaves it.
    gpu: str | None = None
    gpu_known: bool = False
    # Why spec.release.image may not run here (the operator's allow-list), or None.
    # No launcher pod is created for it; one already running is left alone (taking
    # an image off the list never stops a fleet by itself: an administrator does).
    image_refused: str | None = None
    # The operator runs the nodes' seal servers (None: it does not).
    seal: sealserver.SealFacts | None = None
    # The PriorityClass new launcher pods get (--launcher-priority-class), or None.
    priority_class: str | None = None
    # Why a worker with spec.registerOnRoot is not registering (the operator's
    # registration policy, or a hash its root's owner removed).
    registration_refused: str | None = None
    # Why no launcher pod may be created yet: its namespace is funded before start and
    # the chain does not show the node wallet at COCOON's start floor (the chain
    # step's policy.chain.start_hold); None: start when ready.
    start_funding: str | None = None


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False
    # The object of ``Plan.apply`` whose creation this Event announces: it is
    # recorded only if that create really creates (not if the object exists).
    creates: str | None = None


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # Set by the caller when deletions wait for a drain (not by plan()).
    waiting: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.apply or self.delete_pods or self.status or self.events)


def _status_changes(current: CocoonWorkerStatus, desired: CocoonWorkerStatus) -> dict[str, Any]:
    """Top-level status fields whose value changes, in wire form (a merge patch)."""
    old = current.model_dump(mode="json", by_alias=True, exclude_none=True)
    new = desired.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: value for key, value in _merge_patch(old, new).items() if old.get(key) != value}


def _merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` as a merge patch over ``old``: keys that disappear, at any depth, are
    cleared explicitly (a merge patch keeps them otherwise, e.g. a recovered
    ``status.chain.error``)."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(before, dict) and isinstance(value, dict):
            value = _merge_patch(before, value)  # noqa: PLW2901
        out[key] = value
    out.update({key: None for key in old.keys() - new.keys()})
    return out


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` as the apiserver stores it after the merge patch ``patch`` (RFC 7386):
    None removes a key, objects merge key by key, anything else replaces.

    For a step that records facts and lets the reconcile write them together
    with the conditions they imply: the plan must see the status as it will be.
    """
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            before = out.get(key)
            out[key] = apply_merge_patch(before if isinstance(before, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def _move(obs: ObservedWorker, current: PodFacts, plan: Plan) -> tuple[int, ...] | None:
    """Give up ``current``'s instance when its host ports are taken wherever it could
    run and no VM of that index is being stopped for it: delete the unscheduled pod;
    the next reconcile starts one on another index. Returns the indexes tried, or
    None to leave the pod where it is."""
    if current.node is not None or current.instance is None:
        return None
    if not ports_taken(current.scheduled_reason, current.scheduled_message):
        return None
    if obs.instance_coming is not None and obs.instance_coming.get(current.instance, 0) >= 0:
        # One of this operator's VMs with its index is being stopped for each pod
        # waiting with it, this one included: in a full fleet's rotation "ports
        # taken" is the moment before such a slot frees (another index took the
        # GPU free now), and a move would cost a Pod and an Event to wait anyway.
        return None
    tried = try_another(obs.status.instances_tried or (), current.instance)
    if tried is None:
        return None
    plan.delete_pods.append(current.name)
    plan.events.append(
        Event(
            "InstanceMoved",
            f"pod {current.name}: the host ports of instance {current.instance} are taken on"
            " every node that could take it; starting it on another instance",
        )
    )
    return tried


def _pod_actions(
    obs: ObservedWorker, rev: str, plan: Plan
) -> tuple[PodFacts | None, list[int] | None]:
    """Create the current revision's pod or retire old ones; return the current pod and
    the instance indexes given up for it so far (``status.instancesTried``).

    No pod is created while ``obs.start_funding`` holds it (the node wallet is short
    of the start floor); one that exists is never stopped for it."""
    current = next((p for p in obs.pods if p.revision == rev and not p.deleting), None)
    tried = list(obs.status.instances_tried or ()) or None
    stale = [p for p in obs.pods if p.revision != rev]
    for pod in stale:
        if not pod.deleting:
            plan.delete_pods.append(pod.name)
            plan.events.append(
                Event("Rotating", f"stopping pod {pod.name} of revision {pod.revision}")
            )
    if current is not None:
        moved = _move(obs, current, plan)
        if moved is not None:
            return None, list(moved)
        return current, None if current.node else tried
    # Stop before start: a rotated worker keeps its wallet and persistent state,
    # which two VMs must never share. A pod of this revision still terminating
    # holds the name the new one needs.
    if not stale and not any(p.revision == rev for p in obs.pods):
        if obs.start_funding is not None:
            return None, tried
        avoid = frozenset(tried or ())
        slot = InstanceSlot(
            choose_instance(obs.instances_in_use, avoid=avoid, room=obs.instance_room)
        )
        desired_pod = launcher_pod(
            obs.ref,
            obs.spec,
            slot,
            control_key=obs.control_key,
            model_nodes=obs.model_nodes,
            seal=obs.seal is not None,
            priority_class=obs.priority_class,
        )
        plan.apply.append(desired_pod)
        name = desired_pod["metadata"]["name"]
        plan.events.append(
            Event(
                "LauncherCreated",
                f"created pod {name} (revision {rev}, instance {slot.index})",
                creates=name,
            )
        )
        # The status describes the pod as created (unscheduled), so the watch
        # event that first shows it changes nothing and costs no status write.
        return pod_facts(desired_pod), tried
    return None, tried


# Events for stopping a VM that a drain may hold back (they are repeated
# only once the deletion really happens).
DRAIN_HELD_EVENTS = frozenset({"Rotating", "StoppingUnlisted"})


def held_for_drain(result: Plan, waiting: str) -> Plan:
    """``result`` while the pods it would delete are being drained: nothing deleted yet,
    no Event announcing the stop (said again once it happens), and ``waiting``
    saying why. Whichever path plans a deletion (the worker deleted, a rotation,
    an unlisted image), a VM stops only once drained and paid out, or a bound passed.
    """
    return dataclasses.replace(
        result,
        waiting=waiting,
        delete_pods=[],
        events=[e for e in result.events if e.reason not in DRAIN_HELD_EVENTS],
    )


def with_recorded(result: Plan, recorded: Mapping[str, Any]) -> Plan:
    """``result`` writing ``recorded`` (a step's just-learned status fields) in the same
    status patch as what the plan derives from them; the plan's own fields win."""
    return dataclasses.replace(result, status={**recorded, **result.status})


def _hold(obs: ObservedWorker, held: str, plan: Plan) -> None:
    """No VM for a worker whose hashes are not listed: stop any, start none."""
    was = allowlist.hold(
        obs.status.chain,
        revision(obs.spec),
        registering=obs.registering,
        not_registered=obs.registration_refused,
    )
    if was != held:
        plan.events.append(Event("NotListed", f"no VM is started: {held}", warning=True))
    for pod in obs.pods:
        if not pod.deleting:
            plan.delete_pods.append(pod.name)
            plan.events.append(Event("StoppingUnlisted", f"stopping pod {pod.name}: {held}"))


def chain_facts(
    obs: ObservedWorker, chain: ChainStatus | None, rev: str, *, awaiting_start: str | None = None
) -> ChainFacts:
    """What the chain readings say of revision ``rev``, with the spec's funding bounds;
    ``awaiting_start``: why its launcher pod waits for the start floor, if it does."""
    wallet = obs.status.wallet
    current = chain if chain is not None and chain.revision == rev else None
    return ChainFacts(
        image_listed=current.image_hash_listed if current else None,
        model_listed=current.model_hash_listed if current else None,
        image_hash=current.image_hash if current else None,
        model_hash=current.model_hash if current else None,
        source=current.source if current else None,
        error=chain.error if chain else None,
        balance=wallet.balance if wallet else None,
        minimum=obs.spec.funding.minimum,
        funding_note=wallet.funding if wallet else None,
        wallet_mismatch=wallet.mismatch if wallet else None,
        funding_limit=wallet.limit if wallet else None,
        not_registered=obs.registration_refused,
        enabled=obs.chain_enabled,
        awaiting_start=awaiting_start,
    )


def model_facts(obs: ObservedWorker, pod: PodFacts | None) -> ModelFacts:
    """What the node agent of ``pod``'s node says of the worker's model."""
    node = pod.node if pod is not None else None
    if node is None or node not in obs.node_models:
        return ModelFacts()
    return ModelFacts(reported=True, record=obs.node_models[node])


def plan(obs: ObservedWorker, *, now: datetime) -> Plan:
    out = Plan()
    rev = revision(obs.spec)
    chain = obs.status.chain
    held = None
    if obs.chain_enabled:
        chain = allowlist.record(chain, obs.listing, obs.listing_error, now)
        held = allowlist.hold(
            chain, rev, registering=obs.registering, not_registered=obs.registration_refused
        )
    current: PodFacts | None = None
    awaiting_start: str | None = None
    tried = list(obs.status.instances_tried or ()) or None
    seal_waiting = (
        sealserver.waiting_message(
            obs.spec.release.files.enclave,
            obs.seal.ready_ids,
            obs.seal.namespace,
            image=obs.spec.release.image,
            releases=obs.seal.releases,
        )
        if obs.seal is not None
        else None
    )
    if obs.deleting:
        current = next((p for p in obs.pods if p.revision == rev), None)
        out.delete_pods = [p.name for p in obs.pods if not p.deleting]
    elif obs.paused or obs.spec_errors or obs.image_refused:
        current = next((p for p in obs.pods if p.revision == rev), None)
    elif held:
        _hold(obs, held, out)
    elif seal_waiting is not None and not (
        obs.seal is not None
        and obs.spec.release.files.enclave is not None
        and (obs.spec.release.image, obs.spec.release.files.enclave) in obs.seal.releases
    ):
        # No enclave digest, or a release not allowed: no seal server will come, so
        # no new VM (a running one stays).
        current = next((p for p in obs.pods if p.revision == rev and not p.deleting), None)
    else:
        current, tried = _pod_actions(obs, rev, out)
        if not obs.pods:
            awaiting_start = obs.start_funding

    worker_view = view(
        current,
        chain=chain_facts(obs, chain, rev, awaiting_start=awaiting_start),
        paused=obs.paused,
        deleting=obs.deleting,
        spec_errors=obs.spec_errors,
        held=held if not (obs.deleting or obs.paused or obs.spec_errors) else None,
        model=model_facts(obs, current),
        image_refused=obs.image_refused,
        seal_waiting=seal_waiting if not (obs.deleting or obs.paused) else None,
    )
    conditions = merge(
        obs.status.conditions, worker_view.conditions, generation=obs.generation, now=now
    )
    running_rev = next((p.revision for p in obs.pods if p.node and not p.deleting), None)
    desired = obs.status.model_copy(
        update={
            "phase": worker_view.phase.value,
            "conditions": conditions,
            "node": current.node if current else None,
            "pod": current.name if current else None,
            "instance": current.instance if current else None,
            "instances_tried": tried,
            "observed_generation": obs.generation,
            "current_revision": running_rev,
            "target_revision": rev,
            "chain": chain,
            "gpu": obs.gpu if obs.gpu_known else obs.status.gpu,
        }
    )
    out.status = _status_changes(obs.status, desired)
    event = phase_event(obs.status.phase, worker_view.phase)
    if "phase" in out.status and event is not None:
        out.events.append(event)
    return out


# The phases worth an Event of their own: reaching Ready, and failing. The
# steps in between are in the conditions (with their transition times); an
# Event for each would cost a write per step per worker for no new fact.
_ANNOUNCED = frozenset({Phase.READY, Phase.FAILED})


def phase_event(old: str | None, new: Phase) -> Event | None:
    """The Event for a phase change, if it deserves one."""
    if old is None or old == new.value:
        return None
    if new in _ANNOUNCED:
        return Event("PhaseChanged", f"phase {old} -> {new.value}", warning=new is Phase.FAILED)
    if old == Phase.READY.value:
        return Event("PhaseChanged", f"phase {old} -> {new.value}: no longer Ready", warning=True)
    return None
