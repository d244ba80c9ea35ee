"""Talking to a running COCOON worker (I/O edge; no Kubernetes).

A worker serves one port, plain HTTP ``12000 + 10*i``: ``/jsonstats`` and
``/stats`` for what it reports, the ``/request/...`` controls
(:class:`WorkerClient`). The operator reaches it at its node's address on
the launcher's control relay, ``12002 + 10*i``, with requests it signed
(:class:`ControlSigner`, :class:`ControlKeys`; ``launcher/_controlrelay.py``). The RA-TLS
certificate fetch (and the GPU evidence beside it) serves the attestation
step only, until the quote relay replaces it. Errors are the standard
``OSError``/``TimeoutError`` family when nothing came back, so callers decide
what an unreachable worker means.
"""

from __future__ import annotations

from cocoon_operator.workerapi._coefficient import applied_per_mille, wire_coefficient
from cocoon_operator.workerapi._http import (
    MAX_BODY_BYTES,
    ControlRefusedError,
    WorkerClient,
    fetch_stats,
    short_answer,
)
from cocoon_operator.workerapi._ratls import (
    CertificateChangedError,
    GpuEvidenceDocument,
    fetch_gpu_evidence,
    fetch_ratls_certificate,
    parse_gpu_evidence,
)
from cocoon_operator.workerapi._signing import (
    ControlKeyError,
    ControlKeys,
    ControlSigner,
    generate_private_key_text,
)
from cocoon_operator.workerapi._stats import (
    ProxyEarnings,
    StatusPage,
    WorkerNotInitialisedError,
    WorkerStats,
    WorkerStatsError,
    parse_stats,
    parse_status_page,
)

__all__ = [
    "MAX_BODY_BYTES",
    "CertificateChangedError",
    "ControlKeyError",
    "ControlKeys",
    "ControlRefusedError",
    "ControlSigner",
    "GpuEvidenceDocument",
    "ProxyEarnings",
    "StatusPage",
    "WorkerClient",
    "WorkerNotInitialisedError",
    "WorkerStats",
    "WorkerStatsError",
    "applied_per_mille",
    "fetch_gpu_evidence",
    "fetch_ratls_certificate",
    "fetch_stats",
    "generate_private_key_text",
    "parse_gpu_evidence",
    "parse_stats",
    "parse_status_page",
    "short_answer",
    "wire_coefficient",
]
