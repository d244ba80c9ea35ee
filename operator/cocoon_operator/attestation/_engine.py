"""The DCAP quote verification engine behind a small Protocol.

The project does not implement DCAP chain/TCB evaluation itself: the default
engine is PyPI ``dcap-qvl`` (Phala's Rust verifier). It verifies the quote
signature, the QE report and its hash binding, the PCK chain and both CRLs, the
TCB info and QE identity signatures and their validity at the given instant, and
matches the platform to a TCB level. Its ``verify_with_root_ca`` takes the root
as DER, so the pinned root is passed explicitly on every call (its built-in
Intel root is never used).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from cocoon_operator import jsondoc
from cocoon_operator.attestation._collateral import Collateral
from cocoon_operator.attestation._time import epoch_seconds
from cocoon_operator.attestation.errors import (
    AttestationError,
    CollateralExpiredError,
    CollateralFormatError,
    CollateralMismatchError,
    CollateralNotYetValidError,
    CollateralSignatureError,
    DcapVerificationError,
    PckChainError,
    QuoteFormatError,
    QuoteSignatureError,
    TcbLevelError,
    TrustRootError,
)


@dataclass(frozen=True)
class EngineReport:
    """What a DCAP engine concluded about a quote it accepted.

    ``details`` is an optional zero-argument callable returning the engine's full
    JSON report; it is only called when a detail (QE / platform status) is read,
    so the hot path does not pay for serialising it.
    """

    tcb_status: str  # UpToDate, SWHardeningNeeded, ConfigurationNeeded, OutOfDate, ...
    advisory_ids: tuple[str, ...]
    details: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    @cached_property
    def detail(self) -> dict[str, Any]:
        if self.details is None:
            return {}
        try:
            doc = jsondoc.loads(self.details())
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _status(self, key: str) -> str | None:
        value = self.detail.get(key)
        status = value.get("status") if isinstance(value, dict) else None
        return status if isinstance(status, str) else None

    @property
    def qe_tcb_status(self) -> str | None:
        return self._status("qe_status")

    @property
    def platform_tcb_status(self) -> str | None:
        return self._status("platform_status")


class QuoteVerifierEngine(Protocol):
    """A DCAP verifier: full chain + signature + TCB evaluation of one quote.

    ``quote`` is trimmed to its declared signature data; ``root_ca_der`` is the
    pinned root and must be the only anchor used; ``now`` drives every time check.
    Raise a subclass of :class:`~cocoon_operator.attestation.errors.AttestationError`
    on rejection.
    """

    name: str

    def verify(
        self, quote: bytes, collateral: Collateral, *, root_ca_der: bytes, now: datetime
    ) -> EngineReport: ...


# (substring of the engine's message, lower-cased) -> error class; first match wins.
_CLASSIFY: tuple[tuple[str, type[AttestationError]], ...] = (
    ("issue date is in the future", CollateralNotYetValidError),
    ("not valid yet", CollateralNotYetValidError),
    ("notvalidyet", CollateralNotYetValidError),
    ("expired", CollateralExpiredError),
    ("fmspc mismatch", CollateralMismatchError),
    ("non-tdx tcb info", CollateralMismatchError),
    ("isv enclave report signature", QuoteSignatureError),
    ("qe_report", QuoteSignatureError),
    ("qe report", QuoteSignatureError),
    ("invalid for tcb_info", CollateralSignatureError),
    ("invalid for qe_identity", CollateralSignatureError),
    ("failed to load root ca", TrustRootError),
    ("root ca crl", TrustRootError),
    ("unknownissuer", TrustRootError),
    ("certrevoked", PckChainError),
    ("revoked", TcbLevelError),
    ("no matching tcb level", TcbLevelError),
    ("tcb status is invalid", TcbLevelError),
    ("pck", PckChainError),
    ("certificate chain", PckChainError),
    ("failed to decode quote", QuoteFormatError),
    ("unknown qe vendor id", QuoteFormatError),
    ("unsupported", QuoteFormatError),
    ("failed to decode", CollateralFormatError),
)


def classify_engine_error(message: str) -> type[AttestationError]:
    """Map a dcap-qvl error message to the step that failed."""
    lowered = message.lower()
    for needle, cls in _CLASSIFY:
        if needle in lowered:
            return cls
    return DcapVerificationError


class DcapQvlEngine:
    """:class:`QuoteVerifierEngine` backed by ``dcap_qvl.verify_with_root_ca``.

    Converted collateral objects are cached (keyed by the :class:`Collateral`
    value), so a warm cache costs no JSON/hex decoding per verification.
    """

    name = "dcap-qvl"

    def __init__(self, max_cached_collateral: int = 64) -> None:
        import dcap_qvl  # noqa: PLC0415 - heavy native module, loaded on first use

        self._qvl: Any = dcap_qvl
        self._max = max_cached_collateral
        self._prepared: OrderedDict[Collateral, Any] = OrderedDict()

    @property
    def version(self) -> str:
        return str(self._qvl.__version__)

    def prepare(self, collateral: Collateral) -> Any:
        """The engine's own collateral object for ``collateral`` (cached)."""
        hit = self._prepared.get(collateral)
        if hit is not None:
            return hit
        try:
            prepared = self._qvl.QuoteCollateralV3(
                collateral.pck_crl_issuer_chain,
                collateral.root_ca_crl,
                collateral.pck_crl,
                collateral.tcb_info_issuer_chain,
                collateral.tcb_info,
                collateral.tcb_info_signature,
                collateral.qe_identity_issuer_chain,
                collateral.qe_identity,
                collateral.qe_identity_signature,
            )
        except (ValueError, TypeError) as exc:
            raise CollateralFormatError(f"dcap-qvl refused the collateral: {exc}") from exc
        self._prepared[collateral] = prepared
        while len(self._prepared) > self._max:
            self._prepared.popitem(last=False)
        return prepared

    def verify(
        self, quote: bytes, collateral: Collateral, *, root_ca_der: bytes, now: datetime
    ) -> EngineReport:
        prepared = self.prepare(collateral)
        try:
            report = self._qvl.verify_with_root_ca(quote, prepared, root_ca_der, epoch_seconds(now))
        except ValueError as exc:
            message = " ".join(str(exc).split())
            raise classify_engine_error(message)(f"dcap-qvl: {message}") from exc
        return EngineReport(
            tcb_status=str(report.status),
            advisory_ids=tuple(str(a) for a in report.advisory_ids),
            details=report.to_json,
        )
