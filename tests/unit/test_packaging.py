"""What can be checked of the packaging without a container engine or a cluster.

The images are built and smoke-tested by hack/build-images (buildah; CI runs it
for the operator and node agent, and hack/release-e2e for the launcher). These
tests read the Dockerfiles and the
dependency lock as text and check, in a second, what a build depends on: the
files it copies, the hash-locked install, the lock against pyproject.toml. The
Helm chart's CRD copy and version are checked against their sources.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import cocoon_operator
from cocoon_operator.api.crd import all_crds
from cocoon_operator.cli import build_parser
from cocoon_operator.release._import import BUILD_ARG_OF_FIELD

REPO = Path(__file__).resolve().parents[2]
# Python images: each Dockerfile and the command its runtime stage runs.
PYTHON_IMAGES = {
    "operator": ["run"],
    "node-agent": ["node-agent", "--host-root=/host"],
}
dockerfiles = pytest.mark.parametrize("image", sorted(PYTHON_IMAGES))
all_dockerfiles = pytest.mark.parametrize("image", [*sorted(PYTHON_IMAGES), "launcher"])


def dockerfile(image: str) -> Path:
    return REPO / "images" / image / "Dockerfile"


CHART = REPO / "charts" / "cocoon-operator"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation runs off the end of the Dockerfile"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


# Each image's base: Python 3.11 on Debian 12 for the operator and node agent;
# Python 3.13 on Debian 13 for the launcher, whose QEMU is a Debian 13 package
# (images/launcher/Dockerfile says why). hack/build-images makes the same pair.
BASES = {
    "operator": ("3.11", "bookworm"),
    "node-agent": ("3.11", "bookworm"),
    "launcher": ("3.13", "trixie"),
}


@all_dockerfiles
def test_dockerfile_is_multi_stage_on_a_pinned_python_slim_tag_of_its_debian(image: str) -> None:
    instructions = _instructions(dockerfile(image).read_text())
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    python, debian = BASES[image]
    # A full version tag on slim Debian, never a floating one.
    assert re.fullmatch(rf"python:{re.escape(python)}\.\d+-slim-{debian}", base), base
    stages = _stages(instructions)
    assert len(stages) >= 2
    assert all(stage[0][1].startswith("${PYTHON_IMAGE}") for stage in stages)
    # hack/build-images' stand-in base is that Debian release with its python3.
    script = (REPO / "hack" / "build-images").read_text()
    assert f"debian_base {debian} " in script
    assert f'"localhost/cocoon-base:python{python}-{debian}"' in script


@all_dockerfiles
def test_dockerfile_copies_only_files_that_exist_and_the_dockerignore_keeps(image: str) -> None:
    instructions = _instructions(dockerfile(image).read_text())
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    sources = []
    for kind, rest in instructions:
        if kind != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for source in parts[:-1]:
            if source.startswith("${"):
                # A build argument (the launcher's release files): its default
                # is a path the user provides; it must be one .dockerignore admits.
                default = args[source.strip("${}")]
                ignore = (REPO / ".dockerignore").read_text().splitlines()
                assert f"!{default}" in ignore, f"COPY {source}={default}: excluded"
                continue
            sources.append(source)
    assert sources, "no COPY from the build context"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        path = source.rstrip("/")
        assert any(path == k or path.startswith(f"{k}/") for k in kept), (
            f"COPY {source}: excluded by .dockerignore"
        )
    # pip builds the package from these: the readme is named in pyproject.toml.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["readme"] in sources
    assert "pyproject.toml" in sources


@dockerfiles
def test_dockerfile_runs_its_command_as_uid_65532(image: str) -> None:
    final = _stages(_instructions(dockerfile(image).read_text()))[-1]
    users = [rest for kind, rest in final if kind == "USER"]
    assert users == ["65532:65532"]  # numeric, so runAsNonRoot can verify it
    entrypoint = [rest for kind, rest in final if kind == "ENTRYPOINT"]
    cmd = [rest for kind, rest in final if kind == "CMD"]
    assert [json.loads(e) for e in entrypoint] == [["cocoon-operator"]]
    assert [json.loads(c) for c in cmd] == [PYTHON_IMAGES[image]]
    # The console script the entrypoint names exists, and takes that command.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "cocoon-operator" in project["scripts"]
    args = build_parser().parse_args(PYTHON_IMAGES[image])
    assert args.command == PYTHON_IMAGES[image][0]
    env = " ".join(rest for kind, rest in final if kind == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written on a read-only root
    # The runtime stage installs nothing: it only copies the built virtualenv.
    assert not [rest for kind, rest in final if kind == "RUN" and "pip" in rest]


def test_chart_crds_are_the_repository_crds() -> None:
    """The chart renders its CRDs from files/crds/ (templates/crds.yaml), so that
    `helm upgrade` upgrades them: hack/gen-crds writes both copies (and
    ``hack/gen-crds --check`` compares both with the models)."""
    chart = {p.name: p.read_text() for p in (CHART / "files" / "crds").glob("*.yaml")}
    repo = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    assert sorted(chart) == sorted(repo) == sorted(all_crds())
    for name, text in repo.items():
        assert chart[name] == text, (
            f"charts/cocoon-operator/files/crds/{name} differs: run hack/gen-crds"
        )
    # Not also in the chart's crds/: Helm would create them from there first,
    # unowned, and then refuse the templates' copies as objects it does not own.
    assert not (CHART / "crds").exists()


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"] == cocoon_operator.__version__


def test_chart_values_satisfy_their_own_schema_shape() -> None:
    """Every top-level key of values.yaml is declared (the schema refuses unknown keys)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])


def test_launcher_image_checks_every_release_file_it_takes() -> None:
    instructions = _instructions(dockerfile("launcher").read_text())
    runs = " ".join(rest for kind, rest in instructions if kind == "RUN")
    # COCOON's release tarball layout (scripts/prepare-release), every image file checked.
    for name in ("OVMF.fd", "image.img", "image.vmlinuz", "image.initrd", "image.cmdline"):
        assert f"  {name}" in runs
    assert "sha256sum -c" in runs.split("cd /opt/cocoon/release/images/prod", 1)[1]
    assert "spec/spec-worker/init" in runs
    # The seal server's two binaries (prepare-release:75-79), checked in bin/ too.
    after_bin = runs.split("cd /opt/cocoon/release/bin", 1)[1]
    assert "  enclave.signed.so" in after_bin and "  seal-server" in after_bin
    assert "sha256sum -c" in after_bin
    # Every digest `release import --build` passes is an ARG the Dockerfile declares,
    # with no default: a build without the digests fails instead of trusting the files.
    args = [a for kind, a in instructions if kind == "ARG"]
    declared = {a.split("=", 1)[0] for a in args}
    assert set(BUILD_ARG_OF_FIELD.values()) | {"RELEASE_DIR"} <= declared
    for arg in BUILD_ARG_OF_FIELD.values():
        assert f"{arg}=" in args  # declared empty
        assert f'test -n "${{{arg}}}"' in runs
    # Where the launcher looks for them by default.
    parsed = build_parser().parse_args(["launch", "--config=c"])
    assert parsed.release == "/opt/cocoon/release"
    final = _stages(instructions)[-1]
    assert [json.loads(r) for k, r in final if k == "ENTRYPOINT"] == [["cocoon-operator"]]
    # Root on purpose (KVM, VFIO, memory locking), said so in the file.
    assert [rest for kind, rest in final if kind == "USER"] == ["0:0"]
    assert "Runs as root, on purpose" in dockerfile("launcher").read_text()


def test_launcher_qemu_is_debians_trixie_backport_at_an_exact_version() -> None:
    """QEMU with TDX guest support (upstream 10.1 on) from trixie-backports, pinned,
    through apt (Debian's signatures), instead of a source build from a download."""
    instructions = _instructions(dockerfile("launcher").read_text())
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    # An exact Debian version (epoch, upstream >= 10.1, a trixie backport revision).
    version = args["QEMU_VERSION"]
    match = re.fullmatch(r"1:(\d+)\.(\d+)\.\d+\+ds-[0-9.]+~bpo13\+\d+", version)
    assert match, version
    assert (int(match[1]), int(match[2])) >= (10, 1)
    final = _stages(instructions)[-1]
    runs = " ".join(rest for kind, rest in final if kind == "RUN")
    # The backports suite, signed by Debian's archive keyring, from the given mirror.
    assert "Suites: trixie-backports" in runs
    assert "Signed-By: %s" in runs and "/usr/share/keyrings/debian-archive-keyring.gpg" in runs
    assert "${DEBIAN_MIRROR}" in runs
    for package in ("qemu-system-x86", "qemu-system-common", "qemu-system-data"):
        assert f'"{package}=${{QEMU_VERSION}}"' in runs
    assert "-t trixie-backports" in runs
    assert "--allow-unauthenticated" not in runs and "trusted=yes" not in runs
    # veritysetup for `model ensure` (models/_plan.py) from Debian too.
    assert "cryptsetup-bin" in runs
    # No build of QEMU, no download tool, no compiler.
    text = " ".join(rest for _, rest in instructions)
    for gone in ("qemu.tar.xz", "download.qemu.org", "curl", "build-essential", "/opt/qemu"):
        assert gone not in text, gone
    # Debian's QEMU is on the default PATH, where --qemu's default finds it.
    assert build_parser().parse_args(["launch", "--config=c"]).qemu == "qemu-system-x86_64"


LOCK = REPO / "requirements" / "images.lock"
# The images' interpreters and platform (hack/lock's --python-version and
# --python-platform): markers in pyproject.toml are evaluated for each.
IMAGE_PYTHONS = {"3.11": "3.11.2", "3.13": "3.13.5"}  # Debian 12's and 13's python3
IMAGE_ENVIRONMENTS = {
    version: {
        **default_environment(),
        "python_version": version,
        "python_full_version": full,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
    }
    for version, full in IMAGE_PYTHONS.items()
}


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements/images.lock (hack/lock's format)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical = LOCK.read_text().replace("\\\n", " ")
    for raw in logical.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        name, sep, version = words[0].partition("==")
        assert sep, f"images.lock: {words[0]} is not pinned with =="
        hashes = [w.removeprefix("--hash=") for w in words[1:] if w.startswith("--hash=sha256:")]
        assert len(hashes) == len(words) - 1, f"images.lock: {name}: only hashes may follow"
        entries[canonicalize_name(name)] = (version, hashes)
    return entries


@pytest.mark.parametrize("python", sorted(IMAGE_PYTHONS))
def test_images_lock_pins_every_runtime_and_build_dependency_with_hashes(python: str) -> None:
    """pip --require-hashes installs the lock and nothing else (--no-deps): a
    dependency added to pyproject.toml without running hack/lock would be missing
    from the images, so every one must be pinned there, in its range, for each
    image's interpreter (3.11: operator, node agent; 3.13: launcher)."""
    locked = _locked()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(IMAGE_PYTHONS[python])
    needed = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]
    for text in needed:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(IMAGE_ENVIRONMENTS[python]):
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements/images.lock: run hack/lock"
        version, hashes = locked[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"images.lock pins {req.name}=={version}, outside {req.specifier}: run hack/lock"
        )
        assert hashes, f"images.lock: {req.name} has no hash"
    for _name, (_version, hashes) in locked.items():
        assert hashes
        assert all(len(h) == len("sha256:") + 64 for h in hashes)


def test_images_lock_holds_no_development_or_local_stack_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    locked = _locked()
    for extra in ("dev", "sim"):
        for text in extras[extra]:
            name = canonicalize_name(Requirement(text).name)
            if name == "cocoon-operator":  # dev includes the sim extra
                continue
            assert name not in locked, f"{name} ({extra} extra) is in the images' lock"
    # pytvm (the local chain's TVM, x86-only) is the sim extra's, never the runtime's.
    runtime = {canonicalize_name(Requirement(t).name) for t in pyproject["project"]["dependencies"]}
    assert "pytvm" not in runtime
    assert "pytvm" in {canonicalize_name(Requirement(t).name) for t in extras["sim"]}


@all_dockerfiles
def test_image_installs_the_locked_wheels_then_the_package_offline(image: str) -> None:
    stages = _stages(_instructions(dockerfile(image).read_text()))
    build = next(stage for stage in stages if stage[0][1].endswith(" AS build"))
    runs = [rest for kind, rest in build if kind == "RUN" and "pip install" in rest]
    assert len(runs) == 2, runs
    deps, package = runs
    for flag in ("--require-hashes", "--only-binary :all:", "--no-deps"):
        assert flag in deps
    assert "-r requirements/images.lock" in deps
    # The CA bundle of a TLS-inspecting proxy only as a secret mount, never a layer.
    assert deps.startswith("--mount=type=secret,id=pip-cert ")
    for flag in ("--no-deps", "--no-index", "--no-build-isolation"):
        assert flag in package
    assert "pip uninstall --yes --quiet setuptools wheel" in package
    copies = [rest for kind, rest in build if kind == "COPY"]
    assert copies[0] == "requirements/images.lock requirements/"  # cached apart from the code


@all_dockerfiles
def test_image_removes_exactly_the_local_stack_production_code_never_imports(image: str) -> None:
    """The modules the build deletes are the ones the import-linter contract keeps
    production code from importing (so deleting them cannot break an import), and
    the ones hack/build-images' smoke test looks for."""
    text = dockerfile(image).read_text()
    removed = set(re.findall(r'"\$site/(cocoon_operator/[a-z_/]+?)(?:\.py)?"', text))
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    local_stack = next(c for c in contracts["contracts"] if "local stack" in c["name"])
    forbidden = {m.replace(".", "/") for m in local_stack["forbidden_modules"] if "." in m}
    assert removed == forbidden
    smoke = (REPO / "hack" / "build-images").read_text()
    for module in forbidden:
        assert f'"{module.replace("/", ".")}"' in smoke
    for module in forbidden:
        source = REPO / "operator" / module
        assert source.is_dir() or source.with_suffix(".py").is_file(), module
