"""Seeded key material and DCAP's raw signature form, shared by the test PKIs and quotes.

Every key, serial number and filler value of the test PKIs (:mod:`.pki`,
:mod:`.gpu`) and of the quotes built on them (:mod:`.quotes`) is derived from a
seed and a label, so the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_CURVE_ORDER_P256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derive(seed: bytes, label: str, size: int = 32) -> bytes:
    """``size`` bytes determined by ``seed`` and ``label`` (SHA-512 based)."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(seed + b"\x00" + label.encode() + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:size]


def _seed_bytes(seed: bytes | str) -> bytes:
    return seed.encode("utf-8") if isinstance(seed, str) else bytes(seed)


def _p256_key(seed: bytes, label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(_derive(seed, f"key:{label}", 48), "big")
    return ec.derive_private_key(scalar % (_CURVE_ORDER_P256 - 1) + 1, ec.SECP256R1())


def _serial(seed: bytes, label: str) -> int:
    # Positive, 19 bytes at most: within RFC 5280's 20-octet limit once DER-encoded.
    return int.from_bytes(_derive(seed, f"serial:{label}", 19), "big") | 1


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 as raw ``r || s`` (32 bytes each), as DCAP structures hold it."""
    try:
        der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except UnsupportedAlgorithm:  # pragma: no cover - backends without RFC 6979
        der = key.sign(data, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
