"""The operator decides on the newest copy of a worker it knows (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from cocoon_operator.api.v1alpha1 import ConditionStatus
from cocoon_operator.desired.launcher import READINESS_GATE
from cocoon_operator.handlers.worker import Deps
from cocoon_operator.k8s.latest import LatestObjects, newer, resource_version
from cocoon_operator.reconcile.gather import pod_facts


def obj(rv: str, *, uid: str = "u1", phase: str = "Pending", name: str = "w") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv},
        "status": {"phase": phase},
    }


def test_resource_versions_compare_as_integers_not_strings() -> None:
    assert resource_version(obj("10")) == 10
    assert newer(obj("10"), obj("9"))  # "10" < "9" as strings
    assert not newer(obj("9"), obj("10"))
    assert not newer(obj("9"), obj("9"))


def test_an_opaque_or_missing_resource_version_never_counts_as_newer() -> None:
    assert resource_version(obj("abc")) is None
    assert not newer(obj("abc"), obj("1"))
    assert not newer(obj("2"), obj("abc"))
    assert not newer({"metadata": {"uid": "u1"}}, obj("1"))


def test_a_recreated_object_is_not_a_later_state_of_the_old_one() -> None:
    assert not newer(obj("20", uid="u2"), obj("10", uid="u1"))


def test_the_operators_own_write_wins_over_an_older_body() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", phase="Ready"))
    got = latest.freshest(obj("10", phase="Registering"))
    assert got["status"]["phase"] == "Ready"
    assert len(latest) == 1  # kept until the watch catches up


def test_the_copy_is_dropped_once_the_watch_delivers_it_or_something_newer() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", phase="Ready"))
    body = obj("11", phase="Ready")
    assert latest.freshest(body) is body
    assert len(latest) == 0

    latest.wrote(obj("11", phase="Ready"))
    body = obj("15", phase="Failed")  # someone else wrote after us
    assert latest.freshest(body) is body
    assert len(latest) == 0


def test_a_copy_handed_on_by_a_step_is_not_taken_for_the_watch_catching_up() -> None:
    # A timer takes our copy over kopf's older body, then hands it to the
    # reconcile, which asks again: kopf has still not seen version 11.
    latest = LatestObjects()
    latest.wrote(obj("11", phase="Ready"))
    ours = latest.freshest(obj("10", phase="Registering"))
    assert latest.freshest(ours, delivered=False) is ours
    assert latest.freshest(obj("10", phase="Registering"))["status"]["phase"] == "Ready"
    # Something newer than our copy is newer whoever hands it over.
    body = obj("12", phase="Failed")
    assert latest.freshest(body, delivered=False) is body
    assert len(latest) == 0


def test_only_a_newer_write_replaces_the_held_copy() -> None:
    latest = LatestObjects()
    latest.wrote(obj("12", phase="Ready"))
    latest.wrote(obj("11", phase="Attesting"))  # an answer that arrived late
    assert latest.freshest(obj("10"))["status"]["phase"] == "Ready"
    latest.wrote(None)  # the object was gone: nothing to hold
    assert len(latest) == 1


def test_objects_are_held_apart_and_forgotten_on_deletion() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", name="a", phase="Ready"))
    latest.wrote(obj("12", name="b", phase="Failed"))
    assert latest.freshest(obj("5", name="a"))["status"]["phase"] == "Ready"
    assert latest.freshest(obj("5", name="b"))["status"]["phase"] == "Failed"
    latest.forget(("ns", "a"))
    assert latest.freshest(obj("5", name="a"))["status"]["phase"] == "Pending"


def test_a_recreated_worker_is_decided_on_from_its_own_body() -> None:
    latest = LatestObjects()
    latest.wrote(obj("11", uid="old", phase="Ready"))
    body = obj("30", uid="new")
    assert latest.freshest(body) is body
    assert len(latest) == 0


def launcher(rv: str, *, gate: str | None) -> dict[str, Any]:
    conditions = [] if gate is None else [{"type": READINESS_GATE, "status": gate}]
    return {
        "metadata": {"namespace": "ns", "name": "w-abc", "uid": "p1", "resourceVersion": rv},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "conditions": conditions},
    }


def test_a_gate_we_wrote_counts_before_the_pods_watch_delivers_it() -> None:
    # A gate not yet in the index would be verified and announced again.
    deps = Deps(api=cast(Any, None), clock=lambda: dt.datetime.now(dt.UTC))
    index = {("ns", "w"): [pod_facts(launcher("5", gate=None))]}
    deps.latest_pods.wrote(launcher("7", gate="True"))
    (pod,) = deps.worker_pods(cast(Any, index), "ns", "w")
    assert pod.attested_gate is ConditionStatus.TRUE
    # The watch caught up (and someone closed the gate since): the index wins.
    index = {("ns", "w"): [pod_facts(launcher("9", gate="False"))]}
    (pod,) = deps.worker_pods(cast(Any, index), "ns", "w")
    assert pod.attested_gate is ConditionStatus.FALSE
    assert len(deps.latest_pods) == 0
