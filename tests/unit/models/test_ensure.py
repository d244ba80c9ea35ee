"""``cocoon-operator model ensure`` and ``model gc`` on a real directory: file:// sources made
by the project's own builder from a small repository on the stand-in Hub, veritysetup for real."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoon_operator.cli import main
from cocoon_operator.models import (
    BuiltModel,
    EnsureOptions,
    ModelCacheError,
    ModelId,
    ModelSpec,
    Reason,
    Source,
    Step,
    _ensure,
    build_model,
    ensure_model,
)
from cocoon_operator.models._ensure import lock
from cocoon_operator.models._s3 import Credentials, S3Options
from tests.unit.models.hubstub import Hub, Repo, serving


@pytest.fixture(autouse=True, scope="module")
def _veritysetup() -> None:
    """Fail, not skip, when veritysetup is missing: hack/bootstrap installs it."""
    found = subprocess.run(["which", "veritysetup"], capture_output=True, check=False)
    assert found.returncode == 0, "veritysetup missing: run hack/bootstrap (cryptsetup-bin)"


NAME = "tiny-org/tiny-model"
COMMIT = "0123456789" * 4
TOKEN = "hf_tOkEnNeVeRpRiNtEd42"
FILES = {
    "config.json": b'{"hidden_size": 8}\n',
    "weights/model.safetensors": bytes(range(256)) * 40,
    "README.md": b"# tiny\n",
}


@dataclass(frozen=True)
class Prebuilt:
    """A model built once by the project's builder: its id and its two files."""

    model_id: ModelId
    tar: Path
    tree: Path

    @property
    def source(self) -> Source:
        return Source(self.tar.as_uri(), self.tree.as_uri())


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))}, token=TOKEN)) as hub:
        yield hub


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory: pytest.TempPathFactory) -> Prebuilt:
    out = tmp_path_factory.mktemp("mirror")
    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))})) as hub:
        built = asyncio.run(build_model(ModelSpec(NAME, COMMIT), out, endpoint=hub.url))
    return Prebuilt(built.model_id, built.tar, built.verity)


def progress(cache: Path, verity: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((cache / f"{verity}.progress.json").read_text())
    return doc


def ensure_cli(cache: Path, model: ModelId | str, *extra: str) -> int:
    return main(["model", "ensure", "--cache", str(cache), "--model", str(model), *extra])


def test_a_prebuilt_pair_is_fetched_verified_and_published_under_its_verity_name(
    prebuilt: Prebuilt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "models"
    src = prebuilt.source
    args = ("--source-tar", src.tar_url, "--source-verity", src.verity_url)
    assert ensure_cli(cache, prebuilt.model_id, *args) == 0
    verity = prebuilt.model_id.verity
    tar, tree = capsys.readouterr().out.split()
    assert (tar, tree) == (str(cache / f"{verity}.tar"), str(cache / f"{verity}.tar.verity"))
    assert Path(tar).read_bytes() == prebuilt.tar.read_bytes()
    assert Path(tree).read_bytes() == prebuilt.tree.read_bytes()
    record = progress(cache, verity)
    assert record["phase"] == "Ready"
    assert (
        record["bytesDone"]
        == record["bytesTotal"]
        == Path(tar).stat().st_size + Path(tree).stat().st_size
    )
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [f"{verity}.tar", f"{verity}.tar.verity", f"{verity}.progress.json", f"{verity}.lock"]
    )


def test_without_a_source_the_model_is_built_from_the_hub_with_the_token_never_printed(
    hub: Hub,
    prebuilt: Prebuilt,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = tmp_path / "hf-token"
    secret.write_text(TOKEN)
    cache = tmp_path / "models"
    args = ("--endpoint", hub.url, "--token-file", str(secret))
    assert ensure_cli(cache, prebuilt.model_id, *args) == 0
    verity = prebuilt.model_id.verity
    assert (cache / f"{verity}.tar").read_bytes() == prebuilt.tar.read_bytes()
    printed = capsys.readouterr()
    assert TOKEN not in printed.out + printed.err + caplog.text
    assert TOKEN not in (cache / f"{verity}.progress.json").read_text()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_a_build_reports_the_bytes_downloaded_in_the_progress_file(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    seen: list[dict[str, object]] = []
    ticks = iter(range(0, 10_000, 5))

    async def watched(spec: ModelSpec, out: Path, **kwargs: object) -> BuiltModel:
        built = await build_model(spec, out, **kwargs)  # type: ignore[arg-type]
        seen.append(progress(cache, spec.verity or ""))
        return built

    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))})) as hub:
        options = EnsureOptions(endpoint=hub.url, build=watched, clock=lambda: float(next(ticks)))
        asyncio.run(ensure_model(cache, prebuilt.model_id, None, options))
    total = sum(len(b) for b in FILES.values())
    assert [(r["phase"], r["bytesDone"], r["bytesTotal"]) for r in seen] == [
        ("Building", total, total)
    ]


def test_a_refused_token_fails_with_the_reason_recorded_and_nothing_published(
    hub: Hub, prebuilt: Prebuilt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "models"
    assert ensure_cli(cache, prebuilt.model_id, "--endpoint", hub.url) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cocoon-operator model ensure: Unauthorized: GET ")
    assert "HTTP 401" in err
    record = progress(cache, prebuilt.model_id.verity)
    assert (record["phase"], record["reason"]) == ("Failed", "Unauthorized")
    assert not list(cache.glob("*.tar*"))


def test_a_wrong_verity_hash_publishes_nothing_and_names_both_hashes(
    prebuilt: Prebuilt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "models"
    wrong = ModelId(NAME, COMMIT, "ab" * 32)
    src = prebuilt.source
    args = ("--source-tar", src.tar_url, "--source-verity", src.verity_url)
    assert ensure_cli(cache, wrong, *args) == 1
    err = capsys.readouterr().err
    assert "HashMismatch" in err
    assert wrong.verity in err and prebuilt.model_id.verity in err
    assert not list(cache.glob("*.tar*"))
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]
    record = progress(cache, wrong.verity)
    assert (record["phase"], record["reason"]) == ("Failed", "HashMismatch")


def test_a_tar_that_does_not_match_its_tree_is_refused_by_veritysetup(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.tar"
    data = bytearray(prebuilt.tar.read_bytes())
    data[5000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    cache = tmp_path / "models"
    source = Source(corrupt.as_uri(), prebuilt.tree.as_uri())
    with pytest.raises(ModelCacheError, match="does not match its verity image") as info:
        asyncio.run(ensure_model(cache, prebuilt.model_id, source))
    assert info.value.reason is Reason.CORRUPT
    assert not list(cache.glob("*.tar*"))


def test_a_model_already_ready_is_not_fetched_again_and_its_last_use_moves(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    first = asyncio.run(ensure_model(cache, prebuilt.model_id, prebuilt.source))
    record = cache / f"{prebuilt.model_id.verity}.progress.json"
    os.utime(record, (1, 1))
    missing = Source((tmp_path / "gone.tar").as_uri(), (tmp_path / "gone.verity").as_uri())
    again = asyncio.run(ensure_model(cache, prebuilt.model_id, missing))
    assert (first.step, again.step) == (Step.FETCH, Step.READY)
    assert record.stat().st_mtime > time.time() - 60


def test_leftovers_of_a_crashed_run_are_removed_and_half_a_publication_redone(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    verity = prebuilt.model_id.verity
    (cache / f".{verity}.tmp-tar-abc123").write_bytes(b"half a download")
    (cache / f".{verity}.tmp-build-xyz").mkdir()
    (cache / f".{verity}.tmp-build-xyz" / "part").write_bytes(b"x")
    (cache / f"{verity}.tar.verity").write_bytes(b"a tree published without its tar")
    other = cache / f".{'c' * 64}.tmp-tar-1"  # another model's: not this run's to remove
    other.write_bytes(b"")
    ensured = asyncio.run(ensure_model(cache, prebuilt.model_id, prebuilt.source))
    assert ensured.step is Step.FETCH
    assert ensured.tree.read_bytes() == prebuilt.tree.read_bytes()
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == [other.name]


def test_a_pair_published_before_a_crash_is_verified_in_place_not_fetched_again(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    verity = prebuilt.model_id.verity
    (cache / f"{verity}.tar").write_bytes(prebuilt.tar.read_bytes())
    (cache / f"{verity}.tar.verity").write_bytes(prebuilt.tree.read_bytes())
    ensured = asyncio.run(ensure_model(cache, prebuilt.model_id, None))  # no source, no Hub
    assert ensured.step is Step.VERIFY_IN_PLACE
    assert progress(cache, verity)["phase"] == "Ready"


def test_not_enough_disk_is_refused_before_any_download_naming_the_bytes(
    prebuilt: Prebuilt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "models"
    src = prebuilt.source
    huge = str(1 << 60)
    args = ("--source-tar", src.tar_url, "--source-verity", src.verity_url)
    assert ensure_cli(cache, prebuilt.model_id, *args, "--min-free-bytes", huge) == 1
    err = capsys.readouterr().err
    needed = prebuilt.tar.stat().st_size + prebuilt.tree.stat().st_size
    assert f"DiskFull: disk full: the download needs {needed} bytes and {huge}" in err
    assert "bytes are free" in err
    assert not list(cache.glob("*.tar*"))
    assert progress(cache, prebuilt.model_id.verity)["reason"] == "DiskFull"


def test_a_build_checks_the_disk_against_the_hubs_file_sizes(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    asked: list[Path] = []

    def free(path: Path) -> int:
        asked.append(path)
        return 4096

    async def never(*args: object, **kwargs: object) -> BuiltModel:
        raise AssertionError("the build started")

    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))})) as hub:
        options = EnsureOptions(endpoint=hub.url, free=free, build=never)
        with pytest.raises(ModelCacheError, match=r"building tiny-org/tiny-model needs \d+ bytes"):
            asyncio.run(ensure_model(tmp_path, prebuilt.model_id, None, options))
    assert asked == [tmp_path]


def test_two_ensures_of_one_model_at_once_build_it_once(prebuilt: Prebuilt, tmp_path: Path) -> None:
    builds: list[Path] = []

    async def counting(spec: ModelSpec, out: Path, **kwargs: object) -> BuiltModel:
        builds.append(out)
        await asyncio.sleep(0.3)  # the other ensure is waiting on the lock meanwhile
        return await build_model(spec, out, **kwargs)  # type: ignore[arg-type]

    cache = tmp_path / "models"

    async def both(url: str) -> list[str]:
        options = EnsureOptions(endpoint=url, build=counting)
        results = await asyncio.gather(
            ensure_model(cache, prebuilt.model_id, None, options),
            ensure_model(cache, prebuilt.model_id, None, options),
        )
        return sorted(r.step.value for r in results)

    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))})) as hub:
        steps = asyncio.run(both(hub.url))
    assert len(builds) == 1
    assert steps == sorted([Step.BUILD.value, Step.READY.value])


def test_waiters_on_a_models_lock_leave_the_holder_the_threads_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One process, many ensures of one model (the simulation agent runs every
    # pod's); more waiters than asyncio's default executor has threads. The
    # holder finishes with asyncio.to_thread, as an ensure hashes its files.
    # The waiters' retries stay at their first interval: backed off to 1 s, eight
    # waiters in a row spent seconds asleep with the lock free.
    monkeypatch.setattr(_ensure, "LOCK_POLL_MAX_SECONDS", _ensure.LOCK_POLL_SECONDS)
    path = tmp_path / "model.lock"
    order: list[int] = []

    async def one(i: int) -> None:
        fd = await lock(path)
        try:
            await asyncio.to_thread(time.sleep, 0.01)
            order.append(i)
        finally:
            os.close(fd)

    async def many() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(8))), timeout=30)

    asyncio.run(many())
    assert sorted(order) == list(range(8))


def test_two_ensure_processes_download_the_hub_files_once(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))})) as hub:
        argv = [sys.executable, "-m", "cocoon_operator", "model", "ensure"]
        argv += ["--cache", str(cache), "--model", str(prebuilt.model_id), "--endpoint", hub.url]
        procs = [
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        downloads = [r for r in hub.requests if "/resolve/" in r]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode() for o in outs]
    assert sorted(downloads) == sorted(f"GET /{NAME}/resolve/{COMMIT}/{f}" for f in FILES)
    assert outs[0][0] == outs[1][0]


class S3Standin:
    """An S3 endpoint for one bucket: path-style GETs answered only when signed with
    SigV4 for ``ACCESS_KEY`` in ``REGION`` (the header's shape; the signature's
    arithmetic is checked against AWS's and botocore's vectors in test_s3.py)."""

    ACCESS_KEY, REGION, BUCKET = "AKIASTANDIN", "eu-central-1", "cocoon-models"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, list[tuple[str, str]]()
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                standin.requests.append((self.path, auth))
                scope = f"Credential={standin.ACCESS_KEY}/"
                signed = (
                    auth.startswith("AWS4-HMAC-SHA256 ")
                    and scope in auth
                    and f"/{standin.REGION}/s3/aws4_request" in auth
                    and self.headers.get("x-amz-content-sha256") == hashlib.sha256(b"").hexdigest()
                    and self.headers.get("x-amz-date")
                )
                body = standin.files.get(urllib.parse.unquote(self.path))
                status = 403 if not signed else 404 if body is None else 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if status == 200 and body else 0))
                self.end_headers()
                if status == 200 and body:
                    self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> S3Standin:
        # A short poll: shutdown() waits for the next one (0.5 s by default).
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_s3_source_is_fetched_with_a_signed_get_and_verified(
    prebuilt: Prebuilt, tmp_path: Path
) -> None:
    files = {
        f"/{S3Standin.BUCKET}/models/tiny.tar": prebuilt.tar.read_bytes(),
        f"/{S3Standin.BUCKET}/models/tiny.verity": prebuilt.tree.read_bytes(),
    }
    source = Source(
        f"s3://{S3Standin.BUCKET}/models/tiny.tar", f"s3://{S3Standin.BUCKET}/models/tiny.verity"
    )
    secret = "s3SeCrEtNeVeRpRiNtEd"
    with S3Standin(files) as s3:
        creds = Credentials(S3Standin.ACCESS_KEY, secret)
        opts = EnsureOptions(s3=S3Options(s3.url, S3Standin.REGION, creds))
        ensured = asyncio.run(ensure_model(tmp_path, prebuilt.model_id, source, opts))
        assert ensured.step is Step.FETCH
        assert ensured.tar.read_bytes() == prebuilt.tar.read_bytes()
        assert sorted(path for path, _ in s3.requests) == sorted(files)
        assert all(secret not in auth for _, auth in s3.requests)

        # Without credentials the GET goes unsigned, and a private bucket says 403.
        with pytest.raises(ModelCacheError, match="HTTP 403") as info:
            asyncio.run(
                ensure_model(
                    tmp_path / "anonymous",
                    prebuilt.model_id,
                    source,
                    EnsureOptions(s3=S3Options(s3.url, S3Standin.REGION)),
                )
            )
        assert info.value.reason is Reason.UNAUTHORIZED


def test_an_s3_url_without_a_key_is_refused_naming_it(tmp_path: Path) -> None:
    model = ModelId(NAME, COMMIT, "ab" * 32)
    source = Source("s3://bucket/m.tar", "s3://bucket-only")
    with pytest.raises(ModelCacheError, match="is not s3://BUCKET/KEY") as info:
        asyncio.run(ensure_model(tmp_path, model, source))
    assert info.value.reason is Reason.INVALID


def test_gc_removes_the_oldest_unused_model_and_keeps_the_one_in_use(
    prebuilt: Prebuilt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    old, used, recent = "a" * 64, "b" * 64, "c" * 64
    for age, verity in ((300, old), (200, used), (100, recent)):
        (cache / f"{verity}.tar").write_bytes(b"t" * 1000)
        (cache / f"{verity}.tar.verity").write_bytes(b"v" * 24)
        (cache / f"{verity}.progress.json").write_text("{}")
        when = time.time() - age
        os.utime(cache / f"{verity}.progress.json", (when, when))
    listing = tmp_path / "in-use"
    listing.write_text(f"# VMs on this node\n{NAME}@{COMMIT}:{used}\n")
    argv = ["model", "gc", "--cache", str(cache), "--in-use", f"@{listing}", "--max-count", "1"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["verity"] for r in doc["removed"]] == [old, recent]
    assert doc["removedBytes"] == 2048
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{used}.progress.json",
        f"{used}.tar",
        f"{used}.tar.verity",
    ]


def test_gc_refuses_an_in_use_value_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "gc", "--cache", str(tmp_path), "--in-use", "not-a-hash"]) == 2
    assert "neither a model id nor a 64-hex verity hash" in capsys.readouterr().err
