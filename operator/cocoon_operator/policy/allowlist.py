"""The root contract's allow-lists and a worker's VM (pure).

COCOON proxies refuse a worker whose image hash or model hash is not on the
root contract's lists, so a VM started for an unlisted model or image would
hold a GPU and earn nothing. The operator reads the lists itself (the
worker's own reading is not evidence) before it starts a VM, and again for
the attested image hash before Ready. A definite "not listed" holds the
worker: no launcher pod, so no GPU and no boot loop, with OnChainAllowed
False naming each missing hash; the chain step re-reads the lists and the
worker starts once its hashes are listed. A read that fails holds nothing:
Ready still needs a positive reading.

Readings belong to a revision: a rotation (new model, new release) makes the
old reading moot. The model hash is known from the spec; the image hash only
from evidence, so it is the image hash this operator verified for the current
revision's pod (its own memory, ``handlers/trust.py``; never the status).

``status.chain`` is the reading's output. The decisions that move money
(:func:`listed`: fund; :func:`unregistered`: what to register) take the
operator's own :class:`Listing`, never ``status.chain``: anyone with
``cocoonworkers/status`` patch rights can write that, ``source`` included.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cocoon_operator.api.v1alpha1 import ChainStatus, ModelRef
from cocoon_operator.policy.conditions import rfc3339

OPERATOR = "operator"  # ChainStatus.source of the operator's own reading


@dataclass(frozen=True)
class Listing:
    """One reading of the root contract for one revision of a worker."""

    revision: str
    model_hash: str
    model_listed: bool
    image_hash: str | None = None  # None: not attested yet at this revision
    image_listed: bool | None = None


def model_hash(model: ModelRef) -> str:
    """COCOON's model hash: SHA-256 of ``Name@commit:verity`` (hex)."""
    return hashlib.sha256(model.cocoon_id.encode()).hexdigest()


def record(
    old: ChainStatus | None, reading: Listing | None, error: str | None, now: datetime
) -> ChainStatus | None:
    """status.chain after a reading (or a failed one), changing only what changed.

    ``checkedAt`` is when the values last changed, so a fleet at rest writes
    nothing; a failed read keeps the last values (a chain outage does not
    unlist anybody) and says why in ``error``.
    """
    if reading is None:
        if error is None:
            return old
        base = old or ChainStatus(source=OPERATOR)
        return base if base.error == error else base.model_copy(update={"error": error})
    new = ChainStatus(
        revision=reading.revision,
        model_hash=reading.model_hash,
        model_hash_listed=reading.model_listed,
        image_hash=reading.image_hash,
        image_hash_listed=reading.image_listed,
        source=OPERATOR,
        checked_at=old.checked_at if old else None,
    )
    if old is not None and new == old.model_copy(update={"error": None}):
        return new
    return new.model_copy(update={"checked_at": rfc3339(now)})


def missing(chain: ChainStatus | None, revision: str) -> list[str]:
    """The hashes the operator found unlisted for ``revision`` (empty: none known)."""
    if chain is None or chain.source != OPERATOR or chain.revision != revision:
        return []
    out = []
    if chain.model_hash_listed is False:
        out.append(f"model hash {chain.model_hash}")
    if chain.image_hash_listed is False:
        out.append(f"image hash {chain.image_hash}")
    return out


def hold(
    chain: ChainStatus | None,
    revision: str,
    *,
    registering: bool,
    not_registered: str | None = None,
) -> str | None:
    """Why no VM may run for ``revision`` now, or None.

    A worker whose hashes the operator itself registers is not held: it would
    only be stopped to be started again once the registration lands.
    ``not_registered``: why a worker that asked for registration does not get it
    (the operator's policy), said with the hold.
    """
    gaps = missing(chain, revision)
    if not gaps or registering:
        return None
    why = f"; not registered: {not_registered}" if not_registered else ""
    return "the root contract does not list the " + " and ".join(gaps) + why


def listed(reading: Listing | None, revision: str, image_hash: str | None) -> bool:
    """Whether this operator's own reading of ``revision`` found both hashes listed,
    the image hash being ``image_hash``: the one it verified for the running pod now.

    The only reading that lets money go to the worker's wallet.
    """
    return (
        reading is not None
        and reading.revision == revision
        and image_hash is not None
        and reading.image_hash == image_hash
        and reading.model_listed
        and reading.image_listed is True
    )


def unregistered(reading: Listing | None, revision: str) -> list[tuple[str, str]]:
    """``(list, hex hash)`` this operator's own reading found missing for ``revision``:
    what to register.

    ``list`` is ``"model"`` or ``"worker"`` (the root's worker image list); an
    image hash is only ever one this operator verified.
    """
    if reading is None or reading.revision != revision:
        return []
    out = []
    if not reading.model_listed:
        out.append(("model", reading.model_hash))
    if reading.image_listed is False and reading.image_hash:
        out.append(("worker", reading.image_hash))
    return out
