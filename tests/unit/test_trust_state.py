"""The operator's own memory of what it verified: the only source of a fundable image hash."""

from __future__ import annotations

import dataclasses
import datetime as dt

from cocoon_operator.handlers.trust import TrustState
from cocoon_operator.policy.allowlist import Listing
from cocoon_operator.policy.attestation import LastVerification

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEY = ("ns", "w")
IMAGE = "ab" * 32


def verification(*, pod_uid: str = "uid-1", valid_for: float = 600) -> LastVerification:
    return LastVerification(
        pod_uid=pod_uid,
        quote_sha256="cd" * 32,
        image_hash=IMAGE,
        verified_at=T0,
        valid_until=T0 + dt.timedelta(seconds=valid_for),
        gpu_checked=False,
    )


def test_an_image_counts_for_the_pod_it_was_verified_for_while_the_verdict_holds() -> None:
    trust = TrustState()
    trust.verified[KEY] = verification()
    assert trust.verified_image(KEY, "uid-1", T0) == IMAGE
    assert trust.verified_image(KEY, "uid-1", T0 + dt.timedelta(seconds=599)) == IMAGE
    assert trust.verified_image(KEY, "uid-1", T0 + dt.timedelta(seconds=600)) is None
    assert trust.verified_image(KEY, "uid-2", T0) is None  # another pod inherits nothing
    assert trust.verified_image(KEY, None, T0) is None
    assert trust.verified_image(("ns", "other"), "uid-1", T0) is None


def test_a_fresh_operator_trusts_nothing_until_it_verifies_again() -> None:
    assert TrustState().verified_image(KEY, "uid-1", T0) is None
    assert TrustState().listings == {}


def test_a_deleted_worker_leaves_nothing_behind() -> None:
    trust = TrustState()
    trust.verified[KEY] = verification()
    trust.listings[KEY] = Listing("rev", "00" * 32, True, IMAGE, True)
    trust.forget(KEY)
    assert trust.verified == {} and trust.listings == {}


def test_the_image_a_stopped_pod_ran_keeps_its_revision_held_and_nothing_more() -> None:
    # An unlisted image's VM is stopped: with no pod, nothing is verified now, but
    # the image it ran is still asked about (so the hold stands), for that revision.
    trust = TrustState()
    trust.verified[KEY] = dataclasses.replace(verification(valid_for=1), revision="rev-a")
    later = T0 + dt.timedelta(hours=1)
    assert trust.held_image(KEY, "rev-a") == IMAGE
    assert trust.held_image(KEY, "rev-b") is None  # a new release may have another image
    assert trust.verified_image(KEY, None, later) is None  # never fundable by it
    assert TrustState().held_image(KEY, "rev-a") is None
