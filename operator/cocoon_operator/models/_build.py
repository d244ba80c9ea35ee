"""The I/O half of the model image builder: download, tar, pad, ``veritysetup format``.

``build_model`` does what COCOON's ``scripts/build-model`` does, in its order,
with the pure decisions taken in :mod:`cocoon_operator.models._plan`. It differs
from the script only where the script's shortcuts could publish a wrong image:

- nothing is reused. The script skips the download when ``NAME.tar`` exists
  and the hashing when ``NAME.tar.hash`` exists, whatever commit they came from,
  and downloads into a directory kept between runs (files a commit removed stay);
  here each build downloads into a fresh directory and hashes what it archived;
- on a verity mismatch nothing is published: the script has already moved the
  tar and its hash tree into place when it compares. The outputs appear, each by
  an atomic rename, only once the root hash is known to be the one asked for.

The outputs keep the script's names, so ``scripts/cocoon-launch`` finds them
(the hash tree at the tar's path plus ``.verity``): ``DIR/STEM.tar``,
``DIR/STEM.tar.verity`` and ``DIR/STEM.tar.hash`` (the root hash).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cocoon_operator.models._hub import Hub
from cocoon_operator.models._plan import (
    TAR_ENV,
    ModelBuildError,
    ModelId,
    ModelSpec,
    check_root_hash,
    image_stem,
    padding,
    plan_files,
    siblings_are_reliable,
    tar_argv,
    veritysetup_argv,
)

log = logging.getLogger("cocoon_operator.models")

DEFAULT_ENDPOINT = "https://huggingface.co"
DOWNLOADS_AT_ONCE = 8  # huggingface_hub's snapshot_download default (max_workers)


@dataclass(frozen=True)
class BuiltModel:
    """A finished image: its model id and the files a worker VM mounts."""

    model_id: ModelId
    tar: Path
    verity: Path
    root_hash_file: Path


def gnu_tar() -> str:
    """The GNU tar to run: ``gtar`` when installed, else ``tar`` if it is GNU's (build-model:17-24).

    The archive's bytes are GNU tar's (``--sort``, ``--clamp-mtime``, pax
    options); another tar cannot make them.
    """
    if shutil.which("gtar"):
        return "gtar"
    tar = shutil.which("tar")
    if tar:
        import subprocess  # noqa: PLC0415 - only here, and synchronous on purpose: once, tiny

        version = subprocess.run([tar, "--version"], capture_output=True, text=True, check=False)
        if "GNU tar" in version.stdout + version.stderr:
            return "tar"
    raise ModelBuildError("GNU tar is required (as gtar or tar) and was not found")


async def _run(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        tail = (err or out).decode(errors="replace").strip()[-2000:]
        raise ModelBuildError(f"{what} failed (exit {proc.returncode}): {tail}")
    for line in out.decode(errors="replace").splitlines():
        log.info("%s: %s", what, line)


@dataclass(frozen=True)
class _Scratch:
    """The build's temporary files in the output directory, beside their final names,
    so publishing is a rename on the same file system."""

    tar: Path
    verity: Path
    root_hash: Path

    @classmethod
    def create(cls, out: Path, stem: str) -> _Scratch:
        def mkstemp(prefix: str) -> Path:
            fd, name = tempfile.mkstemp(dir=out, prefix=prefix)
            os.close(fd)
            return Path(name)

        return cls(
            mkstemp(f"{stem}.tar.tmp."),
            mkstemp(f"{stem}.tar.verity."),
            mkstemp(f"{stem}.tar.hash."),
        )

    def pad(self) -> int:
        """Pad the tar to whole 4 KiB blocks (build-model:118-123); returns its size before."""
        size = self.tar.stat().st_size
        with self.tar.open("ab") as f:
            f.write(bytes(padding(size)))
        return size

    def publish(self, final_tar: Path) -> None:
        """Move the tar, hash tree and root hash into place, the root hash last.

        The tar is readable by all, as tar leaves it in build-model; the hash
        tree and root hash keep mkstemp's owner-only mode, as mktemp leaves them there.
        """
        self.tar.chmod(0o644)
        self.tar.rename(final_tar)
        self.verity.rename(f"{final_tar}.verity")
        self.root_hash.rename(f"{final_tar}.hash")

    def remove(self) -> None:
        for path in (self.tar, self.verity, self.root_hash):
            path.unlink(missing_ok=True)


async def _lock(path: Path) -> int:
    """Hold the per-model build lock (build-model:43-55), waiting for another build of the model."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another process is building this model; waiting for it")
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    return fd


def _make_directories(root: Path, files: Sequence[str]) -> None:
    """``root`` and every directory the files need, each rwxr-xr-x."""
    root.chmod(0o755)
    for directory in sorted({p for f in files for p in Path(f).parents if p != Path(".")}):
        (root / directory).mkdir(mode=0o755, exist_ok=True)
        (root / directory).chmod(0o755)


async def _download_all(
    hub: Hub,
    name: str,
    commit: str,
    files: Sequence[str],
    root: Path,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Fetch every file into ``root`` with the permissions a download gets under umask 022.

    The tar takes group and other bits from the owner's (``--mode=go+u,go-w``),
    so only the owner's bits matter; they are set explicitly (files rw, directories
    rwx) so the archive does not depend on this process's umask.
    """
    gate = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
    await asyncio.to_thread(_make_directories, root, files)

    async def one(path: str) -> None:
        dest = root / path
        async with gate:
            size = await hub.download(name, commit, path, dest, on_chunk)
        await asyncio.to_thread(dest.chmod, 0o644)
        log.info("downloaded %s (%d bytes)", path, size)

    tasks = [asyncio.create_task(one(p)) for p in files]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def build_model(
    spec: ModelSpec,
    out: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    tar: str | None = None,
    veritysetup: str = "veritysetup",
    on_chunk: Callable[[int], None] | None = None,
) -> BuiltModel:
    """Build the model image for ``spec`` into ``out`` and return its id and files.

    ``on_chunk`` is called with the size of every piece of a file downloaded
    (progress reporting: ``model ensure``'s progress file).

    Raises :class:`ModelBuildError` when the repository cannot be fetched, a tool
    fails, or the root hash is not ``spec.verity`` (when given); then nothing new
    is left in ``out`` but the lock file.
    """
    tar = tar or gnu_tar()
    if shutil.which(veritysetup) is None:
        raise ModelBuildError(
            f"{veritysetup} is required (Debian: cryptsetup-bin) and was not found"
        )
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    stem = image_stem(spec.name)
    final_tar = out / f"{stem}.tar"
    lock = await _lock(out / f".build-{stem}.lock")
    try:
        async with Hub(endpoint, token) as hub:
            if spec.commit is None:
                commit = (await hub.repo_info(spec.name, None)).commit
                log.info("%s: the current commit is %s", spec.name, commit)
            else:
                commit = spec.commit
            info = await hub.repo_info(spec.name, commit)
            if info.commit != commit:
                raise ModelBuildError(
                    f"model {spec.name}: the Hub answered commit {info.commit} for {commit}"
                )
            listed = info.files
            if not siblings_are_reliable(len(listed)):
                listed = await hub.tree(spec.name, commit)
            files = plan_files(listed)
            log.info("downloading %s at %s: %d files", spec.name, commit, len(files))
            staging = Path(await asyncio.to_thread(tempfile.mkdtemp, "", f".download-{stem}-", out))
            scratch = await asyncio.to_thread(_Scratch.create, out, stem)
            try:
                await _download_all(hub, spec.name, commit, files, staging, on_chunk=on_chunk)
                await _run(tar_argv(tar, scratch.tar, staging), "tar", env=TAR_ENV)
                await asyncio.to_thread(shutil.rmtree, staging, True)  # the model, twice, no longer
                size = await asyncio.to_thread(scratch.pad)
                log.info("tar: %d bytes, padded to %d", size, size + padding(size))
                argv = veritysetup_argv(veritysetup, scratch.tar, scratch.verity, scratch.root_hash)
                await _run(argv, "veritysetup")
                root_hash = (await asyncio.to_thread(scratch.root_hash.read_text)).strip()
                check_root_hash(spec, root_hash)
                await asyncio.to_thread(scratch.publish, final_tar)
            finally:
                await asyncio.to_thread(scratch.remove)
                await asyncio.to_thread(shutil.rmtree, staging, True)
    finally:
        os.close(lock)
    model_id = ModelId(spec.name, commit, root_hash)
    log.info("built %s: %s", model_id, final_tar)
    return BuiltModel(
        model_id=model_id,
        tar=final_tar,
        verity=Path(f"{final_tar}.verity"),
        root_hash_file=Path(f"{final_tar}.hash"),
    )
