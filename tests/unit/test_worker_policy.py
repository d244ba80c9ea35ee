"""Conditions, worker status, instance choice and the reconcile plan (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cocoon_operator.api.conditions import ConditionType, Phase, Reason
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.labels import ANNOTATION_WORKER_INI
from cocoon_operator.api.v1alpha1 import CocoonWorkerStatus, ConditionStatus
from cocoon_operator.desired.config import worker_config
from cocoon_operator.desired.launcher import revision
from cocoon_operator.policy.conditions import ObservedCondition as Obs
from cocoon_operator.policy.conditions import merge
from cocoon_operator.policy.instances import choose_instance, try_another
from cocoon_operator.policy.worker import ChainFacts, PodFacts, view
from cocoon_operator.reconcile.gather import pod_facts
from cocoon_operator.reconcile.worker import (
    Event,
    Plan,
    held_for_drain,
    phase_event,
    plan,
    with_recorded,
)
from tests.unit.helpers import T0, T1, blocked_pod, observed, running_pod, spec

T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


TON = 1_000_000_000


def test_transition_time_moves_only_when_status_flips() -> None:
    first = merge([], [Obs(ConditionType.SCHEDULED, F, "NoPod")], generation=1, now=T0)
    same = merge(first, [Obs(ConditionType.SCHEDULED, F, "Other", "m")], generation=2, now=T1)
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert (same[0].reason, same[0].message, same[0].observed_generation) == ("Other", "m", 2)
    flipped = merge(same, [Obs(ConditionType.SCHEDULED, T, "Scheduled")], generation=2, now=T1)
    assert flipped[0].last_transition_time == "2026-01-01T00:05:00Z"


def test_merge_keeps_unobserved_conditions_and_orders_them() -> None:
    start = merge(
        [],
        [Obs(ConditionType.READY, F, "NotReady"), Obs(ConditionType.WALLET_FUNDED, T, "Funded")],
        generation=1,
        now=T0,
    )
    after = merge(start, [Obs(ConditionType.SCHEDULED, T, "Scheduled")], generation=1, now=T1)
    assert [c.type for c in after] == ["Scheduled", "WalletFunded", "Ready"]


def by_type(worker_view: Any) -> dict[str, Obs]:
    return {c.type.value: c for c in worker_view.conditions}


def test_no_pod_is_pending_and_not_scheduled() -> None:
    v = view(None)
    assert v.phase is Phase.PENDING
    assert by_type(v)["Scheduled"].reason == Reason.NO_POD
    assert by_type(v)["Ready"].status is F


def test_unschedulable_carries_the_schedulers_message() -> None:
    pod = PodFacts(
        "p", None, "Pending", F, "Unschedulable", "0/5 nodes are available: 5 Insufficient"
    )
    c = by_type(view(pod))["Scheduled"]
    assert (c.status, c.reason) == (F, Reason.UNSCHEDULABLE)
    assert "0/5 nodes" in c.message


def test_running_unattested_is_attesting_and_chain_checks_are_unknown() -> None:
    v = view(running_pod("r"))
    assert v.phase is Phase.ATTESTING
    conds = by_type(v)
    assert conds["VMRunning"].status is T
    assert conds["Attested"].status is F
    assert conds["OnChainAllowed"].status is U
    assert "Attested" in conds["Ready"].message


def test_ready_needs_every_condition_true() -> None:
    # Attested alone is not Ready: the allow-lists and the wallet come next.
    v = view(running_pod("r", attested_gate=T))
    assert by_type(v)["Attested"].status is T
    assert by_type(v)["Ready"].status is F
    assert v.phase is Phase.REGISTERING
    listed = ChainFacts(image_listed=True, model_listed=True, source="worker", balance=6 * TON)
    ready = view(running_pod("r", attested_gate=T), chain=listed)
    assert by_type(ready)["Ready"].status is T
    assert ready.phase is Phase.READY


def test_chain_conditions_name_what_is_missing_and_how_much_is_there() -> None:
    pod = running_pod("r", attested_gate=T)
    unlisted = ChainFacts(
        image_listed=True, model_listed=False, model_hash="ab" * 32, source="worker", balance=0
    )
    conds = by_type(view(pod, chain=unlisted))
    assert conds["OnChainAllowed"].status is F
    assert conds["OnChainAllowed"].reason == Reason.NOT_LISTED
    assert "ab" * 32 in conds["OnChainAllowed"].message
    assert conds["WalletFunded"].reason == Reason.INSUFFICIENT_BALANCE
    low = ChainFacts(image_listed=True, model_listed=True, balance=3 * TON, funding_note="x")
    funded = by_type(view(pod, chain=low))["WalletFunded"]
    assert (funded.status, funded.reason) == (T, Reason.BELOW_MINIMUM)
    off = by_type(view(pod, chain=ChainFacts(enabled=False)))
    assert off["OnChainAllowed"].reason == Reason.NO_CHAIN_ACCESS
    assert off["WalletFunded"].status is U


def test_a_worker_naming_another_wallet_is_not_funded_nor_ready_whatever_its_balance() -> None:
    pod = running_pod("r", attested_gate=T)
    why = "the worker reports node wallet 0:cd, but its key and owner give 0:ab: not funded"
    facts = ChainFacts(image_listed=True, model_listed=True, balance=9 * TON, wallet_mismatch=why)
    v = view(pod, chain=facts)
    funded = by_type(v)["WalletFunded"]
    assert (funded.status, funded.reason, funded.message) == (F, Reason.WALLET_MISMATCH, why)
    assert by_type(v)["Ready"].status is F


def test_a_launcher_refusing_a_release_file_is_a_condition_naming_the_file() -> None:
    said = (
        "launch: release file image.img (/opt/cocoon/release/images/prod/image.img) has"
        " sha256 " + "1" * 64 + ", the spec expects " + "2" * 64
    )
    crashing = {
        "metadata": {"name": "w-r", "labels": {}},
        "spec": {"nodeName": "n1"},
        "status": {
            "phase": "Running",  # restartPolicy Always: the pod runs, the VM does not
            "containerStatuses": [
                {
                    "name": "launcher",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": f"x\n{said}\n"}},
                }
            ],
        },
    }
    running = by_type(view(pod_facts(crashing)))["VMRunning"]
    assert (running.status, running.reason) == (F, Reason.LAUNCH_FAILED)
    assert said in running.message and "image.img" in running.message
    # Once it runs again (a fixed image), the old failure says nothing.
    crashing["status"]["containerStatuses"][0]["state"] = {"running": {}}
    assert by_type(view(pod_facts(crashing)))["VMRunning"].status is T


def test_pause_and_deletion_override_the_phase() -> None:
    assert view(running_pod("r"), paused=True).phase is Phase.PAUSED
    assert by_type(view(running_pod("r"), paused=True))["Ready"].reason == Reason.PAUSED
    assert view(running_pod("r"), deleting=True).phase is Phase.TERMINATING


@pytest.mark.parametrize(
    ("in_use", "avoid", "expected"),
    [
        ({}, frozenset(), 0),
        ({0: 3, 1: 1}, frozenset(), 2),
        ({i: 1 for i in range(10)}, frozenset(), 0),
        ({i: 2 for i in range(10)} | {7: 1}, frozenset(), 7),
        ({}, frozenset({0, 1}), 2),
        ({}, frozenset(range(10)), 0),
    ],
)
def test_choose_instance_spreads_indexes(
    in_use: dict[int, int], avoid: frozenset[int], expected: int
) -> None:
    assert choose_instance(in_use, avoid=avoid) == expected


def test_plan_creates_the_pod_of_a_new_worker_with_its_configuration() -> None:
    p = plan(observed(), now=T0)
    assert [o["kind"] for o in p.apply] == ["Pod"]  # the configuration is in it
    pod = p.apply[0]
    assert pod["metadata"]["annotations"][ANNOTATION_WORKER_INI] == worker_config(
        spec(), InstanceSlot(1)
    )
    assert pod["metadata"]["labels"]["cocoon.network/instance"] == "1"  # 0 is crowded
    assert [e.reason for e in p.events] == ["LauncherCreated"]
    assert p.status["phase"] == "Pending"
    assert p.status["targetRevision"] == revision(spec())


def test_plan_creates_the_launcher_pod_with_the_operators_priority_class() -> None:
    (pod,) = plan(observed(priority_class="cocoon-launchers"), now=T0).apply
    assert pod["spec"]["priorityClassName"] == "cocoon-launchers"
    (pod,) = plan(observed(), now=T0).apply
    assert "priorityClassName" not in pod["spec"]


def test_the_pod_created_is_in_the_same_status_write_and_its_first_sight_adds_none() -> None:
    created = plan(observed(), now=T0)
    (pod,) = created.apply
    assert created.status["pod"] == pod["metadata"]["name"]
    assert created.status["instance"] == 1
    scheduled = next(c for c in created.status["conditions"] if c["type"] == "Scheduled")
    assert scheduled["reason"] == "PodCreated"

    # The watch then shows the pod, pending and not yet placed: nothing to write.
    seen = PodFacts(
        name=pod["metadata"]["name"],
        node=None,
        phase="Pending",
        revision=revision(spec()),
        instance=1,
    )
    status = CocoonWorkerStatus.model_validate(created.status)
    again = plan(observed((seen,), status=status), now=T1)
    assert again.empty, again


def test_plan_is_empty_once_the_world_matches() -> None:
    rev = revision(spec())
    pods = (running_pod(rev),)
    first = plan(observed(pods), now=T0)
    status = CocoonWorkerStatus.model_validate(first.status)
    again = plan(observed(pods, status=status), now=T1)
    assert again.empty, again


def test_plan_rotates_stop_before_start() -> None:
    old = running_pod("oldrev")
    p = plan(observed((old,)), now=T0)
    assert p.delete_pods == ["w-oldrev"]
    assert p.apply == []  # the new VM starts only once the old one is gone
    assert [e.reason for e in p.events] == ["Rotating"]
    waiting = plan(observed((running_pod("oldrev", deleting=True),)), now=T0)
    assert waiting.delete_pods == [] and waiting.apply == []
    gone = plan(observed(()), now=T0)
    assert [o["kind"] for o in gone.apply] == ["Pod"]


def test_paused_plan_touches_nothing_but_status() -> None:
    p = plan(observed((running_pod("oldrev"),), paused=True), now=T0)
    assert p.apply == [] and p.delete_pods == []
    assert p.status["phase"] == "Paused"


def test_deleting_plan_deletes_every_pod_once() -> None:
    rev = revision(spec())
    pods = (running_pod(rev), running_pod("oldrev", deleting=True))
    p = plan(observed(pods, deleting=True), now=T0)
    assert p.delete_pods == [f"w-{rev}"]
    assert p.apply == []
    assert p.status["phase"] == "Terminating"


def test_invalid_addresses_stop_all_actions_and_say_why() -> None:
    errors = ("spec.ownerAddress: bad checksum",)
    p = plan(observed(spec_errors=errors), now=T0)
    assert p.apply == [] and p.delete_pods == []
    assert p.status["phase"] == "Failed"
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.ownerAddress" in ready["message"]


def test_only_ready_failed_and_leaving_ready_are_announced() -> None:
    assert phase_event("Pending", Phase.STARTING) is None
    assert phase_event(None, Phase.READY) is None
    ready = phase_event("Registering", Phase.READY)
    assert ready is not None and not ready.warning
    failed = phase_event("Starting", Phase.FAILED)
    assert failed is not None and failed.warning
    left = phase_event("Ready", Phase.ATTESTING)
    assert left is not None and left.warning and "no longer Ready" in left.message


def test_a_pod_whose_host_ports_are_taken_everywhere_moves_to_another_instance() -> None:
    rev = revision(spec())
    moved = plan(observed((blocked_pod(rev, instance=1),)), now=T0)
    assert moved.delete_pods == [f"w-{rev}"] and moved.apply == []
    assert [e.reason for e in moved.events][:1] == ["InstanceMoved"]
    assert moved.status["instancesTried"] == [1]
    # While it terminates, nothing new: the new pod needs its name.
    tried = CocoonWorkerStatus(instances_tried=[1])
    terminating = blocked_pod(rev, instance=1)
    terminating = dataclasses.replace(terminating, deleting=True)
    waiting = plan(observed((terminating,), status=tried), now=T0)
    assert waiting.apply == [] and waiting.delete_pods == []
    # Once gone, the new pod avoids the index given up (1 would be the least used).
    fresh = plan(observed((), status=tried, instances_in_use={0: 5}), now=T0)
    pod = next(o for o in fresh.apply if o["kind"] == "Pod")
    assert pod["metadata"]["labels"]["cocoon.network/instance"] == "2"
    # Its configuration is the new instance's, not the first one's ports.
    assert pod["metadata"]["annotations"][ANNOTATION_WORKER_INI] == worker_config(
        observed(()).spec, InstanceSlot(2)
    )
    # Scheduled at last: the record of tried indexes is cleared.
    placed = plan(observed((running_pod(rev, instance=2),), status=tried), now=T0)
    assert placed.status["instancesTried"] is None


def test_other_scheduling_failures_do_not_move_the_instance() -> None:
    rev = revision(spec())
    no_gpu = blocked_pod(rev, message="0/5 nodes are available: 5 Insufficient nvidia.com/pgpu.")
    p = plan(observed((no_gpu,)), now=T0)
    assert p.delete_pods == [] and "InstanceMoved" not in [e.reason for e in p.events]


def test_moves_stop_once_every_instance_was_tried() -> None:
    rev = revision(spec())
    nine = CocoonWorkerStatus(instances_tried=[0, 1, 2, 3, 4, 5, 6, 7, 8])
    p = plan(observed((blocked_pod(rev, instance=9),), status=nine), now=T0)
    assert p.delete_pods == []  # ports may hide "no GPU free": stay and say why
    assert p.status["conditions"][0]["reason"] == "Unschedulable"
    assert try_another(range(9), 9) is None
    assert try_another([3], 5) == (3, 5)


def test_revision_of_a_release_without_seal_digests_is_what_it_was_before_they_existed() -> None:
    # 1b5423e105 is the example worker's revision as the code before
    # spec.release.files had enclave/sealServer computes it (for the example's
    # current root address): an operator upgrade must not rename (and so restart)
    # every VM.
    assert revision(spec()) == "1b5423e105"


def test_revision_changes_with_the_release_enclave_digest() -> None:
    files = {**spec().release.files.model_dump(by_alias=True), "enclave": "e" * 64}
    release = {**spec().release.model_dump(by_alias=True), "files": files}
    assert revision(spec(release=release)) != revision(spec())


def test_a_drain_under_way_holds_the_deletion_and_its_announcement_but_not_the_rest() -> None:
    planned = Plan(
        apply=[{"kind": "Pod", "metadata": {"name": "new"}}],
        delete_pods=["old"],
        status={"phase": "Starting"},
        events=[Event("Rotating", "stopping old"), Event("LauncherCreated", "new", creates="new")],
    )
    held = held_for_drain(planned, "draining old: 2 requests in flight")
    assert held.waiting == "draining old: 2 requests in flight"
    assert held.delete_pods == []
    assert [e.reason for e in held.events] == ["LauncherCreated"]
    assert held.apply == planned.apply and held.status == planned.status
    assert planned.delete_pods == ["old"]  # the plan it was given is left as it was


def test_a_steps_recorded_facts_go_out_with_the_plans_status_and_the_plan_wins_a_clash() -> None:
    planned = Plan(status={"phase": "Ready", "wallet": {"balance": "2"}})
    out = with_recorded(planned, {"wallet": {"balance": "1"}, "earnings": {"earnedTokens": 5}})
    assert out.status == {
        "phase": "Ready",
        "wallet": {"balance": "2"},
        "earnings": {"earnedTokens": 5},
    }


def test_the_gpu_the_node_reports_goes_out_in_the_plans_one_status_patch() -> None:
    status = CocoonWorkerStatus(gpu="0000:2b:00.0")
    moved = plan(observed(status=status, gpu="0000:1b:00.0", gpu_known=True), now=T0)
    assert moved.status["gpu"] == "0000:1b:00.0"
    assert "phase" in moved.status  # with the rest of what the reconcile writes
    gone = plan(observed(status=status, gpu=None, gpu_known=True), now=T0)
    assert gone.status["gpu"] is None  # its VM stopped: the GPU is no longer its


def test_without_node_reports_the_gpu_in_status_is_left_alone() -> None:
    status = CocoonWorkerStatus(gpu="0000:2b:00.0")
    assert "gpu" not in plan(observed(status=status), now=T0).status


def test_a_pod_on_its_way_says_its_phase_without_each_routine_waiting_reason() -> None:
    """Each pod event on the way (init containers, then the container being created)
    would otherwise change the VMRunning message: one status write each."""

    def vm_running(waiting: str | None) -> str:
        pod = PodFacts(name="w-r1", node="n1", phase="Pending", waiting_reason=waiting)
        (cond,) = [c for c in view(pod).conditions if c.type is ConditionType.VM_RUNNING]
        return cond.message

    assert vm_running("PodInitializing") == vm_running("ContainerCreating") == vm_running(None)
    assert vm_running("ErrImagePull") == "pod phase Pending: ErrImagePull"
