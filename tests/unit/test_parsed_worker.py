"""handlers/parsed.py: a worker's body parsed once per resourceVersion."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cocoon_operator.handlers.parsed import forget_worker, parse_worker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cocoonworker.yaml"


def body(uid: str | None = "uid-1", version: str | None = "10") -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "CocoonWorker")
    meta = {"name": "w0", "namespace": "ns"}
    if uid is not None:
        meta["uid"] = uid
    if version is not None:
        meta["resourceVersion"] = version
    return {**doc, "metadata": meta}


def test_the_same_version_of_a_worker_is_parsed_once_and_a_new_one_again() -> None:
    first = parse_worker(body())
    assert parse_worker(body()) is first
    changed = body(version="11")
    changed["spec"]["coefficient"] = 1500
    again = parse_worker(changed)
    assert again is not first
    assert again.spec.coefficient == 1500


def test_a_body_without_uid_or_version_is_parsed_every_time() -> None:
    assert parse_worker(body(uid=None)) is not parse_worker(body(uid=None))
    assert parse_worker(body(version=None)) is not parse_worker(body(version=None))


def test_a_refused_body_is_not_remembered_and_a_forgotten_worker_is_parsed_afresh() -> None:
    bad = copy.deepcopy(body(uid="uid-2", version="5"))
    bad["spec"]["model"] = "not a model"
    with pytest.raises(ValidationError):
        parse_worker(bad)
    good = parse_worker(body(uid="uid-2", version="5"))
    assert parse_worker(body(uid="uid-2", version="5")) is good
    forget_worker("uid-2")
    assert parse_worker(body(uid="uid-2", version="5")) is not good
