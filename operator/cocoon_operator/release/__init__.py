"""COCOON releases: from the tarball COCOON publishes to what a CocoonWorker names.

``cocoon-operator release import TARBALL`` (:mod:`.cli`) unpacks a release safely
(:mod:`._unpack`), checks it holds every file the launcher and the seal server
need (:mod:`._layout`, COCOON's ``scripts/prepare-release``), records each
file's SHA-256, prepares the launcher image's build context, optionally builds
and pushes the image, and prints the ``spec.release`` block (:mod:`._import`).
"""

from cocoon_operator.release._import import (
    build_argv,
    pinned,
    release_block,
    release_version,
    render_block,
    repository_of,
    sha256sums,
)
from cocoon_operator.release._layout import ENCLAVE, FIELD_OF_PATH, REQUIRED, SEAL_SERVER
from cocoon_operator.release._unpack import (
    ReleaseImportError,
    ReleaseTree,
    member_path,
    release_tree,
    unpack,
)

__all__ = [
    "ENCLAVE",
    "FIELD_OF_PATH",
    "REQUIRED",
    "SEAL_SERVER",
    "ReleaseImportError",
    "ReleaseTree",
    "build_argv",
    "member_path",
    "pinned",
    "release_block",
    "release_tree",
    "release_version",
    "render_block",
    "repository_of",
    "sha256sums",
    "unpack",
]
