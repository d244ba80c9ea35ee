"""The local stack's stand-in for what runs on a node: one simulated worker per launcher pod.

On real nodes the launcher boots a TDX VM whose worker port QEMU forwards to
the pod's loopback, and publishes its control relay on the node's address at
12002+10i (``launcher/_controlrelay.py``). kwok runs no containers, so this
agent watches launcher pods and, for each one that kwok reports Running, starts
a :class:`~cocoon_operator.simulator.WorkerSimulator` whose worker port listens
on ``127.0.0.1`` at a port of its own (where the loopback forward is; no
simulated node's ``hostIP`` is 127.0.0.1), and in front of it the launcher's
own :class:`~cocoon_operator.launcher._controlrelay.ControlRelay` on the pod's
``hostIP`` (each simulated node has its own loopback address) at the relay's
port, trusting the public key and pod UID the pod gives the launcher. The
simulated worker is configured from the pod's worker config (model, owner,
coefficient) with TD measurements derived from the release image; its
harness (admin, the documents without faults) listens on ``hostIP`` at
:func:`harness_port`, a test's ``kubectl exec``. It stops the simulator when the
pod goes. One test PKI serves all of them; the agent also runs one PCCS
stand-in for the operator's collateral, and one quote generation service
stand-in (:mod:`._quotepath`) behind a launcher quote relay per VM, through
which each simulated guest asks for its quotes at start, on every key refresh
and hourly; the node reports carry what the relays captured.

    python -m cocoon_operator.simulator.agent [--kubeconfig K] [--namespace NS]
        [--fault NAME]... --root-out FILE [--gpu-root-out FILE]
        [--node-reports NAMESPACE]

prints one JSON line (``pccs_url``, ``test_root``, ``test_root_sha256``, and
``gpu_test_root`` when asked for) once ready, then serves until SIGINT/SIGTERM.
For tests and the local stack only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.labels import (
    ANNOTATION_WORKER_INI,
    COMMON_LABELS,
    LABEL_INSTANCE,
    LABEL_WORKER,
)
from cocoon_operator.api.nodereport import GuestHealthReport
from cocoon_operator.argparsing import positive_seconds
from cocoon_operator.attestation.testing.gpu import (
    DEFAULT_GPU_SEED,
    GpuTestPki,
    generate_test_gpu_pki,
)
from cocoon_operator.attestation.testing.pki import DEFAULT_SEED, DcapTestPki, generate_test_pki
from cocoon_operator.attestation.testing.quotes import TdMeasurements
from cocoon_operator.desired.config import GPU_ENV
from cocoon_operator.desired.launcher import MODEL_INIT_CONTAINER
from cocoon_operator.k8s.client import load
from cocoon_operator.k8s.kubeconfig import load as load_connection
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.launcher import FileQuote, LaunchError, operator_argv
from cocoon_operator.launcher._controlrelay import ControlRelay
from cocoon_operator.launcher._plan import FORWARD_ADDRESS
from cocoon_operator.launcher._quoterelay import InetAddress, UnixAddress
from cocoon_operator.launcher._run import HealthPoller, control_access, prepare_launch
from cocoon_operator.launcher.cli import DIGEST_FLAGS
from cocoon_operator.models import GcPolicy, ModelId, Phase, parse_model_spec
from cocoon_operator.nodeagent._models import GcOptions
from cocoon_operator.nodeagent._probe import read_health
from cocoon_operator.qgs import QgsWireError
from cocoon_operator.simulator._evidence import GARBAGE_QUOTE, tamper_quote
from cocoon_operator.simulator._guest import GuestBootError, GuestConfig, boot
from cocoon_operator.simulator._health import SimulatedHealthMonitor, mismatched
from cocoon_operator.simulator._models import prepare_model
from cocoon_operator.simulator._nodes import SimulatedNodes, SimulatedQuote
from cocoon_operator.simulator._quotepath import (
    QuoteRefusedError,
    SimulatedQgs,
    SimulatedQuotePath,
)
from cocoon_operator.simulator._release import write_release
from cocoon_operator.simulator._server import Faults, SimulatorConfig, WorkerSimulator

log = logging.getLogger("cocoon_operator.simulator.agent")
HEARTBEAT_SECONDS = 30.0
PROBE_SECONDS = 2.0
QUOTE_REFRESH_SECONDS = 3600.0  # cocoon-cert-refresh.timer: OnUnitInactiveSec=1h
# The PCI address the simulated device plugin hands every launcher.
SIMULATED_GPU = "0000:1b:00.0"

# The simulation harness's port of instance i on its node (12009+10i): no COCOON
# port (12000, 12001, 12005) and not the launcher's relay (12002); the pod does
# not publish it.
HARNESS_OFFSET = 9


def harness_port(slot: InstanceSlot) -> int:
    """Where the simulated worker of ``slot`` serves the harness's paths alone."""
    return slot.http_port + HARNESS_OFFSET


SELECTOR = ",".join(
    f"{k}={COMMON_LABELS[k]}"
    for k in ("app.kubernetes.io/managed-by", "app.kubernetes.io/component")
)


@dataclass(frozen=True)
class PodWorker:
    """What a launcher pod tells the node about the worker it should run."""

    key: str  # namespace/name/uid
    host: str
    node: str
    pod: str
    pod_uid: str
    slot: InstanceSlot
    image: str
    worker_ini: str | None  # the operator's rendered configuration (a pod annotation)
    namespace: str
    worker: str


def pod_worker(pod: dict[str, Any]) -> PodWorker | None:
    """The worker a Running launcher pod asks for, or None if it is not running."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status") or {}
    instance = (meta.get("labels") or {}).get(LABEL_INSTANCE, "")
    host = status.get("hostIP")
    if (
        meta.get("deletionTimestamp")
        or status.get("phase") != "Running"
        or not host
        or not instance.isdigit()
    ):
        return None
    containers = spec.get("containers") or [{}]
    return PodWorker(
        key=f"{meta['namespace']}/{meta['name']}/{meta.get('uid', '')}",
        host=host,
        node=spec.get("nodeName", ""),
        pod=meta["name"],
        pod_uid=meta.get("uid", ""),
        slot=InstanceSlot(int(instance)),
        image=containers[0].get("image", ""),
        worker_ini=(meta.get("annotations") or {}).get(ANNOTATION_WORKER_INI),
        namespace=meta["namespace"],
        worker=(meta.get("labels") or {}).get(LABEL_WORKER, meta["name"]),
    )


def init_container_model(pod: dict[str, Any]) -> ModelId | None:
    """The model id the pod's init container ``model`` ensures (its ``--model=``)."""
    for container in pod.get("spec", {}).get("initContainers") or []:
        if container.get("name") != MODEL_INIT_CONTAINER:
            continue
        for arg in container.get("args") or []:
            text = str(arg)
            if text.startswith("--model="):
                spec = parse_model_spec(text.removeprefix("--model="))
                if spec.commit is not None and spec.verity is not None:
                    return ModelId(spec.name, spec.commit, spec.verity)
    return None


def expected_digests(pod: dict[str, Any]) -> dict[str, str | None]:
    """The release digests the launcher container is told to check (its --expect-* args)."""
    (container, *_) = pod.get("spec", {}).get("containers") or [{}]
    flags = {flag: name for flag, name in DIGEST_FLAGS}
    out: dict[str, str | None] = {}
    for arg in container.get("args") or []:
        flag, _, value = str(arg).removeprefix("--expect-").partition("-sha256=")
        if flag in flags and value:
            out[flags[flag]] = value
    return out


def control_public_key(pod: dict[str, Any]) -> str | None:
    """The control public key the launcher container is given (its --control-public-key)."""
    (container, *_) = pod.get("spec", {}).get("containers") or [{}]
    for arg in container.get("args") or []:
        flag, _, value = str(arg).partition("=")
        if flag == "--control-public-key":
            return value
    return None


def secret_files(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Where the launcher container finds each Secret key: path -> (Secret name, key)."""
    spec = pod.get("spec", {})
    (container, *_) = spec.get("containers") or [{}]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    out: dict[str, tuple[str, str]] = {}
    for volume in spec.get("volumes") or []:
        if volume.get("name") not in mounts or "projected" not in volume:
            continue
        for source in volume["projected"].get("sources") or []:
            secret = source.get("secret") or {}
            for item in secret.get("items") or []:
                path = f"{mounts[volume['name']]}/{item['path']}"
                out[path] = (secret["name"], item["key"])
    return out


def prepare_guest(
    pod: dict[str, Any],
    worker: PodWorker,
    release: Path,
    secrets: dict[str, str],
) -> GuestConfig:
    """Run the launcher's own preparation for the pod, as the container would on a node,
    and boot the simulated guest from the argv and spec share it produced."""

    def read_secret(path: str) -> str:
        if path not in secrets:
            raise LaunchError(f"cannot read {path}: the pod mounts no such Secret key")
        return secrets[path].strip()

    with tempfile.TemporaryDirectory(prefix="cocoon-sim-") as tmp:
        conf = Path(tmp) / "worker.conf"
        conf.write_text(worker.worker_ini or "")
        prepared = prepare_launch(
            conf,
            release,
            Path(tmp) / "vm" / "spec",
            env={GPU_ENV: SIMULATED_GPU},
            expected=expected_digests(pod),
            read_secret=read_secret,
        )
        guest = boot(operator_argv(prepared.plan))
        return dataclasses.replace(guest, node_wallet=prepared.node_wallet)


def simulator_config(
    worker: PodWorker,
    guest: GuestConfig | None,
    faults: Faults | None = None,
    ton_endpoint: str | None = None,
) -> SimulatorConfig:
    """The simulator for ``worker``: its ports, its release's measurements, and the
    configuration its guest reads from the spec share. With ``ton_endpoint`` its runner
    waits there for its node wallet's 2.1 TON before initialising, as COCOON's does."""
    extra: dict[str, Any] = {}
    if guest is not None:
        extra = {
            "model": guest.model,
            "owner_address": guest.owner_address,
            "root_contract_address": guest.root_contract_address,
            "coefficient": guest.coefficient,
            "node_wallet_key": guest.node_wallet_key,
        }
    return SimulatorConfig(
        instance=worker.slot.index,
        host=worker.host,
        # Where QEMU's forward listens in the pod (launcher/_plan.py, difference 5):
        # loopback; a port of its own, as every simulated pod shares this host.
        worker_host=FORWARD_ADDRESS,
        port=0,
        harness_port=harness_port(worker.slot),
        tls_port=worker.slot.ratls_port,
        # The release image stands for the files the VM measures: another
        # release, another image hash, as on real hardware.
        measurements=TdMeasurements.from_label(worker.image),
        # One node wallet per worker, as one node_wallet_key per worker gives.
        wallet_label=f"{worker.namespace}/{worker.worker}",
        faults=faults or Faults(),
        name=worker.key,
        ton_endpoint=ton_endpoint,
        **extra,
    )


class Agent:
    def __init__(
        self,
        api: client.ApiClient,
        pki: DcapTestPki,
        namespace: str | None,
        *,
        faults: Faults | None = None,
        gpu_pki: GpuTestPki | None = None,
        nodes: SimulatedNodes | None = None,
        release: Path | None = None,
        qgs: SimulatedQgs | None = None,
        model_step_seconds: float = 0.25,
        ton_endpoint: str | None = None,
    ) -> None:
        self._api = api
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._model_step = model_step_seconds
        self._ton_endpoint = ton_endpoint  # where simulated runners wait for their 2.1 TON
        self._models_root = Path(tempfile.mkdtemp(prefix="cocoon-sim-models-"))
        self._core = client.CoreV1Api(api)
        self._pki = pki
        self._gpu_pki = gpu_pki
        self._nodes = nodes  # node reports, when the agent stands in for node agents too
        self._namespace = namespace
        self._faults = faults or Faults()  # every worker starts with these (fault tests)
        self._running: dict[str, WorkerSimulator] = {}
        self._publishing: set[asyncio.Task[bool]] = set()
        self._control: dict[str, ControlRelay] = {}  # each VM's launcher control relay
        # Each VM's quote path (the launcher's relay in front of the test QGS), and
        # when its guest last asked (key generation, monotonic time).
        self._qgs = qgs
        self._paths: dict[str, SimulatedQuotePath] = {}
        self._asked: dict[str, tuple[int, float]] = {}
        self._sockets = Path(tempfile.mkdtemp(prefix="cocoon-relay-"))
        # Each VM's guest health monitor, and the launcher's poller of it writing the
        # VM's health file into a state directory of its own (read as the agent reads it).
        self._monitors: dict[str, SimulatedHealthMonitor] = {}
        self._pollers: dict[str, tuple[HealthPoller, Path, int, str]] = {}
        self._relay_count = 0
        self._release = release or write_release(Path(tempfile.mkdtemp(prefix="cocoon-release-")))
        # Scratch directories of its own, removed by :meth:`stop` (a release passed in is
        # the caller's).
        self._scratch = [self._models_root, self._sockets, *(() if release else (self._release,))]

    async def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}/{meta.get('uid', '')}"
        worker = None if kind == "DELETED" else pod_worker(pod)
        if worker is None:
            starting = self._starting.pop(key, None)
            if starting is not None:
                starting.cancel()
            relay = self._control.pop(key, None)
            if relay is not None:
                await relay.close()
            sim = self._running.pop(key, None)
            if sim is not None:
                await sim.stop()
                log.info("stopped worker %s", key)
            path = self._paths.pop(key, None)
            self._asked.pop(key, None)
            if path is not None:
                await path.close()
            await self._stop_health(key)
            if self._nodes is not None:
                node = self._nodes.stopped(meta.get("uid", ""))
                if node is not None:
                    await self._nodes.publish(node, dt.datetime.now(dt.UTC))
            return
        if key in self._running or key in self._starting:
            return
        # The model first, as the init container goes first: in a task of its own,
        # so one worker's preparation holds up no other pod's events.
        self._starting[key] = asyncio.create_task(self._start(key, pod, worker))

    async def _prepare_model(self, pod: dict[str, Any], worker: PodWorker) -> bool:
        """What the pod's init container would do (``model ensure``); whether it is Ready."""
        model = init_container_model(pod)
        if model is None:
            return True
        nodes = self._nodes
        cache = nodes.model_cache(worker.node) if nodes else self._models_root / worker.node

        async def publish() -> None:
            # As on a node: the init container never waits for the agent's report
            # (the apiserver may be away); the report follows when it can.
            if nodes is not None:
                task = asyncio.create_task(nodes.publish(worker.node, dt.datetime.now(dt.UTC)))
                self._publishing.add(task)
                task.add_done_callback(self._published)

        result = await prepare_model(
            cache, model, step_seconds=self._model_step, on_progress=publish
        )
        if result.phase is not Phase.READY:
            log.error("worker %s does not start: model ensure: %s", worker.key, result.message)
            return False
        return True

    def _published(self, task: asyncio.Task[bool]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("node report not published: %s", task.exception())

    async def _start(self, key: str, pod: dict[str, Any], worker: PodWorker) -> None:
        # A container that fails on a transient error (the apiserver away while its
        # Secrets are read) is restarted by the kubelet with a growing back-off
        # (restartPolicy Always); so is this start, until it succeeds or the pod goes.
        delay = 1.0
        try:
            while True:
                try:
                    await self._start_prepared(key, pod, worker)
                    return
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("worker %s not started (%s); retrying in %.0f s", key, exc, delay)
                except Exception as exc:  # a task of its own: say why, or nobody will
                    log.error("worker %s not started: %s", key, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        finally:
            self._starting.pop(key, None)

    async def _start_prepared(self, key: str, pod: dict[str, Any], worker: PodWorker) -> None:
        model = init_container_model(pod)
        if not await self._prepare_model(pod, worker):
            return
        try:
            secrets = await self._read_secrets(pod)
            guest = prepare_guest(pod, worker, self._release, secrets)
            # What the launcher checks before QEMU (launcher/_run.py: cmd_launch).
            access = control_access(
                control_public_key(pod), {"POD_UID": worker.pod_uid}, worker.slot.index, worker.host
            )
        except (LaunchError, GuestBootError) as exc:
            # The container would exit, or the guest stop at boot: no worker.
            log.error("worker %s does not start: %s", key, exc)
            return
        config = simulator_config(worker, guest, self._faults, self._ton_endpoint)
        sim = WorkerSimulator(config, pki=self._pki, gpu_pki=self._gpu_pki)
        relay = ControlRelay(
            vm=f"cocoon-instance-{worker.slot.index}",
            listen=access.listen,
            upstream=InetAddress(FORWARD_ADDRESS, 0),
            public_key=access.public_key,
            audience=access.audience,
        )
        try:
            await sim.start()
            relay.upstream = InetAddress(FORWARD_ADDRESS, sim.http_port)
            await relay.start()
        except OSError as exc:  # the port is taken: the scheduler should have prevented it
            log.error("worker %s cannot listen on %s: %s", key, worker.host, exc)
            await relay.close()
            await sim.stop()
            return
        self._running[key] = sim
        self._control[key] = relay
        if self._qgs is not None:
            self._relay_count += 1
            socket_path = self._sockets / f"vm-{self._relay_count}.qgs"
            name = f"cocoon-instance-{worker.slot.index}"
            self._paths[key] = await SimulatedQuotePath(
                name, socket_path, self._qgs.address
            ).start()
            await self._guest_asks(key)  # at boot, as gen-cert-synced --tdx does
        await self._start_health(key, sim, worker)
        if self._nodes is not None:
            self._nodes.started(
                worker.node,
                namespace=worker.namespace,
                worker=worker.worker,
                pod=worker.pod,
                pod_uid=worker.pod_uid,
                instance=worker.slot.index,
                # What the launcher records for the node agent (launcher/_run.py).
                node_wallet=guest.node_wallet,
                model_verity=model.verity if model is not None else None,
            )
            await self._nodes.publish(worker.node, dt.datetime.now(dt.UTC))
        log.info(
            "started worker %s on %s:%d behind the control relay %s (RA-TLS :%d,"
            " harness :%d, image hash %s)",
            key,
            FORWARD_ADDRESS,
            sim.http_port,
            relay.address,
            worker.slot.ratls_port,
            sim.harness_port,
            sim.image_hash.hex(),
        )

    async def _start_health(self, key: str, sim: WorkerSimulator, worker: PodWorker) -> None:
        """The guest's health monitor (on a Unix socket: no vsock here) and the launcher's
        poller of it (``launcher/_run.py: HealthPoller``, as ``--health-monitor unix:PATH``)."""
        self._relay_count += 1
        state_dir = self._sockets / f"vm-{self._relay_count}"
        state_dir.mkdir()
        socket_path = state_dir / "health.sock"

        def measured() -> TdMeasurements:
            m = sim.config.measurements
            return mismatched(m) if sim.faults.health_mismatch else m

        self._monitors[key] = await SimulatedHealthMonitor(socket_path, measured).start()
        poller = HealthPoller(
            UnixAddress(socket_path),
            state_dir,
            worker.slot.index,
            worker.pod_uid,
            every=PROBE_SECONDS,
        )
        self._pollers[key] = (poller, state_dir, worker.slot.index, worker.pod_uid)

    async def _stop_health(self, key: str) -> None:
        monitor = self._monitors.pop(key, None)
        if monitor is not None:
            await monitor.close()
        polled = self._pollers.pop(key, None)
        if polled is not None:
            shutil.rmtree(polled[1], ignore_errors=True)

    async def read_health(self) -> None:
        """Each launcher reads its guest's health monitor when due (in a thread: the
        launcher's client blocks, and the monitor answers from this loop)."""
        for poller, *_ in list(self._pollers.values()):
            if poller.due():
                await asyncio.to_thread(poller.poll)

    def health_of(self, pod_uid: str) -> GuestHealthReport | None:
        """The VM's health file, read as the node agent reads it (``read_health``)."""
        for _, state_dir, instance, uid in self._pollers.values():
            if uid == pod_uid:
                return read_health(state_dir, instance, pod_uid)
        return None

    async def _guest_asks(self, key: str) -> None:
        """The simulated guest asks for a quote of its current RA-TLS key (REPORTDATA:
        its SHA-512) through its VM's relay, as QEMU forwards a GetQuote."""
        sim, path = self._running.get(key), self._paths.get(key)
        if sim is None or path is None:
            return
        self._asked[key] = (sim.evidence.generation, asyncio.get_running_loop().time())
        key_hash = hashlib.sha512(sim.evidence.public_key).digest()
        try:
            await path.ask(sim.config.measurements, key_hash)
        except (OSError, asyncio.IncompleteReadError, QgsWireError, QuoteRefusedError) as exc:
            log.warning("worker %s: GetQuote failed: %s", key, exc)

    async def refresh_quotes(self, every: float = QUOTE_REFRESH_SECONDS) -> None:
        """Each guest asks again on a new key (COCOON's certificate refresh) and every
        ``every`` seconds (cocoon-cert-refresh.timer: hourly)."""
        now = asyncio.get_running_loop().time()
        for key, sim in list(self._running.items()):
            generation, at = self._asked.get(key, (-1, 0.0))
            if generation != sim.evidence.generation or now - at >= every:
                await self._guest_asks(key)

    def quote_of(self, pod_uid: str) -> SimulatedQuote | None:
        """The latest quote the VM of launcher pod ``pod_uid`` obtained, as its relay kept
        it (REPORTDATA: the SHA-512 of its RA-TLS key), with the VM's evidence faults."""
        key = next((k for k in self._running if k.endswith("/" + pod_uid)), None)
        if key is None:
            return None
        sim, path = self._running[key], self._paths.get(key)
        if path is None:  # no quote path (an agent without a QGS): the guest's own quote
            quote, at = sim.relayed_quote()
            report_data: bytes | None = hashlib.sha512(sim.evidence.public_key).digest()
        else:
            captured = path.latest
            if captured is None:
                return None
            quote, at, report_data = captured.quote, captured.at, captured.report_data
            if sim.faults.garbage_evidence:
                quote = GARBAGE_QUOTE
            elif sim.faults.tampered_evidence:
                quote = tamper_quote(quote)
            if sim.faults.stale_quote:
                at -= dt.timedelta(days=2)
        return SimulatedQuote(FileQuote(quote, at, report_data), misfiled=sim.faults.misfiled_quote)

    async def _read_secrets(self, pod: dict[str, Any]) -> dict[str, str]:
        """The Secret keys the pod mounts, by the path the launcher reads them from."""
        out = {}
        for path, (name, key) in secret_files(pod).items():
            try:
                secret = await self._core.read_namespaced_secret(name, pod["metadata"]["namespace"])
            except ApiException as exc:
                raise LaunchError(f"Secret {name}: {exc.reason}") from None
            data = secret.data or {}
            if key in data:
                out[path] = base64.b64decode(data[key]).decode()
        return out

    async def run(self) -> None:
        while True:
            stream = watch.Watch()
            try:
                if self._namespace:
                    method: Any = self._core.list_namespaced_pod
                    args: tuple[Any, ...] = (self._namespace,)
                else:
                    method, args = self._core.list_pod_for_all_namespaces, ()
                async for event in stream.stream(method, *args, label_selector=SELECTOR):
                    obj = event["raw_object"]
                    await self.on_pod(event["type"], obj)
            except (TimeoutError, ApiException, OSError, aiohttp.ClientError) as exc:
                # aiohttp.ClientError: an apiserver that restarts mid-stream cuts the
                # chunked body short (ClientPayloadError), which is not an OSError.
                log.warning("pod watch ended (%s); restarting", exc)
                await asyncio.sleep(1)
            finally:
                await stream.close()

    async def stop(self) -> None:
        for task in list(self._starting.values()):
            task.cancel()
        for relay in self._control.values():
            await relay.close()
        self._control.clear()
        for sim in self._running.values():
            await sim.stop()
        self._running.clear()
        for path in self._paths.values():
            await path.close()
        self._paths.clear()
        for key in list(self._monitors):
            await self._stop_health(key)
        for scratch in self._scratch:
            shutil.rmtree(scratch, ignore_errors=True)


async def _heartbeat(nodes: SimulatedNodes, agent: Agent) -> None:
    """Look at every node again every few seconds, as the DaemonSet does, and publish
    what changed (a new quote, a fault turned on), and the heartbeat (so a report
    whose write failed is written at the next beat)."""
    while True:
        await asyncio.sleep(PROBE_SECONDS)
        await agent.refresh_quotes()
        await nodes.collect_due()
        await agent.read_health()
        try:
            await nodes.publish_all(dt.datetime.now(dt.UTC))
        except (ApiException, OSError, TimeoutError, aiohttp.ClientError) as exc:
            log.warning("node reports not published: %s", exc)


async def _main(args: argparse.Namespace) -> int:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # The test PCCS's TCB info gives the simulated platform this status (Intel's
    # statuses; a real platform's comes from its TCB level in Intel's TCB info).
    pki = generate_test_pki(now=day, seed=DEFAULT_SEED, tcb_status=args.tcb_status)
    args.root_out.write_bytes(pki.root_pem)
    gpu_pki = generate_test_gpu_pki(DEFAULT_GPU_SEED, now=day)
    ready: dict[str, str] = {}
    if args.gpu_root_out is not None:
        args.gpu_root_out.write_bytes(gpu_pki.root_pem)
        ready["gpu_test_root"] = str(args.gpu_root_out)
    # The collateral server: the test PKI's PCCS endpoints on a loopback port.
    pccs = WorkerSimulator(SimulatorConfig(host="127.0.0.1", port=args.pccs_port), pki=pki)
    await pccs.start()
    api = client.ApiClient(await load(args.kubeconfig))
    faults = Faults(**{name.replace("-", "_"): True for name in args.fault})
    nodes = None
    # The node agents' stand-in writes reports as the node agent does (k8s/rest.py).
    reports_api = Kube(load_connection(args.kubeconfig))
    if args.node_reports:
        gc = GcOptions(
            GcPolicy(max_count=args.model_gc_max_count),
            interval=args.model_gc_interval,
            min_idle=args.model_gc_min_idle_seconds,
        )
        nodes = SimulatedNodes(
            reports_api, args.node_reports, dt.timedelta(seconds=args.heartbeat), gc=gc
        )
        ready["node_reports"] = args.node_reports
    # The nodes' quote generation service: a stand-in signing with the test PKI.
    qgs_dir = Path(tempfile.mkdtemp(prefix="cocoon-qgs-"))
    qgs = await SimulatedQgs(pki, qgs_dir / "qgs.sock").start()
    agent = Agent(
        api,
        pki,
        args.namespace,
        faults=faults,
        gpu_pki=gpu_pki,
        nodes=nodes,
        qgs=qgs,
        model_step_seconds=args.model_step_seconds,
        ton_endpoint=args.ton_endpoint,
    )
    if nodes is not None:
        nodes.quote_source = agent.quote_of
        nodes.health_source = agent.health_of
    print(
        json.dumps(
            {
                "pccs_url": pccs.http_url,
                "test_root": str(args.root_out),
                "test_root_sha256": pki.trusted_root.fingerprint,
                **ready,
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(agent.run())]
    if nodes is not None:
        tasks.append(asyncio.create_task(_heartbeat(nodes, agent)))
    await stop.wait()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await agent.stop()
    if nodes is not None:
        nodes.close()
    await qgs.close()
    shutil.rmtree(qgs_dir, ignore_errors=True)
    await pccs.stop()
    await api.close()
    await reports_api.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cocoon_operator.simulator.agent",
        description="Run a simulated COCOON worker for every Running launcher pod (local stack).",
    )
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument(
        "--ton-endpoint",
        default=None,
        help="a TON API (the local chain's): each simulated runner waits there for its node"
        " wallet to hold 2.1 TON before it initialises, as COCOON's does (default: none,"
        " every wallet is taken as funded)",
    )
    parser.add_argument("--namespace", default=None, help="default: all namespaces")
    parser.add_argument("--root-out", type=Path, required=True, help="write the test root here")
    parser.add_argument(
        "--gpu-root-out", type=Path, default=None, help="write the test GPU device root here"
    )
    parser.add_argument(
        "--node-reports",
        default=None,
        metavar="NAMESPACE",
        help="also publish each simulated node's report there, as the per-node agent would",
    )
    parser.add_argument("--pccs-port", type=int, default=0)
    parser.add_argument(
        "--model-step-seconds",
        type=float,
        default=0.25,
        help="each of the simulated model build's steps takes this long (before a worker starts)",
    )
    parser.add_argument(
        "--tcb-status",
        default="UpToDate",
        choices=[
            "UpToDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
        ],
        help="the TCB status the test collateral gives every simulated platform",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=[name.replace("_", "-") for name in Faults.names()],
        help="every worker started misbehaves so from the start (repeatable; fault tests)",
    )
    parser.add_argument(
        "--model-gc-max-count",
        type=int,
        default=None,
        help="run the node agent's model gc with this --gc-max-count on every simulated node",
    )
    parser.add_argument(
        "--heartbeat",
        type=positive_seconds,
        default=HEARTBEAT_SECONDS,
        help="rewrite an unchanged node report at least this often (the node agent's --heartbeat)",
    )
    parser.add_argument("--model-gc-min-idle-seconds", type=float, default=600.0)
    parser.add_argument("--model-gc-interval", type=float, default=600.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
