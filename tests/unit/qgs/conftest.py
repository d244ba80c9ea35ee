"""Fixtures for the QGS wire and quote relay tests: the real TDX quotes as payloads.

The quotes live beside the repository (``<repo>/../shared/fixtures/attestation/tdx``,
described in ``attestation/SOURCES.md``); if they are missing the tests fail loudly.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

QUOTE_FILES = ("dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_outdated", "cocoon/quote.dat")
"""A v4 quote, a v5 quote (TD 1.5 body) and a real COCOON worker's v4 quote."""


@pytest.fixture(scope="session")
def tdx_dir() -> Path:
    path = (REPO / ".." / "shared" / "fixtures" / "attestation").resolve()
    if not (path / "SOURCES.md").is_file():
        pytest.fail(
            f"attestation fixtures not found at {path}: the repository's parent directory "
            "must contain shared/fixtures/attestation (see SOURCES.md there)",
            pytrace=False,
        )
    return path / "tdx"


@pytest.fixture(scope="session", params=QUOTE_FILES)
def real_quote(request: pytest.FixtureRequest, tdx_dir: Path) -> bytes:
    return (tdx_dir / request.param).read_bytes()


@pytest.fixture(scope="session")
def sample_quote(tdx_dir: Path) -> bytes:
    return (tdx_dir / "dcap-qvl" / "tdx_quote").read_bytes()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for Unix sockets: their paths may not exceed 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qgs-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
