"""Shared pytest setup.

Two tiers:
- ``tests/unit``: pure functions, no cluster; ``pytest -m 'not cluster'`` runs them alone.
- ``tests/cluster``: marked ``cluster`` automatically; a session fixture starts the
  real local control plane (``hack/cluster up``) once, or reuses a healthy one,
  and every test gets its own namespace.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def _bytecode_out_of_the_tree() -> None:
    """Keep compiled modules in a cache outside the tree when the environment says not
    to write them beside the sources (``PYTHONDONTWRITEBYTECODE``).

    Without any bytecode, every run compiled every module again (its collection,
    several seconds), and so did every Python process the tests start (the CLIs,
    ``model ensure``, the launcher; the operator, agent and chain in the cluster
    tier), most of each one's start-up. Here they write it under
    ``~/.cache/cocoon-operator/pycache`` (``PYTHONPYCACHEPREFIX``; Python checks each
    file against its source's size and time, so a stale one is never used), and
    the tree stays free of ``__pycache__`` as that setting asks. A prefix the
    environment already names is kept.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    prefix = str(cache / "cocoon-operator" / "pycache")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.pycache_prefix = prefix  # this process: the modules it has yet to import
    sys.dont_write_bytecode = False


_bytecode_out_of_the_tree()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
