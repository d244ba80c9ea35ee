"""Which launcher images may run on the operator's nodes: the operator's choice (pure).

A CocoonWorker's ``spec.release.image`` becomes a privileged container with
the host's KVM, VFIO and vsock devices and the node's model cache and disks
(``desired/launcher.py``): whoever picks the image owns the node. Its pin
by digest (the CRD's pattern) only says *which* image, not that anybody
vetted it. So the images that may run are a list in the operator's own
configuration (``cocoon-operator run --launcher-image``, the chart's
``launcher.allowedImages``), written by whoever installs the operator, never
by a worker's author; the webhook refuses other images at admission, and the
reconcile, which runs also when the webhook was down (failure policy Ignore),
starts no launcher pod for them.

An entry is matched by its digest alone: a digest names the image's manifest,
so the same digest pulled through a mirror is the same image. The release the
image carries (``/opt/cocoon/release``, images/launcher/Dockerfile) is part of
that image, so allowing the image allows exactly its release: the spec's
``release.files`` digests can only make the allowed launcher refuse to start
(it checks them against its own files), never run anything else.

No entry and no ``--allow-any-launcher-image`` means no worker starts: an
operator nobody has told which images to trust starts none (the condition
says which flag to set). ``--allow-any-launcher-image`` is for the local stack
and development clusters, and the operator warns about it at startup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

_DIGEST: Final = re.compile(r"(?:^|@)(sha256:[0-9a-f]{64})$")
FLAG: Final = "--launcher-image"
CHART_VALUE: Final = "launcher.allowedImages"


def image_digest(reference: str) -> str | None:
    """``sha256:<hex>`` of ``repo@sha256:<hex>`` (or of a bare digest); None when unpinned."""
    found = _DIGEST.search(reference.strip())
    return found.group(1) if found else None


@dataclass(frozen=True)
class LauncherImages:
    """The launcher images this operator allows (its configuration, never a worker's)."""

    digests: frozenset[str] = frozenset()
    allow_any: bool = False

    @classmethod
    def parse(cls, references: Iterable[str], *, allow_any: bool = False) -> LauncherImages:
        """From ``--launcher-image`` values; ValueError naming the first unpinned one."""
        digests = set()
        for reference in references:
            digest = image_digest(reference)
            if digest is None:
                raise ValueError(
                    f"{FLAG} {reference!r}: name the image by digest"
                    " (registry/name@sha256:<64 hex digits>, or sha256:<64 hex digits>)"
                )
            digests.add(digest)
        return cls(frozenset(digests), allow_any)

    def refusal(self, image: str) -> str | None:
        """Why ``image`` may not run here, naming the field and the setting; None if it may."""
        if self.allow_any:
            return None
        digest = image_digest(image)
        if digest is None:
            return f"spec.release.image: {image!r} is not pinned by digest"
        if digest in self.digests:
            return None
        if not self.digests:
            return (
                f"spec.release.image: this operator allows no launcher image yet"
                f" (set {FLAG}, chart value {CHART_VALUE})"
            )
        return (
            f"spec.release.image: {digest} is not a launcher image this operator allows"
            f" ({FLAG}, chart value {CHART_VALUE}; an administrator's choice)"
        )


def image_errors(spec: Mapping[str, Any], allowed: LauncherImages) -> list[str]:
    """The webhook's and the reconcile's check of a raw spec (types are the schema's job)."""
    release = spec.get("release")
    image = release.get("image") if isinstance(release, Mapping) else None
    if not isinstance(image, str):
        return []
    refusal = allowed.refusal(image)
    return [refusal] if refusal else []


def introduced_image_errors(
    spec: Mapping[str, Any], old_spec: Mapping[str, Any] | None, allowed: LauncherImages
) -> list[str]:
    """The image errors a request brings: on a create all, on an update only when it
    changes the image (a worker whose image was allowed when it was created must still
    take other edits, the operator's finalizer removal above all, and its deletion)."""
    errors = image_errors(spec, allowed)
    if old_spec is None or not errors:
        return errors
    old_release = old_spec.get("release")
    new_release = spec.get("release")
    old_image = old_release.get("image") if isinstance(old_release, Mapping) else None
    new_image = new_release.get("image") if isinstance(new_release, Mapping) else None
    return [] if old_image == new_image else errors


def introduced_template_image_errors(
    spec: Mapping[str, Any], old_spec: Mapping[str, Any] | None, allowed: LauncherImages
) -> list[str]:
    """:func:`introduced_image_errors` for a CocoonWorkerPool, whose workers' spec is
    ``spec.template.spec``: refused on the pool itself, naming the template's field,
    rather than on each worker it would make."""

    def template(of: Mapping[str, Any]) -> Mapping[str, Any]:
        raw = of.get("template")
        inner = raw.get("spec") if isinstance(raw, Mapping) else None
        return inner if isinstance(inner, Mapping) else {}

    old = None if old_spec is None else template(old_spec)
    return [
        error.replace("spec.release.image", "spec.template.spec.release.image", 1)
        for error in introduced_image_errors(template(spec), old, allowed)
    ]
