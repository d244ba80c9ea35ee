"""DCAP collateral: the value, its validity window, sources and a cache.

The JSON form has exactly the keys of dcap-qvl's ``*_collateral.json`` samples:
PEM issuer chains as text, TCB info / QE identity as the exact signed JSON text,
CRLs and signatures as hex.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from cocoon_operator import jsondoc
from cocoon_operator.attestation._time import parse_instant, utc

if TYPE_CHECKING:
    pass
from cocoon_operator.attestation.errors import (
    CollateralExpiredError,
    CollateralFormatError,
    CollateralMismatchError,
    CollateralMissingError,
    CollateralNotYetValidError,
)

_TEXT_FIELDS = (
    "pck_crl_issuer_chain",
    "tcb_info_issuer_chain",
    "tcb_info",
    "qe_identity_issuer_chain",
    "qe_identity",
)
_HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")


@dataclass(frozen=True)
class CollateralKey:
    """What collateral is looked up by: the platform's FMSPC and its PCK CA type."""

    fmspc: str  # 12 upper-case hex digits
    ca: str  # "platform" | "processor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmspc", self.fmspc.upper())
        object.__setattr__(self, "ca", self.ca.lower())


@dataclass(frozen=True)
class CollateralInfo:
    """Facts read from a collateral set (nothing here is verified)."""

    tee: str  # "TDX" | "SGX" (TCB info id)
    fmspc: str
    ca: str
    tcb_evaluation_data_number: int | None
    issued_at: datetime  # latest issue date of TCB info, QE identity and CRLs
    expires_at: datetime  # earliest nextUpdate of TCB info, QE identity and CRLs
    windows: tuple[tuple[str, datetime, datetime], ...]  # (what, issued, next update)

    @property
    def key(self) -> CollateralKey:
        return CollateralKey(self.fmspc, self.ca)


@dataclass(frozen=True)
class Collateral:
    """One DCAP collateral set (quote collateral v3, as dcap-qvl names it)."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        """Parse the dcap-qvl collateral JSON. Raises :class:`CollateralFormatError`."""
        try:
            doc = jsondoc.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollateralFormatError(f"collateral is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise CollateralFormatError("collateral JSON must be an object")
        return cls.from_mapping(doc)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> Collateral:
        missing = [k for k in (*_TEXT_FIELDS, *_HEX_FIELDS) if k not in doc]
        if missing:
            raise CollateralFormatError(f"collateral lacks {', '.join(missing)}")
        values: dict[str, Any] = {}
        for key in _TEXT_FIELDS:
            if not isinstance(doc[key], str):
                raise CollateralFormatError(f"collateral {key} must be a string")
            values[key] = doc[key]
        for key in _HEX_FIELDS:
            raw = doc[key]
            try:
                values[key] = bytes.fromhex(raw) if isinstance(raw, str) else bytes(raw)
            except (ValueError, TypeError) as exc:
                raise CollateralFormatError(f"collateral {key} is not hex: {exc}") from exc
        return cls(**values)

    def to_json(self) -> str:
        """The same JSON shape :meth:`from_json` reads (keys in dcap-qvl's order)."""
        doc: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            doc[f.name] = value.hex() if isinstance(value, bytes) else value
        return json.dumps(doc)

    @cached_property
    def info(self) -> CollateralInfo:
        """Parse the dates, FMSPC and CA. Raises :class:`CollateralFormatError`."""
        try:
            tcb = jsondoc.loads(self.tcb_info)
            qe = jsondoc.loads(self.qe_identity)
            windows = [
                ("tcb_info", parse_instant(tcb["issueDate"]), parse_instant(tcb["nextUpdate"])),
                ("qe_identity", parse_instant(qe["issueDate"]), parse_instant(qe["nextUpdate"])),
            ]
            fmspc = str(tcb["fmspc"]).upper()
            tee = str(tcb.get("id", "SGX"))
            eval_number = tcb.get("tcbEvaluationDataNumber")
        except (ValueError, KeyError, TypeError) as exc:
            raise CollateralFormatError(f"TCB info / QE identity unreadable: {exc}") from exc
        ca = ""
        for what, der in (("root_ca_crl", self.root_ca_crl), ("pck_crl", self.pck_crl)):
            try:
                crl = x509.load_der_x509_crl(der)
            except ValueError as exc:
                raise CollateralFormatError(f"{what} is not a DER CRL: {exc}") from exc
            if crl.next_update_utc is None:
                raise CollateralFormatError(f"{what} has no nextUpdate")
            windows.append((what, crl.last_update_utc, crl.next_update_utc))
            if what == "pck_crl":
                issuer = crl.issuer.rfc4514_string().lower()
                ca = "processor" if "processor" in issuer else "platform"
        return CollateralInfo(
            tee=tee,
            fmspc=fmspc,
            ca=ca,
            tcb_evaluation_data_number=eval_number if isinstance(eval_number, int) else None,
            issued_at=max(w[1] for w in windows),
            expires_at=min(w[2] for w in windows),
            windows=tuple(windows),
        )

    @property
    def key(self) -> CollateralKey:
        return self.info.key

    def check_time(self, now: datetime) -> None:
        """Raise if any part is expired or not yet issued at ``now``."""
        instant = utc(now)
        for what, issued, next_update in self.info.windows:
            if instant < issued:
                raise CollateralNotYetValidError(
                    f"{what} issued {issued.isoformat()}, after now ({instant.isoformat()})"
                )
            if instant > next_update:
                raise CollateralExpiredError(
                    f"{what} expired: nextUpdate {next_update.isoformat()} "
                    f"is before now ({instant.isoformat()})"
                )


class CollateralSource(Protocol):
    """Where collateral comes from (a PCCS, Intel PCS, files). The I/O edge."""

    async def fetch(self, key: CollateralKey) -> Collateral:
        """Collateral for ``key``; raise :class:`CollateralMissingError` or
        :class:`CollateralFetchError`."""
        ...


class LocalCollateralSource:
    """Collateral held in memory (e.g. loaded from files), keyed by its own FMSPC/CA."""

    def __init__(self, collaterals: Iterable[Collateral] = ()) -> None:
        self._by_key: dict[CollateralKey, Collateral] = {}
        self.fetches = 0
        for collateral in collaterals:
            self.add(collateral)

    def add(self, collateral: Collateral) -> None:
        self._by_key[collateral.key] = collateral

    async def fetch(self, key: CollateralKey) -> Collateral:
        self.fetches += 1
        try:
            return self._by_key[key]
        except KeyError:
            raise CollateralMissingError(
                f"no collateral for FMSPC {key.fmspc} / CA {key.ca}"
            ) from None


#: How long fetched collateral is served before it is fetched again, whatever its
#: ``nextUpdate`` (weeks away for TCB info and CRLs). Intel's PCCS refreshes its
#: cache daily by default (``"RefreshSchedule": "0 0 1 * * *"``, 01:00 every day,
#: in intel/SGXDataCenterAttestationPrimitives QuoteGeneration/pccs/config/default.json:7), so a
#: TCB recovery or a PCK revocation published by Intel reaches verification
#: within about a day; so here.
DEFAULT_MAX_AGE = timedelta(hours=24)


class CollateralCache:
    """Collateral by (FMSPC, CA), kept for at most ``max_age`` after it was fetched
    and never past its earliest ``nextUpdate`` (minus a margin).

    :meth:`get` is the only awaitable step: it calls the injected source on a miss.
    :meth:`peek` is synchronous for callers that fetched earlier.
    """

    def __init__(
        self,
        source: CollateralSource,
        *,
        refresh_before_expiry: timedelta = timedelta(0),
        max_age: timedelta = DEFAULT_MAX_AGE,
        max_entries: int = 1024,
    ) -> None:
        if max_age <= timedelta(0):
            raise ValueError(f"collateral max_age must be positive, got {max_age}")
        self._source = source
        self._margin = refresh_before_expiry
        self._max_age = max_age
        self._max = max_entries
        self._entries: OrderedDict[CollateralKey, tuple[Collateral, datetime]] = OrderedDict()

    def _fresh(self, collateral: Collateral, fetched_at: datetime, now: datetime) -> bool:
        info = collateral.info
        return (
            info.issued_at <= now < info.expires_at - self._margin
            and fetched_at <= now < fetched_at + self._max_age
        )

    def peek(self, key: CollateralKey, *, now: datetime) -> Collateral | None:
        instant = utc(now)
        hit = self._entries.get(key)
        if hit is None or not self._fresh(hit[0], hit[1], instant):
            return None
        self._entries.move_to_end(key)
        return hit[0]

    def put(self, collateral: Collateral, *, fetched_at: datetime) -> None:
        self._entries[collateral.key] = (collateral, utc(fetched_at))
        self._entries.move_to_end(collateral.key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        """Cached collateral for ``key`` if still fresh at ``now``, else fetch it."""
        hit = self.peek(key, now=now)
        if hit is not None:
            return hit
        collateral = await self._source.fetch(key)
        if collateral.key != key:
            raise CollateralMismatchError(
                f"source returned collateral for {collateral.key.fmspc}/{collateral.key.ca}, "
                f"asked for {key.fmspc}/{key.ca}"
            )
        if self._fresh(collateral, utc(now), utc(now)):
            self.put(collateral, fetched_at=now)
        return collateral
