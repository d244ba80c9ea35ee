"""The cluster tier waits on what it can observe, never on a fixed sleep above 1 s.

A fixed sleep proves nothing on a loaded machine ("still nothing after a few
checks" holds trivially when the checks did not run) and costs its full length
on an idle one; tests/cluster/wait.py waits on the operator's counters, Events
and status instead. This scan keeps new cluster tests to that rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def _constants(tree: ast.Module) -> dict[str, float]:
    """Module-level names bound to a number (``WAIT = 16.0``)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, int | float):
                for target in targets:
                    if isinstance(target, ast.Name):
                        out[target.id] = float(value.value)
    return out


def long_sleeps(source: str) -> list[tuple[int, str, float]]:
    """(line, enclosing function, seconds) of every ``sleep(N)`` call with N > 1 s,
    N a literal or a module-level constant."""
    tree = ast.parse(source)
    constants = _constants(tree)
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and function == "":
            function = node.name
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            seconds = None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, int | float):
                seconds = float(arg.value)
            elif isinstance(arg, ast.Name):
                seconds = constants.get(arg.id)
            if name == "sleep" and seconds is not None and seconds > 1:
                found.append((node.lineno, function, seconds))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


def test_the_scan_finds_literal_and_named_sleeps_and_not_short_ones() -> None:
    source = """
import asyncio, time
WAIT = 16.0
async def test_a():
    await asyncio.sleep(5)
    await asyncio.sleep(WAIT)
    await asyncio.sleep(1)
    await asyncio.sleep(0.2)
def helper():
    time.sleep(2)
PAYLOAD = "import time; time.sleep(600)"
"""
    assert long_sleeps(source) == [(5, "test_a", 5.0), (6, "test_a", 16.0), (10, "helper", 2.0)]


def test_no_cluster_test_sleeps_more_than_a_second() -> None:
    files = sorted(CLUSTER.glob("*.py"))
    assert files, CLUSTER
    offenders = [
        f"{path.name}:{line} in {function}: sleep({seconds:g})"
        for path in files
        for line, function, seconds in long_sleeps(path.read_text())
    ]
    assert offenders == [], "wait on something observable (tests/cluster/wait.py):\n" + "\n".join(
        offenders
    )
