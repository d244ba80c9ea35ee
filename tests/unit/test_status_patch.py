"""A worker's status is written as a JSON merge patch: a nested field that goes away
must be cleared explicitly, or the apiserver keeps it (found by the chain fault
test: ``status.chain.error`` outlived the outage it described)."""

from __future__ import annotations

from typing import Any

from cocoon_operator.api.v1alpha1 import CocoonWorkerStatus
from cocoon_operator.reconcile.worker import apply_merge_patch, plan
from tests.unit.helpers import T0, T1, observed, reading


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the apiserver applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def test_a_chain_error_is_cleared_once_the_root_contract_reads_again() -> None:
    failed = plan(observed(chain_enabled=True, listing_error="TonTimeoutError: 10 s"), now=T0)
    stored = merge_patch({}, failed.status)
    assert stored["chain"]["error"] == "TonTimeoutError: 10 s"

    status = CocoonWorkerStatus.model_validate(stored)
    recovered = plan(observed(chain_enabled=True, listing=reading(), status=status), now=T1)
    stored = merge_patch(stored, recovered.status)
    assert "error" not in stored["chain"]
    assert stored["chain"]["modelHashListed"] is True

    # What the apiserver now holds plans no further write.
    status = CocoonWorkerStatus.model_validate(stored)
    again = plan(observed(chain_enabled=True, listing=reading(), status=status), now=T1)
    assert "chain" not in again.status


def test_a_steps_facts_are_planned_on_as_the_apiserver_will_store_them() -> None:
    """``apply_merge_patch`` is what the reconcile plans on when a step hands it facts
    to write in the same patch; it must agree with the apiserver's reading."""
    stored = {
        "phase": "Attesting",
        "attestation": {"verdict": "Verified", "error": "old", "gpu": {"mode": "Verify"}},
        "wallet": {"balance": 1},
    }
    patch = {
        "attestation": {"verdict": "Rejected", "error": None, "gpu": {"count": 1}},
        "wallet": None,
        "earnings": {"earnedTokens": 5},
    }
    assert apply_merge_patch(stored, patch) == merge_patch(stored, patch)
    assert apply_merge_patch(stored, patch) == {
        "phase": "Attesting",
        "attestation": {"verdict": "Rejected", "gpu": {"mode": "Verify", "count": 1}},
        "earnings": {"earnedTokens": 5},
    }
    assert stored["wallet"] == {"balance": 1}  # the input is left as it was
