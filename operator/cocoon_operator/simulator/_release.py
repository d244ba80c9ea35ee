"""The local stack's stand-in for a COCOON release tarball.

Laid out as ``scripts/prepare-release`` lays a release out (reference/cocoon/
scripts/prepare-release:79-95): ``images/prod/{OVMF.fd,image.img,image.vmlinuz,
image.initrd,image.cmdline}``, ``spec/spec-worker/``, ``spec/fake-ton/`` and
``spec/mainnet-base-ton-config.json``. The files' contents are the project's own
placeholders (no VM boots them) but their names, places and roles are COCOON's,
so the real launcher code prepares the simulated worker's spec share from them
exactly as it would from a real release. Their digests are fixed, so the
example CocoonWorker can name them.
"""

from __future__ import annotations

import hashlib
import json
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
    return root
