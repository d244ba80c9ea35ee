"""No test file imports another test file: what tests share lives in helpers modules
(tests/cluster/helpers.py, tests/cluster/stack.py, tests/unit/helpers.py, ...) and
fixtures in conftest.py.

Importing a test file runs it as a library: its module-level fixtures, marks and
constants come along, a helper's home is wherever it was first written, and moving or
deleting a test breaks unrelated ones. This scan keeps the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imports_of_test_files(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a ``test_*`` module of the test tree in
    ``source``, absolute (``tests.``) or relative, at any depth (a function's own
    import counts too); a library's ``test_*`` module (``aiohttp.test_utils``) is not
    one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name)
                for a in node.names
                if a.name.startswith("tests.") and _is_test_module(a.name)
            ]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if not (node.level or module.startswith("tests.")):
                continue
            if node.module and _is_test_module(node.module):
                found.append((node.lineno, module))
            else:  # from tests.cluster import test_chart; from . import test_quote
                found += [
                    (
                        node.lineno,
                        f"{module.rstrip('.')}.{a.name}" if node.module else module + a.name,
                    )
                    for a in node.names
                    if _is_test_module(a.name)
                ]
    return sorted(found)


def test_the_scan_finds_every_form_of_importing_a_test_file() -> None:
    source = """
from tests.cluster.test_chain import ready
from tests.cluster import test_chart
import tests.unit.test_launcher
from tests.cluster.helpers import create_worker
from tests.unit import helpers
from aiohttp.test_utils import TestServer
from .test_quote import SAMPLE_MRTD
from . import test_quote
from .conftest import AT_OUTDATED
def later():
    from tests.unit.evidence.test_checker import START
"""
    assert imports_of_test_files(source) == [
        (2, "tests.cluster.test_chain"),
        (3, "tests.cluster.test_chart"),
        (4, "tests.unit.test_launcher"),
        (8, ".test_quote"),
        (9, ".test_quote"),
        (12, "tests.unit.evidence.test_checker"),
    ]


def test_no_test_file_imports_another() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 100, TESTS
    offenders = [
        f"{path.relative_to(TESTS)}:{line} imports {module}"
        for path in files
        for line, module in imports_of_test_files(path.read_text())
    ]
    assert offenders == [], "move what is shared to a helpers module:\n" + "\n".join(offenders)
