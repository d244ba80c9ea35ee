"""Where a COCOON release keeps the files the operator uses (pure constants).

The release tarball is what ``scripts/prepare-release`` (reference/cocoon/
scripts/prepare-release) lays out under one directory, ``release-<commit>``
(scripts/dist-worker/README.md:24-26, ``tar xvf ...; cd release-<commit-hash>``):

- ``scripts/{cocoon-launch,setup-gpu-vfio,build-model}`` (prepare-release:68-72);
- ``bin/{health-client,seal-server,enclave.signed.so}`` (prepare-release:75-79);
- ``spec/{spec-worker,spec-proxy,fake-ton}/`` and, when the build had it,
  ``spec/mainnet-base-ton-config.json`` (prepare-release:82-86: ``|| true``);
- ``images/prod/{image.img,image.vmlinuz,image.initrd,image.cmdline,OVMF.fd}``
  (prepare-release:89-90);
- ``worker.conf.example``, ``proxy.conf.example``, ``README.md`` (prepare-release:93-95).
"""

from __future__ import annotations

from typing import Final

from cocoon_operator.launcher._cocoon import (
    BASE_TON_CONFIG,
    IMAGE_FILES,
    SPEC_FAKE_TON,
    SPEC_WORKER,
)

IMAGE_DIR: Final = "images/prod"  # cocoon-launch:275 without --test
SEAL_SERVER: Final = "bin/seal-server"  # prepare-release:76, dist-worker/README.md:33
ENCLAVE: Final = "bin/enclave.signed.so"  # prepare-release:76, dist-worker/README.md:33
SPEC_INIT: Final = f"{SPEC_WORKER}/init"

#: spec.release.files: each digested file, by the field that carries its digest.
FIELD_OF_PATH: Final = {
    f"{IMAGE_DIR}/OVMF.fd": "ovmf",
    f"{IMAGE_DIR}/image.img": "image",
    f"{IMAGE_DIR}/image.vmlinuz": "kernel",
    f"{IMAGE_DIR}/image.initrd": "initrd",
    f"{IMAGE_DIR}/image.cmdline": "cmdline",
    ENCLAVE: "enclave",
    SEAL_SERVER: "sealServer",
}
assert {p.rsplit("/", 1)[1] for p in list(FIELD_OF_PATH)[:5]} == set(IMAGE_FILES)

#: Every file without which the launcher or the seal server cannot do its work, and why.
REQUIRED: Final = {
    **{f"{IMAGE_DIR}/{name}": "measured by the VM (cocoon-launch:572-617)" for name in IMAGE_FILES},
    SPEC_INIT: "the guest's spec share (cocoon-launch:401-405 copies spec/spec-worker)",
    BASE_TON_CONFIG: (
        "the guest's global.config.json unless the worker names its own"
        " (cocoon-launch:409-412 stops without it)"
    ),
    SEAL_SERVER: "the host's seal server (dist-worker/README.md:30-37)",
    ENCLAVE: "the seal server's enclave: it must be the release's own (dist-worker/README.md:35)",
}
#: Directories the launcher copies whole (fake-TON mode reads spec/fake-ton: cocoon-launch:423).
REQUIRED_DIRS: Final = (SPEC_WORKER, SPEC_FAKE_TON)
#: The top directory COCOON's tarball unpacks to (dist-worker/README.md:26).
TOP_PREFIX: Final = "release-"
