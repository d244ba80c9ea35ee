"""Prometheus metrics of the operator: one :class:`Metrics` per process, built by ``run``.

Money is exported in nanoTON (integers as floats are exact below 2**53, i.e.
up to ~9 million TON per series). Label sets are bounded: per-worker series
carry namespace and name and are removed when the worker goes.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cocoon_operator.api.conditions import Phase


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
