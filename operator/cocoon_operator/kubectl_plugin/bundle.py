"""The support bundle of ``kubectl cocoon report``, built in memory (pure: no I/O, no clock).

Modelled on ``kubectl cnpg report``: one archive with a directory of YAML
objects and logs, and a manifest saying what was collected and what could not
be. Every object and every text goes through :mod:`.redact` on its way in, so
nothing reaches the archive unredacted; the collector (``cli.do_report``)
never reads a Secret in the first place.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from cocoon_operator.kubectl_plugin import redact

MANIFEST: Final = "manifest.json"
FORMAT_VERSION: Final = 1

#: What the bundle leaves out on purpose, written into every manifest.
NEVER_COLLECTED: Final = (
    "Secrets: never read, so neither their data nor the objects are in the bundle",
    "the chart's values as Helm stores them (a Secret): the values below are"
    " read back from the operator Deployment's arguments and environment",
)


def archive_root(now: dt.datetime) -> str:
    """The directory every file sits under: ``cocoon-report-20260101T120000Z``."""
    return "cocoon-report-" + now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _safe(part: str) -> str:
    """A name usable as one path component (object names never hold ``/``; be sure)."""
    return part.replace("/", "_").replace("\\", "_").lstrip(".") or "_"


def object_path(kind_dir: str, obj: Mapping[str, Any]) -> str:
    """``namespaces/<ns>/<kind_dir>/<name>.yaml``, or ``cluster/<kind_dir>/...`` unnamespaced."""
    meta = obj.get("metadata") or {}
    name = _safe(str(meta.get("name") or "unnamed"))
    namespace = meta.get("namespace")
    where = f"namespaces/{_safe(str(namespace))}" if namespace else "cluster"
    return f"{where}/{kind_dir}/{name}.yaml"


@dataclass
class Bundle:
    """Files (redacted on the way in) and the record of what was collected or failed."""

    files: dict[str, bytes] = field(default_factory=dict)
    collected: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def add_object(self, path: str, what: str, obj: Any) -> None:
        """One object or list of objects, redacted, as YAML."""
        text = yaml.safe_dump(redact.redact_object(obj), sort_keys=False, allow_unicode=True)
        self._add(path, what, text.encode())

    def add_text(self, path: str, what: str, text: str) -> None:
        """Free text (a log), redacted line by line."""
        self._add(path, what, redact.redact_text(text).encode())

    def fail(self, what: str, error: str) -> None:
        """Something that could not be collected; the reason goes into the manifest."""
        self.failed.append({"what": what, "error": redact.redact_text(error)})

    def _add(self, path: str, what: str, data: bytes) -> None:
        if path in self.files:
            raise ValueError(f"bundle path collected twice: {path}")
        self.files[path] = data
        self.collected.append({"path": path, "what": what})

    def manifest(self, now: dt.datetime, scope: Mapping[str, Any]) -> dict[str, Any]:
        """What the manifest says: when, of what, each file, each failure, what is never in."""
        return {
            "formatVersion": FORMAT_VERSION,
            "createdAt": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scope": dict(scope),
            "collected": sorted(self.collected, key=lambda c: c["path"]),
            "failed": list(self.failed),
            "neverCollected": list(NEVER_COLLECTED),
            "redacted": list(redact.RULES),
        }

    def archive(self, now: dt.datetime, scope: Mapping[str, Any]) -> bytes:
        """The ``.tar.gz``: every file under :func:`archive_root`, the manifest first."""
        root = archive_root(now)
        manifest = json.dumps(self.manifest(now, scope), indent=2).encode()
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for path, data in [(MANIFEST, manifest), *sorted(self.files.items())]:
                info = tarfile.TarInfo(f"{root}/{path}")
                info.size = len(data)
                info.mtime = int(now.timestamp())
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def _parse_args(args: Sequence[Any]) -> dict[str, Any]:
    """``--flag=value``, ``--flag value`` and ``--flag`` as a mapping; repeated flags as lists."""
    out: dict[str, Any] = {}

    def put(flag: str, value: Any) -> None:
        if flag in out:
            old = out[flag]
            out[flag] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            out[flag] = value

    items = [str(a) for a in args]
    i = 0
    while i < len(items):
        arg = items[i]
        if arg.startswith("--"):
            flag, eq, value = arg[2:].partition("=")
            if eq:
                put(flag, value)
            elif i + 1 < len(items) and not items[i + 1].startswith("-"):
                put(flag, items[i + 1])
                i += 1
            else:
                put(flag, True)
        else:
            put("_positional", arg)
        i += 1
    return out


def chart_values(deployment: Mapping[str, Any], container: str) -> dict[str, Any]:
    """What the chart was installed with, as far as the operator Deployment shows it.

    Helm keeps a release's values in a Secret, which the report never reads;
    the chart renders every value that matters into the operator's arguments
    (``charts/cocoon-operator/templates/deployment.yaml``), so those, the image,
    the chart label and the replicas are the values a support case needs.
    Returned unredacted: :meth:`Bundle.add_object` redacts it.
    """
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = deployment.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or []
    chosen = next((c for c in containers if c.get("name") == container), None)
    if chosen is None and containers:
        chosen = containers[0]
    chosen = chosen or {}
    return {
        "discoveredFrom": f"Deployment {meta.get('namespace')}/{meta.get('name')}"
        f" (container {chosen.get('name')}): arguments and environment",
        "chart": labels.get("helm.sh/chart"),
        "appVersion": labels.get("app.kubernetes.io/version"),
        "release": labels.get("app.kubernetes.io/instance"),
        "replicas": spec.get("replicas"),
        "image": chosen.get("image"),
        "args": _parse_args(chosen.get("args") or []),
        "env": chosen.get("env") or [],
        "resources": chosen.get("resources") or {},
    }


def crd_versions(crd: Mapping[str, Any]) -> dict[str, Any]:
    """A CRD's name, its versions (served, storage) and the stored versions it has had."""
    spec = crd.get("spec") or {}
    return {
        "name": (crd.get("metadata") or {}).get("name"),
        "labels": (crd.get("metadata") or {}).get("labels") or {},
        "versions": [
            {"name": v.get("name"), "served": v.get("served"), "storage": v.get("storage")}
            for v in spec.get("versions") or []
        ],
        "storedVersions": (crd.get("status") or {}).get("storedVersions") or [],
    }


def pod_summary(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod's identity, placement and status (the spec of an operator pod is its
    Deployment's or DaemonSet's, collected beside it)."""
    meta = pod.get("metadata") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": meta.get("labels") or {},
            "ownerReferences": meta.get("ownerReferences") or [],
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "nodeName": (pod.get("spec") or {}).get("nodeName"),
        "status": pod.get("status") or {},
    }


def match_labels_selector(workload: Mapping[str, Any]) -> str | None:
    """A Deployment's or DaemonSet's ``spec.selector.matchLabels`` as a label selector
    (None without one): how its pods are found, whatever else they are labelled."""
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None
