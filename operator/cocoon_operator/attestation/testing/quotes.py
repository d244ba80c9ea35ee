"""A TEST-ONLY TDX quote builder, signed through the test PKI of :mod:`.pki`.

:func:`build_td_quote` makes a TDX quote (v4, or v5 with a TD 1.0 / 1.5
body): the QE report carries SHA-256(attestation key || QE auth data) and is
signed by the PCK key; the header and TD report are signed by the attestation
key. All signatures are ECDSA P-256 / SHA-256, raw ``r || s`` where DCAP wants
raw, deterministic (RFC 6979) where the backend allows it.
:class:`TdMeasurements` are the eight measurements a quote carries, made up from
a label. Production code never imports this module.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cocoon_operator.attestation._measurements import MEASUREMENT_SIZE, cocoon_image_hash
from cocoon_operator.attestation.testing._seed import _derive, _raw_signature
from cocoon_operator.attestation.testing.pki import (
    _QE_ATTRIBUTES,
    _TD_QE_ISVPRODID,
    DcapTestPki,
)

__all__ = [
    "DEFAULT_TD_ATTRIBUTES",
    "DEFAULT_XFAM",
    "INTEL_QE_VENDOR_ID",
    "TdMeasurements",
    "build_td_quote",
]

#: The QE vendor id DCAP verifiers require (Intel's quoting enclave).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
#: TDATTRIBUTES with only SEPT_VE_DISABLE (bit 28) set: not debug, no reserved bits.
DEFAULT_TD_ATTRIBUTES = (1 << 28).to_bytes(8, "little")
#: A typical XFAM (x87, SSE, AVX, AVX-512, PKRU, ...); not checked by DCAP.
DEFAULT_XFAM = bytes.fromhex("e702060000000000")

_TEE_TYPE_TDX = 0x81
_ATTESTATION_KEY_P256 = 2
_CERT_DATA_PCK_CHAIN = 5
_CERT_DATA_QE_REPORT = 6


@dataclass(frozen=True)
class TdMeasurements:
    """The eight 48-byte TD measurements COCOON's image hash covers."""

    mrtd: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    mrconfigid: bytes = bytes(MEASUREMENT_SIZE)
    mrowner: bytes = bytes(MEASUREMENT_SIZE)
    mrownerconfig: bytes = bytes(MEASUREMENT_SIZE)

    def __post_init__(self) -> None:
        parts = (self.mrtd, self.mrconfigid, self.mrowner, self.mrownerconfig, *self.rtmr)
        if len(self.rtmr) != 4 or any(len(p) != MEASUREMENT_SIZE for p in parts):
            raise ValueError("TD measurements are eight 48-byte values (MRTD..RTMR3)")

    @classmethod
    def from_label(cls, label: str) -> TdMeasurements:
        """Deterministic, distinct measurements named by ``label`` (e.g. a release name)."""
        seed = label.encode("utf-8")
        rtmr = tuple(_derive(seed, f"rtmr{i}", MEASUREMENT_SIZE) for i in range(4))
        return cls(
            mrtd=_derive(seed, "mrtd", MEASUREMENT_SIZE),
            rtmr=(rtmr[0], rtmr[1], rtmr[2], rtmr[3]),
        )

    @property
    def image_hash(self) -> bytes:
        """COCOON's image hash of these measurements (what the root contract allow-lists)."""
        return cocoon_image_hash(
            self.mrtd, self.mrconfigid, self.mrowner, self.mrownerconfig, self.rtmr
        )


def _qe_report(pki: DcapTestPki, auth_data: bytes) -> bytes:
    """The 384-byte SGX report of the simulated TD quoting enclave."""
    plat = pki.platform
    binding = hashlib.sha256(pki.attestation_public_key + auth_data).digest()
    report = b"".join(
        (
            plat.cpu_svn,  # CPUSVN
            bytes(4),  # MISCSELECT
            bytes(28),  # reserved
            _QE_ATTRIBUTES,  # ATTRIBUTES (not debug)
            plat.qe_mrenclave,  # MRENCLAVE
            bytes(32),  # reserved
            plat.qe_mrsigner,  # MRSIGNER
            bytes(96),  # reserved
            struct.pack("<HH", _TD_QE_ISVPRODID, plat.qe_isvsvn),  # ISVPRODID, ISVSVN
            bytes(60),  # reserved
            binding + bytes(32),  # REPORTDATA: SHA-256(attestation key || auth data) || 0
        )
    )
    if len(report) != 384:  # pragma: no cover - layout guard
        raise AssertionError(f"QE report is {len(report)} bytes")
    return report


def _measurement(name: str, value: bytes) -> bytes:
    if len(value) != MEASUREMENT_SIZE:
        raise ValueError(f"{name} must be {MEASUREMENT_SIZE} bytes, got {len(value)}")
    return value


def build_td_quote(
    pki: DcapTestPki,
    *,
    mrtd: bytes,
    rtmr0: bytes,
    rtmr1: bytes,
    rtmr2: bytes,
    rtmr3: bytes,
    report_data: bytes,
    mrconfigid: bytes = bytes(MEASUREMENT_SIZE),
    mrowner: bytes = bytes(MEASUREMENT_SIZE),
    mrownerconfig: bytes = bytes(MEASUREMENT_SIZE),
    version: int = 4,
    td15: bool = False,
    td_attributes: bytes = DEFAULT_TD_ATTRIBUTES,
    xfam: bytes = DEFAULT_XFAM,
    mrseam: bytes | None = None,
    tee_tcb_svn: bytes | None = None,
    qe_auth_data: bytes = bytes(range(32)),
) -> bytes:
    """A TDX quote signed through ``pki``: PCK -> QE report -> attestation key -> quote.

    ``version`` 4 has a TD 1.0 body; version 5 carries a body descriptor and a
    TD 1.0 body, or a TD 1.5 body with ``td15=True`` (MRSERVICETD zero).
    ``report_data`` is up to 64 bytes (zero-padded); measurements are 48 bytes.
    ``td_attributes`` / ``tee_tcb_svn`` default to values the collateral accepts.
    """
    if version not in (4, 5):
        raise ValueError("TDX quotes are version 4 or 5")
    if td15 and version != 5:
        raise ValueError("a TD 1.5 body needs a version 5 quote")
    if len(report_data) > 64:
        raise ValueError("REPORTDATA is at most 64 bytes")
    if len(td_attributes) != 8 or len(xfam) != 8:
        raise ValueError("TDATTRIBUTES and XFAM are 8 bytes")
    if len(qe_auth_data) != 32:
        raise ValueError("the QE authentication data is 32 bytes")
    svn = pki.platform.tee_tcb_svn if tee_tcb_svn is None else tee_tcb_svn
    if len(svn) != 16:
        raise ValueError("TEE_TCB_SVN is 16 bytes")
    seam = mrseam if mrseam is not None else _derive(pki.seed, "mrseam", MEASUREMENT_SIZE)

    header = struct.pack(
        "<HHIHH16s20s",
        version,
        _ATTESTATION_KEY_P256,
        _TEE_TYPE_TDX,
        pki.platform.qe_isvsvn,
        pki.platform.pce_svn,
        INTEL_QE_VENDOR_ID,
        _derive(pki.seed, "qe-id", 16) + bytes(4),
    )
    body = b"".join(
        (
            svn,
            _measurement("MRSEAM", seam),
            bytes(MEASUREMENT_SIZE),  # MRSIGNERSEAM: zero for Intel's TDX module
            bytes(8),  # SEAMATTRIBUTES
            td_attributes,
            xfam,
            _measurement("MRTD", mrtd),
            _measurement("MRCONFIGID", mrconfigid),
            _measurement("MROWNER", mrowner),
            _measurement("MROWNERCONFIG", mrownerconfig),
            _measurement("RTMR0", rtmr0),
            _measurement("RTMR1", rtmr1),
            _measurement("RTMR2", rtmr2),
            _measurement("RTMR3", rtmr3),
            report_data.ljust(64, b"\x00"),
        )
    )
    if td15:
        body += svn + bytes(MEASUREMENT_SIZE)  # TEE_TCB_SVN2 (as evaluated), MRSERVICETD
    if version == 5:
        header += struct.pack("<HI", 3 if td15 else 2, len(body))
    signed = header + body

    qe_report = _qe_report(pki, qe_auth_data)
    chain = pki.pck_chain_pem
    qe_certification = b"".join(
        (
            qe_report,
            _raw_signature(pki.pck_key, qe_report),
            struct.pack("<H", len(qe_auth_data)),
            qe_auth_data,
            struct.pack("<HI", _CERT_DATA_PCK_CHAIN, len(chain)),
            chain,
        )
    )
    signature_data = b"".join(
        (
            _raw_signature(pki.attestation_key, signed),
            pki.attestation_public_key,
            struct.pack("<HI", _CERT_DATA_QE_REPORT, len(qe_certification)),
            qe_certification,
        )
    )
    return signed + struct.pack("<I", len(signature_data)) + signature_data
