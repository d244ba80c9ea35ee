"""The krew plugin manifest (``plugins/krew/cocoon.yaml``): its version and its release fill-in.

The committed manifest is a template: krew needs, per platform, the URL of a
release archive and its SHA-256, which exist only once a release is built, so
those fields hold :data:`URL_PLACEHOLDER` / :data:`SHA256_PLACEHOLDER` (text no
one can mistake for a real URL or digest) until ``hack/krew-manifest`` fills
them from the built archives. The version is the package's, in the form krew
requires (a semantic version with a leading ``v``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

URL_PLACEHOLDER: Final = "RELEASE-URL-OF-{os}-{arch}-ARCHIVE"
SHA256_PLACEHOLDER: Final = "SHA256-OF-{os}-{arch}-ARCHIVE"
_PEP440: Final = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:\.?(a|b|rc|dev)\.?(\d+))?")
_SEMVER_PRE: Final = {"a": "alpha", "b": "beta", "rc": "rc", "dev": "dev"}


def semver(version: str) -> str:
    """A PEP 440 release (``0.1.0``, ``0.1.0rc1``, ``0.1.0.dev0``) as krew's ``v`` + semver
    (``v0.1.0``, ``v0.1.0-rc.1``, ``v0.1.0-dev.0``); ValueError for other forms."""
    match = _PEP440.fullmatch(version)
    if match is None:
        raise ValueError(f"not a plain PEP 440 release or pre-release: {version!r}")
    major, minor, patch, pre, number = match.groups()
    core = f"v{major}.{minor}.{patch}"
    return f"{core}-{_SEMVER_PRE[pre]}.{number}" if pre else core


def platform_key(platform: Mapping[str, Any]) -> tuple[str, str]:
    """(os, arch) of a manifest platform, from its selector's matchLabels."""
    labels = (platform.get("selector") or {}).get("matchLabels") or {}
    return str(labels.get("os")), str(labels.get("arch"))


def fill(
    manifest: Mapping[str, Any], archives: Mapping[tuple[str, str], tuple[str, str]]
) -> dict[str, Any]:
    """The manifest with each platform's ``uri`` and ``sha256`` set from ``archives``
    ((os, arch) -> (url, sha256)); KeyError names a platform left without an archive."""
    out = dict(manifest)
    spec = dict(out["spec"])
    platforms = []
    for platform in spec["platforms"]:
        key = platform_key(platform)
        if key not in archives:
            raise KeyError(f"no archive given for platform {key[0]}/{key[1]}")
        url, digest = archives[key]
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"not a SHA-256 hex digest for {key[0]}/{key[1]}: {digest!r}")
        platforms.append({**platform, "uri": url, "sha256": digest})
    spec["platforms"] = platforms
    out["spec"] = spec
    return out
