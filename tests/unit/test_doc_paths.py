"""The files the docs and the code's comments name exist.

A path in the README, ``docs/``, the chart's README, or a comment or docstring
of the code, tests and ``hack/`` tools counts when it starts like one of this
repository's paths: a top-level directory (``docs/``, ``hack/``, ...), a package
of ``cocoon_operator`` (``launcher/_run.py``) or ``cocoon_operator/`` itself. It
must then exist in the repository, beside the file naming it, in COCOON's source
(``../shared/reference/cocoon``, where such paths usually point) or in the shared
attestation fixtures. The few that name files outside all of those are listed in
:data:`ELSEWHERE` with where they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "cocoon_operator"
SHARED = REPO.parent / "shared"
COCOON = SHARED / "reference" / "cocoon"
FIXTURES = SHARED / "fixtures"

#: Paths that are right but live in none of the trees searched, and where they are.
ELSEWHERE = {
    "images/prod": "a COCOON release's image directory (scripts/prepare-release builds it)",
    "images/test": "a COCOON release's test images (scripts/prepare-release)",
    "images/NAME.tar": "where COCOON's scripts/build-model writes a model tar",
    "qgs/qgs_server.cpp": "Intel's QGS source (SGXDataCenterAttestationPrimitives)",
    "qgs/qgs_ql_logic.cpp": "Intel's QGS source (SGXDataCenterAttestationPrimitives)",
}

# A path-like token: segments joined by '/', not part of a URL, option or scoped package.
_TOKEN = re.compile(r"(?<![\w/.@:~-])((?:\.ci|[A-Za-z_][\w.-]*)(?:/[\w.-]+)+)")
_SKIP_CHARS = set("*<>{}$%")


def _named_files() -> Iterator[Path]:
    yield REPO / "README.md"
    yield from sorted((REPO / "docs").rglob("*.md"))
    yield from sorted((REPO / "charts").rglob("README.md"))
    yield from sorted(PACKAGE.rglob("*.py"))
    yield from sorted((REPO / "tests").rglob("*.py"))
    yield from sorted(p for p in (REPO / "hack").iterdir() if p.is_file())


def _roots() -> tuple[set[str], set[str]]:
    top = {p.name for p in REPO.iterdir() if p.name not in (".venv", ".stack", ".git")}
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    return top, packages


def missing_paths(path: Path, text: str) -> list[str]:
    """The paths ``text`` (the content of ``path``) names that exist nowhere."""
    top, packages = _roots()
    missing = []
    for match in _TOKEN.finditer(text):
        token = match.group(1).rstrip(".,:;")
        first = token.split("/", 1)[0]
        if first not in top and first not in packages and first != "cocoon_operator":
            continue
        if _SKIP_CHARS & set(token) or token in ELSEWHERE:
            continue
        bases = (REPO, PACKAGE, REPO / "operator", path.parent, COCOON, FIXTURES, SHARED)
        if not any((base / token).exists() for base in bases):
            missing.append(token)
    return missing


def test_the_shared_trees_are_there_to_check_against() -> None:
    assert COCOON.is_dir(), f"COCOON's source is missing at {COCOON}"
    assert (FIXTURES / "attestation").is_dir(), f"the fixtures are missing at {FIXTURES}"


@pytest.mark.parametrize(
    "path", [p for p in _named_files() if p.is_file()], ids=lambda p: str(p.relative_to(REPO))
)
def test_every_path_a_doc_or_comment_names_exists(path: Path) -> None:
    text = path.read_text(errors="replace")
    assert missing_paths(path, text) == []


def test_a_path_that_does_not_exist_is_found() -> None:
    page, module = "docs" + "/no-such-page.md", "launcher" + "/_gone.py"  # not named here
    text = f"see `{page}` and {module}, not https://x/docs/y.md or --docs/z.md"
    assert missing_paths(REPO / "README.md", text) == [page, module]
