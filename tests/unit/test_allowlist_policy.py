"""The allow-list gate: no VM for unlisted hashes, readings per revision, no churn (pure)."""

from __future__ import annotations

import hashlib

from cocoon_operator.api.conditions import ConditionType, Reason
from cocoon_operator.api.v1alpha1 import ChainStatus, CocoonWorkerStatus
from cocoon_operator.policy import allowlist
from cocoon_operator.reconcile.worker import plan
from tests.unit.helpers import IMAGE, MODEL, REV, T0, T1, observed, reading, running_pod, spec


def conds(p: object) -> dict[str, dict[str, str]]:
    status = p.status  # type: ignore[attr-defined]
    return {c["type"]: c for c in status["conditions"]}


def test_model_hash_is_sha256_of_the_cocoon_id() -> None:
    model = spec().model
    assert hashlib.sha256(model.cocoon_id.encode()).hexdigest() == MODEL
    assert model.cocoon_id.count("@") == 1 and ":" in model.cocoon_id


def test_unlisted_model_starts_no_vm_and_names_the_hash() -> None:
    p = plan(observed(chain_enabled=True, listing=reading(model=False)), now=T0)
    assert p.apply == [] and p.delete_pods == []
    c = conds(p)
    assert c["OnChainAllowed"]["status"] == "False"
    assert c["OnChainAllowed"]["reason"] == Reason.NOT_LISTED
    assert MODEL in c["OnChainAllowed"]["message"]
    assert c["Scheduled"]["reason"] == Reason.NOT_LISTED
    assert MODEL in c["Scheduled"]["message"]
    assert p.status["chain"]["modelHashListed"] is False
    assert p.status["chain"]["revision"] == REV
    assert [(e.reason, e.warning) for e in p.events] == [("NotListed", True)]
    # The same reading again: no Event, no write, still no VM.
    status = CocoonWorkerStatus.model_validate(p.status)
    again = plan(observed(chain_enabled=True, listing=reading(model=False), status=status), now=T1)
    assert again.empty, again


def test_held_worker_starts_once_listed() -> None:
    held = plan(observed(chain_enabled=True, listing=reading(model=False)), now=T0)
    status = CocoonWorkerStatus.model_validate(held.status)
    p = plan(observed(chain_enabled=True, listing=reading(), status=status), now=T1)
    assert [o["kind"] for o in p.apply] == ["Pod"]
    assert p.status["chain"]["modelHashListed"] is True
    assert p.status["chain"]["checkedAt"] == "2026-01-01T00:05:00Z"  # it changed


def test_unlisted_attested_image_stops_the_vm_unless_the_operator_registers_it() -> None:
    pods = (running_pod(REV),)
    p = plan(
        observed(pods, chain_enabled=True, listing=reading(image=False)),
        now=T0,
    )
    assert p.delete_pods == [pods[0].name]
    assert {e.reason for e in p.events} == {"NotListed", "StoppingUnlisted"}
    assert IMAGE in conds(p)["OnChainAllowed"]["message"]
    registering = plan(
        observed(pods, chain_enabled=True, listing=reading(image=False), registering=True),
        now=T0,
    )
    assert registering.delete_pods == []
    assert conds(registering)["OnChainAllowed"]["reason"] == Reason.NOT_LISTED


def test_reading_of_an_old_revision_holds_nothing() -> None:
    old = ChainStatus(
        revision="oldrev", model_hash=MODEL, model_hash_listed=False, source=allowlist.OPERATOR
    )
    assert allowlist.hold(old, REV, registering=False) is None
    p = plan(observed(chain_enabled=True, status=CocoonWorkerStatus(chain=old)), now=T0)
    assert [o["kind"] for o in p.apply] == ["Pod"]
    assert conds(p)["OnChainAllowed"]["reason"] == Reason.NOT_CHECKED


def test_failed_read_holds_nothing_keeps_the_last_reading_and_says_why() -> None:
    p = plan(observed(chain_enabled=True, listing_error="TonTimeoutError: 10 s"), now=T0)
    assert [o["kind"] for o in p.apply] == ["Pod"]  # not held by an outage
    c = conds(p)["OnChainAllowed"]
    assert (c["status"], c["reason"]) == ("Unknown", Reason.CHAIN_ERROR)
    assert "TonTimeoutError" in c["message"]
    listed = allowlist.record(None, reading(image=True), None, T0)
    assert listed is not None
    failed = allowlist.record(listed, None, "HTTP 502", T1)
    assert failed is not None and failed.error == "HTTP 502"
    assert failed.model_hash_listed is True and failed.image_hash_listed is True
    assert failed.image_hash_listed is True  # an outage does not unlist anybody
    again = allowlist.record(failed, reading(image=True), None, T1)
    assert again == listed  # error cleared, checkedAt of the unchanged values kept


def test_image_unknown_until_attested_is_not_yet_allowed() -> None:
    pods = (running_pod(REV),)
    p = plan(observed(pods, chain_enabled=True, listing=reading()), now=T0)
    c = conds(p)[ConditionType.ON_CHAIN_ALLOWED.value]
    assert (c["status"], c["reason"]) == ("Unknown", Reason.NOT_CHECKED)
    assert p.delete_pods == []


def test_only_the_operators_positive_reading_of_the_verified_image_allows_funding() -> None:
    both = reading(image=True)
    assert allowlist.listed(both, REV, IMAGE)
    assert not allowlist.listed(both, "otherrev", IMAGE)
    assert not allowlist.listed(both, REV, None)  # nothing verified (now)
    assert not allowlist.listed(both, REV, "cd" * 32)  # read for another image than verified
    assert not allowlist.listed(reading(), REV, IMAGE)  # image not attested when read
    assert not allowlist.listed(reading(image=False), REV, IMAGE)
    assert not allowlist.listed(reading(model=False, image=True), REV, IMAGE)
    assert not allowlist.listed(None, REV, IMAGE)


def test_what_to_register_comes_from_the_operators_own_reading_of_this_revision() -> None:
    assert allowlist.unregistered(reading(model=False, image=False), REV) == [
        ("model", MODEL),
        ("worker", IMAGE),
    ]
    assert allowlist.unregistered(reading(image=True), REV) == []
    assert allowlist.unregistered(reading(model=False), REV) == [("model", MODEL)]
    assert allowlist.unregistered(reading(image=False), "otherrev") == []
    assert allowlist.unregistered(None, REV) == []


def test_without_chain_access_readings_are_ignored() -> None:
    p = plan(observed(chain_enabled=False, listing=reading(model=False)), now=T0)
    assert [o["kind"] for o in p.apply] == ["Pod"]
    assert conds(p)["OnChainAllowed"]["reason"] == Reason.NO_CHAIN_ACCESS
