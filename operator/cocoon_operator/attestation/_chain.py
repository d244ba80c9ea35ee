"""X.509 chain verification to a pinned root, at an injected instant, with a cache.

The check is deliberately small and explicit: each certificate must be signed by
the next one, every issuer must be a CA, every certificate (the root included)
must be valid at ``now``, and the last one must be signed by the pinned root (a
copy of the root at the end of the chain is accepted only if it is byte-identical).
Revocation is a separate, pluggable step (see ``_revocation``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from cocoon_operator.attestation._roots import TrustedRoot, load_certificates
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.errors import (
    CertificateChainError,
    CertificateExpiredError,
    TrustRootError,
)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateExpiredError(
            f"certificate {_name(cert)!r} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()} (now {now.isoformat()})"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateExpiredError(
            f"certificate {_name(cert)!r} expired at "
            f"{cert.not_valid_after_utc.isoformat()} (now {now.isoformat()})"
        )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_chain(
    chain: Sequence[x509.Certificate], root: TrustedRoot, *, now: datetime
) -> tuple[x509.Certificate, ...]:
    """Verify ``chain`` (leaf first) up to ``root`` at ``now``; return it without the root.

    Raises :class:`TrustRootError`, :class:`CertificateChainError` or
    :class:`CertificateExpiredError`.
    """
    instant = utc(now)
    certs = list(chain)
    if not certs:
        raise CertificateChainError("empty certificate chain")
    root_cert = root.certificate
    if certs[-1].public_bytes(Encoding.DER) == root.der:
        certs.pop()
    elif len(certs) > 1 and certs[-1].subject == certs[-1].issuer:
        raise TrustRootError(
            f"chain ends at self-signed {_name(certs[-1])!r}, not at the pinned root "
            f"{_name(root_cert)!r} ({root.fingerprint[:16]}...)"
        )
    if not certs:
        raise CertificateChainError("the chain holds only the root certificate")
    for cert, issuer in itertools.pairwise(certs):
        if not _signed_by(cert, issuer):
            raise CertificateChainError(
                f"{_name(cert)!r} is not signed by the next certificate {_name(issuer)!r}"
            )
        if not _is_ca(issuer):
            raise CertificateChainError(f"issuer {_name(issuer)!r} is not a CA")
    if not _signed_by(certs[-1], root_cert):
        raise TrustRootError(
            f"{_name(certs[-1])!r} is not signed by the pinned root {_name(root_cert)!r}"
        )
    for cert in [*certs, root_cert]:
        _check_validity(cert, instant)
    return tuple(certs)


class ChainVerifier:
    """:func:`verify_chain` over encoded chains, remembering successful verifications.

    A hit is reused only while ``now`` lies inside the window in which every
    certificate of that chain (and the root) is valid; outside it the chain is
    verified again from scratch, so an expired chain still fails with its reason.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._hits: OrderedDict[
            tuple[bytes, str], tuple[datetime, datetime, tuple[x509.Certificate, ...]]
        ] = OrderedDict()

    def verify(
        self, encoded_chain: bytes, root: TrustedRoot, *, now: datetime
    ) -> tuple[x509.Certificate, ...]:
        """Decode (PEM or DER) and verify; return the chain without the root."""
        instant = utc(now)
        key = (encoded_chain, root.fingerprint)
        hit = self._hits.get(key)
        if hit is not None and hit[0] <= instant <= hit[1]:
            self._hits.move_to_end(key)
            return hit[2]
        certs = verify_chain(load_certificates(encoded_chain), root, now=instant)
        everything = [*certs, root.certificate]
        start = max(c.not_valid_before_utc for c in everything)
        end = min(c.not_valid_after_utc for c in everything)
        self._hits[key] = (start, end, certs)
        while len(self._hits) > self._max:
            self._hits.popitem(last=False)
        return certs
