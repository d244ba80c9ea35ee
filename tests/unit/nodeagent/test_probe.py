"""The node agent's probe over host trees: GPUs, host checks, the launcher's VMs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cocoon_operator.launcher import MAX_QUOTE_FILE_BYTES, FileQuote, write_quote_file
from cocoon_operator.nodeagent import QGS_PORT, SEAL_SERVER_PORT, HostView, probe
from tests.unit.nodeagent.hosts import gpu, nvswitch, tdx_host, vm_state

QUOTE = FileQuote(b"a quote", datetime(2026, 12, 6, 14, 0, tzinfo=UTC), None)


def all_reachable(cid: int, port: int) -> str | None:
    return None


@pytest.fixture
def vm_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process named like the launcher names QEMU for instance 3."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-name", "cocoon-instance-3"]
    )
    # Until the child has exec'd, its command line is still this process's.
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"cocoon-instance-3" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def host_with_proc(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    os.symlink("/proc", root / "proc")  # the real process table, as hostPID gives
    return root


def test_a_ready_host_passes_every_check_and_lists_its_gpus_by_address(tmp_path: Path) -> None:
    root = host_with_proc(tmp_path)
    tdx_host(root)
    gpu(root, "0000:9a:00.0", group="12")
    gpu(root, "0000:1b:00.0")
    nvswitch(root, "0000:05:00.0")

    report = probe("node-a", HostView(root), all_reachable)

    assert report.host_ready, report.failing()
    assert [c.name for c in report.checks] == [
        "tdx",
        "kvm",
        "vhost-vsock",
        "gpus-vfio",
        "quote-service",
        "seal-server",
    ]
    assert [(g.pci, g.device_id, g.driver, g.iommu_group) for g in report.gpus] == [
        ("0000:1b:00.0", "10de:2330", "vfio-pci", "37"),
        ("0000:9a:00.0", "10de:2330", "vfio-pci", "12"),
    ]
    assert report.vms == []


def test_each_missing_piece_fails_its_own_check_with_a_message_naming_it(tmp_path: Path) -> None:
    root = host_with_proc(tmp_path)
    tdx_host(root, tdx=False)
    (root / "dev/vhost-vsock").unlink()
    gpu(root, "0000:1b:00.0", driver="nvidia")
    gpu(root, "0000:2b:00.0", driver=None)
    refused = {QGS_PORT: "Connection refused", SEAL_SERVER_PORT: "Connection timed out"}

    report = probe("node-a", HostView(root), lambda cid, port: refused.get(port))

    failing = {c.name: c.message for c in report.failing()}
    assert failing == {
        "tdx": "kvm_intel tdx parameter is N",
        "vhost-vsock": "/dev/vhost-vsock is missing",
        "gpus-vfio": "not bound to vfio-pci: 0000:1b:00.0, 0000:2b:00.0",
        "quote-service": f"TDX quote service, vsock port {QGS_PORT}: Connection refused",
        "seal-server": f"seal server, vsock port {SEAL_SERVER_PORT}: Connection timed out",
    }
    assert not report.host_ready


def test_a_host_with_no_gpu_says_so(tmp_path: Path) -> None:
    root = host_with_proc(tmp_path)
    tdx_host(root)
    report = probe("node-a", HostView(root), all_reachable)
    assert {c.name: c.message for c in report.failing()} == {
        "gpus-vfio": "no NVIDIA GPU found on the PCI bus"
    }


def test_a_vm_runs_while_its_named_process_lives(
    tmp_path: Path, vm_process: subprocess.Popen[bytes]
) -> None:
    root = host_with_proc(tmp_path)
    tdx_host(root)
    fields = {"namespace": "ns", "worker": "w", "pod": "w-abc", "pci": "0000:1b:00.0"}
    vm_state(root, instance=3, pod_uid="uid-3", pid=vm_process.pid, **fields)
    # A stale file whose pid now belongs to another program (this test runner).
    vm_state(root, instance=4, pod_uid="uid-4", pid=os.getpid(), **fields)

    vms = {v.instance: v for v in probe("node-a", HostView(root), all_reachable).vms}
    assert vms[3].running and vms[3].pod_uid == "uid-3" and vms[3].pci == "0000:1b:00.0"
    assert not vms[4].running

    vm_process.kill()
    vm_process.wait()
    vms = {v.instance: v for v in probe("node-a", HostView(root), all_reachable).vms}
    assert not vms[3].running


def test_a_half_written_state_file_is_skipped_and_the_rest_reported(
    tmp_path: Path, vm_process: subprocess.Popen[bytes]
) -> None:
    root = host_with_proc(tmp_path)
    vm_state(
        root,
        instance=3,
        namespace="ns",
        worker="w",
        pod="w-abc",
        pod_uid="uid-3",
        pci=None,
        pid=vm_process.pid,
    )
    (root / "run/cocoon/instance-5.json").write_text('{"instance": 5, "pid"')
    (root / "run/cocoon/instance-6.json").write_text("[" * 5000 + "]" * 5000)  # too deep
    vms = probe("node-a", HostView(root), all_reachable).vms
    assert [v.instance for v in vms] == [3]


def test_each_vm_is_reported_with_the_newest_quote_its_launcher_kept(
    tmp_path: Path, vm_process: subprocess.Popen[bytes]
) -> None:
    root = host_with_proc(tmp_path)
    fields = {"namespace": "ns", "worker": "w", "pod": "w-abc", "pci": None}
    vm_state(root, instance=3, pod_uid="uid-3", pid=vm_process.pid, **fields)
    state = root / "run/cocoon"
    at = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
    kept = [
        FileQuote(b"older", at, None),
        FileQuote(b"newest", at + timedelta(hours=1), b"\x07" * 64),
    ]
    write_quote_file(state, 3, "uid-3", kept)

    (vm,) = probe("node-a", HostView(root), all_reachable).vms  # the file is no VM record
    assert vm.quote is not None
    assert vm.quote.quote_bytes() == b"newest"
    assert vm.quote.report_data == "07" * 64
    assert vm.quote.captured_at.startswith("2026-12-06T15:00:00")


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda state: write_quote_file(state, 3, "the previous pod's uid", [QUOTE]),
        lambda state: (state / "instance-3.quotes.json").write_text('{"version": 1, "inst'),
        lambda state: (state / "instance-3.quotes.json").write_text(
            " " * (MAX_QUOTE_FILE_BYTES + 1)
        ),
    ],
    ids=["another pod's quotes", "half a file", "too large"],
)
def test_a_quotes_file_not_written_for_this_vm_is_reported_as_no_quote(
    tmp_path: Path, vm_process: subprocess.Popen[bytes], corrupt: Callable[[Path], object]
) -> None:
    root = host_with_proc(tmp_path)
    fields = {"namespace": "ns", "worker": "w", "pod": "w-abc", "pci": None}
    vm_state(root, instance=3, pod_uid="uid-3", pid=vm_process.pid, **fields)
    corrupt(root / "run/cocoon")
    (vm,) = probe("node-a", HostView(root), all_reachable).vms
    assert vm.running and vm.quote is None


def test_vms_in_each_launcher_pods_own_directory_are_reported_with_their_quotes(
    tmp_path: Path, vm_process: subprocess.Popen[bytes]
) -> None:
    """Each launcher pod writes into /run/cocoon/pods/<its UID>/ (desired/launcher.py);
    a VM started by an older launcher into /run/cocoon itself: both are reported."""
    root = host_with_proc(tmp_path)
    fields = {"namespace": "ns", "worker": "w", "pci": None}
    record = vm_state(root, instance=3, pod="w-abc", pod_uid="uid-3", pid=vm_process.pid, **fields)
    own = root / "run/cocoon/pods/uid-3"
    own.mkdir(parents=True)
    record.rename(own / record.name)
    write_quote_file(own, 3, "uid-3", [QUOTE])
    vm_state(root, instance=5, pod="old-abc", pod_uid="uid-5", pid=vm_process.pid, **fields)
    (root / "run/cocoon/pods/stray-file").write_text("not a directory")

    vms = {vm.instance: vm for vm in probe("node-a", HostView(root), all_reachable).vms}
    assert sorted(vms) == [3, 5]
    assert vms[3].pod_uid == "uid-3" and vms[3].running
    assert vms[3].quote is not None and vms[3].quote.quote_bytes() == b"a quote"
    assert vms[5].pod_uid == "uid-5" and vms[5].quote is None
