"""The in-process diff base: the essence kopf's own storage would build, kept by uid."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf
import pytest

from cocoon_operator.api.labels import KOPF_PREFIX, PAUSE_ANNOTATION
from cocoon_operator.handlers import checks
from cocoon_operator.handlers.checks import Check
from cocoon_operator.handlers.runtime import DIFFED_GROUPS, Runtime
from cocoon_operator.k8s.diffbase import LeanAnnotationsProgressStorage, MemoryDiffBaseStorage
from tests.unit.helpers import operator_registry

PAUSED = ("metadata", "annotations", PAUSE_ANNOTATION)


def _body(uid: str = "u-1", **spec: Any) -> kopf.Body:
    raw = {
        "apiVersion": "cocoon.network/v1alpha1",
        "kind": "CocoonWorker",
        "metadata": {
            "name": "w",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": "7",
            "generation": 3,
            "finalizers": ["cocoon.network/finalizer"],
            "labels": {"team": "a"},
            "annotations": {
                PAUSE_ANNOTATION: "true",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                f"{KOPF_PREFIX}/checks": '{"started": "x"}',
                "note": "kept",
            },
        },
        "spec": {"model": {"name": "m"}, "coefficient": 1000, **spec},
        "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def test_the_essence_is_the_one_kopfs_annotation_storage_builds() -> None:
    body = _body()
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key="last-handled-configuration")
    ours = MemoryDiffBaseStorage()
    for extra in ([], [PAUSED], ["status.phase"], ["metadata.finalizers"]):
        assert ours.build(body=body, extra_fields=extra) == kopfs.build(
            body=body, extra_fields=extra
        ), extra


def test_building_leaves_the_body_alone() -> None:
    body = _body()
    before = copy.deepcopy(dict(body))
    essence = MemoryDiffBaseStorage().build(body=body, extra_fields=[PAUSED])
    essence["spec"]["coefficient"] = 2  # type: ignore[index]
    assert dict(body) == before


def test_nothing_is_stored_for_an_object_this_process_has_not_handled() -> None:
    assert MemoryDiffBaseStorage().fetch(body=_body()) is None


def test_a_stored_essence_comes_back_for_the_same_object_only() -> None:
    storage = MemoryDiffBaseStorage()
    body = _body()
    essence = storage.build(body=body)
    storage.store(body=body, patch=kopf.Patch(), essence=essence)
    assert storage.fetch(body=body) == essence
    # The same name, re-created: another uid, nothing stored for it.
    assert storage.fetch(body=_body(uid="u-2")) is None
    # What fetch returns is a copy: kopf may change it without changing ours.
    fetched = storage.fetch(body=body)
    assert fetched is not None
    fetched["spec"]["coefficient"] = 5  # type: ignore[index]
    assert storage.fetch(body=body) == essence


def test_storing_writes_nothing_to_the_object() -> None:
    storage = MemoryDiffBaseStorage()
    body, patch = _body(), kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch


def test_a_spec_change_shows_against_the_stored_essence() -> None:
    storage = MemoryDiffBaseStorage()
    body = _body()
    storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    changed = _body(coefficient=1500)
    assert storage.fetch(body=changed) != storage.build(body=changed)
    status_only = _body()
    status_only["status"]["phase"] = "Registering"  # type: ignore[index]
    assert storage.fetch(body=status_only) == storage.build(body=status_only)


def test_a_deleted_object_is_forgotten() -> None:
    storage = MemoryDiffBaseStorage()
    one, two = _body("u-1"), _body("u-2")
    for body in (one, two):
        storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    storage.forget(one)
    assert storage.fetch(body=one) is None
    assert storage.fetch(body=two) is not None
    assert len(storage) == 1


def test_an_object_without_uid_is_not_stored() -> None:
    storage = MemoryDiffBaseStorage()
    body = _body(uid="")
    storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    assert len(storage) == 0
    assert storage.fetch(body=body) is None


def _pod() -> kopf.Body:
    raw = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "p-1", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "launcher", "image": "x"}]},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def test_an_object_outside_the_tracked_groups_gets_an_empty_essence() -> None:
    storage = MemoryDiffBaseStorage(groups={"cocoon.network"})
    assert storage.build(body=_pod()) == {}
    # The operator's own objects still get kopf's essence.
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key="last-handled-configuration")
    assert storage.build(body=_body()) == kopfs.build(body=_body())
    assert MemoryDiffBaseStorage().build(body=_pod()) == kopfs.build(body=_pod())


def test_only_the_operators_own_group_has_handlers_that_diff_or_idle() -> None:
    """kopf looks at an essence only for create/update/resume handlers (the diff) and
    timers and daemons (whether a change resets their idling): each such handler's
    group must be tracked, or its objects' changes would go unseen."""
    registry = operator_registry()
    checks.register(registry, Runtime(), [Check("resync", _noop, 600.0)])
    tracked = MemoryDiffBaseStorage(groups=DIFFED_GROUPS)
    handlers = [*registry._changing.get_all_handlers(), *registry._spawning.get_all_handlers()]
    assert {h.id for h in handlers} >= {"reconcile_worker", "reconcile_pool", "resync_pool"}
    for handler in handlers:
        body = {"apiVersion": f"{handler.selector.group}/v1alpha1"}
        assert tracked.tracks(body), (handler.id, handler.selector.group)
    assert not tracked.tracks({"apiVersion": "v1"})


async def _noop(tick: object) -> None:
    return None


def test_clearing_an_essence_without_kopfs_annotations_returns_it_uncopied() -> None:
    """kopf's progress annotations are there only while a handler is retried."""
    lean = LeanAnnotationsProgressStorage(prefix=KOPF_PREFIX)
    kopfs = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    body = _body()
    del body["metadata"]["annotations"][f"{KOPF_PREFIX}/checks"]  # type: ignore[index]
    essence = MemoryDiffBaseStorage().build(body=body)
    assert lean.clear(essence=essence) == kopfs.clear(essence=essence)
    assert lean.clear(essence=essence) is essence  # not copied: nothing to strip


@pytest.mark.parametrize(
    "essence",
    [
        {"spec": {"a": 1}, "metadata": {"annotations": {f"{KOPF_PREFIX}/progress": "{}"}}},
        {"spec": {"a": 1}, "metadata": {"labels": {}, "annotations": {"note": "x"}}},
        {"spec": {"a": 1}, "metadata": {}},
        {"spec": {"a": 1}, "status": {}},
    ],
    ids=["kopf-annotation", "empty-labels", "empty-metadata", "empty-status"],
)
def test_clearing_strips_what_kopfs_clear_strips_and_leaves_the_input_alone(
    essence: dict[str, Any],
) -> None:
    lean = LeanAnnotationsProgressStorage(prefix=KOPF_PREFIX)
    kopfs = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    before = copy.deepcopy(essence)
    cleared = lean.clear(essence=cast(kopf.BodyEssence, essence))
    assert cleared == kopfs.clear(essence=cast(kopf.BodyEssence, copy.deepcopy(before)))
    assert cleared != before
    assert essence == before
