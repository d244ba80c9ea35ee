"""Rolling a pool of workers (pure): what to create and delete now.

The rules of a Deployment's rolling update, over CocoonWorkers instead of
pods: never more than ``replicas + maxSurge`` live workers, never fewer than
``replicas - maxUnavailable`` Ready ones because of a deletion of ours, old
revisions that are not Ready go first, then old Ready ones as far as the
availability bound allows, and new ones are created into the room left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolMember:
    name: str
    revision: str | None
    ready: bool
    deleting: bool = False


@dataclass(frozen=True)
class PoolPlan:
    create: int
    delete: tuple[str, ...]
    replicas: int  # live workers
    ready: int
    updated: int  # live workers at the target revision
    unavailable: int


def plan_pool(
    members: Sequence[PoolMember],
    *,
    replicas: int,
    revision: str,
    max_unavailable: int,
    max_surge: int,
) -> PoolPlan:
    live = [m for m in members if not m.deleting]
    new = [m for m in live if m.revision == revision]
    old = [m for m in live if m.revision != revision]
    ready = sum(m.ready for m in live)
    min_available = max(0, replicas - max_unavailable)
    available = ready
    delete: list[str] = []
    # Old workers: the not-Ready ones cost no availability; Ready ones only
    # while enough others stay Ready.
    for member in sorted(old, key=lambda m: (m.ready, m.name)):
        if not member.ready:
            delete.append(member.name)
        elif available - 1 >= min_available:
            delete.append(member.name)
            available -= 1
    # More new workers than wanted (a scale-down): the not-Ready ones first.
    surplus = len(new) - replicas
    if surplus > 0:
        for member in sorted(new, key=lambda m: (m.ready, m.name))[:surplus]:
            delete.append(member.name)
    remaining = len(live) - len(delete)
    room = replicas + max_surge - remaining
    create = max(0, min(replicas - len(new), room))
    return PoolPlan(
        create=create,
        delete=tuple(delete),
        replicas=len(live),
        ready=ready,
        updated=len(new),
        unavailable=max(0, replicas - ready),
    )


def slow_start(count: int, *, most: int = 16) -> list[int]:
    """Sizes of the batches in which to make ``count`` writes: 1, 2, 4, ... ``most``.

    As Kubernetes' ReplicaSet controller creates pods: when every write
    fails (a quota, a webhook refusing the template) the pool learns it from
    one request rather than from a thousand; once writes succeed, up to
    ``most`` go at once, so that the round trips of a busy operator do not
    set the pace (one at a time, a new pool's creation was bound by the
    round trip: docs/bench.md).
    """
    sizes: list[int] = []
    size = 1
    while count > 0:
        sizes.append(min(size, count))
        count -= sizes[-1]
        size = min(size * 2, most)
    return sizes


def next_names(pool: str, revision: str, taken: set[str], count: int) -> list[str]:
    """``count`` worker names for ``revision``: the lowest indexes not taken.

    Deterministic, so a reconcile that runs twice before it sees its own
    creations asks for the same names and the second create is a no-op (409).
    """
    names: list[str] = []
    index = 0
    while len(names) < count:
        name = f"{pool}-{revision[:8]}-{index}"
        if name not in taken:
            names.append(name)
        index += 1
    return names


@dataclass
class Expectations:
    """A pool's own creates and deletes that its members' index has not shown yet.

    Under load the index lags the operator's writes; a plan made from it alone
    would count a worker it just deleted as still Ready and delete another in
    its place, or miss one it just created.

    A deletion is held until the index shows the worker deleting or gone, for
    however long that takes: it cannot be undone, and letting it lapse while
    the index still shows the worker Ready is exactly the mistake above. At
    1,000 workers the index ran minutes behind; with a 60 s lapse the same
    workers were deleted again and again (23,021 ``WorkerDeleted`` Events in
    one rotation; the 999 workers it took down at once came mostly from the
    index's stale readiness, see handlers/pool.py: ``_members``). A creation
    is held until the index shows it, or for ``ttl`` seconds (someone else
    may have deleted it before the index saw it; forgetting it costs only a
    create that answers 409).
    """

    ttl: float = 60.0
    deleted: set[str] = field(default_factory=set)
    created: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> revision, when

    def apply(self, members: Sequence[PoolMember], now: float) -> list[PoolMember]:
        """``members`` as this pool's own recent writes leave them; forgets what is seen."""
        seen = {m.name: m for m in members}
        self.deleted = {n for n in self.deleted if n in seen and not seen[n].deleting}
        self.created = {
            n: (r, t) for n, (r, t) in self.created.items() if now - t < self.ttl and n not in seen
        }
        out = [
            dataclasses.replace(m, deleting=True, ready=False) if m.name in self.deleted else m
            for m in members
        ]
        out += [PoolMember(n, r, ready=False) for n, (r, _) in sorted(self.created.items())]
        return out
