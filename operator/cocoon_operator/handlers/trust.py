"""What this operator itself verified and read: the only inputs of money and registration.

A worker's ``status`` is output. Anyone granted ``cocoonworkers/status`` patch
(a tenant's CI, a GitOps tool, a careless ClusterRole) can write it, and a
pod's conditions are as writable with ``pods/status``. So the decisions that
move the treasury's or the root owner's money (fund this wallet, register
this image hash) read only this store, filled by the operator's own work:

- ``verified``: per worker, the last full verification of its pod's evidence
  (the attestation step's :class:`~cocoon_operator.policy.attestation.LastVerification`):
  which pod (uid), which image hash, valid until when;
- ``listings``: per worker, the operator's last reading of the root contract's
  allow-lists for its revision, whose image hash is the one verified above.

It lives in memory and is never written anywhere a tenant can reach. After a
restart it is empty: the attestation step verifies each pod's evidence again
and the reconcile reads the lists again before any money moves (the chain
step funds and registers nothing for a worker it holds no entry for).
Keyed by namespace and name; an entry names the pod uid it holds for, so a
worker deleted and created again under the same name inherits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cocoon_operator.policy.allowlist import Listing
from cocoon_operator.policy.attestation import LastVerification

Key = tuple[str, str]  # namespace, name


@dataclass
class TrustState:
    verified: dict[Key, LastVerification] = field(default_factory=dict)
    listings: dict[Key, Listing] = field(default_factory=dict)

    def verified_image(self, key: Key, pod_uid: str | None, now: datetime) -> str | None:
        """The image hash this operator verified for ``pod_uid``'s evidence, while that
        verdict holds; None for any other pod, an expired verdict, or none at all."""
        last = self.verified.get(key)
        if last is None or pod_uid is None or last.pod_uid != pod_uid or now >= last.valid_until:
            return None
        return last.image_hash

    def held_image(self, key: Key, revision: str) -> str | None:
        """The image hash this operator last verified for ``revision``'s pod, whichever
        pod and however long ago: only to keep a worker whose image the root does not
        list held once its VM was stopped (no pod, so nothing verified now). It never
        makes anything fundable or registrable (those need :meth:`verified_image`)."""
        last = self.verified.get(key)
        if last is None or not last.revision or last.revision != revision:
            return None
        return last.image_hash

    def forget(self, key: Key) -> None:
        """The worker is gone: nothing of it may outlive it."""
        self.verified.pop(key, None)
        self.listings.pop(key, None)
