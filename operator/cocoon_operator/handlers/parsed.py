"""A CocoonWorker body parsed once per resourceVersion, for every step that reads it.

Each periodic step (attestation, chain, coefficient) and the reconcile parse the
worker's body into the typed model before deciding; at a fleet's scale
pydantic's validation was a large share of the operator's steady-state CPU
(docs/bench.md), and nearly always of a body already parsed by the step before (a worker's body
changes a few times an hour at steady state, its checks run every few seconds).

The apiserver gives one content per resourceVersion of an object, and every
body here is the apiserver's (kopf's watch, or the answer to the operator's own
write: ``k8s/latest.py``), so (uid, resourceVersion) names the parse exactly.
Only the newest parse of each worker is kept (one entry per worker), and the
parsed models are frozen (``api/v1alpha1.py``), so sharing them is safe. A body
without a uid or resourceVersion (a test's hand-made one) is parsed every time.

Only for bodies exactly as the apiserver sent them: the reconcile parses its own,
because a step hands it a copy with just-learned status merged in under the
same resourceVersion (``reconcile_body(recorded=...)``); a cached parse there
derived the conditions from the status before the step's facts (a cluster test,
``test_each_step_writes_its_facts_and_the_conditions_they_imply_at_once``, saw
the wallet written without WalletFunded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cocoon_operator.api.v1alpha1 import CocoonWorker

_newest: dict[str, tuple[str, CocoonWorker]] = {}


def parse_worker(body: Mapping[str, Any]) -> CocoonWorker:
    """``body`` as a :class:`CocoonWorker`; raises pydantic's ``ValidationError`` as
    ``model_validate`` does (a refused body is not remembered)."""
    meta = body.get("metadata") or {}
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    if not isinstance(uid, str) or not isinstance(version, str):
        return CocoonWorker.model_validate(dict(body))
    hit = _newest.get(uid)
    if hit is not None and hit[0] == version:
        return hit[1]
    parsed = CocoonWorker.model_validate(dict(body))
    _newest[uid] = (version, parsed)
    return parsed


def forget_worker(uid: str | None) -> None:
    """Drop a deleted worker's parse."""
    if uid:
        _newest.pop(uid, None)
