"""The pure half of the model image builder: what to fetch, what to run, what to expect.

Everything here mirrors COCOON's ``scripts/build-model`` (cited by line as
``build-model:N``), so that an image built here is byte for byte the one COCOON
builds, and so its dm-verity root hash is the ``verity`` of the model id
``Name@commit:verity`` that root contracts list and workers attest. No I/O: the
download, GNU tar and ``veritysetup`` run in :mod:`cocoon_operator.models._build`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# veritysetup's parameters (build-model:138). The UUID and salt are COCOON's and go
# into the hash image's superblock, so they change the root hash. The salt is
# 17 bytes, not the default 32: COCOON's value, not a typo here. The remaining
# parameters are veritysetup's compiled-in defaults, which build-model relies on
# without naming; they are named here so a cryptsetup with other defaults still
# builds COCOON's image.
VERITY_UUID = "645ac31f-7610-42e1-8434-9d733699eac0"
VERITY_SALT = "00010203040506070809101a1b1c1d1e1f"
VERITY_DEFAULTS = (
    "--hash=sha256",
    "--data-block-size=4096",
    "--hash-block-size=4096",
    "--format=1",
)

# The tar is padded to whole 4 KiB data blocks (build-model:123). The script
# appends ``4096 - size % 4096`` zero bytes, so a tar already a multiple of 4096
# (GNU tar writes 10 KiB records: any even number of them) gets a whole extra
# block. That block is part of the image and of its hash, so it is kept.
BLOCK = 4096

# huggingface_hub's snapshot_download lists the files of a repository from the
# repository's info, but not when that list is empty or longer than this
# (huggingface_hub 1.0.1, _snapshot_download.py VERY_LARGE_REPO_THRESHOLD): then it
# walks the tree API instead. build-model downloads through it (build-model:104).
SIBLINGS_RELIABLE_UP_TO = 50_000

# The Hub's own repository-id rule (huggingface_hub utils/_validators.py
# validate_repo_id), restricted to ASCII: an optional namespace and a name of
# letters, digits, ``_``, ``.`` and ``-``, starting and ending with a letter,
# digit or ``_``. ``hf download`` refuses other names, so build-model does too.
_SEGMENT = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_SEGMENT}/)?{_SEGMENT}")
_REPO_NAME_MAX = 96
_COMMIT = re.compile(r"[0-9a-f]{40}")
_ROOT_HASH = re.compile(r"[0-9a-f]{64}")


class ModelBuildError(Exception):
    """The model image cannot be built or is not the one asked for.

    The message says which part is wrong (the name, the commit, the verity hash,
    a file of the repository, the Hub's answer, tar or veritysetup) in words an
    operator can act on. It never contains the Hub token: requests are reported
    by method, URL and status only.
    """


@dataclass(frozen=True)
class ModelSpec:
    """``NAME[@COMMIT[:VERITY]]`` as given: the commit and verity hash may be missing."""

    name: str
    commit: str | None = None
    verity: str | None = None


@dataclass(frozen=True)
class ModelId:
    """A built model's identity, COCOON's ``Name@commit:verity``."""

    name: str
    commit: str
    verity: str

    def __str__(self) -> str:
        return f"{self.name}@{self.commit}:{self.verity}"


def parse_model_spec(text: str) -> ModelSpec:
    """Split ``NAME[@COMMIT[:VERITY]]`` and check each part, naming the part that is wrong.

    build-model:29 splits at the first ``@`` and the first ``:`` after it, as here.
    Stricter than the script, a commit must be a full 40-hex commit id (a branch
    or tag moves, and the model id must name what was built; leave the commit out
    to build the repository's current commit), and a verity hash must be 64
    lowercase hex (what veritysetup prints), so a typo is refused before a
    download of many gigabytes rather than after it.
    """
    name, at, rest = text.partition("@")
    commit, colon, verity = rest.partition(":")
    if not name:
        raise ModelBuildError(f"model {text!r}: the name before '@' is empty")
    if len(name.rsplit("/", 1)[-1]) > _REPO_NAME_MAX or not _REPO_ID.fullmatch(name):
        raise ModelBuildError(
            f"model {text!r}: name {name!r} is not a Hugging Face repository id"
            " (NAMESPACE/NAME of letters, digits, '_', '.', '-')"
        )
    if "--" in name or ".." in name or name.endswith(".git"):
        raise ModelBuildError(
            f"model {text!r}: name {name!r} has '--' or '..' or ends in '.git',"
            " which the Hub does not allow"
        )
    if at and not _COMMIT.fullmatch(commit):
        raise ModelBuildError(
            f"model {text!r}: commit {commit!r} is not a 40-hex commit id"
            " (pin the exact commit, or leave '@COMMIT' out to use the current one)"
        )
    if colon and not _ROOT_HASH.fullmatch(verity):
        raise ModelBuildError(
            f"model {text!r}: verity hash {verity!r} is not 64 lowercase hex digits"
        )
    return ModelSpec(name=name, commit=commit or None, verity=verity or None)


def image_stem(name: str) -> str:
    """The file name (without ``.tar``) build-model gives a model's image.

    build-model:41: every byte of the name that is not an ASCII letter or digit
    becomes ``_`` (``tr -c '[:alnum:]' '_'`` under ``LC_ALL=C``), so
    ``Qwen/Qwen3-0.6B`` is ``Qwen_Qwen3_0_6B``.
    """
    return "".join(chr(b) if b < 128 and chr(b).isalnum() else "_" for b in name.encode("utf-8"))


def siblings_are_reliable(count: int) -> bool:
    """Whether a repository info's file list is complete (``SIBLINGS_RELIABLE_UP_TO``)."""
    return 0 < count <= SIBLINGS_RELIABLE_UP_TO


def plan_files(paths: Iterable[str]) -> tuple[str, ...]:
    """The repository files that end up in the tar, in a fixed order, each checked safe to write.

    build-model downloads every file (build-model:104) and then deletes the
    download directory's ``.cache`` (build-model:106), which is where
    huggingface_hub keeps its bookkeeping but also takes a repository's own
    top-level ``.cache`` with it: those files are left out here too, or the tars
    would differ. A path that would land outside the download directory, or
    collide with another, is refused; the Hub never serves one, a mirror might.
    """
    kept: set[str] = set()
    for path in paths:
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ModelBuildError(f"repository file {path!r} is not a plain relative path")
        if "\\" in path or "\0" in path:
            raise ModelBuildError(f"repository file {path!r} has a backslash or NUL")
        if parts[0] == ".cache":
            continue
        kept.add(path)
    for path in kept:
        for parent in PurePosixPath(path).parents:
            if str(parent) in kept:
                raise ModelBuildError(
                    f"repository file {path!r} is inside {str(parent)!r}, which is a file"
                )
    return tuple(sorted(kept))


def tar_argv(tar: str, output: Path, source: Path) -> list[str]:
    """GNU tar's command line for the image: build-model:110-116, option for option.

    Together the options make the archive a function of the files' names,
    contents and owner permission bits only: names sorted, POSIX (pax) headers
    without the process id in their names and without access or change times,
    every mtime clamped to the epoch, owner and group 0 by number, and group
    and other permissions copied from the owner's minus write. Run it with
    ``LC_ALL=C`` (``TAR_ENV``), as the script does, so ``--sort=name`` compares bytes.
    """
    return [
        tar,
        "-cf",
        str(output),
        "-C",
        str(source),
        ".",
        "--sort=name",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f",
        "--pax-option=delete=atime,delete=ctime",
        "--clamp-mtime",
        "--mtime=@0",
        "--numeric-owner",
        "--owner=0",
        "--group=0",
        "--mode=go+u,go-w",
    ]


TAR_ENV = {"LC_ALL": "C"}


def padding(size: int) -> int:
    """Zero bytes appended to a tar of ``size`` bytes: 1 to 4096, never 0 (build-model:123)."""
    return BLOCK - size % BLOCK


def veritysetup_argv(veritysetup: str, data: Path, hashes: Path, root_hash: Path) -> list[str]:
    """``veritysetup format`` for the padded tar, with COCOON's UUID and salt (build-model:138)."""
    return [
        veritysetup,
        "format",
        f"--uuid={VERITY_UUID}",
        f"--salt={VERITY_SALT}",
        *VERITY_DEFAULTS,
        str(data),
        str(hashes),
        f"--root-hash-file={root_hash}",
    ]


def check_root_hash(spec: ModelSpec, actual: str) -> None:
    """Refuse an image whose root hash is not the one the spec asked for (build-model:148).

    The comparison is exact, as the script's; the message names both hashes so
    the operator can tell a wrong spec from a changed repository or mirror.
    """
    if spec.verity is not None and spec.verity != actual:
        raise ModelBuildError(
            f"model {spec.name}: verity hash mismatch: expected {spec.verity}, got {actual}"
            " (the image built from the repository is not the one the model id names)"
        )
