"""COCOON worker simulator: the worker's HTTP endpoints and RA-TLS evidence, on loopback.

For tests and the local stack only. It serves a real worker's HTTP port as
COCOON's source has it (``/jsonstats``, ``/stats``, ``/perf``, the
``/request/...`` controls; 400 "not found" before initialisation) and, as a
stand-in until the quote relay, presents an RA-TLS certificate whose TDX quote
is signed by the TEST DCAP
PKI of :mod:`cocoon_operator.attestation.testing.pki`. That PKI is trusted only
where a caller selects its root explicitly (``TdxVerifier(sim.trusted_root)``
and ``TdxPolicy(require_production_root=False, ...)``); production verification
refuses it. See ``docs/simulator.md``.

In process::

    sim = await start_simulator(proxies=1)
    ...  # sim.http_url, sim.tls_port, sim.trusted_root, sim.collateral
    await sim.stop()

As a process: ``python -m cocoon_operator.simulator --instance 0 --port 12000``.
"""

from __future__ import annotations

from cocoon_operator.simulator._evidence import (
    RaTlsEvidence,
    fetch_peer_certificate,
    tamper_quote,
)
from cocoon_operator.simulator._server import (
    BASE_PORT,
    DEFAULT_MODEL,
    DEFAULT_RELEASE,
    Faults,
    SimulatorConfig,
    WorkerSimulator,
    payout_requests,
    start_simulator,
    worker_http_port,
)
from cocoon_operator.simulator._state import (
    NANO,
    STAT_WINDOWS,
    LoadModel,
    ProxyState,
    WorkerState,
    friendly_address,
)

__all__ = [
    "BASE_PORT",
    "DEFAULT_MODEL",
    "DEFAULT_RELEASE",
    "NANO",
    "STAT_WINDOWS",
    "Faults",
    "LoadModel",
    "ProxyState",
    "RaTlsEvidence",
    "SimulatorConfig",
    "WorkerSimulator",
    "WorkerState",
    "fetch_peer_certificate",
    "friendly_address",
    "payout_requests",
    "start_simulator",
    "tamper_quote",
    "worker_http_port",
]
