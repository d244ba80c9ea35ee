"""Prometheus metrics of the operator: one :class:`Metrics` per process, built by ``run``.

Money is exported in nanoTON (integers as floats are exact below 2**53, i.e.
up to ~9 million TON per series). Label sets are bounded: per-worker series
carry namespace and name and are removed when the worker goes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cocoon_operator.api.conditions import Phase

# The container's memory limit: cgroup v2, then v1 (a container sees its own cgroup).
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
# cgroup v1 writes "no limit" as the largest page-aligned 63-bit number.
_NO_LIMIT_FROM = 2**62


def memory_limit_bytes(text: str) -> int | None:
    """A cgroup's memory limit file (``memory.max``, ``memory.limit_in_bytes``) in
    bytes; None when it sets no limit (``max``, v1's near-2**63) or is not a number."""
    value = text.strip()
    if not value.isdigit():
        return None
    limit = int(value)
    return limit if 0 < limit < _NO_LIMIT_FROM else None


def resident_bytes(statm: str, page_size: int) -> int:
    """The resident set in bytes from ``/proc/<pid>/statm`` (its second field, in pages)."""
    return int(statm.split()[1]) * page_size


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _own_limit() -> int | None:
    for path in CGROUP_MEMORY_LIMITS:
        text = _read(path)
        if text is not None:
            return memory_limit_bytes(text)
    return None


def _own_resident() -> int | None:
    text = _read(Path("/proc/self/statm"))
    return resident_bytes(text, os.sysconf("SC_PAGE_SIZE")) if text is not None else None


class MemoryCollector(Collector):
    """The operator's resident memory and its container's limit, read at each scrape.

    The operator's memory grows with the fleet, most while many workers come up at
    once (docs/deploy.md, "Sizing"); the kernel kills it at the limit, and the
    restart replays the same ramp. Both figures side by side let an alert fire
    before that (``CocoonOperatorMemoryHigh``). No limit, or none readable (not in
    a container, not Linux): the limit's family has no sample.
    """

    def __init__(
        self,
        resident: Callable[[], int | None] = _own_resident,
        limit: Callable[[], int | None] = _own_limit,
    ) -> None:
        self._resident, self._limit = resident, limit

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Both families always, a sample only when known: the set of names the
        # operator exports does not depend on where it runs.
        for name, doc, value in (
            (
                "cocoon_operator_resident_memory_bytes",
                "the operator process's resident memory",
                self._resident(),
            ),
            (
                "cocoon_operator_memory_limit_bytes",
                "the memory limit of the operator's container (its cgroup); none: no limit",
                self._limit(),
            ),
        ):
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            yield family


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, memory: Collector | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.workers = Gauge("cocoon_workers", "CocoonWorkers by phase", ["phase"], registry=r)
        self.reconcile_seconds = Histogram(
            "cocoon_reconcile_duration_seconds",
            "one worker reconcile, gather to status",
            registry=r,
        )
        self.reconcile_errors = Counter(
            "cocoon_reconcile_errors_total", "reconciles that raised", ["kind"], registry=r
        )
        self.attestations = Counter(
            "cocoon_attestation_verifications_total",
            "full evidence verifications by result and failed step",
            ["result", "reason"],
            registry=r,
        )
        self.attestation_checks = Counter(
            "cocoon_attestation_checks_total",
            "attestation checks by their evidence: a quote the launcher relayed (from the"
            " node report), or none reported for the pod's VM",
            ["evidence"],
            registry=r,
        )
        self.balance = Gauge(
            "cocoon_wallet_balance_nanoton",
            "node wallet balance read from the chain",
            ["namespace", "worker"],
            registry=r,
        )
        self.earned_tokens = Gauge(
            "cocoon_earned_tokens",
            "tokens the worker reports committed to the blockchain",
            ["namespace", "worker"],
            registry=r,
        )
        self.funding_transfers = Counter(
            "cocoon_funding_transfers_total",
            "node-wallet top-ups by outcome (confirmed, pending, expired, failed, refused)",
            ["outcome"],
            registry=r,
        )
        self.funding_nanoton = Counter(
            "cocoon_funding_nanoton_total", "nanoTON confirmed sent to node wallets", registry=r
        )
        self.funding_pending_seconds = Gauge(
            "cocoon_funding_oldest_pending_intent_seconds",
            "age of the oldest treasury message not yet resolved (0: none); nothing new"
            " is signed while one is",
            registry=r,
        )
        self.payout_requests = Counter(
            "cocoon_payout_requests_total", "payouts requested from proxies", registry=r
        )
        self.worker_stats_reads = Counter(
            "cocoon_worker_stats_reads_total",
            "chain checks of attested workers, by whether they read the worker's /jsonstats"
            " (read) or went by its last reading (kept: Ready and asking nothing)",
            ["reading"],
            registry=r,
        )
        self.chain_errors = Counter(
            "cocoon_chain_errors_total", "failed TON API calls", ["operation"], registry=r
        )
        self.chain_seconds = Histogram(
            "cocoon_chain_request_duration_seconds", "TON API calls", ["operation"], registry=r
        )
        self.node_host_ready = Gauge(
            "cocoon_node_host_ready",
            "1 when every host check of the node's agent passes, else 0",
            ["node"],
            registry=r,
        )
        self.orphaned_vms = Gauge(
            "cocoon_orphaned_vms",
            "worker VMs still running on the node with no launcher pod",
            ["node"],
            registry=r,
        )
        self.probes_running = Gauge(
            "cocoon_probes_running",
            "worker probes (attestation, chain, coefficient) holding a slot of the budget",
            registry=r,
        )
        self.probes_waiting = Gauge(
            "cocoon_probes_waiting",
            "worker probes waiting for a slot: urgent (a worker not yet Ready) or routine",
            ["urgency"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "cocoon_event_loop_lag_seconds",
            "how late the operator's event loop runs what is due (recent, decaying);"
            " above 0.1 s Ready workers' re-checks are spaced out",
            registry=r,
        )
        r.register(memory if memory is not None else MemoryCollector())
        self._phases: dict[tuple[str, str], str] = {}
        self._phase_counts = dict.fromkeys((p.value for p in Phase), 0)
        for value in self._phase_counts:
            self.workers.labels(value).set(0)

    def set_probes(self, running: int, urgent: int, routine: int) -> None:
        """The probe budget's occupancy (``ProbeBudget(on_change=...)``)."""
        self.probes_running.set(running)
        self.probes_waiting.labels("urgent").set(urgent)
        self.probes_waiting.labels("routine").set(routine)

    def set_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record a worker's phase (None: the worker is gone) and refresh the gauge."""
        key = (namespace, name)
        if phase is None:
            for gauge in (self.balance, self.earned_tokens):
                with contextlib.suppress(KeyError):  # never had a series
                    gauge.remove(namespace, name)
        # Counted as they change, not recounted: every reconcile of every worker
        # lands here, and a recount over the fleet made the reconciles O(N) each.
        old = self._phases.pop(key, None) if phase is None else self._phases.get(key)
        if phase is not None:
            self._phases[key] = phase
        if old == phase:
            return
        if old is not None:
            self._phase_counts[old] -= 1
            self.workers.labels(old).set(self._phase_counts[old])
        if phase is not None:
            self._phase_counts[phase] = self._phase_counts.get(phase, 0) + 1
            self.workers.labels(phase).set(self._phase_counts[phase])

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's port
        start_http_server(port, addr=addr, registry=self.registry)
