"""The model cache's pure parts: names, the plan, space, causes, progress, the verity superblock."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

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
    parse_progress,
    plan_ensure,
    progress_due,
    published_verities,
    redact_url,
    source_scheme,
    tar_bytes_bound,
    tree_bytes,
)
from cocoon_operator.models._plan import VERITY_SALT, VERITY_UUID
from cocoon_operator.models._verity import (
    check_cocoon_format,
    explain_verify,
    parse_superblock,
    root_hash,
    top_block_offset,
)

V = "3f" * 32
NAMES = CacheNames(V)
READY = Progress(model="m", phase=Phase.READY, tar_bytes=8192, tree_bytes=8192)


def test_a_verity_that_is_not_64_lowercase_hex_names_no_file() -> None:
    with pytest.raises(ModelCacheError, match="not 64 lowercase hex") as info:
        CacheNames("../" + "a" * 61)
    assert info.value.reason is Reason.INVALID


def test_leftovers_are_this_models_temporary_entries_only() -> None:
    names = [f".{V}.tmp-tar-x", f".{V}.tmp-build-y", f"{V}.tar", f".{'0' * 64}.tmp-tar-z", "x"]
    assert NAMES.leftovers(names) == [f".{V}.tmp-build-y", f".{V}.tmp-tar-x"]


def test_published_models_are_found_by_their_tar_or_their_tree() -> None:
    a, b = "a" * 64, "b" * 64
    names = [f"{a}.tar", f"{a}.tar.verity", f"{b}.tar.verity", f"{b}.lock", "c.tar", f"{a}.hash"]
    assert published_verities(names) == [a, b]


@pytest.mark.parametrize(
    ("state", "has_source", "remove", "step"),
    [
        (CacheState(8192, 8192, READY), True, (), Step.READY),
        (CacheState(8192, 8192, READY, (".x",)), False, (".x",), Step.READY),
        (CacheState(8192, 4096, READY), True, (), Step.VERIFY_IN_PLACE),  # not the sizes verified
        (CacheState(8192, 8192, None), False, (), Step.VERIFY_IN_PLACE),
        (CacheState(8192, 8192, Progress("m", Phase.FAILED)), False, (), Step.VERIFY_IN_PLACE),
        (CacheState(None, None, None), True, (), Step.FETCH),
        (CacheState(None, None, READY), False, (), Step.BUILD),  # a record without files
        (CacheState(None, 8192, None, (".t",)), True, (".t", f"{V}.tar.verity"), Step.FETCH),
        (CacheState(8192, None, None), False, (f"{V}.tar",), Step.BUILD),
    ],
)
def test_the_plan_follows_from_the_files_and_the_ready_record(
    state: CacheState, has_source: bool, remove: tuple[str, ...], step: Step
) -> None:
    plan = plan_ensure(NAMES, state, has_source=has_source)
    assert (plan.remove, plan.step) == (remove, step)


def test_space_is_refused_naming_bytes_needed_kept_and_free() -> None:
    check_space("/c", "the download", 100, 150, 50)
    with pytest.raises(ModelCacheError) as info:
        check_space("/c", "the download", 100, 149, 50)
    assert info.value.reason is Reason.DISK_FULL
    assert str(info.value) == (
        "disk full: the download needs 100 bytes and 50 to keep free in /c, 149 bytes are free"
    )


@pytest.mark.parametrize("blocks", [1, 2, 3, 127, 128, 129, 300, 16385])
def test_the_tree_size_is_veritysetups(tmp_path: Path, blocks: int) -> None:
    data = tmp_path / "data"
    with data.open("wb") as f:
        f.truncate(blocks * 4096)
    tree = tmp_path / "tree"
    subprocess.run(
        ["veritysetup", "format", f"--salt={VERITY_SALT}", str(data), str(tree)],
        check=True,
        capture_output=True,
    )
    assert tree_bytes(blocks * 4096) == tree.stat().st_size


def test_a_builds_space_holds_the_download_and_a_tar_at_least_as_big_as_gnu_tars(
    tmp_path: Path,
) -> None:
    files = [("config.json", 20), ("a/b/w.bin", 70_000), ("a/c.txt", 0), ("README.md", 511)]
    root = tmp_path / "repo"
    for path, size in files:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x" * size)
    tar = tmp_path / "t.tar"
    subprocess.run(["tar", "--format=posix", "-cf", str(tar), "-C", str(root), "."], check=True)
    assert tar.stat().st_size + 4096 <= tar_bytes_bound(files)
    download = 4096 + 18 * 4096 + 0 + 4096  # each file in whole 4 KiB blocks
    assert build_bytes_needed(files) == download + tar_bytes_bound(files)


def test_progress_round_trips_and_a_torn_file_reads_as_none() -> None:
    p = Progress("m@c:v", Phase.FAILED, 5, 10, "DiskFull", "disk full", 12.5)
    assert parse_progress(p.to_json()) == p
    assert parse_progress(p.to_json()[:20]) is None
    assert parse_progress('{"model": "m", "phase": "Sleeping"}') is None


def test_progress_is_written_at_most_once_a_second() -> None:
    assert progress_due(None, 5.0)
    assert not progress_due(5.0, 5.9)
    assert progress_due(5.0, 6.0)


def test_a_url_in_a_message_loses_its_credentials_and_query() -> None:
    url = "https://user:pw@bucket.s3.example:8443/m.tar?X-Amz-Signature=abc#frag"
    assert redact_url(url) == "https://bucket.s3.example:8443/m.tar"


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("https://h/x", "https"),
        ("file:///m/x.tar", "file"),
        ("HTTP://h", "http"),
        ("s3://b/k", "s3"),
    ],
)
def test_sources_over_https_http_s3_and_file_are_fetched(url: str, scheme: str) -> None:
    assert source_scheme(url) == scheme


@pytest.mark.parametrize(("url", "text"), [("gs://b/k", "gs"), ("ftp://h/x", "ftp")])
def test_other_sources_are_refused_as_unsupported(url: str, text: str) -> None:
    with pytest.raises(ModelCacheError, match=text) as info:
        source_scheme(url)
    assert info.value.reason is Reason.UNSUPPORTED


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("GET https://hf/api/models/x: HTTP 401 (no token, or ...)", Reason.UNAUTHORIZED),
        ("GET https://hf/x/resolve/c/f: HTTP 403 (no token ...)", Reason.UNAUTHORIZED),
        ("GET https://hf/api/models/x/revision/c: HTTP 404 (RevisionNotFound)", Reason.NOT_FOUND),
        ("model x: verity hash mismatch: expected a, got b", Reason.HASH_MISMATCH),
        ("tar failed (exit 2): tar: ./x: Cannot write: No space left on device", Reason.DISK_FULL),
        ("veritysetup failed (exit 1): Cannot create hash image", Reason.TOOL),
        ("veritysetup is required (Debian: cryptsetup-bin) and was not found", Reason.TOOL),
        ("GET https://hf/x: got 10 bytes of 20", Reason.UNREACHABLE),
        ("GET https://hf/x: ClientConnectorError: refused", Reason.UNREACHABLE),
        ("GET https://hf/x: HTTP 502", Reason.UNREACHABLE),
        ("repository file '../x' is not a plain relative path", Reason.INVALID),
        ("something else entirely", Reason.OTHER),
    ],
)
def test_a_builder_error_is_classified_by_its_stable_words(message: str, reason: Reason) -> None:
    assert classify_build_error(message) is reason


def test_a_message_is_one_bounded_line() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert len(one_line("x" * 1000)) == 500


# --- the verity superblock ------------------------------------------------------


def superblock(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "version": 1,
        "hash_type": 1,
        "uuid": uuid.UUID(VERITY_UUID).bytes,
        "algorithm": b"sha256",
        "dbs": 4096,
        "hbs": 4096,
        "blocks": 3,
        "salt": bytes.fromhex(VERITY_SALT),
    }
    fields.update(changes)
    salt = fields["salt"]
    assert isinstance(salt, bytes)
    raw = struct.pack(
        "<8sII16s32sIIQH6x256s",
        b"verity\0\0",
        fields["version"],
        fields["hash_type"],
        fields["uuid"],
        fields["algorithm"],
        fields["dbs"],
        fields["hbs"],
        fields["blocks"],
        len(salt),
        salt,
    )
    return raw.ljust(512, b"\0")


def test_cocoons_superblock_is_read_and_accepted_for_a_tar_of_its_size() -> None:
    sb = parse_superblock(superblock())
    assert (sb.uuid, sb.salt.hex(), sb.data_blocks) == (VERITY_UUID, VERITY_SALT, 3)
    check_cocoon_format(sb, 3 * 4096)


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"uuid": uuid.UUID(int=1).bytes}, "UUID"),
        ({"salt": b"\x01" * 32}, "salt"),
        ({"algorithm": b"sha1"}, "hash algorithm"),
        ({"dbs": 512}, "data block size"),
        ({"hash_type": 0}, "format"),
    ],
)
def test_a_superblock_build_model_would_not_write_is_refused(
    changes: dict[str, object], what: str
) -> None:
    with pytest.raises(ModelCacheError, match=f"verity image's {what} is") as info:
        check_cocoon_format(parse_superblock(superblock(**changes)), 3 * 4096)
    assert info.value.reason is Reason.CORRUPT


def test_a_tree_for_a_tar_of_another_size_is_not_its_pair() -> None:
    with pytest.raises(ModelCacheError, match="covers 12288 bytes of data, the tar has 16384"):
        check_cocoon_format(parse_superblock(superblock()), 4 * 4096)


def test_a_file_without_the_signature_is_not_a_verity_image() -> None:
    with pytest.raises(ModelCacheError, match="no dm-verity superblock"):
        parse_superblock(b"\0" * 512)


def test_the_root_hash_is_sha256_of_the_salt_then_the_top_block() -> None:
    sb = parse_superblock(superblock())
    top = bytes(range(256)) * 16
    assert top_block_offset(sb) == 4096
    assert root_hash(sb, top) == hashlib.sha256(bytes.fromhex(VERITY_SALT) + top).hexdigest()
    assert top_block_offset(parse_superblock(superblock(blocks=1))) == 0


def test_the_root_hash_is_veritysetups(tmp_path: Path) -> None:
    data, tree, root = tmp_path / "d", tmp_path / "t", tmp_path / "r"
    data.write_bytes(bytes(range(256)) * 16 * 300)
    subprocess.run(
        [
            "veritysetup",
            "format",
            f"--uuid={VERITY_UUID}",
            f"--salt={VERITY_SALT}",
            str(data),
            str(tree),
            f"--root-hash-file={root}",
        ],
        check=True,
        capture_output=True,
    )
    raw = tree.read_bytes()
    sb = parse_superblock(raw[:512])
    check_cocoon_format(sb, data.stat().st_size)
    assert root_hash(sb, raw[4096:8192]) == root.read_text().strip()


E, A = "e" * 64, "a" * 64


def test_veritysetups_success_with_the_trees_own_root_is_accepted() -> None:
    explain_verify(0, "", E, E)


@pytest.mark.parametrize(
    ("code", "stderr", "actual", "reason", "text"),
    [
        (
            0,
            "",
            A,
            Reason.HASH_MISMATCH,
            f"the model id says verity {E}, the image's root hash is {A}",
        ),
        (1, "Verification of root hash failed.", A, Reason.HASH_MISMATCH, A),
        (1, "Verification of root hash failed.", None, Reason.HASH_MISMATCH, "is not " + E),
        (2, "Verification of data area failed.", E, Reason.CORRUPT, "does not match"),
        (4, "Device t does not exist", E, Reason.TOOL, "exit 4"),
        (1, "Invalid root hash string specified.", E, Reason.TOOL, "exit 1"),
    ],
)
def test_veritysetups_exit_status_becomes_the_reason(
    code: int, stderr: str, actual: str | None, reason: Reason, text: str
) -> None:
    with pytest.raises(ModelCacheError) as info:
        explain_verify(code, stderr, E, actual)
    assert info.value.reason is reason
    assert text in str(info.value)
