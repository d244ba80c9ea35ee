"""What the guest's health monitor last said, as the launcher hands it to the node agent.

One file per VM, ``/run/cocoon/instance-<i>.health.json``, beside the instance
record and the quotes file, bound to the pod UID and instance the same way
(:mod:`._quotefile`) and written atomically::

    {"version": 1, "instance": 3, "podUid": "...", "checkedAt": "2026-...Z",
     "imageHash": HEX64 | null, "mrtd": HEX96 | null, "rtmr": [HEX96 x 4] | null}

The file holds the latest answer the monitor gave (``checkedAt``); none is
written while it has not answered (the host may not reach it), and the launcher
removes it with the VM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cocoon_operator.launcher._health import GuestHealth

HEALTH_FILE_VERSION: Final = 1
#: Far above what the file holds (~800 bytes): a larger file is not the launcher's.
MAX_HEALTH_FILE_BYTES: Final = 4096
_SUFFIX: Final = ".health.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX96 = re.compile(r"^[0-9a-f]{96}$")


class HealthFileError(ValueError):
    """A health file that is not what the launcher writes."""


@dataclass(frozen=True)
class HealthFile:
    instance: int
    pod_uid: str
    checked_at: datetime
    health: GuestHealth


def health_file_path(state_dir: Path, instance: int) -> Path:
    return state_dir / f"instance-{instance}{_SUFFIX}"


def is_health_file(name: str) -> bool:
    return name.endswith(_SUFFIX)


def render_health_file(instance: int, pod_uid: str, at: datetime, health: GuestHealth) -> str:
    if at.tzinfo is None:
        raise ValueError("a check time must be timezone-aware")
    doc = {
        "version": HEALTH_FILE_VERSION,
        "instance": instance,
        "podUid": pod_uid,
        "checkedAt": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "imageHash": health.image_hash,
        "mrtd": health.mrtd,
        "rtmr": list(health.rtmr) if health.rtmr is not None else None,
    }
    return json.dumps(doc, separators=(",", ":"))


def write_health_file(
    state_dir: Path, instance: int, pod_uid: str, at: datetime, health: GuestHealth
) -> Path:
    """Replace the VM's health file atomically (mode 0644: the agent reads it)."""
    path = health_file_path(state_dir, instance)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_health_file(instance, pod_uid, at, health))
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return path


def _hex(doc: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise HealthFileError(f"{key} is not lower-case hex of the right length")
    return value


def parse_health_file(text: str) -> HealthFile:
    """The file's content, checked: bounded, well-formed, bound to a pod and instance."""
    if len(text) > MAX_HEALTH_FILE_BYTES:
        raise HealthFileError(f"the file is larger than {MAX_HEALTH_FILE_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError:
        raise HealthFileError("not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != HEALTH_FILE_VERSION:
        raise HealthFileError(f"not a version {HEALTH_FILE_VERSION} health file")
    instance = doc.get("instance")
    if not isinstance(instance, int) or isinstance(instance, bool) or not 0 <= instance <= 9:
        raise HealthFileError("instance is not 0..9")
    pod_uid = doc.get("podUid")
    if not isinstance(pod_uid, str) or not pod_uid or len(pod_uid) > 128:
        raise HealthFileError("podUid is empty, too long or not a string")
    raw_at = doc.get("checkedAt")
    at = None
    if isinstance(raw_at, str) and len(raw_at) < 40:
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(raw_at)
    if at is None or at.tzinfo is None:
        raise HealthFileError("checkedAt is not an RFC 3339 time with a zone")
    rtmr_raw = doc.get("rtmr")
    rtmr = None
    if rtmr_raw is not None:
        if not isinstance(rtmr_raw, list) or len(rtmr_raw) != 4:
            raise HealthFileError("rtmr is not a list of four values")
        values = [_hex({"rtmr": r}, "rtmr", _HEX96) for r in rtmr_raw]
        if any(v is None for v in values):
            raise HealthFileError("rtmr holds a null")
        rtmr = (str(values[0]), str(values[1]), str(values[2]), str(values[3]))
    health = GuestHealth(_hex(doc, "imageHash", _HEX64), _hex(doc, "mrtd", _HEX96), rtmr)
    if health.empty:
        raise HealthFileError("the file carries no measurement")
    return HealthFile(instance, pod_uid, at.astimezone(UTC), health)
