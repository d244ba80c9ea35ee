"""The launcher images the operator allows: its configuration, matched by digest (pure)."""

from __future__ import annotations

import re

import pytest

from cocoon_operator.api.conditions import Reason
from cocoon_operator.desired.launcher import revision
from cocoon_operator.policy.launcherimages import (
    LauncherImages,
    image_digest,
    image_errors,
    introduced_image_errors,
    introduced_template_image_errors,
)
from cocoon_operator.reconcile.worker import plan
from tests.unit.helpers import T0, observed, running_pod, spec

DIGEST = "sha256:" + "fe" * 32
OTHER = "sha256:" + "0a" * 32
IMAGE = f"registry.local/cocoon/launcher@{DIGEST}"


def raw_spec(image: str = IMAGE) -> dict[str, object]:
    return {"release": {"image": image}, "coefficient": 1000}


def test_an_image_is_named_by_its_digest_alone() -> None:
    assert image_digest(IMAGE) == DIGEST
    assert image_digest(DIGEST) == DIGEST
    assert image_digest(f"mirror.example/launcher:1.0@{DIGEST}") == DIGEST
    assert image_digest("registry.local/cocoon/launcher:latest") is None
    assert image_digest(f"registry.local/launcher@sha256:{'FE' * 32}") is None


def test_the_allowed_digest_runs_from_any_registry_and_nothing_else_does() -> None:
    allowed = LauncherImages.parse([IMAGE])
    assert image_errors(raw_spec(), allowed) == []
    assert image_errors(raw_spec(f"mirror.example/cocoon@{DIGEST}"), allowed) == []
    (error,) = image_errors(raw_spec(f"registry.local/cocoon/launcher@{OTHER}"), allowed)
    assert error.startswith("spec.release.image: ")
    assert OTHER in error and "--launcher-image" in error and "launcher.allowedImages" in error


def test_an_operator_told_nothing_allows_no_image_and_says_which_setting_to_set() -> None:
    (error,) = image_errors(raw_spec(), LauncherImages())
    assert error.startswith("spec.release.image: ")
    assert "allows no launcher image" in error and "--launcher-image" in error


def test_allow_any_is_an_explicit_choice() -> None:
    anything = LauncherImages.parse([], allow_any=True)
    assert image_errors(raw_spec(f"x.example/y@{OTHER}"), anything) == []


def test_a_configured_image_not_pinned_by_digest_is_refused_at_start() -> None:
    with pytest.raises(
        ValueError, match=re.escape("--launcher-image 'registry.local/launcher:1.0'")
    ):
        LauncherImages.parse([IMAGE, "registry.local/launcher:1.0"])


def test_only_an_update_that_changes_the_image_is_refused() -> None:
    """A worker created while its image was allowed (or the webhook was down) must
    still take other edits, its finalizer's removal and its deletion."""
    allowed = LauncherImages.parse([IMAGE])
    refused = raw_spec(f"registry.local/cocoon/launcher@{OTHER}")
    assert introduced_image_errors(refused, None, allowed) == image_errors(refused, allowed)
    assert introduced_image_errors({**refused, "coefficient": 1500}, refused, allowed) == []
    assert introduced_image_errors(raw_spec(), refused, allowed) == []  # the fix
    (error,) = introduced_image_errors(refused, raw_spec(), allowed)  # a change to another image
    assert OTHER in error


def test_a_spec_without_a_release_is_left_to_the_schema() -> None:
    assert image_errors({}, LauncherImages()) == []
    assert image_errors({"release": "x"}, LauncherImages()) == []


def test_a_refused_image_gets_no_pod_and_ready_says_why() -> None:
    refusal = LauncherImages.parse([IMAGE]).refusal(f"x.example/launcher@{OTHER}")
    p = plan(observed(image_refused=refusal), now=T0)
    assert p.apply == [] and p.delete_pods == []
    ready = {c["type"]: c for c in p.status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", Reason.IMAGE_NOT_ALLOWED)
    assert ready["message"] == refusal
    assert p.status["phase"] == "Failed"


def test_a_running_pod_of_an_image_taken_off_the_list_is_left_to_the_administrator() -> None:
    rev = revision(spec())
    refusal = "spec.release.image: not allowed"
    p = plan(observed((running_pod(rev),), image_refused=refusal), now=T0)
    assert p.apply == [] and p.delete_pods == []
    # Gone (deleted by an administrator, evicted, crashed): never started again.
    again = plan(observed(image_refused=refusal), now=T0)
    assert again.apply == []


def test_deletion_still_stops_the_vm_of_a_refused_image() -> None:
    rev = revision(spec())
    p = plan(observed((running_pod(rev),), image_refused="no", deleting=True), now=T0)
    assert p.delete_pods == [running_pod(rev).name]


def test_a_pool_template_with_an_image_not_allowed_is_refused_naming_the_template_field() -> None:
    allowed = LauncherImages.parse([IMAGE])
    other = f"x.example/launcher@{OTHER}"
    pool = {"replicas": 2, "template": {"spec": {"release": {"image": other}}}}
    (error,) = introduced_template_image_errors(pool, None, allowed)
    assert error.startswith("spec.template.spec.release.image: ")
    ok = {"replicas": 2, "template": {"spec": {"release": {"image": IMAGE}}}}
    assert introduced_template_image_errors(ok, None, allowed) == []
    # An update that leaves the template's image alone passes (scaling, other fields).
    assert introduced_template_image_errors({**pool, "replicas": 3}, pool, allowed) == []
    assert introduced_template_image_errors(pool, ok, allowed) == [error]
