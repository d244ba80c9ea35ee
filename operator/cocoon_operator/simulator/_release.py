"""The local stack's stand-in for a COCOON release tarball.

Laid out as ``scripts/prepare-release`` lays a release out (reference/cocoon/
scripts/prepare-release:67-95): ``images/prod/{OVMF.fd,image.img,image.vmlinuz,
image.initrd,image.cmdline}``, ``bin/{health-client,seal-server,enclave.signed.so}``,
``spec/spec-worker/``, ``spec/fake-ton/``, ``spec/mainnet-base-ton-config.json``,
``scripts/`` and the ``*.conf.example`` templates; :func:`write_release_tarball`
packs it as COCOON publishes it, under one ``release-<commit>`` directory
(scripts/dist-worker/README.md:24-26). The files' contents are the project's own
placeholders (no VM boots them) but their names, places and roles are COCOON's,
so the real launcher code prepares the simulated worker's spec share from them
exactly as it would from a real release. Their digests are fixed, so the
example CocoonWorker can name them.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Final

# The guest's init reads the model disks by serial and renders its configs
# (spec/spec-worker/init: veritysetup on /dev/disk/by-id/virtio-model-tar*, then
# cocoon-render-config worker-config.json); the simulator checks the same names.
_INIT: Final = """#!/bin/bash
# Simulated release: the steps of COCOON's spec-worker init, by name only.
cocoon-render-config model.verity_hash
veritysetup open /dev/disk/by-id/virtio-model-tar model.tar /dev/disk/by-id/virtio-model-tar-verity
cocoon-render-config worker-config.json
cocoon-render-ton-config
systemctl start cocoon-worker-runner.service
"""
_RUNNER_UNIT: Final = """[Unit]
Description=simulated COCOON worker runner

[Service]
ExecStart=/usr/bin/worker-runner -c /run/spec/worker-config.json
"""
# The keys COCOON's worker-config.json takes from runtime.vars
# (spec/spec-worker/worker-config.json).
_WORKER_CONFIG: Final = {
    "model_name": "$MODEL_NAME@$MODEL_COMMIT:$MODEL_VERITY_HASH",
    "owner_address": "$OWNER_ADDRESS",
    "root_contract_address": "$ROOT_CONTRACT_ADDRESS",
    "node_wallet_key": "$NODE_WALLET_KEY",
    "coefficient": "$WORKER_COEFFICIENT",
    "http_port": 12000,
}
_FAKE_TON_VARS: Final = "SIMULATED_FAKE_TON=1\n"
_IMAGES: Final = {
    "OVMF.fd": b"simulated OVMF firmware\n",
    "image.img": b"simulated root disk\n",
    "image.vmlinuz": b"simulated kernel\n",
    "image.initrd": b"simulated initrd\n",
    "image.cmdline": b"console=hvc0 root=/dev/vda1 roothash=" + b"0" * 64 + b" ro\n",
}
# prepare-release:75-79: the host binaries, executable. Placeholders: no enclave loads here.
_HOST_BINS: Final = {
    "health-client": b"simulated health-client\n",
    "seal-server": b"simulated seal-server\n",
    "enclave.signed.so": b"simulated enclave.signed.so\n",
}
# prepare-release:68-72 and 93-95: the scripts and templates (not used by the operator).
_OTHER_FILES: Final = {
    "scripts/cocoon-launch": b"#!/usr/bin/env python3\n# simulated\n",
    "scripts/setup-gpu-vfio": b"#!/bin/bash\n# simulated\n",
    "scripts/build-model": b"#!/bin/bash\n# simulated\n",
    "worker.conf.example": b"[node]\ntype = worker\n",
    "proxy.conf.example": b"[node]\ntype = proxy\n",
    "README.md": b"# COCOON Worker (simulated release)\n",
    "spec/spec-proxy/init": b"#!/bin/bash\n",
}
#: The simulated release's commit: its tarball's top directory is ``release-<commit>``.
COMMIT: Final = "5a1e0000c0c0000000000000000000000000000a"
#: How the example CocoonWorker names each file (spec.release.files).
FIELD_OF_FILE: Final = {
    "OVMF.fd": "ovmf",
    "image.img": "image",
    "image.vmlinuz": "kernel",
    "image.initrd": "initrd",
    "image.cmdline": "cmdline",
}


def release_digests() -> dict[str, str]:
    """spec.release.files for the simulated release."""
    return {FIELD_OF_FILE[name]: hashlib.sha256(data).hexdigest() for name, data in _IMAGES.items()}


def write_release(root: Path) -> Path:
    """Write the simulated release under ``root`` (idempotent) and return it."""
    images = root / "images" / "prod"
    images.mkdir(parents=True, exist_ok=True)
    for name, data in _IMAGES.items():
        (images / name).write_bytes(data)
    worker = root / "spec" / "spec-worker"
    worker.mkdir(parents=True, exist_ok=True)
    (worker / "init").write_text(_INIT)
    (worker / "init").chmod(0o755)
    (worker / "cocoon-worker-runner.service").write_text(_RUNNER_UNIT)
    (worker / "worker-config.json").write_text(json.dumps(_WORKER_CONFIG, indent=2) + "\n")
    (worker / "model.verity_hash").write_text("$MODEL_VERITY_HASH")
    (worker / ".gitignore").write_text("runtime\n")
    fake = root / "spec" / "fake-ton"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "fake-ton-config.json").write_text('{"simulated": true}\n')
    (fake / "runtime.vars").write_text(_FAKE_TON_VARS)
    (root / "spec" / "mainnet-base-ton-config.json").write_text('{"@type": "config.global"}\n')
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, data in _HOST_BINS.items():
        (bin_dir / name).write_bytes(data)
        (bin_dir / name).chmod(0o755)
    for rel, data in _OTHER_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        if data.startswith(b"#!"):
            (root / rel).chmod(0o755)
    return root


def seal_digests() -> dict[str, str]:
    """spec.release.files.enclave and .sealServer for the simulated release."""
    return {
        "enclave": hashlib.sha256(_HOST_BINS["enclave.signed.so"]).hexdigest(),
        "sealServer": hashlib.sha256(_HOST_BINS["seal-server"]).hexdigest(),
    }


def write_release_tarball(root: Path, tarball: Path, commit: str = COMMIT) -> Path:
    """The simulated release written under ``root`` and packed as ``release-<commit>/``
    into ``tarball`` (compression from its suffix: ``.tar.xz`` as COCOON's, ``.tar``...)."""
    tree = write_release(root / f"release-{commit}")
    if tarball.suffix == ".xz":
        with tarfile.open(tarball, "w:xz") as tar:
            tar.add(tree, arcname=tree.name)
    elif tarball.suffix == ".gz":
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(tree, arcname=tree.name)
    else:
        with tarfile.open(tarball, "w") as tar:
            tar.add(tree, arcname=tree.name)
    return tarball
