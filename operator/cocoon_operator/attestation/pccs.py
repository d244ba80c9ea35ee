"""Collateral from a PCCS or Intel's PCS (API v4): the attestation engine's one network edge.

Kept apart from the collateral's value and cache (``_collateral``) so that the
pure rooms that read attestation policy (``policy.attestation``) import no
HTTP client: the import-linter contract "Pure layers do no I/O" holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import quote as urlquote
from urllib.parse import unquote

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cocoon_operator import jsondoc
from cocoon_operator.attestation._collateral import Collateral, CollateralKey
from cocoon_operator.attestation.errors import CollateralFetchError
from cocoon_operator.httpbody import BodyTooLargeError, read_capped


def _json_member_text(body: str, member: str) -> str:
    """The exact source text of ``member``'s value in a JSON object (signatures cover it)."""
    token = f'"{member}"'
    start = body.find(token)
    if start < 0:
        raise CollateralFetchError(f"response has no {member!r}")
    colon = body.index(":", start + len(token))
    pos = colon + 1
    while pos < len(body) and body[pos] in " \t\r\n":
        pos += 1
    try:
        _, end = json.JSONDecoder().raw_decode(body, pos)
    except ValueError as exc:
        raise CollateralFetchError(f"{member!r} is not JSON: {exc}") from exc
    return body[pos:end]


def _crl_der(body: bytes) -> bytes:
    text = body.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_crl(text).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise CollateralFetchError(f"CRL response is not a PEM CRL: {exc}") from exc
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return bytes(body)


#: The largest PCCS / PCS answer read (TCB info, QE identity and CRLs are kilobytes
#: to tens of kilobytes): a PCCS does not get to fill the operator's memory.
MAX_COLLATERAL_BYTES = 4 << 20


class PccsCollateralSource:
    """Fetch TDX collateral from a PCCS / Intel PCS (API v4) with an injected aiohttp session.

    Endpoints: ``/tdx/certification/v4/tcb?fmspc=``, ``/tdx/certification/v4/qe/identity``,
    ``/sgx/certification/v4/pckcrl?ca=&encoding=der`` and ``/sgx/certification/v4/rootcacrl``.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float = 10.0,
        max_body_bytes: int = MAX_COLLATERAL_BYTES,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout_seconds
        self.max_body_bytes = max_body_bytes

    async def _get(self, path: str) -> tuple[bytes, Mapping[str, str]]:
        url = f"{self._base}{path}"
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=self._timeout)
            ) as resp:
                if resp.status != 200:
                    raise CollateralFetchError(f"GET {url}: HTTP {resp.status}")
                try:
                    body = await read_capped(resp, self.max_body_bytes, what=f"GET {url}")
                except BodyTooLargeError as exc:
                    raise CollateralFetchError(str(exc)) from None
                return body, {k.lower(): v for k, v in resp.headers.items()}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CollateralFetchError(f"GET {url}: {exc}") from exc

    @staticmethod
    def _chain(headers: Mapping[str, str], *names: str) -> str:
        for name in names:
            if name.lower() in headers:
                return unquote(headers[name.lower()])
        raise CollateralFetchError(f"response lacks the {names[0]} header")

    async def fetch(self, key: CollateralKey) -> Collateral:
        fmspc = urlquote(key.fmspc)
        tcb_body, tcb_headers = await self._get(f"/tdx/certification/v4/tcb?fmspc={fmspc}")
        qe_body, qe_headers = await self._get("/tdx/certification/v4/qe/identity")
        crl_body, crl_headers = await self._get(
            f"/sgx/certification/v4/pckcrl?ca={urlquote(key.ca)}&encoding=der"
        )
        root_body, _ = await self._get("/sgx/certification/v4/rootcacrl")
        try:
            tcb_text = tcb_body.decode("utf-8")
            qe_text = qe_body.decode("utf-8")
            tcb_sig = bytes.fromhex(jsondoc.loads(tcb_text)["signature"])
            qe_sig = bytes.fromhex(jsondoc.loads(qe_text)["signature"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CollateralFetchError(f"malformed TCB info / QE identity response: {exc}") from exc
        return Collateral(
            pck_crl_issuer_chain=self._chain(crl_headers, "SGX-PCK-CRL-Issuer-Chain"),
            root_ca_crl=_crl_der(root_body),
            pck_crl=_crl_der(crl_body),
            tcb_info_issuer_chain=self._chain(
                tcb_headers, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            tcb_info=_json_member_text(tcb_text, "tcbInfo"),
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=self._chain(qe_headers, "SGX-Enclave-Identity-Issuer-Chain"),
            qe_identity=_json_member_text(qe_text, "enclaveIdentity"),
            qe_identity_signature=qe_sig,
        )
