"""The guest's measured hash of a prepared spec directory, computed on the host.

The guest's ``cocoon-prepare-spec`` (``reference/cocoon/reprodebian/cocoon-init/
cocoon-prepare-spec:48-118``) stages the files of ``/spec`` in a git repository
with SHA-256 objects, honouring ``.gitignore`` (:67; the release's
``spec/spec-worker/.gitignore`` names ``runtime``), and takes ``git write-tree``:
that tree hash is extended into RTMR3 (``cocoon-init:68-77``). Only regular files
of mode 644 or 755 are allowed (:110-115).

Its ``git rm --cached`` lines (:70-72) then drop ``runtime/`` (the secrets),
``spec.tree``/``spec.meta`` and every ``.gitignore`` from the hash. Their paths are
relative: the guest runs the script from ``/`` (``cocoon-init.service`` sets no
working directory), where git takes them relative to the work tree, as the oracle
test does. This module understands the ``.gitignore`` patterns a spec uses: one
name (or glob of a name) per line.

The launcher computes the hash so that the persistent disk can be keyed by what
the guest measures, and so a spec the guest would refuse is refused before QEMU
starts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import stat
from pathlib import Path
from typing import Final

UNMEASURED_DIR: Final = "runtime"  # cocoon-prepare-spec:18, :70
UNMEASURED_FILES: Final = frozenset({"spec.tree", "spec.meta"})  # :71, :87


class SpecTreeError(Exception):
    """The spec holds something the guest refuses to measure; the message names it."""


def _object(kind: bytes, body: bytes) -> bytes:
    return hashlib.sha256(kind + b" " + str(len(body)).encode() + b"\0" + body).digest()


def _ignored(directory: Path) -> list[str]:
    try:
        text = (directory / ".gitignore").read_text()
    except FileNotFoundError:
        return []
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "/" in line.rstrip("/") or line.startswith("!"):
            raise SpecTreeError(f"{directory / '.gitignore'}: pattern {line!r} is not supported")
        patterns.append(line.rstrip("/"))
    return patterns


def _tree(directory: Path, top: bool, ignored: list[str]) -> bytes:
    ignored = ignored + _ignored(directory)
    entries: list[tuple[bytes, bytes, bytes]] = []  # (sort key, mode, object id)
    for child in directory.iterdir():
        name = child.name
        if top and (name == UNMEASURED_DIR or name in UNMEASURED_FILES):
            continue
        if name in {".git", ".gitignore"} or any(fnmatch.fnmatchcase(name, p) for p in ignored):
            continue
        info = child.lstat()
        if stat.S_ISDIR(info.st_mode):
            sub = _tree(child, top=False, ignored=ignored)
            if sub:  # git records no empty tree
                entries.append((name.encode() + b"/", b"40000", _object(b"tree", sub)))
        elif stat.S_ISREG(info.st_mode):
            mode = b"100755" if info.st_mode & stat.S_IXUSR else b"100644"
            entries.append((name.encode(), mode, _object(b"blob", child.read_bytes())))
        else:
            raise SpecTreeError(f"{child} is neither a regular file nor a directory")
    entries.sort(key=lambda e: e[0])
    return b"".join(mode + b" " + key.rstrip(b"/") + b"\0" + oid for key, mode, oid in entries)


def spec_tree_hash(spec_dir: Path) -> str:
    """The hex SHA-256 git tree id of the measured part of ``spec_dir``."""
    return _object(b"tree", _tree(spec_dir, top=True, ignored=[])).hex()
