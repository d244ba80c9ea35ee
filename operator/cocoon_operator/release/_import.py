"""From an unpacked release to a launcher image build context and a ``spec.release`` block.

Pure except :func:`write_context` (copies files) and :func:`sha256sums` (text).
The block is rendered by a YAML library from a typed value, never by string
formatting, and checked against the CocoonWorker's own model before it is printed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from cocoon_operator.api.v1alpha1 import Release, ReleaseFiles
from cocoon_operator.release._layout import TOP_PREFIX
from cocoon_operator.release._unpack import ReleaseImportError, ReleaseTree

#: The CocoonWorker's own rule for spec.release.version (api/v1alpha1.py, Release.version).
VERSION_PATTERN: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
DOCKERFILE: Final = "images/launcher/Dockerfile"
#: What the launcher Dockerfile's build stages copy from the checkout (images/launcher/Dockerfile).
SOURCE_FILES: Final = ("pyproject.toml", "README.md", "requirements/images.lock")
SOURCE_DIRS: Final = ("operator",)
CONTEXT_RELEASE: Final = "release"  # the Dockerfile's RELEASE_DIR
#: The Dockerfile's build arguments carrying each digest, by spec.release.files field.
BUILD_ARG_OF_FIELD: Final = {
    "ovmf": "OVMF_SHA256",
    "image": "IMAGE_SHA256",
    "kernel": "KERNEL_SHA256",
    "initrd": "INITRD_SHA256",
    "cmdline": "CMDLINE_SHA256",
    "enclave": "ENCLAVE_SHA256",
    "sealServer": "SEAL_SERVER_SHA256",
}
IMAGE_PLACEHOLDER: Final = ""


def release_version(tree: ReleaseTree, given: str | None) -> str:
    """``--version`` when given, else the commit of COCOON's ``release-<commit>`` directory."""
    version = given
    if version is None and tree.top is not None and tree.top.startswith(TOP_PREFIX):
        version = tree.top.removeprefix(TOP_PREFIX)
    if not version:
        raise ReleaseImportError(
            "cannot tell the release's version (the tarball has no release-<commit>"
            " directory): pass --version"
        )
    if not VERSION_PATTERN.match(version):
        raise ReleaseImportError(
            f"version {version!r} is not a valid spec.release.version"
            " (letters, digits, '.', '_', '-'; at most 64)"
        )
    return version


def release_block(version: str, files: Mapping[str, str], image: str | None) -> dict[str, Any]:
    """``{"release": {...}}`` as a CocoonWorker's (or a pool template's) spec carries it.

    ``image`` is the launcher image by digest (``repo@sha256:...``); without one
    the field is left empty, which the apiserver refuses by name until it is filled.
    """
    checked_files = ReleaseFiles.model_validate(dict(files))
    if image is not None:
        try:
            Release.model_validate({"version": version, "image": image, "files": dict(files)})
        except ValidationError as exc:
            raise ReleaseImportError(f"--image {image!r}: {exc.errors()[0]['msg']}") from None
    return {
        "release": {
            "version": version,
            "image": image if image is not None else IMAGE_PLACEHOLDER,
            "files": checked_files.model_dump(by_alias=True, exclude_none=True),
        }
    }


def render_block(block: Mapping[str, Any]) -> str:
    """The block as YAML, with a comment when the image is still to be filled in."""
    text = yaml.safe_dump(dict(block), sort_keys=False, default_flow_style=False)
    if block["release"]["image"] == IMAGE_PLACEHOLDER:
        text = (
            "# spec.release.image: the launcher image built from this release, by digest\n"
            "# (REPOSITORY@sha256:...), as a registry reports it after the push.\n" + text
        )
    return text


def sha256sums(digests: Mapping[str, str]) -> str:
    """Every file's digest in ``sha256sum`` format (``sha256sum -c`` checks it in the release)."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(digests.items()))


def find_source(start: Path) -> Path | None:
    """The project checkout above ``start`` holding the launcher Dockerfile, if any."""
    for candidate in (start, *start.parents):
        if (candidate / DOCKERFILE).is_file() and (candidate / "operator").is_dir():
            return candidate
    return None


def write_context(source: Path, context: Path) -> None:
    """Put the launcher Dockerfile and the sources it builds beside ``context/release``."""
    dockerfile = source / DOCKERFILE
    if not dockerfile.is_file():
        raise ReleaseImportError(f"{dockerfile} not found: pass --source CHECKOUT")
    shutil.copy(dockerfile, context / "Dockerfile")
    for name in SOURCE_FILES:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, context / name)
    for name in SOURCE_DIRS:
        shutil.copytree(
            source / name,
            context / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )


#: The build script in the checkout (it makes the Debian base, builds and smoke-tests).
BUILD_SCRIPT: Final = "hack/build-images"


def build_argv(source: Path, context: Path, tag: str, files: Mapping[str, str]) -> list[str]:
    """``hack/build-images`` of the launcher image from ``context``, the digests as build arguments.

    The checkout's build script rather than a bare ``buildah bud``: it makes the
    Debian 13 base the Dockerfile's ``PYTHON_IMAGE`` stands for where no image
    registry is reachable, builds with ``buildah bud --isolation chroot`` (no
    container runtime or user namespaces: a CI runner, a node), and smoke-tests
    the result: QEMU with its TDX guest object, veritysetup, and each release
    file in the image against the digest given. The Dockerfile checks each file
    against its digest inside the build as well.
    """
    argv = [str(source / BUILD_SCRIPT), "--context", str(context), "--name", tag]
    argv += ["--build-arg", f"RELEASE_DIR={CONTEXT_RELEASE}/"]
    for field, arg in BUILD_ARG_OF_FIELD.items():
        argv += ["--build-arg", f"{arg}={files[field]}"]
    return [*argv, "launcher"]


def push_argv(tag: str, digest_file: Path) -> list[str]:
    """``buildah push`` of ``tag`` to its registry; the manifest digest goes to ``digest_file``."""
    return ["buildah", "push", "--digestfile", str(digest_file), tag, f"docker://{tag}"]


def local_digest_argv(tag: str) -> list[str]:
    """``buildah inspect`` printing the manifest digest of ``tag`` as built, in local storage.

    For ``--no-push``: the image by that digest is exactly the one built and
    smoke-tested, on this machine. A registry given the image later may answer a
    different digest (it stores the layers compressed, so the manifest differs):
    a block for a cluster takes the pushed digest.
    """
    return ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageDigest}}", tag]


def repository_of(tag: str) -> str:
    """``registry:5000/a/b:v1`` -> ``registry:5000/a/b`` (a port is not a tag)."""
    name, _, last = tag.rpartition("/")
    repo_last = last.split("@", 1)[0].split(":", 1)[0]
    return f"{name}/{repo_last}" if name else repo_last


def pinned(tag: str, digest: str) -> str:
    """The image reference by digest: ``repository@sha256:...``."""
    digest = digest.strip()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ReleaseImportError(f"the registry answered an unusable digest {digest!r}")
    return f"{repository_of(tag)}@{digest}"
