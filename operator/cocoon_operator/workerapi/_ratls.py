"""Fetching the certificate a worker presents on its RA-TLS port (attestation only).

The attestation step reads the evidence here until the quote relay replaces it
(COCOON's worker presents its RA-TLS certificate to proxies only, on its
outbound connections; see ``_http.py``). Stats and controls never come here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from cocoon_operator import jsondoc
from cocoon_operator.httpbody import BodyTooLargeError, read_capped
from cocoon_operator.workerapi._stats import WorkerStatsError


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    # RA-TLS: no CA vouches for a worker. Trust comes from verifying the TDX
    # quote inside the certificate, which binds the certificate's key.
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def fetch_ratls_certificate(host: str, port: int, *, timeout_seconds: float = 5.0) -> bytes:
    """Complete a TLS handshake with ``host:port`` and return the peer certificate (DER).

    The whole exchange is bounded by ``timeout_seconds``: a worker that accepts the
    connection and then stalls must not hold the caller.
    """
    async with asyncio.timeout(timeout_seconds):
        _, writer = await asyncio.open_connection(host, port, ssl=_unverified_context())
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):  # the peer may drop first
                await writer.wait_closed()
    if not der:
        raise ConnectionError(f"{host}:{port} presented no certificate")
    return bytes(der)


# --------------------------------------------------------------------------
# Stand-in, to be removed with the quote relay: the project's own GPU evidence
# endpoint. COCOON workers serve neither an RA-TLS port to the host nor
# ``/attestation/gpu`` (they attest their GPU inside the VM at boot); only the
# simulator does, for ``spec.attestation.gpu.mode: Verify``. Nothing on the
# stats or control path uses it.


class CertificateChangedError(WorkerStatsError):
    """The worker presented another certificate than the attested one (it may have
    rotated it since: COCOON does hourly), so nothing it said was accepted."""


@dataclass(frozen=True)
class GpuEvidenceDocument:
    """``GET /attestation/gpu?nonce=HEX``: the GPU's SPDM exchange and its device chain."""

    evidence: bytes  # GET_MEASUREMENTS request || signed MEASUREMENTS response
    certificate_chain: bytes  # PEM, leaf first


def parse_gpu_evidence(doc: Any) -> GpuEvidenceDocument:
    """The document's two fields, or :class:`WorkerStatsError` naming the bad one."""
    if not isinstance(doc, dict):
        raise WorkerStatsError("GPU evidence: not a JSON object")
    evidence, chain = doc.get("evidence"), doc.get("certificateChain")
    if not isinstance(evidence, str):
        raise WorkerStatsError("GPU evidence: 'evidence' (hex) is missing")
    if not isinstance(chain, str) or "BEGIN CERTIFICATE" not in chain:
        raise WorkerStatsError("GPU evidence: 'certificateChain' (PEM) is missing")
    try:
        raw = bytes.fromhex(evidence)
    except ValueError:
        raise WorkerStatsError("GPU evidence: 'evidence' is not hex") from None
    return GpuEvidenceDocument(raw, chain.encode())


#: The GPU evidence document (hex SPDM evidence and a PEM chain, kilobytes) is read
#: up to this size: a worker does not get to fill the operator's memory.
MAX_EVIDENCE_BYTES: Final = 1 << 20


async def fetch_gpu_evidence(
    host: str, port: int, *, certificate_sha256: str, nonce: bytes, timeout_seconds: float = 5.0
) -> GpuEvidenceDocument:
    """The GPU's measurements signed over ``nonce``, over TLS to ``host:port`` accepted
    only from the certificate that was attested (its SHA-256 pinned), so the
    evidence comes from the VM whose quote was verified."""
    pin = aiohttp.Fingerprint(bytes.fromhex(certificate_sha256))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=_unverified_context()),
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
    ) as session:
        try:
            url = f"https://{host}:{port}/attestation/gpu"
            async with session.get(url, params={"nonce": nonce.hex()}, ssl=pin) as resp:
                if resp.status != 200:
                    raise WorkerStatsError(f"/attestation/gpu: HTTP {resp.status}")
                try:
                    raw = await read_capped(resp, MAX_EVIDENCE_BYTES, what="/attestation/gpu")
                except BodyTooLargeError as exc:
                    raise WorkerStatsError(str(exc)) from None
                text = raw.decode("utf-8", errors="replace")
        except aiohttp.ServerFingerprintMismatch:
            raise CertificateChangedError(
                "the worker presented another certificate than the attested one"
            ) from None
    try:
        doc = jsondoc.loads(text)
    except ValueError as exc:
        raise WorkerStatsError(f"GPU evidence is not JSON: {exc}") from None
    return parse_gpu_evidence(doc)
