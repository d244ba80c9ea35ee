"""NVIDIA Reference Integrity Manifests (SWID tags with an enveloped XML signature).

A RIM is trusted when its embedded certificate chain verifies to the pinned
NVIDIA RIM root at ``now``, revocation (pluggable) does not object, and the
XMLDSig signature (ecdsa-sha384, SHA-384 digest, C14N 1.1) verifies with the
chain's leaf, as checked by ``signxml``. Measurements are read only from the
signed content that ``signxml`` returns.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cocoon_operator.attestation._chain import ChainVerifier
from cocoon_operator.attestation._revocation import (
    RevocationChecker,
    RevocationStatus,
    enforce_revocation,
)
from cocoon_operator.attestation._roots import TrustedRoot
from cocoon_operator.attestation._spdm import SpdmMeasurements
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.errors import (
    CertificateExpiredError,
    RimFormatError,
    RimSignatureError,
)

_DSIG = "http://www.w3.org/2000/09/xmldsig#"
_SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
_HASH_NS = "http://www.w3.org/2001/04/xmlenc#sha384"


@dataclass(frozen=True)
class RimMeasurement:
    index: int  # RIM index, 0-based; SPDM block index = index + 1
    name: str
    active: bool
    alternatives: tuple[bytes, ...]


@dataclass(frozen=True)
class VerifiedRim:
    rim_id: str  # SWID tagId
    product: str
    version: str  # Meta colloquialVersion: driver or VBIOS version
    measurements: tuple[RimMeasurement, ...]
    signer: str
    revocation: RevocationStatus
    verified_at: datetime

    @property
    def active(self) -> tuple[RimMeasurement, ...]:
        return tuple(m for m in self.measurements if m.active)


@dataclass(frozen=True)
class MeasurementMismatch:
    index: int  # SPDM measurement block index (1-based)
    rim_index: int  # index in the RIM (0-based)
    rim_id: str
    expected: tuple[str, ...]  # hex alternatives
    actual: str | None  # hex, None when the report lacks the block


@dataclass(frozen=True)
class MeasurementComparison:
    checked: int
    mismatches: tuple[MeasurementMismatch, ...]


def _parser() -> Any:
    from lxml import etree  # noqa: PLC0415

    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _embedded_chain_pem(root: Any) -> bytes:
    certs = root.findall(
        f"./{{{_DSIG}}}Signature/{{{_DSIG}}}KeyInfo/{{{_DSIG}}}X509Data/{{{_DSIG}}}X509Certificate"
    )
    if not certs:
        raise RimFormatError("RIM signature has no embedded X509Certificate chain")
    pem = []
    for element in certs:
        try:
            der = base64.b64decode("".join((element.text or "").split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RimFormatError(f"RIM certificate is not base64: {exc}") from exc
        body = base64.encodebytes(der).decode("ascii")
        pem.append(f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
    return "".join(pem).encode("ascii")


def _measurements(signed: Any) -> tuple[str, str, str, tuple[RimMeasurement, ...]]:
    meta = signed.find(f"{{{_SWID}}}Meta")
    payload = signed.find(f"{{{_SWID}}}Payload")
    if meta is None or payload is None:
        raise RimFormatError("RIM lacks Meta or Payload")
    out: list[RimMeasurement] = []
    try:
        for res in payload.findall(f"{{{_SWID}}}Resource"):
            if res.get("type") != "Measurement":
                continue
            count = int(res.get("alternatives", "1"))
            alternatives = tuple(
                bytes.fromhex(res.get(f"{{{_HASH_NS}}}Hash{i}", "")) for i in range(count)
            )
            out.append(
                RimMeasurement(
                    index=int(res.get("index", "")),
                    name=res.get("name", ""),
                    active=res.get("active", "").lower() == "true",
                    alternatives=alternatives,
                )
            )
    except ValueError as exc:
        raise RimFormatError(f"RIM measurement malformed: {exc}") from exc
    if not out:
        raise RimFormatError("RIM has no measurements")
    return (
        str(signed.get("tagId", "")),
        str(meta.get("product", signed.get("name", ""))),
        str(meta.get("colloquialVersion", "")),
        tuple(out),
    )


class RimVerifier:
    """Verify RIM documents against a pinned root; chains are cached."""

    def __init__(
        self,
        rim_root: TrustedRoot,
        *,
        revocation: RevocationChecker,
        chain_verifier: ChainVerifier | None = None,
    ) -> None:
        self.rim_root = rim_root
        self.revocation = revocation
        self._chains = chain_verifier if chain_verifier is not None else ChainVerifier()

    def verify(self, document: bytes, *, now: datetime) -> VerifiedRim:
        from lxml import etree  # noqa: PLC0415
        from signxml.algorithms import DigestAlgorithm, SignatureMethod  # noqa: PLC0415
        from signxml.exceptions import (  # noqa: PLC0415
            InvalidCertificate,
            InvalidDigest,
            InvalidInput,
            InvalidSignature,
        )
        from signxml.verifier import SignatureConfiguration, XMLVerifier  # noqa: PLC0415

        instant = utc(now)
        try:
            root = etree.fromstring(document, parser=_parser())
        except etree.XMLSyntaxError as exc:
            raise RimFormatError(f"RIM is not XML: {exc}") from exc
        chain = self._chains.verify(_embedded_chain_pem(root), self.rim_root, now=instant)
        status = enforce_revocation(self.revocation, chain, now=instant, what="RIM signing chain")
        config = SignatureConfiguration(
            location="./",
            verification_time=instant,
            signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
            digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
            expect_references=1,
        )
        try:
            result = XMLVerifier().verify(root, x509_cert=chain[0], expect_config=config)
        except InvalidDigest as exc:
            raise RimSignatureError(f"RIM document digest does not match: {exc}") from exc
        except InvalidCertificate as exc:
            raise CertificateExpiredError(f"RIM signing certificate: {exc}") from exc
        except (InvalidSignature, InvalidInput) as exc:
            raise RimSignatureError(f"RIM signature invalid: {exc}") from exc
        if isinstance(result, list):
            raise RimSignatureError(f"RIM has {len(result)} signed references, expected one")
        signed = result.signed_xml
        if signed is None:
            raise RimFormatError("RIM signed content is not XML")
        rim_id, product, version, measurements = _measurements(signed)
        return VerifiedRim(
            rim_id=rim_id,
            product=product,
            version=version,
            measurements=measurements,
            signer=chain[0].subject.rfc4514_string(),
            revocation=status,
            verified_at=instant,
        )


def compare_measurements(
    evidence: SpdmMeasurements, rims: Sequence[VerifiedRim]
) -> MeasurementComparison:
    """Compare every active RIM measurement with the report's block ``index + 1``.

    A block matches if its value equals any of the RIM's alternatives. An index
    active in two RIMs is a format error (the driver and VBIOS RIMs must not overlap).
    """
    seen: dict[int, str] = {}
    checked = 0
    mismatches: list[MeasurementMismatch] = []
    for rim in rims:
        for golden in rim.active:
            if golden.index in seen:
                raise RimFormatError(
                    f"measurement {golden.index} is active in both {seen[golden.index]} "
                    f"and {rim.rim_id}"
                )
            seen[golden.index] = rim.rim_id
            checked += 1
            block = evidence.measurement(golden.index + 1)
            if block is None or block.value not in golden.alternatives:
                mismatches.append(
                    MeasurementMismatch(
                        index=golden.index + 1,
                        rim_index=golden.index,
                        rim_id=rim.rim_id,
                        expected=tuple(a.hex() for a in golden.alternatives),
                        actual=None if block is None else block.value.hex(),
                    )
                )
    return MeasurementComparison(checked, tuple(mismatches))
