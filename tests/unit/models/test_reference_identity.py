"""The project's builder makes COCOON's model image byte for byte.

COCOON's own ``scripts/build-model`` (through huggingface_hub 1.0.1, GNU tar and
veritysetup) and ``cocoon-operator model build`` build the same repository from
the same stand-in Hub; the tars, hash trees and root hashes must be identical,
and both must refuse a model id whose verity hash is not the image's.

Needs GNU tar, veritysetup (hack/bootstrap installs cryptsetup-bin), python3
with venv, and PyPI once to fill the cached virtualenv (tests/unit/models/reference.py).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon_operator.cli import main
from tests.unit.models.hubstub import Hub, Repo, serving
from tests.unit.models.reference import reference_script, run_reference

NAME = "cocoon-test/tiny-model"
STEM = "cocoon_test_tiny_model"
COMMIT = "5d3c0a1f9e8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
WRONG = "0" * 64


def repository() -> dict[str, bytes]:
    """A small repository with what makes tars differ: nesting, a name longer than a
    ustar header holds (a pax header), non-ASCII and a space (URL quoting, byte
    order), a file over 1 MiB, and a top-level ``.cache`` the script deletes."""
    rng = random.Random(25)
    return {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"# tiny\n",
        "config.json": b'{"architectures": ["Tiny"], "hidden_size": 8}\n',
        "model.safetensors": rng.randbytes(1_300_000),
        "tokenizer/" + "t" * 110 + ".json": b'{"version": "1.0"}\n',
        "nested/deeper/still/weights.bin": rng.randbytes(5000),
        "notes/\u00fcber model.txt": "gr\u00fc\u00dfe\n".encode(),
        ".cache/left-behind.txt": b"build-model removes $MODEL_DIR/.cache\n",
    }


@pytest.fixture(scope="module")
def tools() -> None:
    """Fail, not skip, when a tool is missing: CI gets them from hack/bootstrap."""
    missing = [t for t in ("veritysetup", "python3") if shutil.which(t) is None]
    assert not missing, f"missing {missing}: run hack/bootstrap (cryptsetup-bin for veritysetup)"
    assert reference_script().is_file(), (
        f"COCOON's scripts/build-model not found at {reference_script()};"
        " set COCOON_REFERENCE to a COCOON checkout"
    )


def aligned() -> dict[str, bytes]:
    """A repository whose tar is exactly two 10 KiB records, a multiple of 4096, which
    build-model still pads, by a whole 4 KiB block (build-model:123)."""
    return {"weights.bin": bytes(range(256)) * 47}  # 12,032 bytes


REPOSITORIES = {"varied": repository, "aligned": aligned}


@pytest.fixture(params=sorted(REPOSITORIES))
def hub(tools: None, request: pytest.FixtureRequest) -> Iterator[Hub]:
    with serving(Hub({NAME: Repo(COMMIT, REPOSITORIES[request.param]())})) as hub:
        yield hub


def ours(spec: str, hub: Hub, out: Path) -> int:
    return main(["model", "build", spec, "--out", str(out), "--endpoint", hub.url])


def test_the_builder_makes_the_reference_scripts_image_byte_for_byte(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = run_reference(f"{NAME}@{COMMIT}", hub.url, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-4000:]
    ref_id, ref_tar = ref.stdout.strip().splitlines()[-1].split(" ", 1)
    assert ref_tar == str(tmp_path / "ref" / "images" / f"{STEM}.tar")
    capsys.readouterr()

    assert ours(f"{NAME}@{COMMIT}", hub, tmp_path / "ours") == 0
    our_id, our_tar = capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)

    assert our_tar == str(tmp_path / "ours" / f"{STEM}.tar")
    assert our_id == ref_id
    assert our_id.startswith(f"{NAME}@{COMMIT}:")
    assert Path(our_tar).read_bytes() == Path(ref_tar).read_bytes()
    assert Path(our_tar + ".verity").read_bytes() == Path(ref_tar + ".verity").read_bytes()
    assert Path(our_tar + ".hash").read_text() == Path(ref_tar + ".hash").read_text()
    assert our_id.rsplit(":", 1)[1] == Path(ref_tar + ".hash").read_text().strip()
    if len(hub.repos[NAME].files) == 1:  # aligned: 20,480 bytes of tar and a block of padding
        assert Path(our_tar).stat().st_size == 20480 + 4096
        return
    # What the two compared: every repository file but the deleted .cache, in one tar.
    listing = subprocess.run(
        ["tar", "-tf", our_tar], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert "./model.safetensors" in listing and "./notes/\u00fcber model.txt" in listing
    assert not any(".cache" in line for line in listing)


def test_a_wrong_verity_hash_makes_both_builders_refuse(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = run_reference(f"{NAME}@{COMMIT}:{WRONG}", hub.url, tmp_path / "ref")
    assert ref.returncode != 0
    actual = (tmp_path / "ref" / "images" / f"{STEM}.tar.hash").read_text().strip()
    assert f"Expected: {WRONG}, Got: {actual}" in ref.stderr
    capsys.readouterr()

    assert ours(f"{NAME}@{COMMIT}:{WRONG}", hub, tmp_path / "ours") == 1
    err = capsys.readouterr()
    assert f"expected {WRONG}, got {actual}" in err.err
    assert err.out == ""
    assert not list((tmp_path / "ours").glob("*.tar*")), "a refused image is not published"
