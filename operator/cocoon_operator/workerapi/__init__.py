"""Talking to a running COCOON worker (I/O edge; no Kubernetes).

A worker is reached at its node's address on the instance's host ports: the
HTTP port (stats and the ``/request/...`` controls) and the RA-TLS port, whose
TLS certificate *is* the attestation evidence. Errors are the standard
``OSError``/``TimeoutError`` family, so callers decide what an unreachable
worker means.
"""

from __future__ import annotations

from cocoon_operator.workerapi._ratls import fetch_ratls_certificate
from cocoon_operator.workerapi._stats import (
    CertificateChangedError,
    GpuEvidenceDocument,
    WorkerClient,
    WorkerStats,
    WorkerStatsError,
    fetch_stats,
    parse_gpu_evidence,
    parse_stats,
)

__all__ = [
    "CertificateChangedError",
    "GpuEvidenceDocument",
    "WorkerClient",
    "WorkerStats",
    "WorkerStatsError",
    "fetch_ratls_certificate",
    "fetch_stats",
    "parse_gpu_evidence",
    "parse_stats",
]
