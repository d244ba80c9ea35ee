"""plugins/krew/cocoon.yaml is a krew Plugin named ``cocoon`` at the package's version,
whose release fields are placeholders no one can take for real ones until filled."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cocoon_operator import __version__
from cocoon_operator.kubectl_plugin import krew

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "plugins" / "krew" / "cocoon.yaml"


def manifest() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return doc


def test_it_is_a_krew_plugin_named_cocoon_at_the_package_version() -> None:
    doc = manifest()
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin"
    assert doc["metadata"]["name"] == "cocoon"
    assert doc["spec"]["version"] == krew.semver(__version__)
    assert doc["spec"]["shortDescription"]
    assert doc["spec"]["platforms"]


def test_each_platform_runs_the_entry_point_and_holds_placeholders() -> None:
    for platform in manifest()["spec"]["platforms"]:
        os_, arch = krew.platform_key(platform)
        assert platform["bin"] == "kubectl-cocoon"
        assert {f["from"] for f in platform["files"]} == {"kubectl-cocoon", "lib"}
        assert platform["uri"] == krew.URL_PLACEHOLDER.format(os=os_, arch=arch)
        assert platform["sha256"] == krew.SHA256_PLACEHOLDER.format(os=os_, arch=arch)
        assert not re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
        assert not platform["uri"].startswith(("http://", "https://"))
    assert (ROOT / "plugins" / "krew" / "kubectl-cocoon").stat().st_mode & 0o111


@pytest.mark.parametrize(
    ("pep440", "sem"),
    [
        ("0.1.0", "v0.1.0"),
        ("0.1.0.dev0", "v0.1.0-dev.0"),
        ("1.2.3rc1", "v1.2.3-rc.1"),
        ("1.2.3a4", "v1.2.3-alpha.4"),
        ("1.2.3b2", "v1.2.3-beta.2"),
    ],
)
def test_semver(pep440: str, sem: str) -> None:
    assert krew.semver(pep440) == sem


@pytest.mark.parametrize("bad", ["1.2", "1.2.3.post1", "v1.2.3", "1.2.3+local"])
def test_semver_refuses_other_forms(bad: str) -> None:
    with pytest.raises(ValueError):
        krew.semver(bad)


def test_the_release_script_fills_url_and_digest(tmp_path: Path) -> None:
    archive = tmp_path / "kubectl-cocoon_linux_amd64.tar.gz"
    archive.write_bytes(b"not really an archive")
    url = "https://example.invalid/kubectl-cocoon_linux_amd64.tar.gz"
    done = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "krew-manifest"), f"linux/amd64={url}={archive}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    filled = yaml.safe_load(done.stdout)
    (platform,) = filled["spec"]["platforms"]
    assert platform["uri"] == url
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert filled["spec"]["version"] == manifest()["spec"]["version"]

    missing = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "krew-manifest")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert "no archive given for platform linux/amd64" in missing.stderr
