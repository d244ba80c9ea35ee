"""TDX quote verification: our parser and checks around the DCAP engine."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cocoon_operator.attestation._chain import ChainVerifier
from cocoon_operator.attestation._collateral import Collateral, CollateralKey
from cocoon_operator.attestation._engine import DcapQvlEngine, EngineReport, QuoteVerifierEngine
from cocoon_operator.attestation._quote import PckIdentity, TdxQuote, parse_tdx_quote, pck_identity
from cocoon_operator.attestation._roots import TrustedRoot
from cocoon_operator.attestation._time import utc
from cocoon_operator.attestation.errors import (
    CollateralMismatchError,
    CollateralMissingError,
)


@dataclass(frozen=True)
class VerifiedTdxQuote:
    """A quote whose DCAP verification passed at ``verified_at``. Policy is separate."""

    quote: TdxQuote
    pck: PckIdentity
    tcb_status: str
    advisory_ids: tuple[str, ...]
    engine_report: EngineReport
    verified_at: datetime
    collateral_expires_at: datetime
    trusted_root_fingerprint: str
    trusted_root_production: bool
    engine: str

    @property
    def qe_tcb_status(self) -> str | None:
        return self.engine_report.qe_tcb_status

    @property
    def platform_tcb_status(self) -> str | None:
        return self.engine_report.platform_tcb_status

    @property
    def mrtd(self) -> bytes:
        return self.quote.body.mrtd

    @property
    def rtmr(self) -> tuple[bytes, bytes, bytes, bytes]:
        return self.quote.body.rtmr

    @property
    def report_data(self) -> bytes:
        return self.quote.body.report_data

    @property
    def image_hash(self) -> bytes:
        return self.quote.image_hash  # cached on the parsed quote

    @property
    def fmspc(self) -> str:
        return self.pck.fmspc


class TdxVerifier:
    """Verify TDX quotes against one pinned root with a swappable engine.

    Steps, in order (the first failure raises; its ``code`` names the step):

    1. parse the quote (``quote_format``);
    2. collateral present (``collateral_missing``);
    3. the quote's PCK chain verifies up to the pinned root at ``now``
       (``trust_root`` / ``certificate_chain`` / ``certificate_validity``);
    4. the collateral is for the quote's FMSPC and CA and is TDX collateral
       (``collateral_mismatch``);
    5. every collateral part is issued and not expired at ``now``
       (``collateral_not_yet_valid`` / ``collateral_expired``);
    6. the engine's full DCAP verification with the pinned root at ``now``
       (``quote_signature``, ``pck_chain``, ``collateral_signature``, ``tcb_level``, ...).

    Parsed chains are cached; the engine caches converted collateral.
    """

    def __init__(
        self,
        trusted_root: TrustedRoot,
        *,
        engine: QuoteVerifierEngine | None = None,
        chain_verifier: ChainVerifier | None = None,
    ) -> None:
        self.trusted_root = trusted_root
        self.engine: QuoteVerifierEngine = engine if engine is not None else DcapQvlEngine()
        self._chains = chain_verifier if chain_verifier is not None else ChainVerifier()
        self._pck_ids: OrderedDict[bytes, PckIdentity] = OrderedDict()

    @staticmethod
    def parse(raw: bytes) -> TdxQuote:
        return parse_tdx_quote(raw)

    def pck_identity(self, quote: TdxQuote, *, now: datetime) -> PckIdentity:
        """FMSPC/CA of a quote whose PCK chain verifies to the pinned root at ``now``."""
        pem = quote.pck_chain_pem
        certs = self._chains.verify(pem, self.trusted_root, now=now)
        hit = self._pck_ids.get(pem)
        if hit is None:
            hit = pck_identity(certs[0])
            self._pck_ids[pem] = hit
            while len(self._pck_ids) > 256:
                self._pck_ids.popitem(last=False)
        return hit

    def collateral_key(self, quote: bytes | TdxQuote, *, now: datetime) -> CollateralKey:
        """What to ask a collateral source for, for this quote."""
        parsed = quote if isinstance(quote, TdxQuote) else parse_tdx_quote(quote)
        pck = self.pck_identity(parsed, now=now)
        return CollateralKey(pck.fmspc, pck.ca)

    def verify(
        self, quote: bytes | TdxQuote, collateral: Collateral | None, *, now: datetime
    ) -> VerifiedTdxQuote:
        instant = utc(now)
        parsed = quote if isinstance(quote, TdxQuote) else parse_tdx_quote(quote)
        if collateral is None:
            raise CollateralMissingError("no collateral given for the quote")
        pck = self.pck_identity(parsed, now=instant)
        info = collateral.info
        if info.tee != "TDX":
            raise CollateralMismatchError(f"collateral is for {info.tee}, not TDX")
        if (info.fmspc, info.ca) != (pck.fmspc, pck.ca):
            raise CollateralMismatchError(
                f"collateral is for FMSPC {info.fmspc}/{info.ca}, the quote's PCK says "
                f"{pck.fmspc}/{pck.ca}"
            )
        collateral.check_time(instant)
        report = self.engine.verify(
            parsed.trimmed, collateral, root_ca_der=self.trusted_root.der, now=instant
        )
        return VerifiedTdxQuote(
            quote=parsed,
            pck=pck,
            tcb_status=report.tcb_status,
            advisory_ids=report.advisory_ids,
            engine_report=report,
            verified_at=instant,
            collateral_expires_at=info.expires_at,
            trusted_root_fingerprint=self.trusted_root.fingerprint,
            trusted_root_production=self.trusted_root.production,
            engine=self.engine.name,
        )


def verify_tdx_quote(
    quote: bytes,
    collateral: Collateral | None,
    *,
    trusted_root: TrustedRoot,
    now: datetime,
    engine: QuoteVerifierEngine | None = None,
) -> VerifiedTdxQuote:
    """One-shot :meth:`TdxVerifier.verify` (no caches kept between calls)."""
    return TdxVerifier(trusted_root, engine=engine).verify(quote, collateral, now=now)
