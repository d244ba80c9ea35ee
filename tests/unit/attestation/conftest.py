"""Fixtures for the attestation tests: the real evidence in shared/fixtures/attestation.

The evidence lives beside the repository (``<repo>/../shared/fixtures/attestation``);
if it is missing the tests fail loudly rather than skip.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cocoon_operator.attestation import Collateral, TrustedRoot

REPO = Path(__file__).resolve().parents[3]

# Instants at which SOURCES.md says each fixture verifies.
AT_DCAP_SAMPLE = datetime(2025, 6, 20, tzinfo=UTC)
AT_DCAP_EXPIRED = datetime(2025, 8, 1, tzinfo=UTC)
AT_OUTDATED = datetime(2026, 2, 19, tzinfo=UTC)
AT_GPU = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = (REPO / ".." / "shared" / "fixtures" / "attestation").resolve()
    if not (path / "SOURCES.md").is_file():
        pytest.fail(
            f"attestation fixtures not found at {path}: the repository's parent directory "
            "must contain shared/fixtures/attestation (see SOURCES.md there)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def tdx_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "tdx"


@pytest.fixture(scope="session")
def gpu_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "gpu"


@pytest.fixture(scope="session")
def intel_root(tdx_dir: Path) -> TrustedRoot:
    return TrustedRoot.load((tdx_dir / "dcap-qvl" / "TrustedRootCA.der").read_bytes())


@pytest.fixture(scope="session")
def sample_quote(tdx_dir: Path) -> bytes:
    return (tdx_dir / "dcap-qvl" / "tdx_quote").read_bytes()


@pytest.fixture(scope="session")
def sample_collateral(tdx_dir: Path) -> Collateral:
    return Collateral.from_json((tdx_dir / "dcap-qvl" / "tdx_quote_collateral.json").read_bytes())


@pytest.fixture(scope="session")
def outdated_quote(tdx_dir: Path) -> bytes:
    return (tdx_dir / "dcap-qvl" / "tdx_quote_outdated").read_bytes()


@pytest.fixture(scope="session")
def outdated_collateral(tdx_dir: Path) -> Collateral:
    return Collateral.from_json(
        (tdx_dir / "dcap-qvl" / "tdx_quote_outdated_collateral.json").read_bytes()
    )


@pytest.fixture(scope="session")
def cocoon_quote(tdx_dir: Path) -> bytes:
    return (tdx_dir / "cocoon" / "quote.dat").read_bytes()


@pytest.fixture(scope="session")
def device_root(gpu_dir: Path) -> TrustedRoot:
    return TrustedRoot.load((gpu_dir / "nvtrust" / "verifier_device_root.pem").read_bytes())


@pytest.fixture(scope="session")
def rim_root(gpu_dir: Path) -> TrustedRoot:
    return TrustedRoot.load((gpu_dir / "nvtrust" / "verifier_RIM_root.pem").read_bytes())
