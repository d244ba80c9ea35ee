"""Seal servers: which to run, which nodes to label, and why a worker waits (pure).

See desired/sealserver.py for what a seal server is and why there is one per
enclave and node. The sweep (handlers/sealserver.py) gathers the workers, the
launcher and seal-server pods and the nodes, and applies what these return.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

ID_LENGTH: Final = 16  # desired/sealserver.py: enclave_id


@dataclass(frozen=True)
class SealFacts:
    """What a worker's reconcile knows of seal servers: the operator runs them (in
    ``namespace``) and these enclave ids are Ready on at least one node."""

    namespace: str
    ready_ids: frozenset[str] = frozenset()
    # The (launcher image, enclave digest) pairs the operator runs seal servers for.
    releases: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class EnclaveUse:
    """A worker's release as far as its seal server goes."""

    image: str
    enclave: str
    seal_server: str | None = None

    @property
    def enclave_id(self) -> str:
        return self.enclave[:ID_LENGTH]


def allowed(use: EnclaveUse, releases: Collection[tuple[str, str]]) -> bool:
    """Whether the operator's configuration lists this (launcher image, enclave digest).

    A worker's author names both, and the seal server runs privileged on every
    worker host and serves every tenant's VMs (one per host): only releases an
    administrator imported and listed (``--seal-server-release IMAGE=ENCLAVE``,
    chart ``sealServer.releases``) are run.
    """
    return (use.image, use.enclave) in releases


def wanted(
    workers: Iterable[EnclaveUse],
    running_ids: Iterable[str],
    existing: Mapping[str, EnclaveUse],
    releases: Collection[tuple[str, str]],
) -> dict[str, EnclaveUse]:
    """The seal servers to run, by enclave id, of the allowed ``releases`` only.

    One per enclave some worker names; of several releases sharing an enclave,
    the smallest (image, seal-server digest) runs it, so every sweep picks the
    same. An enclave no worker names any more is kept while a launcher pod of
    it still exists (``running_ids``: its VM may still run and reboot), with
    the release its DaemonSet already has; then it goes.
    """
    out: dict[str, EnclaveUse] = {}
    for use in workers:
        if not allowed(use, releases):
            continue
        have = out.get(use.enclave_id)
        if have is None or (use.image, use.seal_server or "") < (
            have.image,
            have.seal_server or "",
        ):
            out[use.enclave_id] = use
    for enclave_id in running_ids:
        if enclave_id not in out and enclave_id in existing:
            out[enclave_id] = existing[enclave_id]
    return out


def node_labels(
    current: Mapping[str, str | None], ready: Mapping[str, Collection[str]]
) -> dict[str, str | None]:
    """The label changes: node -> enclave id to set, or None to remove.

    ``current``: each eligible node's label now; ``ready``: the enclave ids
    whose seal-server pod is Ready on each node (one, as the host port allows;
    of several, the smallest, so the answer is stable).
    """
    changes: dict[str, str | None] = {}
    for node, now in current.items():
        ids = sorted(ready.get(node, ()))
        want = ids[0] if ids else None
        if want != now:
            changes[node] = want
    return changes


def waiting_message(
    enclave: str | None,
    ready_ids: Collection[str],
    namespace: str,
    *,
    image: str = "",
    releases: Collection[tuple[str, str]] | None = None,
) -> str | None:
    """Why a worker's VM cannot be placed yet, for its Scheduled condition; None: it can.

    ``releases``: the allowed (image, enclave) pairs; None: not checked here.
    """
    if enclave is None:
        return (
            "spec.release.files.enclave is unset: this operator runs the nodes' seal"
            " servers and needs the release's enclave digest"
            " (`cocoon-operator release import` prints it)"
        )
    enclave_id = enclave[:ID_LENGTH]
    if releases is not None and (image, enclave) not in releases:
        return (
            f"the release (image {image}, enclave {enclave_id}) is not one this operator"
            " runs seal servers for (its sealServer.releases): ask its administrator"
        )
    if enclave_id in ready_ids:
        return None
    return (
        f"no node has a ready seal server for enclave {enclave_id}"
        f" (DaemonSet {namespace}/cocoon-seal-{enclave_id}); the VM waits for one"
    )
