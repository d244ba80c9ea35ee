"""A TEST-ONLY Intel DCAP PKI and its collateral. For tests and the local stack only.

Nothing here is ever trusted unless a caller selects it explicitly: its root is a
self-made "SGX root CA" whose fingerprint is not one of the embedded production
roots, so :attr:`TrustedRoot.production` is ``False`` for it and the default
:class:`~cocoon_operator.attestation.TdxPolicy` (``require_production_root=True``)
refuses every quote it signs. A test (or the local worker simulator) opts in by
building ``TdxVerifier(pki.trusted_root)`` and a policy with
``require_production_root=False``. Production code never imports this module.

What :func:`generate_test_pki` makes, from a seed (keys, serials) and a clock
(every date), mirroring the shape of Intel's provisioning PKI so that the real
DCAP engine (PyPI ``dcap-qvl``, pinned to this root) verifies it end to end:

- a self-signed root CA (ECDSA P-256, keyCertSign + cRLSign, path length 1);
- a "PCK Platform CA" under it (path length 0) and a PCK leaf certificate with
  the Intel SGX extension (OID ``1.2.840.113741.1.13.1``): PPID, the TCB
  (16 CPU SVN components, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type, platform
  instance id and configuration flags;
- a "TCB Signing" certificate under the root that signs the TDX TCB info
  (``id`` ``TDX``, version 3, TDX module identity ``TDX_01``) and the QE identity
  (``TD_QE``, version 2);
- the root CA CRL and the PCK CRL (v2, CRL number, authority key identifier);
- an attestation key held by the simulated quoting enclave.

The quotes signed through it are built by :mod:`.quotes`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from cocoon_operator.attestation._collateral import Collateral
from cocoon_operator.attestation._der import encode_oid
from cocoon_operator.attestation._roots import TrustedRoot
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.testing._seed import (
    _derive,
    _p256_key,
    _raw_signature,
    _seed_bytes,
    _serial,
)

__all__ = [
    "DEFAULT_SEED",
    "DcapTestPki",
    "PlatformTcb",
    "generate_test_pki",
]

DEFAULT_SEED = b"cocoon-operator test DCAP PKI"

_SGX_EXT = "1.2.840.113741.1.13.1"
_SGX_TYPE_SCALABLE = 1
_TD_QE_ISVPRODID = 2
_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
_QE_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"
_ORG = "COCOON Test PKI (NOT Intel, NOT trusted in production)"


# --------------------------------------------------------------------------- DER


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(value)) + value


def _der_int(value: int, tag: int = 0x02) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # keeps a leading 0 bit
    return _tlv(tag, body)


def _der_seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _der_oid(dotted: str) -> bytes:
    return _tlv(0x06, encode_oid(dotted))


def _der_octets(value: bytes) -> bytes:
    return _tlv(0x04, value)


def _der_bool(value: bool) -> bytes:
    return _tlv(0x01, b"\xff" if value else b"\x00")


def _entry(oid_suffix: str, value: bytes) -> bytes:
    return _der_seq(_der_oid(f"{_SGX_EXT}.{oid_suffix}"), value)


# --------------------------------------------------------------------------- signing


def _raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte ``x || y`` form DCAP quotes carry the attestation key in."""
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return point[1:]


def _sign_cert(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    try:
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    except UnsupportedAlgorithm:  # pragma: no cover
        return builder.sign(key, hashes.SHA256())


def _sign_crl(
    builder: x509.CertificateRevocationListBuilder, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateRevocationList:
    try:
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    except UnsupportedAlgorithm:  # pragma: no cover
        return builder.sign(key, hashes.SHA256())


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PlatformTcb:
    """What the simulated platform reports: PCK certificate values and QE / TDX module SVNs.

    The generated TCB info has one level that these values meet exactly, so the
    engine matches it. ``tee_tcb_svn[0]`` is the TDX module ISVSVN and
    ``tee_tcb_svn[1]`` its major version (module identity ``TDX_01`` for 1).
    """

    fmspc: bytes = bytes.fromhex("7E57C0C00000")
    pce_id: bytes = b"\x00\x00"
    cpu_svn: bytes = bytes([3, 3, 2, 2, 4, 1, 0, 5]) + bytes(8)
    pce_svn: int = 11
    tee_tcb_svn: bytes = bytes([5, 1, 2]) + bytes(13)
    qe_isvsvn: int = 4
    qe_mrsigner: bytes = hashlib.sha256(b"cocoon test TD quoting enclave signer").digest()
    qe_mrenclave: bytes = hashlib.sha256(b"cocoon test TD quoting enclave").digest()
    sgx_type: int = _SGX_TYPE_SCALABLE

    def __post_init__(self) -> None:
        sizes = {
            "fmspc": (self.fmspc, 6),
            "pce_id": (self.pce_id, 2),
            "cpu_svn": (self.cpu_svn, 16),
            "tee_tcb_svn": (self.tee_tcb_svn, 16),
            "qe_mrsigner": (self.qe_mrsigner, 32),
            "qe_mrenclave": (self.qe_mrenclave, 32),
        }
        for name, (value, size) in sizes.items():
            if len(value) != size:
                raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
        if not 0 <= self.pce_svn <= 0xFFFF or not 0 <= self.qe_isvsvn <= 0xFFFF:
            raise ValueError("PCESVN and QE ISVSVN are 16-bit values")

    @property
    def fmspc_hex(self) -> str:
        return self.fmspc.hex().upper()


@dataclass(frozen=True)
class DcapTestPki:
    """A generated test PKI: certificates, keys and collateral (see :func:`generate_test_pki`)."""

    seed: bytes
    issued_at: datetime
    platform: PlatformTcb
    root_certificate: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    pck_ca_certificate: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    pck_certificate: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey = field(repr=False)
    tcb_signing_certificate: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    attestation_key: ec.EllipticCurvePrivateKey = field(repr=False)
    collateral: Collateral = field(repr=False)

    @cached_property
    def root_der(self) -> bytes:
        return self.root_certificate.public_bytes(Encoding.DER)

    @property
    def root_pem(self) -> bytes:
        return self.root_certificate.public_bytes(Encoding.PEM)

    @cached_property
    def trusted_root(self) -> TrustedRoot:
        """The test root as a pin. ``production`` is False: policies must opt in to it."""
        return TrustedRoot.load(self.root_der, label="COCOON test SGX root CA (test only)")

    @cached_property
    def pck_chain_pem(self) -> bytes:
        """PCK leaf, PCK Platform CA and root, PEM: what a quote embeds (type 5)."""
        certs = (self.pck_certificate, self.pck_ca_certificate, self.root_certificate)
        return b"".join(c.public_bytes(Encoding.PEM) for c in certs)

    @cached_property
    def attestation_public_key(self) -> bytes:
        """The attestation key as the 64 raw bytes a quote carries."""
        return _raw_public_key(self.attestation_key)

    def collateral_json(self) -> str:
        """The collateral in dcap-qvl's JSON form (what :meth:`Collateral.from_json` reads)."""
        return self.collateral.to_json()


# --------------------------------------------------------------------------- PKI


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=sign,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _cert(
    *,
    seed: bytes,
    label: str,
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
    ca: bool,
    extra: Iterable[x509.ExtensionType] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(_serial(seed, label))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_key_usage(sign=not ca, ca=ca), critical=True)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return _sign_cert(builder, issuer_key)


def _sgx_extension(seed: bytes, platform: PlatformTcb) -> x509.UnrecognizedExtension:
    """The Intel SGX PCK extension: a SEQUENCE of (OID, value) pairs under 1.2.840.113741.1.13.1."""
    components = [_entry(f"2.{i + 1}", _der_int(svn)) for i, svn in enumerate(platform.cpu_svn)]
    tcb = _der_seq(
        *components,
        _entry("2.17", _der_int(platform.pce_svn)),
        _entry("2.18", _der_octets(platform.cpu_svn)),
    )
    configuration = _der_seq(
        _entry("7.1", _der_bool(False)),  # dynamic platform
        _entry("7.2", _der_bool(True)),  # cached keys
        _entry("7.3", _der_bool(True)),  # SMT enabled
    )
    value = _der_seq(
        _entry("1", _der_octets(_derive(seed, "ppid", 16))),
        _entry("2", tcb),
        _entry("3", _der_octets(platform.pce_id)),
        _entry("4", _der_octets(platform.fmspc)),
        _entry("5", _der_int(platform.sgx_type, tag=0x0A)),  # ENUMERATED
        _entry("6", _der_octets(_derive(seed, "platform-instance-id", 16))),
        _entry("7", configuration),
    )
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(_SGX_EXT), value)


def _crl(
    *,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    this_update: datetime,
    next_update: datetime,
    revoked: Sequence[int],
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return _sign_crl(builder, issuer_key).public_bytes(Encoding.DER)


def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def _tcb_info(
    platform: PlatformTcb,
    *,
    issue: datetime,
    next_update: datetime,
    tcb_date: datetime,
    status: str,
    advisory_ids: Sequence[str],
) -> str:
    level: dict[str, object] = {
        "tcb": {
            "sgxtcbcomponents": [{"svn": svn} for svn in platform.cpu_svn],
            "pcesvn": platform.pce_svn,
            "tdxtcbcomponents": [{"svn": svn} for svn in platform.tee_tcb_svn],
        },
        "tcbDate": _iso(tcb_date),
        "tcbStatus": status,
    }
    if advisory_ids:
        level["advisoryIDs"] = list(advisory_ids)
    zero_signer = "00" * 48
    module_version = platform.tee_tcb_svn[1]
    identities = []
    if module_version > 0:
        identities.append(
            {
                "id": f"TDX_{module_version:02X}",
                "mrsigner": zero_signer,
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [
                    {
                        "tcb": {"isvsvn": platform.tee_tcb_svn[0]},
                        "tcbDate": _iso(tcb_date),
                        "tcbStatus": "UpToDate",
                    }
                ],
            }
        )
    doc = {
        "id": "TDX",
        "version": 3,
        "issueDate": _iso(issue),
        "nextUpdate": _iso(next_update),
        "fmspc": platform.fmspc_hex,
        "pceId": platform.pce_id.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {
            "mrsigner": zero_signer,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tdxModuleIdentities": identities,
        "tcbLevels": [level],
    }
    return json.dumps(doc, separators=(",", ":"))


def _qe_identity(
    platform: PlatformTcb,
    *,
    issue: datetime,
    next_update: datetime,
    tcb_date: datetime,
    status: str,
) -> str:
    doc = {
        "id": "TD_QE",
        "version": 2,
        "issueDate": _iso(issue),
        "nextUpdate": _iso(next_update),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": _QE_ATTRIBUTES.hex().upper(),
        "attributesMask": _QE_ATTRIBUTES_MASK,
        "mrsigner": platform.qe_mrsigner.hex().upper(),
        "isvprodid": _TD_QE_ISVPRODID,
        "tcbLevels": [
            {
                "tcb": {"isvsvn": platform.qe_isvsvn},
                "tcbDate": _iso(tcb_date),
                "tcbStatus": status,
            }
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


def generate_test_pki(
    *,
    now: datetime,
    seed: bytes | str = DEFAULT_SEED,
    platform: PlatformTcb | None = None,
    tcb_status: str = "UpToDate",
    advisory_ids: Sequence[str] = (),
    qe_tcb_status: str = "UpToDate",
    certificate_validity: timedelta = timedelta(days=3650),
    collateral_validity: timedelta = timedelta(days=30),
    revoke_pck: bool = False,
) -> DcapTestPki:
    """Generate the test PKI and its collateral, valid around ``now``.

    Keys and serial numbers come from ``seed`` (the same seed and ``now`` give
    the same certificates and collateral); no clock is read. Certificates are
    valid from a day before ``now`` for ``certificate_validity``; TCB info, QE
    identity and both CRLs are issued an hour before ``now`` and expire after
    ``collateral_validity``. ``tcb_status`` / ``advisory_ids`` is what the
    platform's TCB level says (e.g. ``"OutOfDate"`` for a fault test);
    ``revoke_pck`` lists the PCK certificate in the PCK CRL.
    """
    instant = utc(now).replace(microsecond=0)
    raw_seed = _seed_bytes(seed)
    plat = platform if platform is not None else PlatformTcb()
    not_before = instant - timedelta(days=1)
    not_after = instant + certificate_validity
    issued = instant - timedelta(hours=1)
    expires = instant + collateral_validity
    tcb_date = (instant - timedelta(days=30)).replace(hour=0, minute=0, second=0)

    root_key = _p256_key(raw_seed, "root")
    ca_key = _p256_key(raw_seed, "pck-platform-ca")
    pck_key = _p256_key(raw_seed, "pck")
    tcb_key = _p256_key(raw_seed, "tcb-signing")
    attestation_key = _p256_key(raw_seed, "attestation")

    root_name = _name("COCOON Test SGX Root CA")
    ca_name = _name("COCOON Test SGX PCK Platform CA")
    root = _cert(
        seed=raw_seed,
        label="root",
        subject=root_name,
        issuer=root_name,
        key=root_key,
        issuer_key=root_key,
        not_before=not_before,
        not_after=not_after,
        path_length=1,
        ca=True,
    )
    pck_ca = _cert(
        seed=raw_seed,
        label="pck-platform-ca",
        subject=ca_name,
        issuer=root_name,
        key=ca_key,
        issuer_key=root_key,
        not_before=not_before,
        not_after=not_after,
        path_length=0,
        ca=True,
    )
    pck = _cert(
        seed=raw_seed,
        label="pck",
        subject=_name("COCOON Test SGX PCK Certificate"),
        issuer=ca_name,
        key=pck_key,
        issuer_key=ca_key,
        not_before=not_before,
        not_after=not_after,
        path_length=None,
        ca=False,
        extra=(_sgx_extension(raw_seed, plat),),
    )
    tcb_signing = _cert(
        seed=raw_seed,
        label="tcb-signing",
        subject=_name("COCOON Test SGX TCB Signing"),
        issuer=root_name,
        key=tcb_key,
        issuer_key=root_key,
        not_before=not_before,
        not_after=not_after,
        path_length=None,
        ca=False,
    )

    root_crl = _crl(
        issuer=root_name, issuer_key=root_key, this_update=issued, next_update=expires, revoked=()
    )
    pck_crl = _crl(
        issuer=ca_name,
        issuer_key=ca_key,
        this_update=issued,
        next_update=expires,
        revoked=(pck.serial_number,) if revoke_pck else (),
    )
    tcb_info = _tcb_info(
        plat,
        issue=issued,
        next_update=expires,
        tcb_date=tcb_date,
        status=tcb_status,
        advisory_ids=advisory_ids,
    )
    qe_identity = _qe_identity(
        plat, issue=issued, next_update=expires, tcb_date=tcb_date, status=qe_tcb_status
    )

    def pem(*certs: x509.Certificate) -> str:
        return b"".join(c.public_bytes(Encoding.PEM) for c in certs).decode("ascii")

    collateral = Collateral(
        pck_crl_issuer_chain=pem(pck_ca, root),
        root_ca_crl=root_crl,
        pck_crl=pck_crl,
        tcb_info_issuer_chain=pem(tcb_signing, root),
        tcb_info=tcb_info,
        tcb_info_signature=_raw_signature(tcb_key, tcb_info.encode("utf-8")),
        qe_identity_issuer_chain=pem(tcb_signing, root),
        qe_identity=qe_identity,
        qe_identity_signature=_raw_signature(tcb_key, qe_identity.encode("utf-8")),
    )
    return DcapTestPki(
        seed=raw_seed,
        issued_at=instant,
        platform=plat,
        root_certificate=root,
        root_key=root_key,
        pck_ca_certificate=pck_ca,
        pck_ca_key=ca_key,
        pck_certificate=pck,
        pck_key=pck_key,
        tcb_signing_certificate=tcb_signing,
        tcb_signing_key=tcb_key,
        attestation_key=attestation_key,
        collateral=collateral,
    )
