"""Certificate revocation as a pluggable step.

NVIDIA publishes revocation via OCSP, which an offline verifier cannot reach.
Callers therefore always pass a :class:`RevocationChecker` explicitly. There is
deliberately no checker here that answers "good" without looking:
:class:`NoRevocationCheck` answers ``not_checked`` and that status is carried into
every result, so skipping revocation is always visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from cryptography import x509

from cocoon_operator.attestation.errors import RevocationError


class RevocationStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    NOT_CHECKED = "not_checked"


@dataclass(frozen=True)
class RevocationResult:
    status: RevocationStatus
    detail: str = ""


class RevocationChecker(Protocol):
    """Says whether any certificate of a chain (leaf first, root excluded) is revoked."""

    name: str

    def check(self, chain: Sequence[x509.Certificate], *, now: datetime) -> RevocationResult: ...


class NoRevocationCheck:
    """Skip revocation; results then say ``not_checked``."""

    name = "none"

    def check(self, chain: Sequence[x509.Certificate], *, now: datetime) -> RevocationResult:
        return RevocationResult(RevocationStatus.NOT_CHECKED, "revocation not checked (offline)")


class SerialDenyList:
    """Revoked if any certificate's (issuer, serial) is listed; ``unknown`` never.

    Useful with revocation data obtained out of band (e.g. a CRL fetched earlier);
    it reports ``good`` only because it did look at every certificate.
    """

    name = "deny-list"

    def __init__(self, revoked: Iterable[tuple[x509.Name, int]]) -> None:
        self._revoked = frozenset(revoked)

    def check(self, chain: Sequence[x509.Certificate], *, now: datetime) -> RevocationResult:
        for cert in chain:
            if (cert.issuer, cert.serial_number) in self._revoked:
                return RevocationResult(
                    RevocationStatus.REVOKED,
                    f"{cert.subject.rfc4514_string()} serial {cert.serial_number:x} is revoked",
                )
        return RevocationResult(RevocationStatus.GOOD, f"{len(chain)} certificates not listed")


def enforce_revocation(
    checker: RevocationChecker, chain: Sequence[x509.Certificate], *, now: datetime, what: str
) -> RevocationStatus:
    """Run ``checker``; raise :class:`RevocationError` for revoked or unknown."""
    result = checker.check(chain, now=now)
    if result.status in (RevocationStatus.REVOKED, RevocationStatus.UNKNOWN):
        raise RevocationError(f"{what}: revocation status {result.status}: {result.detail}")
    return result.status
