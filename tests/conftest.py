"""Shared pytest setup.

Two tiers:
- ``tests/unit``: pure functions, no cluster; ``pytest -m 'not cluster'`` runs them alone.
- ``tests/cluster``: marked ``cluster`` automatically; a session fixture starts the
  real local control plane (``hack/cluster up``) once, or reuses a healthy one,
  and every test gets its own namespace.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest_plugins = ["tests.cluster.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    """Let the Python processes the tests start keep their bytecode, out of the tree.

    Many tests run a command as its own process (the CLIs, ``model ensure``, the
    launcher; the operator, agent and chain in the cluster tier). Under
    ``PYTHONDONTWRITEBYTECODE`` each of them compiled every module it imports
    from source, most of its start-up. They write it instead under a directory of
    the session's (``PYTHONPYCACHEPREFIX``), removed at its end: the tree stays
    free of bytecode as that setting asks, and only the first process compiles.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="cocoon-tests-pycache-")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    config.add_cleanup(lambda: shutil.rmtree(prefix, ignore_errors=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
