"""A chain check that learned nothing skips its reconcile only while the fleet's
reader still holds, unexpired, the very verdicts on the worker's hashes that its
conditions were derived from (handlers/chain.py ``listing_holds``): an expired or
changed verdict sends it to the reconcile, which reads the lists again."""

from __future__ import annotations

from typing import Any, cast

import pytest

from cocoon_operator.api import v1alpha1
from cocoon_operator.handlers.chain import AllowListReader, listing_holds
from cocoon_operator.metrics import Metrics
from cocoon_operator.ton.address import normalize_address
from cocoon_operator.ton.errors import TonError
from cocoon_operator.ton.root import AllowList
from tests.unit.clocks import FakeClock
from tests.unit.helpers import reading, spec

TTL = 30.0


class Reader(AllowListReader):
    """The fleet's reader with the chain's answers given by the test."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(cast(Any, None), ttl=TTL, metrics=Metrics(), clock=clock)
        self.answers: dict[AllowList, bool | Exception] = {
            AllowList.MODEL: True,
            AllowList.WORKER: True,
        }

    async def _read(self, root: str, kind: AllowList, value: bytes) -> bool:
        answer = self.answers[kind]
        if isinstance(answer, Exception):
            raise answer
        return answer


def worker() -> v1alpha1.CocoonWorker:
    return v1alpha1.CocoonWorker.model_validate(
        {"metadata": {"name": "w", "namespace": "ns"}, "spec": spec().model_dump(by_alias=True)}
    )


async def read_both(reader: Reader, w: v1alpha1.CocoonWorker, image: str | None) -> None:
    """What a reconcile's read_lists asks the reader."""
    root = normalize_address(w.spec.root_contract_address)
    listing = reading(image=True)
    await reader.listed(root, AllowList.MODEL, bytes.fromhex(listing.model_hash))
    if image is not None:
        await reader.listed(root, AllowList.WORKER, bytes.fromhex(image))


async def test_verdicts_held_unexpired_and_unchanged_let_the_reconcile_be_skipped(
    clock: FakeClock,
) -> None:
    reader, w = Reader(clock), worker()
    listing = reading(image=True)
    assert not listing_holds(reader, w, listing)  # nothing read yet: the reconcile reads
    await read_both(reader, w, listing.image_hash)
    assert listing_holds(reader, w, listing)
    assert listing_holds(reader, w, reading(image=None))  # not attested: the model alone
    assert not listing_holds(reader, w, None)


async def read_then_expire(clock: FakeClock) -> tuple[Reader, v1alpha1.CocoonWorker]:
    """A reader that read both of a worker's hashes a check interval ago."""
    reader, w = Reader(clock), worker()
    await read_both(reader, w, reading(image=True).image_hash)
    clock.t += TTL
    return reader, w


async def test_an_expired_verdict_sends_the_check_to_the_reconcile(clock: FakeClock) -> None:
    reader, w = await read_then_expire(clock)
    assert not listing_holds(reader, w, reading(image=True))


async def test_a_verdict_that_changed_sends_the_check_to_the_reconcile(clock: FakeClock) -> None:
    reader, w = await read_then_expire(clock)
    listing = reading(image=True)
    reader.answers[AllowList.WORKER] = False  # the image taken off the root's list
    await read_both(reader, w, listing.image_hash)  # another worker's reconcile read it
    assert not listing_holds(reader, w, listing)
    assert listing_holds(reader, w, reading(image=False))


async def test_a_failed_read_holds_nothing(clock: FakeClock) -> None:
    reader, w = Reader(clock), worker()
    reader.answers[AllowList.MODEL] = TonError("toncenter: 503")
    with pytest.raises(TonError):
        await read_both(reader, w, None)
    assert not listing_holds(reader, w, reading(image=None))
