"""``cocoon-operator release import``: a COCOON-shaped tarball in, digests and the block out."""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from cocoon_operator.api.v1alpha1 import CocoonWorkerSpec, Release
from cocoon_operator.cli import build_parser, main
from cocoon_operator.release import (
    ReleaseImportError,
    member_path,
    pinned,
    release_tree,
    repository_of,
    unpack,
)
from cocoon_operator.release._import import BUILD_ARG_OF_FIELD
from cocoon_operator.release.cli import import_release
from cocoon_operator.simulator._release import (
    COMMIT,
    release_digests,
    seal_digests,
    write_release,
    write_release_tarball,
)

REPO = Path(__file__).resolve().parents[3]


def sha256sum(path: Path) -> str:
    """The coreutils tool's answer, not ours."""
    out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def tarball_with(tmp_path: Path, *extra: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    """The simulated release as COCOON packs it, plus ``extra`` entries appended."""
    tarball = write_release_tarball(tmp_path / "src", tmp_path / "release.tar")
    with tarfile.open(tarball, "a") as tar:
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return tarball


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def run_import(tmp_path: Path, tarball: Path, *flags: str) -> tuple[int, str]:
    out = tmp_path / "out"
    code = main(["release", "import", str(tarball), "--out", str(out), *flags])
    return code, (out / "release.yaml").read_text() if code == 0 else ""


def test_import_prints_the_digests_sha256sum_computes_for_every_release_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tarball = write_release_tarball(tmp_path / "src", tmp_path / "cocoon-worker-release.tar.xz")
    code, _ = run_import(tmp_path, tarball)
    assert code == 0
    block = yaml.safe_load(capsys.readouterr().out)["release"]
    release = tmp_path / "out" / "release"
    by_field = {
        "ovmf": "images/prod/OVMF.fd",
        "image": "images/prod/image.img",
        "kernel": "images/prod/image.vmlinuz",
        "initrd": "images/prod/image.initrd",
        "cmdline": "images/prod/image.cmdline",
        "enclave": "bin/enclave.signed.so",
        "sealServer": "bin/seal-server",
    }
    assert block["files"] == {field: sha256sum(release / rel) for field, rel in by_field.items()}
    # The same values the simulated release declares for the example worker.
    assert block["files"] == {**release_digests(), **seal_digests()}
    assert block["version"] == COMMIT  # from release-<commit>/
    # SHA256SUMS lists every file, and sha256sum itself accepts it.
    sums = (tmp_path / "out" / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == sum(1 for p in release.rglob("*") if p.is_file())
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "../SHA256SUMS"],
        check=False,
        cwd=release,
        capture_output=True,
    )
    assert check.returncode == 0, check.stdout


def test_the_printed_block_is_a_valid_release_once_the_image_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = "registry.example/cocoon/launcher@sha256:" + "a" * 64
    code, _ = run_import(
        tmp_path, write_release_tarball(tmp_path / "s", tmp_path / "r.tar.gz"), "--image", image
    )
    assert code == 0
    block = yaml.safe_load(capsys.readouterr().out)
    release = Release.model_validate(block["release"])
    assert release.image == image
    # Pasted into the example worker's spec, it validates as a CocoonWorker's.
    docs = yaml.safe_load_all((REPO / "examples" / "cocoonworker.yaml").read_text())
    raw = next(d for d in docs if d.get("kind") == "CocoonWorker")["spec"]
    assert CocoonWorkerSpec.model_validate({**raw, **block}).release == release


def test_without_an_image_the_block_leaves_it_empty_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_import(tmp_path, write_release_tarball(tmp_path / "s", tmp_path / "r.tar"))
    assert code == 0
    assert text.startswith("# spec.release.image:")
    assert yaml.safe_load(text)["release"]["image"] == ""
    with pytest.raises(ValueError, match="image"):
        Release.model_validate(yaml.safe_load(text)["release"])


@pytest.mark.parametrize(
    "missing",
    [
        "images/prod/OVMF.fd",
        "images/prod/image.img",
        "images/prod/image.cmdline",
        "bin/enclave.signed.so",
        "bin/seal-server",
        "spec/spec-worker/init",
        "spec/mainnet-base-ton-config.json",
    ],
)
def test_a_release_missing_a_file_the_launcher_or_seal_server_needs_is_refused_by_name(
    tmp_path: Path, missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_release(tmp_path / f"release-{COMMIT}")
    (root / missing).unlink()
    tarball = tmp_path / "r.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=root.name)
    code, _ = run_import(tmp_path, tarball)
    assert code == 1
    err = capsys.readouterr().err
    assert missing in err
    assert capsys.readouterr().out == ""


def test_a_spec_init_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    root = write_release(tmp_path / f"release-{COMMIT}")
    (root / "spec/spec-worker/init").chmod(0o644)
    tarball = tmp_path / "r.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=root.name)
    with pytest.raises(ReleaseImportError, match="spec/spec-worker/init is not executable"):
        release_tree(unpack(tarball, tmp_path / "out"))


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (entry(f"release-{COMMIT}/../escape"), "path traversal"),
        (entry("/etc/cron.d/evil"), "absolute"),
        (entry(f"release-{COMMIT}/bin/x", tarfile.SYMTYPE, link="/etc/shadow"), "symbolic link"),
        (entry(f"release-{COMMIT}/bin/y", tarfile.LNKTYPE, link="/etc/passwd"), "hard link"),
        (entry(f"release-{COMMIT}/dev/null", tarfile.CHRTYPE), "not a regular file"),
        (entry(f"release-{COMMIT}/bin/seal-server", data=b"another"), "appears twice"),
    ],
)
def test_dangerous_tar_entries_are_refused_and_nothing_is_written_outside(
    tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes | None], says: str
) -> None:
    tarball = tarball_with(tmp_path, bad)
    dest = tmp_path / "deep" / "out"
    with pytest.raises(ReleaseImportError, match=says) as err:
        unpack(tarball, dest)
    assert bad[0].name in str(err.value)
    assert not (tmp_path / "deep" / "escape").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_a_symlink_entry_is_refused_even_when_it_points_inside(tmp_path: Path) -> None:
    tarball = tarball_with(
        tmp_path, entry(f"release-{COMMIT}/bin/alias", tarfile.SYMTYPE, link="seal-server")
    )
    with pytest.raises(ReleaseImportError, match="symbolic link"):
        unpack(tarball, tmp_path / "out")


@pytest.mark.parametrize("name", ["./a/b", "a/./b", "a/b/"])
def test_harmless_dots_in_names_are_normalised(name: str) -> None:
    assert str(member_path(name)) == "a/b"


def test_import_refuses_a_non_empty_output_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    args = build_parser().parse_args(
        [
            "release",
            "import",
            str(write_release_tarball(tmp_path / "s", tmp_path / "r.tar")),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    with pytest.raises(ReleaseImportError, match="not empty"):
        import_release(args)
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def test_a_tarball_without_release_dir_needs_a_version(tmp_path: Path) -> None:
    root = write_release(tmp_path / "flat")
    tarball = tmp_path / "r.tar"
    with tarfile.open(tarball, "w") as tar:
        for p in root.iterdir():
            tar.add(p, arcname=p.name)
    args = build_parser().parse_args(
        ["release", "import", str(tarball), "--out", str(tmp_path / "o")]
    )
    with pytest.raises(ReleaseImportError, match="--version"):
        import_release(args)
    args = build_parser().parse_args(
        ["release", "import", str(tarball), "--out", str(tmp_path / "o2"), "--version", "1.2.0"]
    )
    assert yaml.safe_load(import_release(args))["release"]["version"] == "1.2.0"


def build_args_of(argv: Sequence[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")


def parse_import(tmp_path: Path, *flags: str) -> argparse.Namespace:
    tarball = write_release_tarball(tmp_path / "s", tmp_path / "r.tar")
    argv = ["release", "import", str(tarball), "--out", str(tmp_path / "ctx"), *flags]
    return build_parser().parse_args([*argv, "--source", str(REPO)])


def test_build_runs_build_images_with_every_digest_then_pins_the_pushed_digest(
    tmp_path: Path,
) -> None:
    """The build path without a container engine: the commands are recorded, the
    registry's answer (buildah's --digestfile) is written as buildah would."""
    ran: list[list[str]] = []
    pushed = "sha256:" + "b" * 64

    def fake(argv: Sequence[str]) -> None:
        ran.append(list(argv))
        if argv[1] == "push":
            Path(argv[argv.index("--digestfile") + 1]).write_text(pushed + "\n")

    args = parse_import(tmp_path, "--build", "--tag", "reg.local:5000/cocoon/launcher:v1")
    text = import_release(args, run=fake)
    build, push = ran
    # The checkout's build script (Debian base, buildah, smoke test), for the launcher,
    # the image named as --tag says, from the context the import wrote.
    assert build[0] == str(REPO / "hack" / "build-images")
    assert build[-1] == "launcher"
    assert build[build.index("--name") + 1] == "reg.local:5000/cocoon/launcher:v1"
    assert build[build.index("--context") + 1] == str(tmp_path / "ctx")
    build_args = build_args_of(build)
    files = yaml.safe_load(text)["release"]["files"]
    assert {arg: build_args[arg] for arg in BUILD_ARG_OF_FIELD.values()} == {
        arg: files[field] for field, arg in BUILD_ARG_OF_FIELD.items()
    }
    assert build_args["RELEASE_DIR"] == "release/"
    assert (tmp_path / "ctx" / "Dockerfile").read_bytes() == (
        REPO / "images/launcher/Dockerfile"
    ).read_bytes()
    assert (tmp_path / "ctx" / "operator" / "cocoon_operator" / "cli.py").is_file()
    assert push[:2] == ["buildah", "push"]
    assert push[-1] == "docker://reg.local:5000/cocoon/launcher:v1"
    assert yaml.safe_load(text)["release"]["image"] == f"reg.local:5000/cocoon/launcher@{pushed}"


def test_build_without_push_pins_the_digest_of_the_image_as_built(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    built = "sha256:" + "d" * 64

    def read(argv: Sequence[str]) -> str:
        ran.append(list(argv))
        return built + "\n"

    args = parse_import(tmp_path, "--build", "--no-push", "--tag", "localhost/l:v1")
    text = import_release(args, run=lambda argv: ran.append(list(argv)), read=read)
    build, inspect = ran
    assert build[-1] == "launcher"
    assert not any(step[:2] == ["buildah", "push"] for step in ran)
    # What buildah reports for the image just built, by the name it was built as.
    assert inspect[:4] == ["buildah", "inspect", "--type", "image"]
    assert inspect[-1] == "localhost/l:v1"
    assert "{{.FromImageDigest}}" in inspect
    assert yaml.safe_load(text)["release"]["image"] == f"localhost/l@{built}"


def test_the_written_context_holds_everything_the_launcher_dockerfile_copies(
    tmp_path: Path,
) -> None:
    """The build runs in the import's directory: every COPY source of the
    Dockerfile (the hash lock included) must be there, or the build fails."""
    code, _ = run_import(tmp_path, write_release_tarball(tmp_path / "s", tmp_path / "r.tar"))
    assert code == 0
    context = tmp_path / "out"
    text = (context / "Dockerfile").read_text()
    logical = text.replace("\\\n", " ").splitlines()
    copies = [line.split()[1:] for line in logical if line.startswith("COPY ")]
    sources = [
        word for words in copies if not words[0].startswith("--from=") for word in words[:-1]
    ]
    assert "requirements/images.lock" in sources
    # ${RELEASE_DIR}: build_argv passes release/.
    for source in (s.replace("${RELEASE_DIR}", "release/") for s in sources):
        assert (context / source).exists(), f"COPY {source}: not in the written context"


def test_build_needs_a_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tarball = write_release_tarball(tmp_path / "s", tmp_path / "r.tar")
    code = main(["release", "import", str(tarball), "--out", str(tmp_path / "o"), "--build"])
    assert code == 2
    assert "--tag" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("tag", "repo"),
    [
        ("reg.local:5000/a/launcher:v1", "reg.local:5000/a/launcher"),
        ("reg.local:5000/a/launcher", "reg.local:5000/a/launcher"),
        ("launcher:v1", "launcher"),
    ],
)
def test_the_repository_of_a_tag_keeps_a_registry_port(tag: str, repo: str) -> None:
    assert repository_of(tag) == repo


def test_an_unusable_registry_digest_is_refused() -> None:
    with pytest.raises(ReleaseImportError, match="unusable digest"):
        pinned("r/l:v1", "sha256:short")
    assert pinned("r/l:v1", hashlib.sha256(b"").hexdigest().join(["sha256:", ""])).startswith(
        "r/l@sha256:"
    )
