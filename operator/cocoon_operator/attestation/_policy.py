"""Policy over a verified TDX quote: a pure function returning a verdict naming the failed rule."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from cocoon_operator.attestation._measurements import (
    model_hash,
    report_data_for_key,
    report_data_for_nonce,
)
from cocoon_operator.attestation._tdx import VerifiedTdxQuote


class PolicyRule(StrEnum):
    """Rules in the order they are evaluated; the first that fails is reported."""

    TRUST_ROOT = "trust_root"
    TCB_STATUS = "tcb_status"
    ADVISORY = "advisory"
    MRTD = "mrtd"
    RTMR = "rtmr"
    IMAGE_HASH = "image_hash"
    MODEL_HASH = "model_hash"
    REPORT_DATA = "report_data"


@dataclass(frozen=True)
class KeyBinding:
    """REPORTDATA must be SHA-512 of this raw 32-byte Ed25519 key (COCOON RA-TLS)."""

    public_key: bytes

    def expected(self) -> bytes:
        return report_data_for_key(self.public_key)


@dataclass(frozen=True)
class NonceBinding:
    """REPORTDATA must be this nonce, zero-padded to 64 bytes (freshness challenge)."""

    nonce: bytes

    def expected(self) -> bytes:
        return report_data_for_nonce(self.nonce)


ReportDataBinding = KeyBinding | NonceBinding


def hex_set(values: Iterable[str | bytes]) -> frozenset[bytes]:
    """An allow-list from hex strings (case-insensitive, optional 0x) or raw bytes."""
    out: set[bytes] = set()
    for value in values:
        if isinstance(value, bytes):
            out.add(value)
        else:
            text = value.strip().lower().removeprefix("0x")
            out.add(bytes.fromhex(text))
    return frozenset(out)


@dataclass(frozen=True)
class TdxPolicy:
    """What a verified quote must also satisfy. ``None`` allow-lists mean "any".

    ``allowed_rtmr`` holds whole (RTMR0, RTMR1, RTMR2, RTMR3) tuples, as COCOON
    compares the RTMR set as one value. ``require_production_root`` refuses any
    quote verified against a root other than Intel's: a test PKI has to be
    selected explicitly by setting it to False.
    """

    accepted_tcb_statuses: frozenset[str] = field(default_factory=lambda: frozenset({"UpToDate"}))
    rejected_advisories: frozenset[str] = frozenset()
    allowed_mrtd: frozenset[bytes] | None = None
    allowed_rtmr: frozenset[tuple[bytes, bytes, bytes, bytes]] | None = None
    allowed_image_hashes: frozenset[bytes] | None = None
    allowed_model_hashes: frozenset[bytes] | None = None
    require_report_data_binding: bool = True
    require_production_root: bool = True


@dataclass(frozen=True)
class Verdict:
    trusted: bool
    failed_rule: PolicyRule | None
    reason: str
    checked: tuple[PolicyRule, ...]


def _short(value: bytes) -> str:
    text = value.hex()
    return text if len(text) <= 24 else f"{text[:16]}...{text[-8:]}"


def _check_root(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    if policy.require_production_root and not ev.trusted_root_production:
        return f"verified against non-production root {ev.trusted_root_fingerprint[:16]}..."
    return None


def _check_tcb(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    if ev.tcb_status not in policy.accepted_tcb_statuses:
        accepted = ", ".join(sorted(policy.accepted_tcb_statuses)) or "none"
        return f"TCB status {ev.tcb_status} not accepted ({accepted})"
    return None


def _check_advisories(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    bad = sorted(set(ev.advisory_ids) & policy.rejected_advisories)
    return f"rejected advisories apply: {', '.join(bad)}" if bad else None


def _check_mrtd(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    if policy.allowed_mrtd is not None and ev.mrtd not in policy.allowed_mrtd:
        return f"MRTD {_short(ev.mrtd)} not allowed"
    return None


def _check_rtmr(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    if policy.allowed_rtmr is not None and ev.rtmr not in policy.allowed_rtmr:
        return "RTMR set not allowed"
    return None


def _check_image(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    allowed = policy.allowed_image_hashes
    if allowed is not None and ev.image_hash not in allowed:
        return f"image hash {ev.image_hash.hex()} not allowed"
    return None


def _check_model(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    if policy.allowed_model_hashes is None:
        return None
    if ctx.model is None:
        return "a model allow-list is set but no model was given"
    try:
        digest = model_hash(ctx.model)
    except ValueError as exc:
        return str(exc)
    if digest not in policy.allowed_model_hashes:
        return f"model hash {digest.hex()} ({ctx.model}) not allowed"
    return None


def _check_binding(ev: VerifiedTdxQuote, policy: TdxPolicy, ctx: _Context) -> str | None:
    if ctx.binding is None:
        if policy.require_report_data_binding:
            return "REPORTDATA binding required but none given"
        return None
    if not hmac.compare_digest(ev.report_data, ctx.binding.expected()):
        what = "RA-TLS key" if isinstance(ctx.binding, KeyBinding) else "nonce"
        return f"REPORTDATA does not bind the expected {what}"
    return None


@dataclass(frozen=True)
class _Context:
    binding: ReportDataBinding | None
    model: str | None


_RULES: tuple[
    tuple[PolicyRule, Callable[[VerifiedTdxQuote, TdxPolicy, _Context], str | None]], ...
] = (
    (PolicyRule.TRUST_ROOT, _check_root),
    (PolicyRule.TCB_STATUS, _check_tcb),
    (PolicyRule.ADVISORY, _check_advisories),
    (PolicyRule.MRTD, _check_mrtd),
    (PolicyRule.RTMR, _check_rtmr),
    (PolicyRule.IMAGE_HASH, _check_image),
    (PolicyRule.MODEL_HASH, _check_model),
    (PolicyRule.REPORT_DATA, _check_binding),
)


def evaluate_tdx_policy(
    evidence: VerifiedTdxQuote,
    policy: TdxPolicy,
    *,
    binding: ReportDataBinding | None = None,
    model: str | None = None,
) -> Verdict:
    """Apply ``policy`` to ``evidence``; the verdict names the first rule that fails.

    ``model`` is the worker's ``Name@commit:verity`` string (its SHA-256 must be
    allow-listed when ``allowed_model_hashes`` is set); ``binding`` is what
    REPORTDATA must commit to (the RA-TLS key, or a nonce).
    """
    ctx = _Context(binding=binding, model=model)
    checked: list[PolicyRule] = []
    for rule, check in _RULES:
        checked.append(rule)
        reason = check(evidence, policy, ctx)
        if reason is not None:
            return Verdict(False, rule, reason, tuple(checked))
    return Verdict(True, None, "all rules passed", tuple(checked))
