"""The node's model cache, the pure half: names, what to do, space, causes, progress.

A worker VM mounts its model as two read-only disks, ``<verity>.tar`` and
``<verity>.tar.verity``, from the node's cache (the launcher's ``model_dir``,
``/var/lib/cocoon/models``). ``cocoon-operator model ensure`` makes them present
and verified there; this module decides, from what the cache holds, what that
takes, and words every failure with a short stable reason an SRE or a node
agent can act on. The I/O is in :mod:`cocoon_operator.models._ensure`.

The cache's files for one model, all in the cache directory itself so every
publication is a rename on one file system:

- ``<verity>.tar``, ``<verity>.tar.verity``: the published images;
- ``<verity>.progress.json``: the last phase (``Progress``), written atomically;
  ``Ready`` records the two files' sizes, which is how a later ``ensure`` knows
  the pair was verified without reading tens of gigabytes again;
- ``<verity>.lock``: the per-model ``flock`` (released by the kernel when its
  holder dies, so a crash never leaves it held);
- ``.<verity>.tmp-*``: a run's temporary files and build directory. Only the lock
  holder writes them, so whatever the next holder finds is a crashed run's
  leftover and is removed.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cocoon_operator.models._plan import BLOCK, ModelBuildError

_VERITY = re.compile(r"[0-9a-f]{64}")


class Phase(StrEnum):
    """What ``ensure`` is doing for a model, as the progress file says."""

    DOWNLOADING = "Downloading"
    BUILDING = "Building"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


class Reason(StrEnum):
    """Why ``ensure`` failed: a stable word for scripts, with a message for people."""

    UNAUTHORIZED = "Unauthorized"  # 401/403 from the Hub or a source: no token, or not allowed
    NOT_FOUND = "NotFound"  # no such repository, revision, file or source
    HASH_MISMATCH = "HashMismatch"  # the images' root hash is not the model id's
    CORRUPT = "Corrupt"  # the tar does not match its hash tree, or a file is malformed
    DISK_FULL = "DiskFull"  # not enough space, before starting or while writing
    UNREACHABLE = "SourceUnreachable"  # connection, timeout, short download
    UNSUPPORTED = "Unsupported"  # a source scheme this version cannot fetch
    TOOL = "ToolFailed"  # veritysetup or tar missing or failing
    INVALID = "Invalid"  # bad arguments
    OTHER = "Failed"


class ModelCacheError(ModelBuildError):
    """``ensure`` or ``gc`` could not do what was asked; nothing unverified was published.

    ``reason`` is one :class:`Reason`; the message is one line naming what is
    wrong (both hashes for a mismatch, bytes needed and free for a full disk)
    and never a token or a URL's query string (a pre-signed URL's credentials).
    A subclass of :class:`ModelBuildError` so callers of the builder catch it too.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CacheNames:
    """The file names of one model in the cache (see the module's docstring)."""

    verity: str

    def __post_init__(self) -> None:
        if not _VERITY.fullmatch(self.verity):
            raise ModelCacheError(
                Reason.INVALID, f"verity hash {self.verity!r} is not 64 lowercase hex digits"
            )

    @property
    def tar(self) -> str:
        return f"{self.verity}.tar"

    @property
    def tree(self) -> str:
        return f"{self.verity}.tar.verity"

    @property
    def progress(self) -> str:
        return f"{self.verity}.progress.json"

    @property
    def lock(self) -> str:
        return f"{self.verity}.lock"

    @property
    def temp_prefix(self) -> str:
        return f".{self.verity}.tmp-"

    def leftovers(self, names: Iterable[str]) -> list[str]:
        """The directory entries a crashed run of this model left behind, sorted."""
        return sorted(n for n in names if n.startswith(self.temp_prefix))


def published_verities(names: Iterable[str]) -> list[str]:
    """The models with a published tar or hash tree among a cache's entries, sorted."""
    found = set()
    for name in names:
        stem = name.removesuffix(".verity").removesuffix(".tar")
        if name in (f"{stem}.tar", f"{stem}.tar.verity") and _VERITY.fullmatch(stem):
            found.add(stem)
    return sorted(found)


# --- the progress file ----------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One model's ``<verity>.progress.json``: the phase, bytes, and why it failed."""

    model: str
    phase: Phase
    bytes_done: int = 0
    bytes_total: int | None = None
    reason: str | None = None
    message: str | None = None
    updated_at: float = 0.0
    tar_bytes: int | None = None  # Ready: the verified pair's sizes
    tree_bytes: int | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "model": self.model,
            "phase": self.phase.value,
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "updatedAt": round(self.updated_at, 3),
        }
        for key, value in (
            ("reason", self.reason),
            ("message", self.message),
            ("tarBytes", self.tar_bytes),
            ("treeBytes", self.tree_bytes),
        ):
            if value is not None:
                doc[key] = value
        return json.dumps(doc, sort_keys=True) + "\n"

    def advanced(self, bytes_done: int, now: float) -> Progress:
        return replace(self, bytes_done=bytes_done, updated_at=now)


def parse_progress(text: str) -> Progress | None:
    """A progress file's content, or None when it is not one (a torn or foreign file)."""
    try:
        doc = json.loads(text)
        phase = Phase(doc["phase"])
        model = str(doc["model"])

        def count(key: str) -> int | None:
            value = doc.get(key)
            return value if isinstance(value, int) and value >= 0 else None

        return Progress(
            model=model,
            phase=phase,
            bytes_done=count("bytesDone") or 0,
            bytes_total=count("bytesTotal"),
            reason=doc.get("reason"),
            message=doc.get("message"),
            updated_at=float(doc.get("updatedAt", 0.0)),
            tar_bytes=count("tarBytes"),
            tree_bytes=count("treeBytes"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def progress_due(last_written: float | None, now: float, interval: float = 1.0) -> bool:
    """Whether a byte count is worth writing again: at most once per ``interval`` seconds."""
    return last_written is None or now - last_written >= interval


# --- what to do ---------------------------------------------------------------


class Step(Enum):
    READY = "ready"  # the verified pair is there: nothing to do
    VERIFY_IN_PLACE = "verify"  # both files there, not known verified (a crash after publishing)
    FETCH = "fetch"  # download the prebuilt pair from spec.model.source
    BUILD = "build"  # build the pair from the Hub


@dataclass(frozen=True)
class CacheState:
    """What the cache holds for one model: the published files' sizes, the record, leftovers."""

    tar_bytes: int | None
    tree_bytes: int | None
    progress: Progress | None
    leftovers: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnsurePlan:
    remove: tuple[str, ...]  # entry names to delete first
    step: Step


def plan_ensure(names: CacheNames, state: CacheState, *, has_source: bool) -> EnsurePlan:
    """What ``ensure`` does for a model, given the cache's state (under the model's lock).

    The pair is ready when both files are there and the progress record says
    ``Ready`` for exactly their sizes (written only after verification). Both
    files without that record (a crash between publishing and recording, or
    files put there by hand) are verified where they are. One file alone is
    half a publication: it is removed with the leftovers, and the pair fetched
    or built again.
    """
    remove = list(state.leftovers)
    both = state.tar_bytes is not None and state.tree_bytes is not None
    if both:
        record = state.progress
        if (
            record is not None
            and record.phase is Phase.READY
            and record.tar_bytes == state.tar_bytes
            and record.tree_bytes == state.tree_bytes
        ):
            return EnsurePlan(tuple(remove), Step.READY)
        return EnsurePlan(tuple(remove), Step.VERIFY_IN_PLACE)
    if state.tar_bytes is not None:
        remove.append(names.tar)
    if state.tree_bytes is not None:
        remove.append(names.tree)
    return EnsurePlan(tuple(remove), Step.FETCH if has_source else Step.BUILD)


# --- space --------------------------------------------------------------------


def check_space(where: str, what: str, needed: int, free: int, min_free: int) -> None:
    """Refuse to start when ``needed`` bytes would leave less than ``min_free`` free."""
    if needed + min_free > free:
        keep = f" and {min_free} to keep free" if min_free else ""
        raise ModelCacheError(
            Reason.DISK_FULL,
            f"disk full: {what} needs {needed} bytes{keep} in {where}, {free} bytes are free",
        )


HASHES_PER_BLOCK = BLOCK // 32  # sha256 digests in a 4 KiB hash block


def tree_bytes(data_bytes: int) -> int:
    """The size of ``veritysetup format``'s hash image for ``data_bytes`` of data.

    A 4 KiB superblock, then each level of the tree (128 sha256 digests to a
    4 KiB block) up to a single block; a single data block has no level.
    """
    blocks = -(-data_bytes // BLOCK)
    total = 1
    while blocks > 1:
        blocks = -(-blocks // HASHES_PER_BLOCK)
        total += blocks
    return total * BLOCK


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


TAR_HEADER_BOUND = 3 * 512  # a member's header, and a pax header with its block if any
TAR_RECORD = 10240  # GNU tar's default record: the archive ends on one


def tar_bytes_bound(files: Sequence[tuple[str, int]]) -> int:
    """An upper bound on build-model's padded tar of these files (path, size)."""
    dirs = {str(p) for path, _ in files for p in PurePosixPath(path).parents}  # "." included
    body = sum(_round_up(size, 512) + TAR_HEADER_BOUND for _, size in files)
    return body + TAR_HEADER_BOUND * len(dirs) + 2 * TAR_RECORD + BLOCK


def build_bytes_needed(files: Sequence[tuple[str, int]]) -> int:
    """Disk a build takes at its peak, in the cache: the download and the tar side by side.

    ``build_model`` downloads every file into a directory, tars it, removes the
    directory, then writes the hash tree: the peak is the larger of (download +
    tar) and (tar + tree). Each downloaded file is rounded up to a 4 KiB block.
    """
    download = sum(_round_up(size, BLOCK) for _, size in files)
    tar = tar_bytes_bound(files)
    return max(download + tar, tar + tree_bytes(tar))


# --- sources ------------------------------------------------------------------


def redact_url(url: str) -> str:
    """A URL fit for a message: no user, password, query or fragment (a pre-signed
    URL carries its credentials in the query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<malformed URL>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def source_scheme(url: str) -> str:
    """``https``, ``http``, ``s3`` or ``file``; anything else refused with the reason.

    Plain ``http`` is accepted for local mirrors: the images' integrity comes from
    the root hash checked before publishing, not from the transport (the
    CocoonWorker API itself allows https, s3 and file only). ``s3://bucket/key``
    is fetched over HTTPS with a SigV4-signed GET (:mod:`._s3`).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("https", "http", "file", "s3"):
        return scheme
    raise ModelCacheError(
        Reason.UNSUPPORTED, f"source {redact_url(url)}: scheme {scheme!r} is not supported"
    )


# --- causes -------------------------------------------------------------------


# The stable parts of the builder's messages (``_hub._raise_for_status``,
# ``_plan.check_root_hash``, ``_build._run``, ``Hub.download``), first match wins.
_BUILD_ERROR_REASONS: tuple[tuple[re.Pattern[str], Reason], ...] = tuple(
    (re.compile(pattern), reason)
    for pattern, reason in (
        (r"HTTP 40[13]\b", Reason.UNAUTHORIZED),
        (r"HTTP 404\b", Reason.NOT_FOUND),
        (r"verity hash mismatch", Reason.HASH_MISMATCH),
        (r"No space left|Disk quota exceeded", Reason.DISK_FULL),
        (r"is required|\bfailed \(exit \d+\)", Reason.TOOL),
        (r"got \d+ bytes of \d+|Client\w*Error|Timeout|HTTP 5\d\d", Reason.UNREACHABLE),
        (r"is not a|is inside|has a backslash", Reason.INVALID),
    )
)


def classify_build_error(message: str) -> Reason:
    """The reason for a :class:`ModelBuildError` message from the builder or the Hub client."""
    for pattern, reason in _BUILD_ERROR_REASONS:
        if pattern.search(message):
            return reason
    return Reason.OTHER


def os_error(exc: OSError, what: str) -> ModelCacheError:
    """An OSError while writing the cache, as a one-line error; ENOSPC/EDQUOT are a full disk."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ModelCacheError(Reason.DISK_FULL, f"disk full while {what}: {exc.strerror}")
    if exc.errno == errno.ENOENT:
        return ModelCacheError(Reason.NOT_FOUND, f"{what}: {exc.strerror}: {exc.filename}")
    return ModelCacheError(Reason.OTHER, f"{what}: {exc.strerror or exc}")


def one_line(text: str, limit: int = 500) -> str:
    """A message squeezed onto one line and bounded, for the progress file and exit text."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
