"""The node's model cache, the I/O half: ``ensure`` a model's images there, and ``gc``.

``ensure_model`` makes ``<verity>.tar`` and ``<verity>.tar.verity`` present and
verified in the cache, once per model at a time on a node:

1. it takes the model's ``flock`` (``<verity>.lock``), waiting for another
   ``ensure`` of the same model; the kernel releases a lock when its holder
   dies, so a crash never leaves it held;
2. it looks at the cache and asks :func:`plan_ensure` what to do; leftovers of
   a crashed run (``.<verity>.tmp-*``) and half a publication are removed;
3. it fetches the pair from ``spec.model.source`` or builds it from the Hub with
   :func:`build_model`, into temporary names in the cache, after checking the
   disk has room (``statvfs`` against Content-Length, or the Hub's file sizes);
4. it verifies the pair (the superblock, the tree's root hash against the model
   id's, then ``veritysetup verify`` reading every block), fsyncs it and
   renames it into place, the tree first; then records ``Ready`` in the
   progress file. A pair found without that record is verified where it is.

Every phase is written to ``<verity>.progress.json`` (atomically) for whoever
watches: a person with ``cat``, later the node agent. Failures raise
:class:`ModelCacheError` with a :class:`Reason` and are recorded as ``Failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiohttp

from cocoon_operator import __version__
from cocoon_operator.models._build import DEFAULT_ENDPOINT, BuiltModel, build_model
from cocoon_operator.models._cache import (
    CacheNames,
    CacheState,
    ModelCacheError,
    Phase,
    Progress,
    Reason,
    Step,
    build_bytes_needed,
    check_space,
    classify_build_error,
    one_line,
    os_error,
    parse_progress,
    plan_ensure,
    progress_due,
    published_verities,
    redact_url,
    source_scheme,
)
from cocoon_operator.models._gc import CacheEntry, GcPolicy, models_to_collect
from cocoon_operator.models._hub import CHUNK, READ_TIMEOUT, Hub
from cocoon_operator.models._plan import ModelBuildError, ModelId, ModelSpec, plan_files
from cocoon_operator.models._s3 import S3Options, S3SourceError, signed_get
from cocoon_operator.models._verity import (
    SUPERBLOCK_BYTES,
    explain_verify,
    parse_superblock,
    root_hash,
    top_block_in_data,
    top_block_offset,
)
from cocoon_operator.models._verity import check_cocoon_format as _check_format

log = logging.getLogger("cocoon_operator.models")


@dataclass(frozen=True)
class Source:
    """Where a prebuilt pair comes from (``spec.model.source``)."""

    tar_url: str
    verity_url: str


@dataclass(frozen=True)
class Ensured:
    """The model's published images and what this run had to do for them."""

    model_id: ModelId
    tar: Path
    tree: Path
    step: Step


class Builder(Protocol):
    def __call__(
        self,
        spec: ModelSpec,
        out: Path,
        *,
        endpoint: str = ...,
        token: str | None = ...,
        on_chunk: Callable[[int], None] | None = ...,
    ) -> Awaitable[BuiltModel]: ...


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# --- the per-model lock ---------------------------------------------------------


def _is_current(path: Path, fd: int) -> bool:
    """Whether ``fd`` is still the file at ``path``: gc removes a model's lock file
    while holding it, and whoever waited on the old file must take the new one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def try_lock(path: Path) -> int | None:
    """The lock's descriptor if it is free now, else None (gc skips a model being ensured)."""
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _is_current(path, fd):
            return fd
        os.close(fd)


LOCK_POLL_SECONDS = 0.05
LOCK_POLL_MAX_SECONDS = 1.0


async def lock(path: Path) -> int:
    """Hold the model's lock, waiting for the run that holds it; returns its descriptor.

    Waits by retrying a non-blocking ``flock`` (from every 50 ms up to every
    second), never by parking a thread in a blocking one: in a process that
    ensures several models at once (the simulation agent runs every pod's
    ``model ensure`` in one event loop) blocked waiters filled asyncio's
    default executor and the holder, which needs that executor to hash and
    fsync its files, could never finish: every waiter waited forever.
    """
    delay = LOCK_POLL_SECONDS
    told = False
    while True:
        fd = _open_lock(path)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        log.info("another ensure of this model is running; waiting for it")
                        told = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LOCK_POLL_MAX_SECONDS)
            if _is_current(path, fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


# --- files --------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp(cache: Path, names: CacheNames, what: str) -> Path:
    fd, name = tempfile.mkstemp(dir=cache, prefix=f"{names.temp_prefix}{what}-")
    os.close(fd)
    return Path(name)


def _remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove(cache: Path, entries: Iterable[str]) -> None:
    for name in entries:
        log.info("removing %s (left by an earlier run)", name)
        _remove_entry(cache / name)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def observe(cache: Path, names: CacheNames) -> CacheState:
    """What the cache holds for the model (read under its lock)."""
    try:
        record = parse_progress((cache / names.progress).read_text())
    except (FileNotFoundError, UnicodeDecodeError):
        record = None
    return CacheState(
        tar_bytes=_size(cache / names.tar),
        tree_bytes=_size(cache / names.tree),
        progress=record,
        leftovers=tuple(names.leftovers(os.listdir(cache))),
    )


class ProgressFile:
    """``<verity>.progress.json``, rewritten atomically (a temporary file, fsync, rename)."""

    def __init__(
        self, cache: Path, names: CacheNames, model: str, clock: Callable[[], float]
    ) -> None:
        self.cache = cache
        self.names = names
        self.clock = clock
        self.current = Progress(model=model, phase=Phase.VERIFYING)
        self._written: float | None = None

    @property
    def path(self) -> Path:
        return self.cache / self.names.progress

    def _write(self, progress: Progress) -> None:
        self.current = progress
        tmp = _temp(self.cache, self.names, "progress")
        try:
            with tmp.open("w") as f:
                f.write(progress.to_json())
                f.flush()
                os.fsync(f.fileno())
            tmp.chmod(0o644)
            tmp.rename(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._written = progress.updated_at

    def phase(self, phase: Phase, total: int | None = None) -> None:
        log.info("%s: %s", self.current.model, phase.value)
        self._write(
            Progress(
                model=self.current.model,
                phase=phase,
                bytes_total=total,
                updated_at=self.clock(),
            )
        )

    def add(self, n: int) -> None:
        """Count ``n`` more bytes; written at most once a second."""
        now = self.clock()
        progress = self.current.advanced(self.current.bytes_done + n, now)
        self.current = progress
        if progress_due(self._written, now):
            self._write(progress)

    def ready(self, tar_bytes: int, tree_bytes: int) -> None:
        """Record the verified pair; its bytes are the ones counted, done and total."""
        self._write(
            Progress(
                model=self.current.model,
                phase=Phase.READY,
                bytes_done=tar_bytes + tree_bytes,
                bytes_total=tar_bytes + tree_bytes,
                updated_at=self.clock(),
                tar_bytes=tar_bytes,
                tree_bytes=tree_bytes,
            )
        )

    def failed(self, exc: ModelCacheError) -> None:
        try:
            self._write(
                Progress(
                    model=self.current.model,
                    phase=Phase.FAILED,
                    bytes_done=self.current.bytes_done,
                    bytes_total=self.current.bytes_total,
                    reason=exc.reason.value,
                    message=one_line(str(exc)),
                    updated_at=self.clock(),
                )
            )
        except OSError as err:  # a full disk may refuse even this
            log.warning("cannot record the failure in %s: %s", self.path, err.strerror)

    def touch(self) -> None:
        """Mark the model used now (the file's mtime is gc's last use)."""
        os.utime(self.path)


# --- fetching a prebuilt pair ----------------------------------------------------


class _Body(Protocol):
    size: int | None

    def chunks(self) -> AsyncIterator[bytes]: ...


@dataclass
class _FileBody:
    path: Path
    size: int | None

    async def chunks(self) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(self.path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(f.close)


@dataclass
class _HttpBody:
    resp: aiohttp.ClientResponse
    size: int | None

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.resp.content.iter_chunked(CHUNK):
            yield chunk


@contextlib.asynccontextmanager
async def _open_source(
    url: str, session: aiohttp.ClientSession | None, s3: S3Options, now: dt.datetime
) -> AsyncIterator[_Body]:
    shown = redact_url(url)
    if source_scheme(url) == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ModelCacheError(Reason.INVALID, f"source {shown}: a file URL names no host")
        path = Path(unquote(parts.path))
        try:
            stat = await asyncio.to_thread(path.stat)
        except OSError as exc:
            raise ModelCacheError(
                Reason.NOT_FOUND, f"source {shown}: {exc.strerror or exc}"
            ) from None
        yield _FileBody(path, stat.st_size)
        return
    assert session is not None
    headers = {"Accept-Encoding": "identity"}
    if source_scheme(url) == "s3":
        try:
            signed = signed_get(url, s3, now)
        except S3SourceError as exc:
            raise ModelCacheError(Reason.INVALID, f"source {shown}: {exc}") from None
        url, headers = signed.url, {**headers, **signed.headers}
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status >= 400:
                reason = {401: Reason.UNAUTHORIZED, 403: Reason.UNAUTHORIZED}.get(
                    resp.status, Reason.NOT_FOUND if resp.status == 404 else Reason.UNREACHABLE
                )
                raise ModelCacheError(reason, f"GET {shown}: HTTP {resp.status} from the source")
            length = resp.content_length if "Content-Encoding" not in resp.headers else None
            yield _HttpBody(resp, length)
    except aiohttp.ClientError as exc:
        raise ModelCacheError(Reason.UNREACHABLE, f"GET {shown}: {type(exc).__name__}") from None
    except TimeoutError:
        raise ModelCacheError(Reason.UNREACHABLE, f"GET {shown}: timed out") from None


async def _copy(body: _Body, dest: Path, url: str, progress: ProgressFile) -> int:
    size = 0
    f = await asyncio.to_thread(dest.open, "wb")
    try:
        async for chunk in body.chunks():
            await asyncio.to_thread(f.write, chunk)
            size += len(chunk)
            if body.size is not None and size > body.size:
                break
            progress.add(len(chunk))
        await asyncio.to_thread(f.flush)
        await asyncio.to_thread(os.fsync, f.fileno())
    finally:
        await asyncio.to_thread(f.close)
    if body.size is not None and size != body.size:
        raise ModelCacheError(
            Reason.UNREACHABLE,
            f"GET {redact_url(url)}: got {size} bytes, the source announced {body.size}",
        )
    return size


async def _fetch(
    source: Source,
    cache: Path,
    names: CacheNames,
    progress: ProgressFile,
    *,
    min_free: int,
    free: Callable[[Path], int],
    s3: S3Options,
    clock: Callable[[], float],
) -> tuple[Path, Path]:
    """Download the pair into temporary files in the cache; returns (tar, tree)."""
    schemes = {source_scheme(source.tar_url), source_scheme(source.verity_url)}
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if schemes & {"http", "https", "s3"}:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    timeout=READ_TIMEOUT, headers={"User-Agent": f"cocoon-operator/{__version__}"}
                )
            )
        now = dt.datetime.fromtimestamp(clock(), dt.UTC)
        tree_body = await stack.enter_async_context(
            _open_source(source.verity_url, session, s3, now)
        )
        tar_body = await stack.enter_async_context(_open_source(source.tar_url, session, s3, now))
        known = tree_body.size is not None and tar_body.size is not None
        needed = (tree_body.size or 0) + (tar_body.size or 0)
        check_space(str(cache), "the download", needed, free(cache), min_free)
        progress.phase(Phase.DOWNLOADING, needed if known else None)
        tree = await asyncio.to_thread(_temp, cache, names, "verity")
        tar = await asyncio.to_thread(_temp, cache, names, "tar")
        await _copy(tree_body, tree, source.verity_url, progress)
        await _copy(tar_body, tar, source.tar_url, progress)
    return tar, tree


# --- building -----------------------------------------------------------------


async def _build(
    model: ModelId, cache: Path, names: CacheNames, progress: ProgressFile, opts: EnsureOptions
) -> tuple[Path, Path]:
    """Build the pair from the Hub into a temporary directory in the cache; returns (tar, tree)."""
    async with Hub(opts.endpoint, opts.token) as hub:
        listing = await hub.tree_sizes(model.name, model.commit)
    kept = set(plan_files(path for path, _ in listing))
    files = [(path, size) for path, size in listing if path in kept]
    needed = build_bytes_needed(files)
    what = f"building {model.name}"
    check_space(str(cache), what, needed, opts.free(cache), opts.min_free_bytes)
    progress.phase(Phase.BUILDING, sum(size for _, size in files))
    staging = Path(
        await asyncio.to_thread(tempfile.mkdtemp, "", f"{names.temp_prefix}build-", cache)
    )
    spec = ModelSpec(model.name, model.commit, model.verity)
    built = await opts.build(
        spec, staging, endpoint=opts.endpoint, token=opts.token, on_chunk=progress.add
    )
    return built.tar, built.verity


# --- verifying and publishing ---------------------------------------------------------


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


async def verify_pair(tar: Path, tree: Path, expected: str, veritysetup: str) -> None:
    """Refuse the pair unless it is COCOON's format and ``veritysetup verify`` accepts ``expected``.

    The tree's own root hash is computed first, so a pair for another model is
    named (both hashes) without reading the tar; the tar is read in full by
    ``veritysetup verify``.
    """
    head = await asyncio.to_thread(_read_at, tree, 0, SUPERBLOCK_BYTES)
    sb = parse_superblock(head)
    top_file = tar if top_block_in_data(sb) else tree
    top = await asyncio.to_thread(_read_at, top_file, top_block_offset(sb), sb.hash_block_size)
    actual = root_hash(sb, top)
    if actual != expected:
        explain_verify(1, "", expected, actual)
    _check_format(sb, (await asyncio.to_thread(tar.stat)).st_size)
    if shutil.which(veritysetup) is None:
        raise ModelCacheError(
            Reason.TOOL, f"{veritysetup} is required (Debian: cryptsetup-bin) and was not found"
        )
    proc = await asyncio.create_subprocess_exec(
        veritysetup,
        "verify",
        str(tar),
        str(tree),
        expected,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    explain_verify(proc.returncode, (err or out).decode(errors="replace"), expected, actual)


def _publish(tar: Path, tree: Path, cache: Path, names: CacheNames) -> tuple[int, int]:
    """fsync the verified pair and rename it into place, the tree first (a tar is only
    ever published beside its tree); returns their sizes."""
    for path in (tree, tar):
        path.chmod(0o644)
        _fsync_file(path)
    tree.rename(cache / names.tree)
    tar.rename(cache / names.tar)
    _fsync_dir(cache)
    return (cache / names.tar).stat().st_size, (cache / names.tree).stat().st_size


# --- ensure ---------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureOptions:
    """How ``ensure_model`` reaches the Hub and the disk; the defaults are production's."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)
    s3: S3Options = field(default_factory=S3Options, repr=False)  # for s3:// sources
    min_free_bytes: int = 0  # kept free on the cache's file system
    free: Callable[[Path], int] = free_bytes
    veritysetup: str = "veritysetup"
    build: Builder = build_model
    clock: Callable[[], float] = time.time


async def ensure_model(
    cache: Path,
    model: ModelId,
    source: Source | None = None,
    options: EnsureOptions | None = None,
) -> Ensured:
    """Make ``model``'s verified images present in ``cache``; see the module's docstring.

    Raises :class:`ModelCacheError` (nothing unverified published, the cause in
    the progress file too).
    """
    opts = options or EnsureOptions()
    names = CacheNames(model.verity)
    if source is not None:
        source_scheme(source.tar_url)
        source_scheme(source.verity_url)
    try:
        await asyncio.to_thread(cache.mkdir, mode=0o755, parents=True, exist_ok=True)
        fd = await lock(cache / names.lock)
    except OSError as exc:
        raise os_error(exc, f"opening the model cache {cache}") from None
    progress = ProgressFile(cache, names, str(model), opts.clock)
    try:
        return await _ensure_locked(model, source, opts, progress)
    except ModelCacheError as exc:
        progress.failed(exc)
        raise
    except ModelBuildError as exc:
        err = ModelCacheError(classify_build_error(str(exc)), one_line(str(exc)))
        progress.failed(err)
        raise err from None
    except OSError as exc:
        err = os_error(exc, f"writing the model cache {cache}")
        progress.failed(err)
        raise err from None
    finally:
        await asyncio.to_thread(_remove_quietly, cache, names)
        os.close(fd)


async def _ensure_locked(
    model: ModelId, source: Source | None, opts: EnsureOptions, progress: ProgressFile
) -> Ensured:
    cache, names = progress.cache, progress.names
    tar_path, tree_path = cache / names.tar, cache / names.tree
    state = await asyncio.to_thread(observe, cache, names)
    plan = plan_ensure(names, state, has_source=source is not None)
    await asyncio.to_thread(_remove, cache, plan.remove)
    if plan.step is Step.READY:
        await asyncio.to_thread(progress.touch)
        return Ensured(model, tar_path, tree_path, Step.READY)
    if plan.step is Step.VERIFY_IN_PLACE:
        progress.phase(Phase.VERIFYING)
        try:
            await verify_pair(tar_path, tree_path, model.verity, opts.veritysetup)
        except ModelCacheError as exc:
            if exc.reason not in (Reason.HASH_MISMATCH, Reason.CORRUPT):
                raise
            log.warning("the images in the cache are not the model's (%s); replacing them", exc)
            await asyncio.to_thread(_remove, cache, (names.tar, names.tree))
        else:
            progress.ready(state.tar_bytes or 0, state.tree_bytes or 0)
            return Ensured(model, tar_path, tree_path, Step.VERIFY_IN_PLACE)
    if source is not None:
        step = Step.FETCH
        tar, tree = await _fetch(
            source,
            cache,
            names,
            progress,
            min_free=opts.min_free_bytes,
            free=opts.free,
            s3=opts.s3,
            clock=opts.clock,
        )
        progress.phase(Phase.VERIFYING)
        await verify_pair(tar, tree, model.verity, opts.veritysetup)
    else:
        step = Step.BUILD
        tar, tree = await _build(model, cache, names, progress, opts)
        # build_model checked the root hash veritysetup format computed from this
        # very tar (build-model:148); reading the tar again would prove nothing more.
    sizes = await asyncio.to_thread(_publish, tar, tree, cache, names)
    progress.ready(*sizes)
    log.info("%s: ready in %s", model, cache)
    return Ensured(model, tar_path, tree_path, step)


def _remove_quietly(cache: Path, names: CacheNames) -> None:
    """This run's temporary files, whatever happened (under the lock: all of them are ours)."""
    for name in names.leftovers(os.listdir(cache)):
        _remove_entry(cache / name)


# --- gc -----------------------------------------------------------------------


def _last_used(cache: Path, names: CacheNames) -> float:
    for name in (names.progress, names.tar, names.tree):
        try:
            return (cache / name).stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


def cache_entries(cache: Path) -> list[CacheEntry]:
    """The published models in the cache, their bytes and last use (the progress file's mtime)."""
    entries = []
    for verity in published_verities(os.listdir(cache)):
        names = CacheNames(verity)
        size = sum(_size(cache / n) or 0 for n in (names.tar, names.tree))
        entries.append(CacheEntry(verity, size, _last_used(cache, names)))
    return entries


@dataclass(frozen=True)
class Collected:
    removed: list[CacheEntry]
    busy: list[str]  # chosen, but an ensure held the model's lock: left alone


def collect(
    cache: Path,
    in_use: Collection[str],
    policy: GcPolicy,
    *,
    now: float | None = None,
    dry_run: bool = False,
) -> Collected:
    """Remove what :func:`models_to_collect` chooses, each under its model's lock.

    A model whose lock an ``ensure`` holds is skipped (it is about to be used).
    The lock file goes last, while held: a waiter on it notices and takes the new one.
    """
    chosen = models_to_collect(
        cache_entries(cache), in_use, policy, time.time() if now is None else now
    )
    removed: list[CacheEntry] = []
    busy: list[str] = []
    for entry in chosen:
        names = CacheNames(entry.verity)
        if dry_run:
            removed.append(entry)
            continue
        fd = try_lock(cache / names.lock)
        if fd is None:
            busy.append(entry.verity)
            continue
        try:
            for name in (
                names.tar,
                names.tree,
                names.progress,
                *names.leftovers(os.listdir(cache)),
            ):
                _remove_entry(cache / name)
            (cache / names.lock).unlink(missing_ok=True)
        finally:
            os.close(fd)
        log.info("removed model %s (%d bytes)", entry.verity, entry.bytes)
        removed.append(entry)
    return Collected(removed, busy)
