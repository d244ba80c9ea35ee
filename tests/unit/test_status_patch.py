"""A worker's status is written as a JSON merge patch: a nested field that goes away
must be cleared explicitly, or the apiserver keeps it (found by the chain fault
test: ``status.chain.error`` outlived the outage it described)."""

from __future__ import annotations

from typing import Any

from cocoon_operator.api.v1alpha1 import CocoonWorkerStatus
from cocoon_operator.reconcile.worker import plan
from tests.unit.test_allowlist_policy import reading
from tests.unit.test_worker_policy import T0, T1, observed


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
