"""The simulated worker's RA-TLS identity and the TLS endpoint that presents it.

A COCOON worker's RA-TLS certificate is self-signed Ed25519 with the raw TDX
quote in extension ``1.3.6.1.4.1.12345.1`` and the claims (the raw 32-byte key)
in ``.2``; REPORTDATA is SHA-512 of the claims. Here the quote is made with the
test DCAP PKI (:mod:`cocoon_operator.attestation.testing.pki`), so it verifies only
against that explicitly selected test root.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon_operator.attestation import report_data_for_key
from cocoon_operator.attestation.testing.pki import DcapTestPki
from cocoon_operator.attestation.testing.quotes import TdMeasurements, build_td_quote
from cocoon_operator.attestation.testing.ratls import build_ratls_certificate
from cocoon_operator.workerapi import fetch_ratls_certificate

# Offset of the first RTMR3 byte inside a TD report body: TEE_TCB_SVN, MRSEAM,
# MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM, MRTD, MRCONFIGID, MROWNER,
# MROWNERCONFIG, RTMR0..2 come before it.
_RTMR3_IN_BODY = 16 + 48 + 48 + 8 + 8 + 8 + 48 * 4 + 48 * 3
_HEADER = {4: 48, 5: 48 + 6}


# What a worker serving garbage puts where its quote belongs: not a quote at all.
GARBAGE_QUOTE = b"\x04\x00garbage, not a TDX quote" * 8


def tamper_quote(quote: bytes) -> bytes:
    """The quote with one bit of RTMR3 flipped: well formed, but its signature no longer holds."""
    version = int.from_bytes(quote[:2], "little")
    offset = _HEADER.get(version, 48) + _RTMR3_IN_BODY
    out = bytearray(quote)
    out[offset] ^= 0x01
    return bytes(out)


@dataclass(frozen=True)
class RaTlsEvidence:
    """One generation of the worker's key, quote and certificate."""

    generation: int
    private_key: Ed25519PrivateKey = field(repr=False)
    public_key: bytes  # raw 32 bytes
    quote: bytes
    not_before: datetime
    validity: timedelta
    # When the guest obtained ``quote`` (through the host's quote relay).
    captured_at: datetime | None = None

    def relayed_quote(self, *, tampered: bool = False, garbage: bool = False) -> bytes:
        """The quote as the launcher's relay captured it, with the evidence faults."""
        if garbage:
            return GARBAGE_QUOTE
        return tamper_quote(self.quote) if tampered else self.quote

    def certificate_pem(
        self,
        *,
        tampered: bool = False,
        garbage: bool = False,
        signer: Ed25519PrivateKey | None = None,
    ) -> bytes:
        """The certificate; fault variants: a flipped quote bit (``tampered``), bytes
        that are no quote at all (``garbage``), or another key than the one the
        quote's REPORTDATA binds (``signer``: that key signs and is certified)."""
        quote = tamper_quote(self.quote) if tampered else self.quote
        if garbage:
            quote = GARBAGE_QUOTE
        return build_ratls_certificate(
            quote,
            private_key=signer or self.private_key,
            not_before=self.not_before,
            validity=self.validity,
            common_name="cocoon-worker-simulator",
            serial_number=self.generation,
        )

    def certificate_der(self, *, tampered: bool = False) -> bytes:
        pem = self.certificate_pem(tampered=tampered)
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)

    def private_key_pem(self) -> bytes:
        return private_key_pem(self.private_key)


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_evidence(
    pki: DcapTestPki,
    measurements: TdMeasurements,
    *,
    now: datetime,
    generation: int,
    validity: timedelta,
    quote_version: int = 4,
) -> RaTlsEvidence:
    """A fresh Ed25519 key, a quote binding it (REPORTDATA = SHA-512(key)), and its certificate."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    quote = build_td_quote(
        pki,
        mrtd=measurements.mrtd,
        rtmr0=measurements.rtmr[0],
        rtmr1=measurements.rtmr[1],
        rtmr2=measurements.rtmr[2],
        rtmr3=measurements.rtmr[3],
        mrconfigid=measurements.mrconfigid,
        mrowner=measurements.mrowner,
        mrownerconfig=measurements.mrownerconfig,
        report_data=report_data_for_key(raw),
        version=quote_version,
    )
    return RaTlsEvidence(
        generation=generation,
        private_key=key,
        public_key=raw,
        quote=quote,
        not_before=now.replace(microsecond=0) - timedelta(minutes=5),
        validity=validity,
        captured_at=now,
    )


class TlsIdentity:
    """A server-side TLS context whose certificate is the current RA-TLS certificate.

    Python's ``ssl`` loads keys from files, so the certificate and key live in a
    private temporary directory (mode 0700) removed by :meth:`close`. Installing a
    new pair affects new handshakes only; open connections keep theirs.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cocoon-sim-tls-")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3  # Ed25519 certificates

    def install(self, certificate_pem: bytes, private_key_pem: bytes) -> None:
        base = Path(self._dir.name)
        cert_path, key_path = base / "cert.pem", base / "key.pem"
        cert_path.write_bytes(certificate_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_key_pem)
        self.context.load_cert_chain(cert_path, key_path)

    def close(self) -> None:
        self._dir.cleanup()


async def fetch_peer_certificate(host: str, port: int, *, timeout_seconds: float = 5.0) -> bytes:
    """The certificate the TLS port presents (DER), fetched as the operator does."""
    return await fetch_ratls_certificate(host, port, timeout_seconds=timeout_seconds)
