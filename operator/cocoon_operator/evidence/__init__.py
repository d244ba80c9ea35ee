"""Obtaining and verifying a running worker's evidence (I/O edge, no Kubernetes).

:class:`EvidenceChecker` fetches the RA-TLS certificate a worker presents,
verifies the TDX quote inside it with :mod:`cocoon_operator.attestation`
(pinned root, collateral from a PCCS through a cache) and applies the worker's
policy. It returns an outcome value and never raises for bad or missing
evidence: what an outcome means for readiness is decided by
:mod:`cocoon_operator.policy.attestation`.
"""

from __future__ import annotations

from cocoon_operator.evidence._checker import EvidenceChecker, Fetch

__all__ = ["EvidenceChecker", "Fetch"]
