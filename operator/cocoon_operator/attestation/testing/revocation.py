"""A fake revocation checker that answers "good": tests pass it explicitly.

Production code has no checker that answers "good" unasked, and never imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509

from cocoon_operator.attestation._revocation import RevocationResult, RevocationStatus


class AlwaysGoodRevocation:
    """Fake revocation checker for tests: every chain is "good". Never use in production."""

    name = "test-always-good"

    def check(self, chain: Sequence[x509.Certificate], *, now: datetime) -> RevocationResult:
        return RevocationResult(RevocationStatus.GOOD, "test fake")
