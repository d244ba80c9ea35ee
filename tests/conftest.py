"""Shared pytest setup.

Two tiers:
- ``tests/unit``: pure functions, no cluster; ``pytest -m 'not cluster'`` runs them alone.
- ``tests/cluster``: marked ``cluster`` automatically; a session fixture starts the
  real local control plane (``hack/cluster up``) once, or reuses a healthy one,
  and every test gets its own namespace.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.cluster.fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
