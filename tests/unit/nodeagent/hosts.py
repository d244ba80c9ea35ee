"""Worker hosts as directory trees, the way the agent sees a real one under /host."""

from __future__ import annotations

import json
import os
from pathlib import Path


def gpu(root: Path, bdf: str, *, driver: str | None = "vfio-pci", group: str = "37") -> None:
    """An H100 SXM5 at ``bdf``, bound to ``driver`` (None: unbound)."""
    dev = root / "sys/bus/pci/devices" / bdf
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n")
    (dev / "device").write_text("0x2330\n")
    (dev / "class").write_text("0x030200\n")
    if driver is not None:
        os.symlink(f"../../../bus/pci/drivers/{driver}", dev / "driver")
    os.symlink(f"../../../kernel/iommu_groups/{group}", dev / "iommu_group")


def nvswitch(root: Path, bdf: str) -> None:
    """An NVSwitch: NVIDIA's, but a bridge (class 0x0680), not a GPU."""
    dev = root / "sys/bus/pci/devices" / bdf
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n")
    (dev / "device").write_text("0x22a3\n")
    (dev / "class").write_text("0x068000\n")


def tdx_host(root: Path, *, tdx: bool = True) -> None:
    """kvm_intel with its tdx parameter, /dev/kvm and /dev/vhost-vsock."""
    params = root / "sys/module/kvm_intel/parameters"
    params.mkdir(parents=True)
    (params / "tdx").write_text("Y\n" if tdx else "N\n")
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev/kvm").touch()
    (root / "dev/vhost-vsock").touch()


def vm_state(
    root: Path,
    *,
    instance: int,
    namespace: str,
    worker: str,
    pod: str,
    pod_uid: str,
    pci: str | None,
    pid: int,
) -> Path:
    """The launcher's state file for one VM."""
    state = root / "run/cocoon"
    state.mkdir(parents=True, exist_ok=True)
    path = state / f"instance-{instance}.json"
    path.write_text(
        json.dumps(
            {
                "instance": instance,
                "namespace": namespace,
                "worker": worker,
                "pod": pod,
                "podUid": pod_uid,
                "pci": pci,
                "pid": pid,
            }
        )
    )
    return path
