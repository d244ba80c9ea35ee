"""The pure parts of the model image builder: the spec, the file list, the command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon_operator.models import (
    VERITY_SALT,
    VERITY_UUID,
    ModelBuildError,
    ModelId,
    ModelSpec,
    check_root_hash,
    image_stem,
    padding,
    parse_model_spec,
    plan_files,
    siblings_are_reliable,
    tar_argv,
    veritysetup_argv,
)
from cocoon_operator.models.cli import hub_endpoint, hub_token

COMMIT = "a" * 40
VERITY = "b" * 64


def test_a_model_without_a_commit_is_built_at_the_current_commit_without_a_check() -> None:
    assert parse_model_spec("Qwen/Qwen3-0.6B") == ModelSpec("Qwen/Qwen3-0.6B", None, None)


def test_a_full_model_id_splits_into_name_commit_and_verity() -> None:
    spec = parse_model_spec(f"Qwen/Qwen3-0.6B@{COMMIT}:{VERITY}")
    assert spec == ModelSpec("Qwen/Qwen3-0.6B", COMMIT, VERITY)
    assert parse_model_spec(f"gpt2@{COMMIT}") == ModelSpec("gpt2", COMMIT, None)


@pytest.mark.parametrize(
    ("text", "part"),
    [
        (f"@{COMMIT}", "the name before '@' is empty"),
        ("org/a/b", "name 'org/a/b' is not a Hugging Face repository id"),
        ("org/-model", "name 'org/-model' is not"),
        ("org/model name", "name 'org/model name' is not"),
        ("org/" + "m" * 97, "is not a Hugging Face repository id"),
        ("org/a--b", "has '--' or '..'"),
        ("org/a..b", "has '--' or '..'"),
        ("org/model.git", "ends in '.git'"),
        ("org/model@", "commit '' is not a 40-hex commit id"),
        ("org/model@main", "commit 'main' is not a 40-hex commit id"),
        (f"org/model@{COMMIT[:12]}", "is not a 40-hex commit id"),
        (f"org/model@{COMMIT.upper()}", "is not a 40-hex commit id"),
        (f"org/model@{COMMIT}:", "verity hash '' is not 64 lowercase hex"),
        (f"org/model@{COMMIT}:{VERITY[:-1]}", "is not 64 lowercase hex"),
        (f"org/model@{COMMIT}:{VERITY.upper()}", "is not 64 lowercase hex"),
        (f"org/model@{COMMIT}:{VERITY}@x", "is not 64 lowercase hex"),
    ],
)
def test_a_malformed_spec_is_refused_naming_the_part_that_is_wrong(text: str, part: str) -> None:
    with pytest.raises(ModelBuildError, match=r"^model ") as err:
        parse_model_spec(text)
    assert part in str(err.value)


def test_the_model_id_prints_as_cocoons_name_at_commit_colon_verity() -> None:
    assert str(ModelId("org/m", COMMIT, VERITY)) == f"org/m@{COMMIT}:{VERITY}"


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Qwen/Qwen3-0.6B", "Qwen_Qwen3_0_6B"),
        ("google/gemma-3-270m", "google_gemma_3_270m"),
        ("a_b", "a_b"),
        ("\u00fc", "__"),  # tr works on bytes under LC_ALL=C: two UTF-8 bytes, two _
    ],
)
def test_the_images_file_name_replaces_every_byte_but_ascii_letters_and_digits(
    name: str, stem: str
) -> None:
    assert image_stem(name) == stem


def test_the_file_list_is_sorted_and_leaves_out_the_deleted_cache_directory() -> None:
    listed = ["b.json", ".cache/x", ".cache", "a/b/c.bin", ".gitattributes", "a/a.txt", "b.json"]
    assert plan_files(listed) == (".gitattributes", "a/a.txt", "a/b/c.bin", "b.json")
    assert plan_files(["x/.cache/kept"]) == ("x/.cache/kept",)


@pytest.mark.parametrize(
    "path", ["../escape", "a/../../b", "/etc/passwd", "a//b", "./a", "a/", "", "a\\b", "a\0b"]
)
def test_a_file_path_that_could_land_outside_the_download_is_refused(path: str) -> None:
    with pytest.raises(ModelBuildError, match="repository file"):
        plan_files([path])


def test_a_file_inside_another_file_is_refused() -> None:
    with pytest.raises(ModelBuildError, match="'a/b' is inside 'a', which is a file"):
        plan_files(["a", "a/b"])


def test_the_siblings_list_is_trusted_unless_empty_or_very_long() -> None:
    assert [siblings_are_reliable(n) for n in (0, 1, 50_000, 50_001)] == [
        False,
        True,
        True,
        False,
    ]


def test_tar_runs_with_build_models_options_in_its_order() -> None:
    assert tar_argv("tar", Path("/o/m.tar"), Path("/s")) == [
        "tar",
        "-cf",
        "/o/m.tar",
        "-C",
        "/s",
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


@pytest.mark.parametrize(
    ("size", "pad"), [(10240, 2048), (20480, 4096), (4095, 1), (4097, 4095), (0, 4096)]
)
def test_the_tar_is_padded_like_build_model_a_whole_block_when_already_aligned(
    size: int, pad: int
) -> None:
    assert padding(size) == pad
    assert (size + padding(size)) % 4096 == 0


def test_veritysetup_formats_with_cocoons_uuid_and_salt() -> None:
    argv = veritysetup_argv("veritysetup", Path("/o/m.tar"), Path("/o/v"), Path("/o/h"))
    assert argv[:4] == [
        "veritysetup",
        "format",
        "--uuid=645ac31f-7610-42e1-8434-9d733699eac0",
        "--salt=00010203040506070809101a1b1c1d1e1f",
    ]
    assert argv[-3:] == ["/o/m.tar", "/o/v", "--root-hash-file=/o/h"]
    assert {"--hash=sha256", "--data-block-size=4096", "--hash-block-size=4096"} <= set(argv)
    assert (VERITY_UUID, len(bytes.fromhex(VERITY_SALT))) == (argv[2][7:], 17)


def test_a_root_hash_other_than_the_one_asked_for_is_refused_naming_both() -> None:
    check_root_hash(ModelSpec("org/m", COMMIT, None), VERITY)
    check_root_hash(ModelSpec("org/m", COMMIT, VERITY), VERITY)
    with pytest.raises(ModelBuildError) as err:
        check_root_hash(ModelSpec("org/m", COMMIT, "c" * 64), VERITY)
    assert f"expected {'c' * 64}, got {VERITY}" in str(err.value)


def test_the_endpoint_comes_from_the_flag_then_hf_endpoint_then_huggingface_co() -> None:
    env = {"HF_ENDPOINT": "https://mirror.example/"}
    assert hub_endpoint("http://127.0.0.1:9/", env) == "http://127.0.0.1:9"
    assert hub_endpoint(None, env) == "https://mirror.example"
    assert hub_endpoint(None, {}) == "https://huggingface.co"


def test_the_token_comes_from_the_file_then_hf_token(tmp_path: Path) -> None:
    secret = tmp_path / "hf_token"
    secret.write_text("hf_fromfile\n")
    assert hub_token(secret, {"HF_TOKEN": "hf_env"}) == "hf_fromfile"
    assert hub_token(None, {"HF_TOKEN": " hf_env "}) == "hf_env"
    assert hub_token(None, {"HF_TOKEN": ""}) is None


def test_an_empty_or_missing_token_file_is_an_error_not_an_anonymous_download(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ModelBuildError, match="is empty"):
        hub_token(empty, {"HF_TOKEN": "hf_env"})
    with pytest.raises(ModelBuildError, match="cannot read --token-file"):
        hub_token(tmp_path / "absent", {})
