"""k8s/compact.py (strings shared between held bodies) and malloc.py (glibc's settings)."""

import json
import sys

from cocoon_operator import malloc
from cocoon_operator.k8s.compact import MAX_INTERNED, intern_strings


def _decoded(doc: object) -> object:
    """As kopf's watch decodes an event: new string objects every time."""
    return json.loads(json.dumps(doc))


DOC = {
    "metadata": {"name": "w0001", "labels": {"app": "cocoon"}},
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T23:00:00Z"},
            {"type": "Attested", "status": "True", "message": "x" * (MAX_INTERNED + 1)},
        ],
        "instance": 3,
        "paused": False,
    },
}


def test_interning_keeps_the_content_and_the_key_order() -> None:
    a = _decoded(DOC)
    assert intern_strings(a) is a  # changed in place: kopf holds that very dict
    assert a == DOC
    assert json.dumps(a) == json.dumps(DOC)  # same order at every level


def test_keys_and_short_values_of_two_bodies_are_one_object_each() -> None:
    a, b = intern_strings(_decoded(DOC)), intern_strings(_decoded(DOC))
    ca, cb = a["status"]["conditions"][0], b["status"]["conditions"][0]
    assert [id(k) for k in ca] == [id(k) for k in cb]
    assert ca["status"] is cb["status"] and ca["lastTransitionTime"] is cb["lastTransitionTime"]


def test_long_strings_are_left_alone() -> None:
    a, b = intern_strings(_decoded(DOC)), intern_strings(_decoded(DOC))
    long_a = a["status"]["conditions"][1]["message"]
    assert long_a == b["status"]["conditions"][1]["message"]
    assert long_a is not b["status"]["conditions"][1]["message"]


def test_a_bare_string_comes_back_interned() -> None:
    text = "".join(["Rea", "dy"])  # built at run time: not interned by the compiler
    assert intern_strings(text) is sys.intern("Ready")


def test_every_allocator_setting_is_applied_unless_the_environment_sets_it() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    applied = malloc.tune_allocator({"MALLOC_ARENA_MAX": "4"}, mallopt)
    assert applied == ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
    assert calls == [(malloc.M_MMAP_THRESHOLD, 65536), (malloc.M_TRIM_THRESHOLD, 131072)]


def test_a_setting_glibc_refuses_is_not_reported_applied() -> None:
    assert malloc.tune_allocator({}, lambda param, value: 0) == []


def test_on_this_machine_glibc_takes_the_settings() -> None:
    # The test images and CI run glibc; mallopt answers 1 for each valid setting.
    if malloc._glibc_mallopt() is None:
        assert malloc.tune_allocator({}) == []
    else:
        assert len(malloc.tune_allocator({})) == len(malloc.SETTINGS)
