"""The admission handlers as kopf registers them, and the finalizer a new worker gets."""

from __future__ import annotations

import kopf
import pytest
from kopf._core.intents.causes import WebhookType

from cocoon_operator.api import v1alpha1
from cocoon_operator.handlers import admission
from cocoon_operator.handlers.admission import with_finalizer
from cocoon_operator.policy.launcherimages import LauncherImages


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
