"""What a worker's status should say, given its launcher Pod (pure).

The operator never guesses: each condition is derived from something observed
(the scheduler's PodScheduled condition, the pod phase, the readiness gate that
only the attestation step sets). Checks that have not run yet are Unknown with
reason NotChecked rather than optimistic True.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocoon_operator.api.conditions import ConditionType, Phase, Reason
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.nodereport import MODEL_FAILED, MODEL_READY, ModelRecord
from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR, FUNDING_MINIMUM_DEFAULT, ConditionStatus
from cocoon_operator.policy.conditions import ObservedCondition
from cocoon_operator.policy.payouts import PayoutIntent

T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


@dataclass(frozen=True)
class PodFacts:
    """What the policy needs of the launcher Pod, gathered by the caller."""

    name: str
    node: str | None
    phase: str | None
    scheduled: ConditionStatus | None = None
    scheduled_reason: str | None = None
    scheduled_message: str | None = None
    attested_gate: ConditionStatus | None = None
    attested_reason: str | None = None
    attested_message: str | None = None
    deleting: bool = False
    waiting_reason: str | None = None
    # The launcher's last failure (its termination message), e.g. a release file
    # that does not match its digest: the VM did not start.
    launch_error: str | None = None
    revision: str | None = None
    instance: int | None = None
    host_ip: str | None = None
    started_at: str | None = None  # status.startTime
    drain_started: str | None = None  # when the operator began stopping this pod's worker
    payout_requested: bool = False
    payout_intent: PayoutIntent | None = None  # a payout about to be asked for, or asked
    uid: str | None = None
    resource_version: str | None = None  # of the copy these facts were taken from
    # The init container ``model`` (model ensure): "running", "done", "failed" (its
    # last run exited non-zero, and it is not running again), or None (not seen).
    model_init: str | None = None
    model_init_error: str | None = None  # its last failure's last words
    # The operator's control public key the pod's relay trusts (its annotation):
    # which of the operator's keys signs for it.
    control_key: str | None = None

    def control_endpoint(self) -> tuple[str, int] | None:
        """Where the pod's launcher relays COCOON's plain HTTP (stats and controls) to
        its VM, for requests the operator signed: its host's address and its
        instance's relay port (``launcher/_controlrelay.py``); None until both are
        known."""
        if self.host_ip is None or self.instance is None:
            return None
        return self.host_ip, InstanceSlot(self.instance).control_port

    def ratls_endpoint(self) -> tuple[str, int] | None:
        """Where the pod's VM serves RA-TLS: its host's address and its instance's port;
        None until both are known. One definition, because the chain step's pinned
        reads are recorded under it and the attestation check looks them up by it."""
        if self.host_ip is None or self.instance is None:
            return None
        return self.host_ip, InstanceSlot(self.instance).ratls_port


@dataclass(frozen=True)
class ChainFacts:
    """What the chain step last recorded (status.chain, status.wallet) and the bounds."""

    image_listed: bool | None = None
    model_listed: bool | None = None
    image_hash: str | None = None
    model_hash: str | None = None
    source: str | None = None
    balance: int | None = None
    minimum: int = FUNDING_MINIMUM_DEFAULT
    funding_note: str | None = None
    wallet_mismatch: str | None = None  # policy.chain.wallet_to_fund refused to fund
    # The operator's own policy behind the last funding decision (policy.treasury
    # PolicyCode value), and why a missing hash is not registered.
    funding_limit: str | None = None
    not_registered: str | None = None
    enabled: bool = True  # False: the operator has no chain access configured
    error: str | None = None  # why the last reading of the root contract failed
    # Why no launcher pod is created yet: its node wallet is short of COCOON's start
    # floor in a namespace funded before start (policy/chain.py start_hold).
    awaiting_start: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    """The node agent's word on the worker's model, on the node of its pod.

    ``reported``: an agent reports that node (its report, not the model, is
    there); ``record``: what its report says of the model (None: not listed yet).
    """

    reported: bool = False
    record: ModelRecord | None = None


@dataclass(frozen=True)
class WorkerView:
    phase: Phase
    conditions: tuple[ObservedCondition, ...]


def _scheduled(
    pod: PodFacts | None,
    held: str | None = None,
    seal_waiting: str | None = None,
    awaiting_start: str | None = None,
) -> ObservedCondition:
    kind = ConditionType.SCHEDULED
    if pod is None and (held or awaiting_start):
        # Unlisted hashes first: they hold the VM whatever its wallet holds.
        reason = Reason.NOT_LISTED if held else Reason.AWAITING_START_FUNDING
        message = f"no VM is started: {held}" if held else awaiting_start or ""
        return ObservedCondition(kind, F, reason, message)
    if seal_waiting and not (pod and pod.node):
        return ObservedCondition(kind, F, Reason.SEAL_SERVER_NOT_READY, seal_waiting)
    if pod is None:
        return ObservedCondition(kind, F, Reason.NO_POD, "the launcher pod does not exist yet")
    if pod.node:
        return ObservedCondition(kind, T, Reason.SCHEDULED, f"pod {pod.name} is on node {pod.node}")
    if pod.scheduled is F and pod.scheduled_reason == "Unschedulable":
        return ObservedCondition(kind, F, Reason.UNSCHEDULABLE, pod.scheduled_message or "")
    return ObservedCondition(
        kind, F, Reason.POD_CREATED, f"pod {pod.name} is waiting for the scheduler"
    )


def _size(n: int) -> str:
    """Bytes as people read them: 512 bytes, 4.0 GiB."""
    if n < 1024:
        return f"{n} bytes"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _bytes(record: ModelRecord) -> str:
    if record.bytes_total:
        share = min(100, record.bytes_done * 100 // record.bytes_total)
        return f": {_size(record.bytes_done)} of {_size(record.bytes_total)} ({share}%)"
    return f": {_size(record.bytes_done)}" if record.bytes_done else ""


_IN_PROGRESS = {
    "Downloading": Reason.DOWNLOADING,
    "Building": Reason.BUILDING,
    "Verifying": Reason.VERIFYING,
}


def _from_record(record: ModelRecord, where: str) -> ObservedCondition:
    kind = ConditionType.MODEL_READY
    if record.phase == MODEL_READY:
        return ObservedCondition(kind, T, Reason.READY, f"the model's images are verified {where}")
    if record.phase == MODEL_FAILED:
        cause = ": ".join(x for x in (record.reason, record.message) if x) or "no cause given"
        return ObservedCondition(
            kind, F, Reason.MODEL_FAILED, f"preparing the model {where} failed: {cause}"
        )
    reason = _IN_PROGRESS.get(record.phase, Reason.PREPARING)
    return ObservedCondition(kind, F, reason, f"{record.phase} {where}{_bytes(record)}")


def _from_init_container(pod: PodFacts, reported: bool, where: str) -> ObservedCondition:
    kind = ConditionType.MODEL_READY
    done = ObservedCondition(kind, T, Reason.READY, f"model ensure finished {where}")
    if pod.model_init == "done":
        return done
    if pod.model_init == "failed":
        error = pod.model_init_error or "no message"
        return ObservedCondition(
            kind, F, Reason.MODEL_FAILED, f"model ensure failed {where}: {error}"
        )
    if pod.model_init == "running":
        last = f" (its last run failed: {pod.model_init_error})" if pod.model_init_error else ""
        return ObservedCondition(kind, F, Reason.PREPARING, f"model ensure runs {where}{last}")
    if reported:
        message = f"the node agent {where} does not list the model yet"
        return ObservedCondition(kind, F, Reason.PREPARING, message)
    if pod.phase == "Running":  # the kubelet starts the launcher once model ensure exits 0
        return done
    return ObservedCondition(kind, F, Reason.PREPARING, f"waiting for model ensure {where}")


def _model_ready(pod: PodFacts | None, model: ModelFacts) -> ObservedCondition:
    """Whether the worker's model is prepared on its node (docs/models.md).

    The node agent's record of the cache's progress file first (the node's own
    word, with bytes and the cause of a failure); where the agent does not list
    the model, the launcher pod's init container: running is preparing, a
    non-zero exit is a failure with its last words, exit 0 is Ready. Where no
    agent reports the node at all, a pod whose containers run has finished it
    (the kubelet starts the launcher only after it exits 0).
    """
    if pod is None or not pod.node:
        return ObservedCondition(
            ConditionType.MODEL_READY,
            F,
            Reason.AWAITING_NODE,
            "prepared on the worker's node once it is scheduled",
        )
    where = f"on node {pod.node}"
    if model.record is not None:
        return _from_record(model.record, where)
    return _from_init_container(pod, model.reported, where)


# The kubelet's waiting reasons of a container that is simply on its way (its init
# containers run, its container is being created): the phase says as much, and naming
# each in the condition cost a status write per pod event on the way to Ready. A
# reason that says something is wrong (ErrImagePull, CreateContainerConfigError, ...)
# is shown.
ROUTINE_WAITING_REASONS = frozenset({"PodInitializing", "ContainerCreating"})


def _vm_running(pod: PodFacts | None) -> ObservedCondition:
    kind = ConditionType.VM_RUNNING
    if pod is None or not pod.node:
        return ObservedCondition(kind, F, Reason.VM_STARTING, "not scheduled")
    if pod.phase == "Running" and pod.launch_error and pod.waiting_reason:
        # Restarting after a failure (CrashLoopBackOff): the pod "runs", the VM does not.
        return ObservedCondition(
            kind, F, Reason.LAUNCH_FAILED, f"the launcher on {pod.node} failed: {pod.launch_error}"
        )
    if pod.phase == "Running":
        return ObservedCondition(kind, T, Reason.VM_RUNNING, f"the VM launcher runs on {pod.node}")
    if pod.phase == "Failed":
        return ObservedCondition(kind, F, Reason.VM_FAILED, f"pod {pod.name} failed")
    waiting = pod.waiting_reason
    detail = f": {waiting}" if waiting and waiting not in ROUTINE_WAITING_REASONS else ""
    return ObservedCondition(
        kind, F, Reason.VM_STARTING, f"pod phase {pod.phase or 'unknown'}{detail}"
    )


def _attested(pod: PodFacts | None) -> ObservedCondition:
    kind = ConditionType.ATTESTED
    if pod is None or pod.attested_gate is None:
        return ObservedCondition(kind, F, Reason.AWAITING_ATTESTATION, "evidence not verified yet")
    # The attestation step writes the gate with its own reason; the worker
    # repeats it, so `kubectl get` shows why without reading the pod.
    if pod.attested_gate is T:
        reason = pod.attested_reason or Reason.ATTESTATION_VERIFIED
        return ObservedCondition(kind, T, reason, pod.attested_message or "evidence verified")
    reason = pod.attested_reason or Reason.AWAITING_ATTESTATION
    return ObservedCondition(kind, F, reason, pod.attested_message or "evidence not verified")


def _on_chain(chain: ChainFacts) -> ObservedCondition:
    kind = ConditionType.ON_CHAIN_ALLOWED
    if not chain.enabled:
        return ObservedCondition(
            kind, U, Reason.NO_CHAIN_ACCESS, "the operator runs without --ton-endpoint"
        )
    if chain.model_listed is None:
        if chain.error:
            return ObservedCondition(
                kind, U, Reason.CHAIN_ERROR, f"cannot read the root contract: {chain.error}"
            )
        return ObservedCondition(
            kind, U, Reason.NOT_CHECKED, "the root contract has not been read yet"
        )
    missing = []
    if not chain.model_listed:
        missing.append(f"model hash {chain.model_hash or '?'}")
    if chain.image_listed is False:
        missing.append(f"image hash {chain.image_hash or '?'}")
    if missing:
        why = f"; not registered: {chain.not_registered}" if chain.not_registered else ""
        return ObservedCondition(
            kind,
            F,
            Reason.NOT_LISTED,
            "the root contract does not list the " + " and ".join(missing) + why,
        )
    if chain.image_listed is None:
        return ObservedCondition(
            kind,
            U,
            Reason.NOT_CHECKED,
            "model hash listed; the image hash is looked up once the VM is attested",
        )
    return ObservedCondition(
        kind, T, Reason.LISTED, f"image and model hashes listed (read by {chain.source})"
    )


def _funded(chain: ChainFacts) -> ObservedCondition:
    kind = ConditionType.WALLET_FUNDED
    if not chain.enabled:
        return ObservedCondition(
            kind, U, Reason.NO_CHAIN_ACCESS, "the operator runs without --ton-endpoint"
        )
    if chain.wallet_mismatch is not None:
        return ObservedCondition(kind, F, Reason.WALLET_MISMATCH, chain.wallet_mismatch)
    if chain.awaiting_start is not None:
        return ObservedCondition(kind, F, Reason.AWAITING_START_FUNDING, chain.awaiting_start)
    if chain.balance is None:
        return ObservedCondition(kind, U, Reason.NOT_CHECKED, "checked once the worker is attested")
    return _funded_by_balance(chain, chain.balance)


def _funded_by_balance(chain: ChainFacts, balance: int) -> ObservedCondition:
    kind = ConditionType.WALLET_FUNDED
    note = f"; {chain.funding_note}" if chain.funding_note else ""
    ton = f"{balance / 1e9:.3f} TON"
    if chain.funding_limit == Reason.SHARED_WALLET.value:
        # Another worker's wallet: said whatever its balance (two VMs on one wallet
        # is a misconfiguration the balance does not show).
        status = T if balance >= FUNDING_FLOOR else F
        return ObservedCondition(kind, status, Reason.SHARED_WALLET, f"balance {ton}{note}")
    if balance >= chain.minimum:
        return ObservedCondition(kind, T, Reason.FUNDED, f"balance {ton}{note}")
    # Below the minimum because of the operator's own policy: the reason names it.
    policy = _POLICY_REASONS.get(chain.funding_limit or "")
    if balance >= FUNDING_FLOOR:
        reason = policy or Reason.BELOW_MINIMUM
        return ObservedCondition(kind, T, reason, f"balance {ton}, below the minimum{note}")
    reason = policy or Reason.INSUFFICIENT_BALANCE
    return ObservedCondition(kind, F, reason, f"balance {ton}, below 2.1 TON{note}")


_POLICY_REASONS = {
    r.value: r for r in (Reason.FUNDING_LIMITED, Reason.SHARED_WALLET, Reason.TCB_NOT_FUNDED)
}


def view(
    pod: PodFacts | None,
    *,
    chain: ChainFacts | None = None,
    paused: bool = False,
    deleting: bool = False,
    spec_errors: tuple[str, ...] = (),
    held: str | None = None,
    model: ModelFacts | None = None,
    image_refused: str | None = None,
    seal_waiting: str | None = None,
) -> WorkerView:
    """Conditions and phase for a worker whose launcher pod is ``pod``.

    ``held``: why no VM may run now (see :mod:`cocoon_operator.policy.allowlist`).
    ``model``: the node agent's word on the model, on the pod's node.
    ``image_refused``: why its launcher image may not run here
    (:mod:`cocoon_operator.policy.launcherimages`).
    ``seal_waiting``: why no node may take the VM yet (:mod:`.sealserver`).

    Ready waits for ModelReady only until the VM is attested: a guest whose
    evidence verified has opened its model (the init container finished before
    the launcher started), and what later happens in the node's cache (another
    worker's failed preparation of the same model, gc) does not change that VM.
    """
    scheduled = _scheduled(
        pod, held, seal_waiting, chain.awaiting_start if chain is not None else None
    )
    running, attested = _vm_running(pod), _attested(pod)
    prepared = _model_ready(pod, model or ModelFacts())
    facts = chain if chain is not None else ChainFacts()
    allowed, funded = _on_chain(facts), _funded(facts)
    gates = (scheduled, prepared, running, attested, allowed, funded)
    waived = {prepared.type} if attested.status is T else set()
    not_true = [c.type.value for c in gates if c.status is not T and c.type not in waived]
    if deleting:
        ready = ObservedCondition(
            ConditionType.READY, F, Reason.DELETING, "the worker is being deleted"
        )
        phase = Phase.TERMINATING
    elif spec_errors:
        ready = ObservedCondition(
            ConditionType.READY, F, Reason.INVALID_SPEC, "; ".join(spec_errors)
        )
        phase = Phase.FAILED
    elif image_refused:
        ready = ObservedCondition(ConditionType.READY, F, Reason.IMAGE_NOT_ALLOWED, image_refused)
        phase = Phase.FAILED
    elif paused:
        ready = ObservedCondition(ConditionType.READY, F, Reason.PAUSED, "reconciliation is paused")
        phase = Phase.PAUSED
    elif not_true:
        ready = ObservedCondition(
            ConditionType.READY, F, Reason.NOT_READY, "waiting for: " + ", ".join(not_true)
        )
        phase = _phase(scheduled, running, attested, prepared)
    else:
        ready = ObservedCondition(ConditionType.READY, T, Reason.READY, "serving")
        phase = Phase.READY
    return WorkerView(phase, (*gates, ready))


def _phase(
    scheduled: ObservedCondition,
    running: ObservedCondition,
    attested: ObservedCondition,
    model: ObservedCondition,
) -> Phase:
    if running.reason == Reason.VM_FAILED:
        return Phase.FAILED
    if scheduled.status is not T:
        return Phase.PENDING
    if model.status is not T and attested.status is not T:
        return Phase.FAILED if model.reason == Reason.MODEL_FAILED else Phase.STARTING
    if running.status is not T:
        return Phase.STARTING
    if attested.status is not T:
        return Phase.ATTESTING
    return Phase.REGISTERING  # attested; allow-lists and funding next
