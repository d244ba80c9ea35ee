"""Probe a worker host through a read-only view of its filesystem, and its vsock services.

The view is rooted anywhere (the DaemonSet mounts the host's ``/sys``, ``/dev``,
``/proc`` and ``/run/cocoon`` under ``/host``; tests build a tree in a temporary
directory), so the probe is the same code in both. Nothing here writes.

The launcher's contract with the agent: for each VM it starts it writes, in its
pod's own directory ``/run/cocoon/pods/<pod UID>/`` (older launchers: in
``/run/cocoon``), ``instance-<i>.json`` (``instance``, ``namespace``, ``worker``,
``pod``, ``podUid``, ``pci``, ``pid``) and names the QEMU process
``cocoon-instance-<i>`` (``-name``); it removes the file once QEMU has exited.
The record also names the model's verity hash (``modelVerity``), which the
agent's gc keeps. The models themselves are read from the node's model cache
(:mod:`cocoon_operator.nodeagent._models`).
A record whose process is gone (or is another program, the pid reused) is
reported as not running. Beside each record the launcher keeps the VM's latest
quotes (``instance-<i>.quotes.json``, :mod:`cocoon_operator.launcher._quotefile`)
and what the guest's health monitor last said (``instance-<i>.health.json``,
:mod:`cocoon_operator.launcher._healthfile`); the agent reads each bounded,
checks it belongs to the record's pod and instance, and reports the newest
quote and the reading with the VM.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from cocoon_operator import __version__, jsondoc
from cocoon_operator.api.nodereport import (
    SEAL_STATE_FILE,
    GpuDevice,
    GuestHealthReport,
    HostCheck,
    NodeReport,
    RelayedQuote,
    SealServerState,
    VmRecord,
)
from cocoon_operator.launcher import (
    MAX_HEALTH_FILE_BYTES,
    MAX_QUOTE_FILE_BYTES,
    FileQuote,
    HealthFile,
    HealthFileError,
    QuoteFileError,
    health_file_path,
    is_health_file,
    is_quote_file,
    parse_health_file,
    parse_quote_file,
    quote_file_path,
    vm_running,
)
from cocoon_operator.launcher._seal import connect_vsock
from cocoon_operator.nodeagent._models import MODEL_CACHE_DIR, read_models

log = logging.getLogger(__name__)

NVIDIA_VENDOR: Final = "0x10de"
# PCI class 0x03: display controllers (0x0300 VGA, 0x0302 3D: the H100/H200).
DISPLAY_CLASS_PREFIX: Final = "0x03"
VFIO_DRIVER: Final = "vfio-pci"
LAUNCHER_STATE_DIR: Final = "run/cocoon"
# One directory per launcher pod, by its UID (desired/launcher.py mounts it as the
# launcher's /run/cocoon): read each; the shared one above is what launchers before
# per-pod directories wrote, still read so that an upgrade loses sight of no VM.
LAUNCHER_PODS_DIR: Final = "run/cocoon/pods"
# More than a node's ten instances and the janitor's backlog; beyond it, said in the log.
MAX_LAUNCHER_DIRS: Final = 256
# COCOON's host services, reached by guests at the host's vsock CID 2.
QGS_PORT: Final = 4050
SEAL_SERVER_PORT: Final = 12345
VMADDR_CID_LOCAL: Final = 1  # this host, from the host

#: Try a vsock connection; None when it connected, else why not.
VsockConnect = Callable[[int, int], str | None]


@dataclass(frozen=True)
class HostView:
    """The host's filesystem as the agent sees it: every path is under ``root``."""

    root: Path

    def path(self, relative: str) -> Path:
        return self.root / relative

    def read(self, relative: str) -> str | None:
        try:
            return self.path(relative).read_text().strip()
        except OSError:
            return None

    def link_name(self, relative: str) -> str | None:
        """The last component of a symlink's target (a driver's or group's name)."""
        try:
            return Path(self.path(relative).readlink()).name
        except OSError:
            return None


def scan_gpus(host: HostView) -> list[GpuDevice]:
    """NVIDIA display-class devices on the PCI bus, by address."""
    devices = host.path("sys/bus/pci/devices")
    try:
        entries = sorted(p.name for p in devices.iterdir())
    except OSError:
        return []
    gpus = []
    for bdf in entries:
        base = f"sys/bus/pci/devices/{bdf}"
        if host.read(f"{base}/vendor") != NVIDIA_VENDOR:
            continue
        if not (host.read(f"{base}/class") or "").startswith(DISPLAY_CLASS_PREFIX):
            continue  # the NVSwitches and bridges of an HGX board are not GPUs
        device = (host.read(f"{base}/device") or "0x????").removeprefix("0x")
        gpus.append(
            GpuDevice(
                pci=bdf,
                device_id=f"10de:{device}",
                driver=host.link_name(f"{base}/driver"),
                iommu_group=host.link_name(f"{base}/iommu_group"),
            )
        )
    return gpus


def _read_bounded(path: Path, limit: int) -> str | None:
    """The file's text, None when it is absent; QuoteFileError when larger than ``limit``."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        raise QuoteFileError(f"{path.name} is larger than {limit} bytes")
    return data.decode()


def read_quote(state_dir: Path, instance: int, pod_uid: str) -> RelayedQuote | None:
    """The newest quote the launcher kept for the VM of ``pod_uid`` on ``instance``.

    None when there is none yet, or the file is not the launcher's for that pod
    (a previous VM's, half a file, something else): logged, never guessed at.
    """
    path = quote_file_path(state_dir, instance)
    try:
        text = _read_bounded(path, MAX_QUOTE_FILE_BYTES)
        if text is None:
            return None
        parsed = parse_quote_file(text)
    except (OSError, UnicodeDecodeError, QuoteFileError) as exc:
        log.warning("ignoring quotes file %s: %s", path.name, exc)
        return None
    if parsed.instance != instance or parsed.pod_uid != pod_uid:
        log.warning("ignoring quotes file %s: it is not this VM's (pod, instance)", path.name)
        return None
    latest = parsed.latest()
    return None if latest is None else relayed(latest)


def relayed(quote: FileQuote) -> RelayedQuote:
    """A quote from the launcher's file, as the report carries it."""
    return RelayedQuote(
        quote=base64.b64encode(quote.quote).decode(),
        captured_at=quote.captured_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        report_data=quote.report_data.hex() if quote.report_data is not None else None,
    )


def state_dirs(host: HostView) -> list[Path]:
    """The launchers' state directories: each launcher pod's own, and the shared one."""
    try:
        pods = sorted(
            p for p in host.path(LAUNCHER_PODS_DIR).iterdir() if p.is_dir() and not p.is_symlink()
        )
    except OSError:
        pods = []
    if len(pods) > MAX_LAUNCHER_DIRS:
        log.warning("%d launcher state directories: reading %d", len(pods), MAX_LAUNCHER_DIRS)
        pods = pods[:MAX_LAUNCHER_DIRS]
    return [host.path(LAUNCHER_STATE_DIR), *pods]


def read_health(state_dir: Path, instance: int, pod_uid: str) -> GuestHealthReport | None:
    """What the VM's guest health monitor last told the launcher, if the file is the
    launcher's for that pod and instance (else logged and ignored, as a quotes file)."""
    path = health_file_path(state_dir, instance)
    try:
        text = _read_bounded(path, MAX_HEALTH_FILE_BYTES)
        if text is None:
            return None
        parsed = parse_health_file(text)
    except (OSError, UnicodeDecodeError, QuoteFileError, HealthFileError) as exc:
        log.warning("ignoring health file %s: %s", path.name, exc)
        return None
    if parsed.instance != instance or parsed.pod_uid != pod_uid:
        log.warning("ignoring health file %s: it is not this VM's (pod, instance)", path.name)
        return None
    return reported_health(parsed)


def reported_health(reading: HealthFile) -> GuestHealthReport:
    """A health reading from the launcher's file, as the report carries it."""
    health = reading.health
    return GuestHealthReport(
        checked_at=reading.checked_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        image_hash=health.image_hash,
        mrtd=health.mrtd,
        rtmr=list(health.rtmr) if health.rtmr is not None else None,
    )


def read_vms(host: HostView) -> list[VmRecord]:
    """The launchers' state files, each with whether its QEMU still runs and its latest quote."""
    return [vm for state_dir in state_dirs(host) for vm in _read_vms_in(host, state_dir)]


def _read_vms_in(host: HostView, state_dir: Path) -> list[VmRecord]:
    try:
        files = sorted(
            f
            for f in state_dir.glob("instance-*.json")
            if not (is_quote_file(f.name) or is_health_file(f.name))
        )
    except OSError:
        return []
    vms = []
    for f in files:
        try:
            raw = jsondoc.loads(f.read_text())
            instance = int(raw["instance"])
            raw["running"] = vm_running(host.path("proc"), int(raw["pid"]), instance)
            raw["quote"] = read_quote(state_dir, instance, str(raw.get("podUid", "")))
            raw["health"] = read_health(state_dir, instance, str(raw.get("podUid", "")))
            vms.append(VmRecord.model_validate(raw))
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            # A half-written or foreign file: say so, report the rest.
            log.warning("ignoring launcher state file %s: %s", f.name, exc)
    return vms


def _check(name: str, problem: str | None, ok_message: str) -> HostCheck:
    return HostCheck(name=name, ok=problem is None, message=problem or ok_message)


def host_checks(host: HostView, gpus: list[GpuDevice], connect: VsockConnect) -> list[HostCheck]:
    """What a worker VM needs of its host, each with a message an SRE can act on."""
    tdx = host.read("sys/module/kvm_intel/parameters/tdx")
    not_vfio = [g.pci for g in gpus if g.driver != VFIO_DRIVER]
    qgs = connect(VMADDR_CID_LOCAL, QGS_PORT)
    seal = connect(VMADDR_CID_LOCAL, SEAL_SERVER_PORT)
    return [
        _check(
            "tdx",
            None if tdx in ("Y", "1") else f"kvm_intel tdx parameter is {tdx or 'absent'}",
            "kvm_intel has TDX enabled",
        ),
        _check(
            "kvm",
            None if host.path("dev/kvm").exists() else "/dev/kvm is missing",
            "/dev/kvm present",
        ),
        _check(
            "vhost-vsock",
            None if host.path("dev/vhost-vsock").exists() else "/dev/vhost-vsock is missing",
            "/dev/vhost-vsock present",
        ),
        _check(
            "gpus-vfio",
            "no NVIDIA GPU found on the PCI bus"
            if not gpus
            else (f"not bound to {VFIO_DRIVER}: {', '.join(not_vfio)}" if not_vfio else None),
            f"{len(gpus)} NVIDIA GPU(s) bound to {VFIO_DRIVER}",
        ),
        _check(
            "quote-service",
            None if qgs is None else f"TDX quote service, vsock port {QGS_PORT}: {qgs}",
            f"TDX quote service answers on vsock port {QGS_PORT}",
        ),
        _check(
            "seal-server",
            None if seal is None else f"seal server, vsock port {SEAL_SERVER_PORT}: {seal}",
            f"seal server answers on vsock port {SEAL_SERVER_PORT}",
        ),
    ]


def read_seal_server(host: HostView, checks: list[HostCheck]) -> SealServerState | None:
    """The seal server the operator's DaemonSet runs here, as its wrapper records it
    (launcher/_seal.py, ``/run/cocoon/seal-server.json``), ready only if the agent's
    own vsock check passed too. None: no record (no operator-run seal server)."""
    path = host.path(f"{LAUNCHER_STATE_DIR}/{SEAL_STATE_FILE}")
    try:
        text = _read_bounded(path, 4096)
        if text is None:
            return None
        raw = jsondoc.loads(text)
        enclave, recorded = str(raw["enclave"]), bool(raw["ready"])
    except (OSError, UnicodeDecodeError, QuoteFileError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: %s", path.name, exc)
        return None
    seal = next((c for c in checks if c.name == "seal-server"), None)
    answers = seal is not None and seal.ok
    if recorded and answers:
        message = "enclave created, vsock port answers"
    elif recorded:
        message = seal.message if seal is not None else "no vsock check"
    else:
        message = "not ready: the enclave is not created yet, or the server stopped"
    try:
        return SealServerState(enclave=enclave, ready=recorded and answers, message=message)
    except ValidationError as exc:
        log.warning("ignoring %s: %s", path.name, exc)
        return None


def probe(
    node: str,
    host: HostView,
    connect: VsockConnect = connect_vsock,
    *,
    model_cache: Path | None = None,
) -> NodeReport:
    """One look at the host; the models from ``model_cache`` (default: the host's cache)."""
    gpus = scan_gpus(host)
    checks = host_checks(host, gpus, connect)
    return NodeReport(
        node=node,
        agent_version=__version__,
        checks=checks,
        gpus=gpus,
        vms=read_vms(host),
        models=read_models(model_cache or host.path(MODEL_CACHE_DIR)),
        seal_server=read_seal_server(host, checks),
    )
