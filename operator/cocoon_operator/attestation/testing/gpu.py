"""A TEST-ONLY NVIDIA-H100-shaped device PKI and SPDM evidence builder (tests, local stack).

Nothing here is ever trusted unless a caller selects it explicitly: its root is a
self-made "Device Identity CA" whose fingerprint is not one of the embedded
production roots, so :attr:`TrustedRoot.production` is ``False`` for it and a
:class:`~cocoon_operator.attestation.GpuVerifier` pinned to
:func:`~cocoon_operator.attestation.nvidia_device_root` refuses every chain it
issues. A test (or the local worker simulator) opts in by building
``GpuVerifier(pki.trusted_root, revocation=...)``. Production code never imports
this module.

What :func:`generate_test_gpu_pki` makes, from a seed (keys, serials) and a clock
(every date), mirroring the shape of NVIDIA's device identity PKI
(``hopperCertChain``: leaf first, root copy last):

- a self-signed root CA (ECDSA P-384, keyCertSign + cRLSign, path length 1);
- an intermediate CA under it (path length 0), standing in for NVIDIA's
  provisioning intermediates;
- a device leaf certificate (digitalSignature) whose key signs measurements,
  standing in for the GPU's attestation ("FMC LF") certificate.

:func:`build_gpu_evidence` then makes what an H100 in confidential-computing mode
returns to ``nvidia-smi conf-compute`` / the attestation SDK: an SPDM 1.1
GET_MEASUREMENTS request carrying the caller's nonce, followed by the MEASUREMENTS
response with every block (48-byte digests), a responder nonce, NVIDIA's opaque
data (driver version, VBIOS version, FWID) and a P-384 ``r || s`` signature over
SHA-384(request || response without the signature). Every certificate and the
evidence are signed with ECDSA / SHA-384, deterministically (RFC 6979) where the
backend allows it, so the same seed, clock and nonce give the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cocoon_operator.attestation._roots import TrustedRoot
from cocoon_operator.attestation._spdm import (
    GET_MEASUREMENTS,
    MEASUREMENTS,
    NONCE_SIZE,
    OPAQUE_DRIVER_VERSION,
    OPAQUE_FWID,
    OPAQUE_VBIOS_VERSION,
    SPDM_VERSION_11,
)
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.testing._seed import _derive, _seed_bytes, _serial
from cocoon_operator.attestation.testing.pki import _key_usage

__all__ = [
    "DEFAULT_GPU_SEED",
    "GpuMeasurements",
    "GpuTestPki",
    "build_gpu_evidence",
    "generate_test_gpu_pki",
]

DEFAULT_GPU_SEED = b"cocoon-operator test NVIDIA device PKI"

_CURVE_ORDER_P384 = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffff"
    "c7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_DIGEST_SIZE = 48  # SHA-384: what H100 measurement blocks hold
_COORDINATE_SIZE = 48  # P-384 r and s
_FWID_SIZE = 48
_SIGNATURE_WANTED = 0x01
_ALL_BLOCKS = 0xFF
_DMTF_SPEC = 0x01  # measurement specification: DMTF
_DMTF_VALUE_TYPE = 0x01  # what the real H100 fixture reports for every block
_MAX_BLOCK_INDEX = 0xEF  # SPDM reserves 0xF0..0xFF
_MAX_DRIVER_VERSION = 255
_VALIDITY = timedelta(days=3650)
_ORG = "COCOON Test PKI (NOT NVIDIA, NOT trusted in production)"
_DEFAULT_LABEL = "cocoon-operator test H100"
_DEFAULT_BLOCKS = 8


# --------------------------------------------------------------------------- keys, signing


def _p384_key(seed: bytes, label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(_derive(seed, f"gpu-key:{label}", 48), "big")
    return ec.derive_private_key(scalar % (_CURVE_ORDER_P384 - 1) + 1, ec.SECP384R1())


def _ecdsa_sha384(deterministic: bool) -> ec.ECDSA:
    return ec.ECDSA(hashes.SHA384(), deterministic_signing=deterministic)


def _spdm_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-384 over SHA-384(``data``) as SPDM carries it: raw ``r || s``, 48 bytes each."""
    try:
        der = key.sign(data, _ecdsa_sha384(True))
    except UnsupportedAlgorithm:  # pragma: no cover - backends without RFC 6979
        der = key.sign(data, _ecdsa_sha384(False))
    return b"".join(n.to_bytes(_COORDINATE_SIZE, "big") for n in decode_dss_signature(der))


def _device_secret(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Seed-derived material for the device's other values (stable across ``now``)."""
    return key.private_numbers().private_value.to_bytes(_COORDINATE_SIZE, "big")


# --------------------------------------------------------------------------- PKI


def _gpu_name(common_name: str) -> x509.Name:
    attributes = (
        (NameOID.COUNTRY_NAME, "ZZ"),
        (NameOID.ORGANIZATION_NAME, _ORG),
        (NameOID.COMMON_NAME, common_name),
    )
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


@dataclass(frozen=True)
class _Issued:
    """A certificate with its key: what the next certificate down is signed by."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(
    seed: bytes,
    label: str,
    common_name: str,
    *,
    issuer: _Issued | None,
    path_length: int | None,
    not_before: datetime,
) -> _Issued:
    """A P-384 certificate named ``common_name``; self-signed when ``issuer`` is None."""
    key = _p384_key(seed, label)
    subject = _gpu_name(common_name)
    ca = path_length is not None
    issuer_name = subject if issuer is None else issuer.certificate.subject
    signer = key if issuer is None else issuer.key
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (
        (x509.BasicConstraints(ca=ca, path_length=path_length), True),
        (_key_usage(sign=not ca, ca=ca), True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False),
    )
    builder = x509.CertificateBuilder(
        issuer_name=issuer_name,
        subject_name=subject,
        public_key=key.public_key(),
        serial_number=_serial(seed, f"gpu:{label}"),
        not_valid_before=not_before,
        not_valid_after=not_before + _VALIDITY,
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    try:
        certificate = builder.sign(signer, hashes.SHA384(), ecdsa_deterministic=True)
    except UnsupportedAlgorithm:  # pragma: no cover - backends without RFC 6979
        certificate = builder.sign(signer, hashes.SHA384())
    return _Issued(certificate, key)


@dataclass(frozen=True)
class GpuTestPki:
    """A generated test device PKI (see :func:`generate_test_gpu_pki`)."""

    root: x509.Certificate
    intermediate: x509.Certificate
    device: x509.Certificate
    device_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    @cached_property
    def trusted_root(self) -> TrustedRoot:
        """The test root as a pin. ``production`` is False: callers must select it."""
        return TrustedRoot.load(self.root_pem, label="test")

    @property
    def chain_pem(self) -> bytes:
        """Device, intermediate and root, PEM: leaf first, like NVIDIA's ``hopperCertChain``."""
        certs = (self.device, self.intermediate, self.root)
        return b"".join(c.public_bytes(Encoding.PEM) for c in certs)

    @property
    def fwid(self) -> bytes:
        """The 48-byte FWID the device reports (opaque field 20); from the seed only."""
        return _derive(_device_secret(self.device_key), "fwid", _FWID_SIZE)


def generate_test_gpu_pki(seed: bytes | str = DEFAULT_GPU_SEED, *, now: datetime) -> GpuTestPki:
    """Generate the test device PKI, valid from a day before ``now`` for ten years.

    Keys and serial numbers come from ``seed``: the same seed and ``now`` give the
    same certificates (``now`` is taken to the second; no clock is read). Ten years
    is 3650 days.
    """
    raw_seed = _seed_bytes(seed)
    not_before = utc(now).replace(microsecond=0) - timedelta(days=1)
    root = _issue(
        raw_seed,
        "root",
        "COCOON TEST NVIDIA Device Identity Root CA (test only)",
        issuer=None,
        path_length=1,
        not_before=not_before,
    )
    intermediate = _issue(
        raw_seed,
        "intermediate",
        "COCOON TEST GH100 Provisioner ICA",
        issuer=root,
        path_length=0,
        not_before=not_before,
    )
    device = _issue(
        raw_seed,
        "device",
        "COCOON TEST GH100 Device Attestation Key",
        issuer=intermediate,
        path_length=None,
        not_before=not_before,
    )
    return GpuTestPki(
        root=root.certificate,
        intermediate=intermediate.certificate,
        device=device.certificate,
        device_key=device.key,
    )


# --------------------------------------------------------------------------- evidence


def _vbios_field(version: str) -> bytes:
    """The 8-byte LE opaque value :attr:`OpaqueData.vbios_version` prints as ``version``.

    ``AA.BB.CC.DD.EE``: ``AABBCCDD`` is the low 32 bits, ``EE`` byte 4.
    """
    parts = version.split(".")
    if len(parts) != 5 or any(len(p) != 2 for p in parts):
        raise ValueError(f"VBIOS version {version!r} is not of the form 96.00.5E.00.01")
    try:
        low, high = int("".join(parts[:4]), 16), int(parts[4], 16)
    except ValueError:
        raise ValueError(f"VBIOS version {version!r} is not hexadecimal") from None
    return (low | high << 32).to_bytes(8, "little")


def _label_digests(label: str, count: int) -> tuple[bytes, ...]:
    seed = label.encode("utf-8")
    return tuple(_derive(seed, f"gpu-measurement{i}", _DIGEST_SIZE) for i in range(1, count + 1))


@dataclass(frozen=True)
class GpuMeasurements:
    """What the simulated GPU reports: versions and one 48-byte digest per block (index 1..)."""

    driver_version: str = "550.54.15"
    vbios_version: str = "96.00.5E.00.01"
    values: tuple[bytes, ...] = _label_digests(_DEFAULT_LABEL, _DEFAULT_BLOCKS)

    def __post_init__(self) -> None:
        count = len(self.values)
        if not 1 <= count <= _MAX_BLOCK_INDEX:
            raise ValueError(f"between 1 and {_MAX_BLOCK_INDEX} measurements, got {count}")
        for index, value in enumerate(self.values, start=1):
            if len(value) != _DIGEST_SIZE:
                raise ValueError(f"measurement {index} is {len(value)} bytes, not {_DIGEST_SIZE}")
        driver = self.driver_version
        if not driver.isascii() or "\x00" in driver or len(driver) > _MAX_DRIVER_VERSION:
            raise ValueError(
                f"the driver version is ASCII without NUL, {_MAX_DRIVER_VERSION} characters at most"
            )
        _vbios_field(self.vbios_version)

    @classmethod
    def from_label(
        cls,
        label: str,
        *,
        driver_version: str = "550.54.15",
        vbios_version: str = "96.00.5E.00.01",
        count: int = _DEFAULT_BLOCKS,
    ) -> GpuMeasurements:
        """``count`` deterministic, distinct digests named by ``label`` (e.g. a GPU image)."""
        return cls(driver_version, vbios_version, _label_digests(label, count))


def _opaque(measurements: GpuMeasurements, fwid: bytes) -> bytes:
    fields = (
        (OPAQUE_DRIVER_VERSION, measurements.driver_version.encode("ascii") + b"\x00"),
        (OPAQUE_VBIOS_VERSION, _vbios_field(measurements.vbios_version)),
        (OPAQUE_FWID, fwid),
    )
    return b"".join(struct.pack("<HH", kind, len(value)) + value for kind, value in fields)


def build_gpu_evidence(
    pki: GpuTestPki, nonce: bytes, measurements: GpuMeasurements = GpuMeasurements()
) -> bytes:
    """GET_MEASUREMENTS request for ``nonce`` (32 bytes) || the device-signed response.

    The request asks for every block, signed, from slot 0. The responder nonce is
    derived from the device key and ``nonce``, so the result is deterministic.
    """
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"the SPDM nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
    request = (
        bytes((SPDM_VERSION_11, GET_MEASUREMENTS, _SIGNATURE_WANTED, _ALL_BLOCKS))
        + bytes(nonce)
        + b"\x00"  # slot 0
    )
    record = b"".join(
        struct.pack("<BBHBH", index, _DMTF_SPEC, 3 + len(value), _DMTF_VALUE_TYPE, len(value))
        + value
        for index, value in enumerate(measurements.values, start=1)
    )
    secret = _device_secret(pki.device_key)
    opaque = _opaque(measurements, pki.fwid)
    response = b"".join(
        (
            bytes((SPDM_VERSION_11, MEASUREMENTS, 0, 0, len(measurements.values))),
            len(record).to_bytes(3, "little"),
            record,
            _derive(secret + bytes(nonce), "responder-nonce", NONCE_SIZE),
            struct.pack("<H", len(opaque)),
            opaque,
        )
    )
    return request + response + _spdm_signature(pki.device_key, request + response)
