"""The admission handlers as kopf registers them, and the finalizer a new worker gets."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf._core.intents.causes import WebhookType

from cocoon_operator.api import v1alpha1
from cocoon_operator.handlers import admission
from cocoon_operator.handlers.admission import with_finalizer
from cocoon_operator.policy.launcherimages import LauncherImages

Doc = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]


def test_a_new_worker_gets_the_operators_finalizer_once() -> None:
    assert with_finalizer(None) == [v1alpha1.WORKER_FINALIZER]
    assert with_finalizer([]) == [v1alpha1.WORKER_FINALIZER]
    assert with_finalizer(["other.io/keep"]) == ["other.io/keep", v1alpha1.WORKER_FINALIZER]
    assert with_finalizer([v1alpha1.WORKER_FINALIZER]) is None
    assert with_finalizer(["other.io/keep", v1alpha1.WORKER_FINALIZER]) is None


def test_the_finalizer_webhook_mutates_creates_only_and_fails_open() -> None:
    registry = kopf.OperatorRegistry()
    admission.register(registry, LauncherImages())
    hooks = {h.id: h for h in registry._webhooks.get_all_handlers()}
    finalizer = hooks["finalizer"]
    assert finalizer.reason == WebhookType.MUTATING
    assert list(finalizer.operations or []) == ["CREATE"]
    assert finalizer.ignore_failures is True
    assert hooks["addresses"].reason == WebhookType.VALIDATING
    assert hooks["launcher-image"].reason == WebhookType.VALIDATING
    assert list(hooks["launcher-image"].operations or []) == ["CREATE", "UPDATE"]


def test_the_image_webhook_refuses_an_image_the_operator_does_not_allow() -> None:
    allowed = "registry.local/launcher@sha256:" + "fe" * 32
    other = "registry.local/launcher@sha256:" + "0a" * 32
    validate = admission.image_validator(LauncherImages.parse([allowed]))

    def spec_of(image: str) -> kopf.Spec:
        return kopf.Body({"spec": {"release": {"image": image}}}).spec

    validate(spec=spec_of(allowed), operation="CREATE")
    with pytest.raises(kopf.AdmissionError, match=r"spec\.release\.image"):
        validate(spec=spec_of(other), operation="CREATE")
    # An update that leaves the image alone passes (its finalizer's removal, say).
    stored = {"spec": {"release": {"image": other}}}
    validate(spec=spec_of(other), operation="UPDATE", old=stored)


def test_the_finalizer_goes_into_the_admission_patch() -> None:
    body = kopf.Body({"metadata": {"name": "w", "finalizers": ["other.io/keep"]}})
    patch = kopf.Patch(body=body)
    admission.add_finalizer(body=body, patch=patch)
    assert patch.as_json_patch() == [
        {"op": "add", "path": "/metadata/finalizers/1", "value": v1alpha1.WORKER_FINALIZER}
    ]
    done = kopf.Body({"metadata": {"name": "w", "finalizers": [v1alpha1.WORKER_FINALIZER]}})
    patch = kopf.Patch(body=done)
    admission.add_finalizer(body=done, patch=patch)
    assert patch.as_json_patch() == []


# --- a follower's answers (standby_review), as kopf's handlers would give them ---

BAD_OWNER = "UQC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH6GD"  # last character changed


def review(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> Doc:
    request: Doc = {"uid": "u-1", "operation": operation, "namespace": "ns", "object": obj}
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def worker(**spec: Any) -> Doc:
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    body: Doc = next(d for d in docs if d["kind"] == v1alpha1.KIND)
    body["spec"].update(spec)
    body["metadata"]["namespace"] = "ns"
    return body


def patch_of(answer: Doc) -> list[Doc]:
    assert answer["response"]["patchType"] == "JSONPatch"
    ops: list[Doc] = json.loads(base64.b64decode(answer["response"]["patch"]))
    return ops


def test_a_follower_refuses_a_bad_address_naming_the_field_as_the_leader_does() -> None:
    answer = admission.standby_review("addresses", review("CREATE", worker(ownerAddress=BAD_OWNER)))
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "u-1"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 422
    assert "spec.ownerAddress: bad checksum" in answer["response"]["status"]["message"]
    good = admission.standby_review("addresses", review("CREATE", worker()))
    assert good["response"] == {"uid": "u-1", "allowed": True}


def test_a_follower_lets_an_update_keep_an_address_that_was_already_bad() -> None:
    stuck = worker(ownerAddress=BAD_OWNER)
    labelled = copy.deepcopy(stuck)
    labelled["metadata"]["labels"] = {"x": "y"}
    answer = admission.standby_review("addresses", review("UPDATE", labelled, stuck))
    assert answer["response"]["allowed"] is True


def test_a_follower_adds_the_finalizer_to_a_new_worker_once() -> None:
    fresh = worker()
    fresh["metadata"].pop("finalizers", None)
    ops = patch_of(admission.standby_review("finalizer", review("CREATE", fresh)))
    assert ops == [
        {"op": "add", "path": "/metadata/finalizers", "value": [v1alpha1.WORKER_FINALIZER]}
    ]
    fresh["metadata"]["finalizers"] = ["other.io/keep"]
    ops = patch_of(admission.standby_review("finalizer", review("CREATE", fresh)))
    assert ops == [
        {"op": "add", "path": "/metadata/finalizers/-", "value": v1alpha1.WORKER_FINALIZER}
    ]
    fresh["metadata"]["finalizers"] = [v1alpha1.WORKER_FINALIZER]
    done = admission.standby_review("finalizer", review("CREATE", fresh))
    assert "patch" not in done["response"]


def test_a_follower_leaves_unwatched_namespaces_and_unknown_paths_alone() -> None:
    bad = review("CREATE", worker(ownerAddress=BAD_OWNER))
    assert admission.standby_review("addresses", bad, ["team-a"])["response"]["allowed"]
    fresh = worker()
    fresh["metadata"].pop("finalizers", None)
    other = admission.standby_review("finalizer", review("CREATE", fresh), ["team-a"])
    assert "patch" not in other["response"]
    assert admission.standby_review("nonsense", bad)["response"]["allowed"]
    assert (
        "patch"
        in admission.standby_review("finalizer", review("CREATE", fresh), ["ns"])["response"]
    )


def test_a_follower_refuses_a_launcher_image_the_operator_does_not_allow() -> None:
    image = worker()["spec"]["release"]["image"]
    allowed = LauncherImages.parse([image])
    other = image.rsplit("@", 1)[0] + "@sha256:" + "ab" * 32
    release = {**worker()["spec"]["release"], "image": other}
    answer = admission.standby_review(
        "launcher-image", review("CREATE", worker(release=release)), (), allowed
    )
    assert answer["response"]["allowed"] is False
    assert "spec.release.image" in answer["response"]["status"]["message"]
    ok = admission.standby_review("launcher-image", review("CREATE", worker()), (), allowed)
    assert ok["response"]["allowed"] is True


def test_the_validating_webhook_applies_the_operators_gpu_verify_flag() -> None:
    spec = kopf.Body({"spec": {"attestation": {"gpu": {"mode": "Verify"}}}}).spec
    for allowed in (False, True):
        registry = kopf.OperatorRegistry()
        admission.register(registry, LauncherImages(), allow_gpu_verify=allowed)
        validate = {h.id: h for h in registry._webhooks.get_all_handlers()}["addresses"].fn
        if allowed:
            validate(spec=spec, operation="CREATE")
        else:
            with pytest.raises(kopf.AdmissionError, match=r"spec\.attestation\.gpu\.mode"):
                validate(spec=spec, operation="CREATE")


def test_a_follower_refuses_gpu_verify_mode_unless_the_operator_allows_it() -> None:
    verify = worker(attestation={"gpu": {"mode": "Verify"}})
    refused = admission.standby_review("addresses", review("CREATE", verify))
    assert refused["response"]["allowed"] is False
    assert "spec.attestation.gpu.mode" in refused["response"]["status"]["message"]
    allowed = admission.standby_review("addresses", review("CREATE", verify), allow_gpu_verify=True)
    assert allowed["response"]["allowed"] is True


def test_the_pool_webhook_refuses_a_template_image_the_operator_does_not_allow() -> None:
    image = worker()["spec"]["release"]["image"]
    registry = kopf.OperatorRegistry()
    admission.register(registry, LauncherImages.parse([image]))
    handlers = {h.id: h for h in registry._webhooks.get_all_handlers()}
    validate = handlers["pool-launcher-image"].fn
    other = image.rsplit("@", 1)[0] + "@sha256:" + "ab" * 32
    bad = kopf.Body({"spec": {"replicas": 1, "template": {"spec": {"release": {"image": other}}}}})
    with pytest.raises(kopf.AdmissionError, match=r"spec\.template\.spec\.release\.image"):
        validate(spec=bad.spec, operation="CREATE")
    good = kopf.Body({"spec": {"replicas": 1, "template": {"spec": {"release": {"image": image}}}}})
    validate(spec=good.spec, operation="CREATE")
    answer = admission.standby_review(
        "pool-launcher-image",
        review("CREATE", {"metadata": {"namespace": "ns"}, "spec": dict(bad.spec)}),
        (),
        LauncherImages.parse([image]),
    )
    assert answer["response"]["allowed"] is False
