"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tests.unit.clocks import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock at 1000 s that moves only when the test moves it."""
    return FakeClock()
