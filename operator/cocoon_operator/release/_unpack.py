"""Unpack a COCOON release tarball safely, digesting every file as it is written.

A release tarball comes from a download: every entry is checked before anything
is written. Only regular files and directories are accepted, each under the
destination (no absolute name, no ``..``), each once; a symbolic or hard link,
a device or a FIFO is refused with its name, never followed or created. The
image files are gigabytes, so each is hashed while it is written (one read of
the tarball, none of the unpacked tree).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Final

from cocoon_operator.release._layout import FIELD_OF_PATH, REQUIRED, REQUIRED_DIRS, SPEC_INIT

_CHUNK: Final = 1 << 20


class ReleaseImportError(Exception):
    """A release the operator will not use; the message names the entry or file."""


def member_path(name: str) -> PurePosixPath:
    """The relative path a tar entry may be written to, or ReleaseImportError.

    ``./a/b`` is ``a/b``; an absolute name, a ``..`` component or an empty name
    is refused rather than cleaned up: such a tarball is not the release.
    """
    if not name or name.startswith("/") or "\\" in name:
        raise ReleaseImportError(f"tar entry {name!r}: absolute or unusual name refused")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if not parts:
        raise ReleaseImportError(f"tar entry {name!r}: empty name refused")
    if ".." in parts:
        raise ReleaseImportError(f"tar entry {name!r}: '..' refused (path traversal)")
    return PurePosixPath(*parts)


def _kind_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"is a symbolic link to {member.linkname!r}: links are refused"
    if member.islnk():
        return f"is a hard link to {member.linkname!r}: links are refused"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or directory (device, FIFO?): refused"
    return None


@dataclass(frozen=True)
class Unpacked:
    """The tree written under ``dest``: each regular file's SHA-256 and whether it is executable."""

    dest: Path
    digests: dict[PurePosixPath, str]
    executable: frozenset[PurePosixPath]


def _write(source: IO[bytes], target: Path, mode: int) -> str:
    digest = hashlib.sha256()
    # O_EXCL | O_NOFOLLOW: the destination is fresh, nothing there is overwritten or followed.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        for block in iter(lambda: source.read(_CHUNK), b""):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def unpack(tarball: Path, dest: Path) -> Unpacked:
    """Unpack ``tarball`` (plain, gz, bz2 or xz) into the empty or new directory ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ReleaseImportError(f"{dest} is not empty: unpack into a new directory")
    digests: dict[PurePosixPath, str] = {}
    executable: set[PurePosixPath] = set()
    seen: set[PurePosixPath] = set()
    try:
        # Stream mode ("r|*"): one pass, members checked one by one before each is written.
        with tarfile.open(tarball, "r|*") as tar:
            for member in tar:
                rel = member_path(member.name)
                problem = _kind_problem(member)
                if problem is not None:
                    raise ReleaseImportError(f"tar entry {member.name!r} {problem}")
                if rel in seen and not member.isdir():
                    raise ReleaseImportError(f"tar entry {member.name!r} appears twice")
                seen.add(rel)
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise ReleaseImportError(f"tar entry {member.name!r} has no data")
                is_exec = bool(member.mode & 0o111)
                digests[rel] = _write(source, target, 0o755 if is_exec else 0o644)
                if is_exec:
                    executable.add(rel)
    except (tarfile.TarError, EOFError) as exc:
        raise ReleaseImportError(f"{tarball}: not a readable tar archive: {exc}") from None
    except OSError as exc:
        raise ReleaseImportError(f"{tarball}: cannot unpack: {exc}") from None
    return Unpacked(dest=dest, digests=digests, executable=frozenset(executable))


@dataclass(frozen=True)
class ReleaseTree:
    """An unpacked release: its root and every file's SHA-256, by path relative to the root."""

    root: Path
    top: str | None  # the tarball's one top directory (release-<commit>), if it had one
    digests: dict[str, str]

    def files(self) -> dict[str, str]:
        """spec.release.files: each digested file's SHA-256 under its field name."""
        return {field: self.digests[path] for path, field in FIELD_OF_PATH.items()}


def release_tree(unpacked: Unpacked) -> ReleaseTree:
    """The release inside ``unpacked``, checked for every file the operator needs.

    COCOON's tarball holds one directory, ``release-<commit>``
    (scripts/dist-worker/README.md:26); a tarball of the release's contents
    themselves is taken as well. Every missing file is named, with what needs it.
    """
    firsts = {p.parts[0] for p in unpacked.digests}
    nested = all(len(p.parts) > 1 for p in unpacked.digests)
    top = next(iter(firsts)) if len(firsts) == 1 and nested else None
    prefix = PurePosixPath(top) if top is not None else PurePosixPath()
    root = unpacked.dest / top if top is not None else unpacked.dest
    digests = {str(p.relative_to(prefix)): d for p, d in sorted(unpacked.digests.items())}
    missing = [f"{path} ({why})" for path, why in REQUIRED.items() if path not in digests]
    missing += [
        f"{d}/ (copied into the guest's spec share)"
        for d in REQUIRED_DIRS
        if not (root / d).is_dir()
    ]
    if missing:
        raise ReleaseImportError(
            "the release lacks what the launcher or the seal server needs: " + "; ".join(missing)
        )
    if prefix / SPEC_INIT not in unpacked.executable:
        raise ReleaseImportError(
            f"{SPEC_INIT} is not executable: the guest runs it (spec/spec-worker/init)"
        )
    return ReleaseTree(root=root, top=top, digests=digests)
