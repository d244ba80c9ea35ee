"""Our own parser of Intel TDX DCAP quotes, versions 4 and 5 (TD 1.0 and TD 1.5 bodies).

Layout (little-endian)::

    header      48 bytes   version u16, attestation key type u16, TEE type u32,
                           QE SVN u16, PCE SVN u16, QE vendor id 16, user data 20
    v5 only     6 bytes    body type u16 (2 = TD 1.0, 3 = TD 1.5), body size u32
    TD report   584 bytes (TD 1.0) or 648 (TD 1.5):
                TEE_TCB_SVN 16, MRSEAM 48, MRSIGNERSEAM 48, SEAMATTRIBUTES 8,
                TDATTRIBUTES 8, XFAM 8, MRTD 48, MRCONFIGID 48, MROWNER 48,
                MROWNERCONFIG 48, RTMR0..3 48 each, REPORTDATA 64
                [TD 1.5: TEE_TCB_SVN2 16, MRSERVICETD 48]
    u32         signature data length L
    L bytes     ECDSA-P256 signature (64) over everything before the length,
                attestation public key (64), certification data (type u16, size
                u32, data): type 6 = QE report certification data = QE report (384),
                QE report signature (64), auth data (u16 size + data), inner
                certification data (type 5 = PEM PCK chain)

Bytes after the declared signature data are tolerated and reported
(:attr:`TdxQuote.trailing_bytes`); :attr:`TdxQuote.trimmed` is what verifiers get.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509

from cocoon_operator.attestation._der import TAG_OCTET_STRING, find_oid_value
from cocoon_operator.attestation._measurements import image_hash_of
from cocoon_operator.attestation.errors import CertificateFormatError, QuoteFormatError

HEADER_SIZE = 48
TD10_BODY_SIZE = 584
TD15_BODY_SIZE = 648
V5_DESCRIPTOR_SIZE = 6
TEE_TYPE_TDX = 0x81
ATTESTATION_KEY_ECDSA_P256 = 2
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6
QE_REPORT_SIZE = 384
MEASUREMENT_SIZE = 48

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
SGX_FMSPC_OID = "1.2.840.113741.1.13.1.4"


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class TdReport:
    """The TD report body. Every measurement is 48 raw bytes; REPORTDATA is 64."""

    body_type: int
    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mrservicetd: bytes | None = None


@dataclass(frozen=True)
class QuoteSignatureData:
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data_type: int
    certification_data: bytes


@dataclass(frozen=True)
class PckIdentity:
    """What the PCK leaf certificate says about the platform: the collateral key."""

    fmspc: str  # 12 upper-case hex digits
    ca: str  # "platform" or "processor"


@dataclass(frozen=True)
class TdxQuote:
    """A parsed TDX quote. Nothing here is verified; see :class:`TdxVerifier`."""

    raw: bytes
    header: QuoteHeader
    body: TdReport
    signed_length: int
    signature_data_length: int
    signature_data: QuoteSignatureData

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def end_of_signature_data(self) -> int:
        return self.signed_length + 4 + self.signature_data_length

    @property
    def trailing_bytes(self) -> int:
        """Bytes after the declared signature data (the cocoon sample has 70 zeros)."""
        return len(self.raw) - self.end_of_signature_data

    @property
    def trimmed(self) -> bytes:
        """The quote cut at the end of its declared signature data."""
        if self.trailing_bytes == 0:
            return self.raw
        return self.raw[: self.end_of_signature_data]

    @property
    def signed_region(self) -> bytes:
        """Header (+ v5 descriptor) + body: what the attestation key signs."""
        return self.raw[: self.signed_length]

    @cached_property
    def image_hash(self) -> bytes:
        """COCOON image hash (see :func:`cocoon_image_hash`)."""
        return image_hash_of(self.body)

    @cached_property
    def pck_chain_pem(self) -> bytes:
        """The PEM PCK certificate chain embedded in the quote (leaf first).

        Cached: the chain is looked up by these bytes on every verification (the
        chain cache, the PCK identity cache), and a parsed quote is kept and
        verified again; one copy keeps its hash computed once.
        """
        sig = self.signature_data
        if sig.certification_data_type != CERT_DATA_PCK_CHAIN:
            raise QuoteFormatError(
                f"quote carries certification data type {sig.certification_data_type}, "
                "not an embedded PCK chain (type 5)"
            )
        return sig.certification_data.rstrip(b"\x00")


class _Reader:
    """Bounds-checked little-endian reads over a bytes object."""

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = offset
        self.end = len(data) if end is None else end

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise QuoteFormatError(
                f"quote truncated reading {what}: need {size} bytes at offset {self.pos}, "
                f"{max(self.end - self.pos, 0)} left"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def skip(self, size: int, what: str) -> None:
        if size < 0 or self.pos + size > self.end:
            raise QuoteFormatError(
                f"quote truncated reading {what}: need {size} bytes at offset {self.pos}, "
                f"{max(self.end - self.pos, 0)} left"
            )
        self.pos += size

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value


_HEADER = struct.Struct("<HHIHH16s20s")
# TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM, MRTD,
# MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3, REPORTDATA
_TD10 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_TD15_TAIL = struct.Struct("<16s48s")  # TEE_TCB_SVN2, MRSERVICETD


def _parse_header(r: _Reader) -> QuoteHeader:
    version, key_type, tee_type, qe_svn, pce_svn, vendor, user = _HEADER.unpack(
        r.take(_HEADER.size, "header")
    )
    if version not in (4, 5):
        raise QuoteFormatError(f"unsupported quote version {version} (TDX quotes are v4 or v5)")
    if tee_type != TEE_TYPE_TDX:
        raise QuoteFormatError(f"TEE type 0x{tee_type:x} is not TDX (0x81)")
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise QuoteFormatError(f"unsupported attestation key type {key_type} (want 2, P-256)")
    return QuoteHeader(version, key_type, tee_type, qe_svn, pce_svn, vendor, user)


def _parse_body(r: _Reader, body_type: int) -> TdReport:
    (
        tee_tcb_svn,
        mrseam,
        mrsignerseam,
        seam_attributes,
        td_attributes,
        xfam,
        mrtd,
        mrconfigid,
        mrowner,
        mrownerconfig,
        rtmr0,
        rtmr1,
        rtmr2,
        rtmr3,
        report_data,
    ) = _TD10.unpack(r.take(_TD10.size, "TD report"))
    svn2 = service = None
    if body_type == BODY_TYPE_TD15:
        svn2, service = _TD15_TAIL.unpack(r.take(_TD15_TAIL.size, "TD 1.5 report extension"))
    return TdReport(
        body_type=body_type,
        tee_tcb_svn=tee_tcb_svn,
        mrseam=mrseam,
        mrsignerseam=mrsignerseam,
        seam_attributes=seam_attributes,
        td_attributes=td_attributes,
        xfam=xfam,
        mrtd=mrtd,
        mrconfigid=mrconfigid,
        mrowner=mrowner,
        mrownerconfig=mrownerconfig,
        rtmr=(rtmr0, rtmr1, rtmr2, rtmr3),
        report_data=report_data,
        tee_tcb_svn2=svn2,
        mrservicetd=service,
    )


def _parse_signature_data(r: _Reader) -> QuoteSignatureData:
    signature = r.take(64, "quote signature")
    attestation_key = r.take(64, "attestation key")
    outer_type = r.u16("certification data type")
    outer_size = r.u32("certification data size")
    if outer_type != CERT_DATA_QE_REPORT:
        raise QuoteFormatError(
            f"unsupported outer certification data type {outer_type} (want 6, QE report)"
        )
    inner = _Reader(r.data, r.pos, r.pos + outer_size)
    r.skip(outer_size, "QE report certification data")
    qe_report = inner.take(QE_REPORT_SIZE, "QE report")
    qe_sig = inner.take(64, "QE report signature")
    auth = inner.take(inner.u16("QE auth data size"), "QE auth data")
    cert_type = inner.u16("PCK certification data type")
    cert_data = inner.take(inner.u32("PCK certification data size"), "PCK certification data")
    return QuoteSignatureData(
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        certification_data_type=cert_type,
        certification_data=cert_data,
    )


def parse_tdx_quote(raw: bytes) -> TdxQuote:
    """Parse a TDX quote (v4 or v5). Raises :class:`QuoteFormatError`."""
    data = bytes(raw)
    r = _Reader(data)
    header = _parse_header(r)
    if header.version == 4:
        body_type, body_size = BODY_TYPE_TD10, TD10_BODY_SIZE
    else:
        body_type = r.u16("body type")
        body_size = r.u32("body size")
        expected = {BODY_TYPE_TD10: TD10_BODY_SIZE, BODY_TYPE_TD15: TD15_BODY_SIZE}.get(body_type)
        if expected is None:
            raise QuoteFormatError(f"unsupported v5 body type {body_type} (want 2 or 3)")
        if body_size != expected:
            raise QuoteFormatError(f"v5 body type {body_type} has size {body_size}, not {expected}")
    body = _parse_body(r, body_type)
    signed_length = r.pos
    sig_len = r.u32("signature data length")
    sig_reader = _Reader(data, r.pos, r.pos + sig_len)
    r.skip(sig_len, "signature data")
    signature_data = _parse_signature_data(sig_reader)
    return TdxQuote(
        raw=data,
        header=header,
        body=body,
        signed_length=signed_length,
        signature_data_length=sig_len,
        signature_data=signature_data,
    )


def pck_identity(leaf: x509.Certificate) -> PckIdentity:
    """FMSPC and CA type from a PCK leaf certificate (the collateral lookup key)."""
    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound as exc:
        raise CertificateFormatError("PCK certificate has no Intel SGX extension") from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateFormatError("unexpected decoding of the Intel SGX extension")
    found = find_oid_value(value.value, SGX_FMSPC_OID)
    if found is None or found[0] != TAG_OCTET_STRING or len(found[1]) != 6:
        raise CertificateFormatError("PCK certificate has no 6-byte FMSPC")
    issuer = leaf.issuer.rfc4514_string().lower()
    if "processor" in issuer:
        ca = "processor"
    elif "platform" in issuer:
        ca = "platform"
    else:
        raise CertificateFormatError(f"cannot tell the PCK CA type from issuer {issuer!r}")
    return PckIdentity(fmspc=found[1].hex().upper(), ca=ca)
