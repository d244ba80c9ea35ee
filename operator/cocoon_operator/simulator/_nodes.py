"""Node reports for the simulated nodes: what the per-node agent would publish.

kwok's nodes have no host to probe, so the simulation agent stands in for the
DaemonSet (:mod:`cocoon_operator.nodeagent`) too: every simulated node has
eight H100s bound to ``vfio-pci`` and passes every host check, and each
simulated worker VM is reported running on the node of its launcher pod with
one of those GPUs, as the launcher's state file would say on a real host. The
reports go through the real agent's :class:`~cocoon_operator.nodeagent._publish.Publisher`,
so the operator reads exactly what it reads in production: the readiness gate
gets the host's vouching and each VM's latest relayed quote (from a
:data:`QuoteSource`, as the agent reads the launcher's quotes file), and
``status.gpu`` the VM's PCI address. Each node's models come from its simulated
cache (``models_root/<node>``, see :mod:`cocoon_operator.simulator._models`),
read by the real agent's reader; with gc options, the real agent's collection
(:func:`~cocoon_operator.nodeagent._models.gc_pass`) runs over that cache, keeping
the models the node's simulated launcher records name (``modelVerity``, as
``launcher/_run.py`` writes them beside each VM).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cocoon_operator import __version__
from cocoon_operator.api.nodereport import (
    GpuDevice,
    GuestHealthReport,
    HostCheck,
    NodeReport,
    VmRecord,
)
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.launcher import FileQuote, state_file
from cocoon_operator.nodeagent._models import GcOptions, gc_pass, read_models
from cocoon_operator.nodeagent._probe import relayed
from cocoon_operator.nodeagent._publish import Publisher

SIMULATED_GPUS = 8  # capacity nvidia.com/pgpu of a simulated CC node
H100_SXM5 = "10de:2330"
log = logging.getLogger(__name__)
CHECKS = ("tdx", "kvm", "vhost-vsock", "gpus-vfio", "quote-service", "seal-server")


@dataclass(frozen=True)
class SimulatedQuote:
    """A simulated VM's latest quote, as the launcher's relay would have kept it."""

    quote: FileQuote
    misfiled: bool = False  # fault: the report files it under another pod's uid


#: The latest quote of the VM of a launcher pod (by uid), None when it has none yet.
QuoteSource = Callable[[str], SimulatedQuote | None]
#: What the guest health monitor of the VM of a launcher pod (by uid) last said, as the
#: node agent reads it from the launcher's health file; None when there is no reading.
HealthSource = Callable[[str], GuestHealthReport | None]
MISFILED_PREFIX = "misfiled-"


def simulated_gpus() -> list[GpuDevice]:
    """The GPUs of every simulated CC node: eight H100s on vfio-pci."""
    return [
        GpuDevice(
            pci=f"0000:{0x18 + 0x10 * i:02x}:00.0",
            device_id=H100_SXM5,
            driver="vfio-pci",
            iommu_group=str(20 + i),
        )
        for i in range(SIMULATED_GPUS)
    ]


class SimulatedNodes:
    """The VMs running on each simulated node, published as that node's report."""

    def __init__(
        self,
        api: Kube,
        namespace: str,
        heartbeat: dt.timedelta,
        models_root: Path | None = None,
        gc: GcOptions | None = None,
    ) -> None:
        self.models_root = models_root or Path(tempfile.mkdtemp(prefix="cocoon-sim-models-"))
        # Each node's launcher state directory (``/run/cocoon`` on a real node).
        self.state_root = Path(tempfile.mkdtemp(prefix="cocoon-sim-state-"))
        # Removed by :meth:`close` (a models root passed in is the caller's).
        self._scratch = [self.state_root, *(() if models_root else (self.models_root,))]
        self._gc = gc if gc is not None and gc.enabled else None
        self._gc_last = 0.0
        self._records: dict[str, Path] = {}
        self._api = api
        self._namespace = namespace
        self._heartbeat = heartbeat
        self._gpus = simulated_gpus()
        self._vms: dict[str, dict[str, VmRecord]] = {}
        self._publishers: dict[str, Publisher] = {}
        self.quote_source: QuoteSource = lambda _uid: None
        self.health_source: HealthSource = lambda _uid: None

    def close(self) -> None:
        """Remove the directories made for these nodes (their model caches, state)."""
        for scratch in self._scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    def started(
        self,
        node: str,
        *,
        namespace: str,
        worker: str,
        pod: str,
        pod_uid: str,
        instance: int,
        node_wallet: str | None = None,
        model_verity: str | None = None,
    ) -> VmRecord:
        """Record a VM on ``node`` holding the first GPU no other VM there holds, and
        its launcher's state record naming its model (which the gc keeps)."""
        vms = self._vms.setdefault(node, {})
        taken = {vm.pci for vm in vms.values()}
        pci = next((g.pci for g in self._gpus if g.pci not in taken), None)
        vm = VmRecord(
            instance=instance,
            namespace=namespace,
            worker=worker,
            pod=pod,
            pod_uid=pod_uid,
            pci=pci,
            pid=os.getpid(),
            running=True,
            node_wallet=node_wallet,
        )
        vms[pod_uid] = vm
        record = state_file(self.state_root / node, instance)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps({"instance": instance, "podUid": pod_uid, "modelVerity": model_verity})
        )
        self._records[pod_uid] = record
        return vm

    def stopped(self, pod_uid: str) -> str | None:
        """Forget the VM of launcher pod ``pod_uid``; the node it ran on, if it was known."""
        record = self._records.pop(pod_uid, None)
        if record is not None:
            record.unlink(missing_ok=True)  # the launcher's exit removes its record
        for node, vms in self._vms.items():
            if vms.pop(pod_uid, None) is not None:
                return node
        return None

    def _with_quotes(self, vm: VmRecord) -> list[VmRecord]:
        vm = vm.model_copy(update={"health": self.health_source(vm.pod_uid)})
        found = self.quote_source(vm.pod_uid)
        if found is None:
            return [vm]
        quote = relayed(found.quote)
        if found.misfiled:
            # The fault: the quote sits under a record of another pod's uid.
            other = vm.model_copy(update={"pod_uid": MISFILED_PREFIX + vm.pod_uid, "quote": quote})
            return [vm, other]
        return [vm.model_copy(update={"quote": quote})]

    def model_cache(self, node: str) -> Path:
        """The simulated node's model cache (``/var/lib/cocoon/models`` on a real node)."""
        self._vms.setdefault(node, {})  # a node with a cache is published with the rest
        return self.models_root / node

    def report(self, node: str) -> NodeReport:
        vms = sorted(self._vms.get(node, {}).values(), key=lambda vm: vm.instance)
        return NodeReport(
            node=node,
            agent_version=f"{__version__}+simulated",
            checks=[HostCheck(name=name, ok=True, message="simulated host") for name in CHECKS],
            gpus=self._gpus,
            vms=[out for vm in vms for out in self._with_quotes(vm)],
            models=read_models(self.models_root / node),
        )

    async def publish(self, node: str, now: dt.datetime) -> bool:
        publisher = self._publishers.get(node)
        if publisher is None:
            publisher = Publisher(self._api, self._namespace, self._heartbeat)
            self._publishers[node] = publisher
        return await publisher.publish(self.report(node), now)

    async def collect_due(self) -> None:
        """The agent's gc over every simulated node's cache, when its interval has passed."""
        options = self._gc
        if options is None or time.monotonic() - self._gc_last < options.interval:
            return
        self._gc_last = time.monotonic()
        for node in list(self._vms):
            cache = self.models_root / node
            if cache.is_dir():
                await asyncio.to_thread(gc_pass, cache, self.state_root / node, options)

    async def publish_all(self, now: dt.datetime) -> None:
        """Every node seen so far (a heartbeat; unchanged reports are not rewritten)."""
        for node in list(self._vms):
            await self.publish(node, now)
