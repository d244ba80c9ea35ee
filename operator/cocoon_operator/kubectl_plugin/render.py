"""Pure rendering for ``kubectl cocoon``: parsed objects in, text or JSON-ready data out.

Nothing here talks to the apiserver or reads the clock: callers pass the
objects they read and ``now``, which keeps every line of output unit-testable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.conditions import CONDITION_ORDER, ConditionType
from cocoon_operator.api.labels import PAUSE_ANNOTATION
from cocoon_operator.policy.conditions import parse_rfc3339
from cocoon_operator.ton import amounts
from cocoon_operator.ton.errors import AmountError

RESOURCE: Final = f"{v1alpha1.PLURAL[:-1]}.{v1alpha1.GROUP}"  # cocoonworker.cocoon.network
NONE: Final = "<none>"
EVENTS_SHOWN: Final = 10

_TON_PLACES: Final = Decimal("0.001")


# ---- parsed views ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerView:
    """One CocoonWorker: the metadata the plugin shows, and the typed spec and status."""

    namespace: str
    name: str
    worker: v1alpha1.CocoonWorker
    created: str | None = None
    uid: str | None = None
    generation: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> WorkerView:
        """Parse an object as the apiserver returns it (raises pydantic's ValidationError)."""
        meta = obj.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            worker=v1alpha1.CocoonWorker.model_validate(obj),
            created=meta.get("creationTimestamp"),
            uid=meta.get("uid"),
            generation=meta.get("generation"),
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def status(self) -> v1alpha1.CocoonWorkerStatus:
        return self.worker.status

    def condition(self, kind: str) -> v1alpha1.Condition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)

    @property
    def paused_by(self) -> str | None:
        """What pauses the worker: the annotation, spec.paused, both, or nothing (None)."""
        by = []
        if self.annotations.get(PAUSE_ANNOTATION) == "true":
            by.append(f"annotation {PAUSE_ANNOTATION}=true")
        if self.worker.spec.paused:
            by.append("spec.paused")
        return " and ".join(by) or None


@dataclass(frozen=True)
class EventView:
    """A core/v1 Event about a worker, reduced to what ``describe`` shows."""

    type: str
    reason: str
    message: str
    time: str | None
    count: int = 1
    source: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> EventView:
        """From an Event as JSON (camelCase keys); missing fields become empty."""
        meta = obj.get("metadata") or {}
        source = obj.get("reportingComponent") or (obj.get("source") or {}).get("component") or ""
        return cls(
            type=str(obj.get("type") or ""),
            reason=str(obj.get("reason") or ""),
            message=str(obj.get("message") or ""),
            time=obj.get("lastTimestamp")
            or obj.get("eventTime")
            or obj.get("firstTimestamp")
            or meta.get("creationTimestamp"),
            count=int(obj.get("count") or 1),
            source=str(source),
        )


# ---- small formatters -----------------------------------------------------------------


def format_ton(nanoton: int | None) -> str:
    """nanoTON as TON with three decimals, rounded toward zero ("-" when unknown).

    Rounding down never shows a wallet as holding more than it does, so a
    balance just under a funding bound is not displayed as on it.
    """
    if nanoton is None:
        return "-"
    try:
        exact = amounts.to_decimal(nanoton)
    except AmountError:  # not a Grams value (negative, too large): shown as it is
        return f"{nanoton} nanoTON (invalid)"
    return f"{exact.quantize(_TON_PLACES, rounding=ROUND_DOWN)} TON"


def human_duration(seconds: float) -> str:
    """A short duration the way kubectl prints ages: 45s, 7m12s, 3h, 2d4h, 400d, 3y20d."""
    s = max(int(seconds), 0)
    m, h, d = s // 60, s // 3600, s // 86400
    y = d // 365
    # (applies, unit, remainder shown unless zero), first match wins
    steps = (
        (s < 120, f"{s}s", 0, ""),
        (m < 10, f"{m}m", s % 60, "s"),
        (m < 180, f"{m}m", 0, ""),
        (h < 8, f"{h}h", m % 60, "m"),
        (h < 48, f"{h}h", 0, ""),
        (d < 8, f"{d}d", h % 24, "h"),
        (d < 365 * 2, f"{d}d", 0, ""),
        (y < 8, f"{y}y", d % 365, "d"),
    )
    for applies, unit, rest, rest_unit in steps:
        if applies:
            return unit + (f"{rest}{rest_unit}" if rest else "")
    return f"{y}y"


def age(timestamp: str | None, now: dt.datetime) -> str:
    """Time since ``timestamp`` as a kubectl age; "-" when unknown."""
    at = parse_rfc3339(timestamp)
    return "-" if at is None else human_duration((now - at).total_seconds())


def when(timestamp: str | None, now: dt.datetime) -> str:
    """A timestamp with how long ago (or until) it is: ``2026-01-01T00:00:00Z (5m ago)``."""
    at = parse_rfc3339(timestamp)
    if at is None:
        return timestamp or NONE
    delta = (now - at).total_seconds()
    rel = f"{human_duration(delta)} ago" if delta >= 0 else f"in {human_duration(-delta)}"
    return f"{timestamp} ({rel})"


def short(value: str | None, keep: int = 16) -> str:
    """A long hex digest cut to ``keep`` characters and "..." ("-" when unknown)."""
    if not value:
        return "-"
    return value if len(value) <= keep else value[:keep] + "..."


def yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def model_short(model: v1alpha1.ModelRef) -> str:
    """``Name@commit`` with the commit cut to 7 characters, as git shows it."""
    return f"{model.name}@{model.commit[:7]}"


def failed_step(failure: str) -> str:
    """The step named by an attestation failure (``"<step>: <message>"``)."""
    step, sep, _ = failure.partition(":")
    return step.strip() if sep else failure.strip()


def attested_cell(view: WorkerView) -> str:
    """TCB status and trust root of the evidence in force, or the step that failed."""
    summary = view.status.attestation
    cond = view.condition(ConditionType.ATTESTED)
    if summary is None:
        return cond.reason if cond is not None else "-"
    verified = summary.tcb_status is not None and (
        cond is None or cond.status is v1alpha1.ConditionStatus.TRUE
    )
    if verified:
        cell = f"{summary.tcb_status}/{summary.trust_root or '?'}"
        if summary.failure:
            cell += f" (last check: {failed_step(summary.failure)})"
        return cell
    if summary.failure:
        return f"failed: {failed_step(summary.failure)}"
    return cond.reason if cond is not None else "-"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, trailing blanks stripped."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- status ---------------------------------------------------------------------------

STATUS_COLUMNS: Final = (
    "NAME",
    "PHASE",
    "READY",
    "NODE",
    "GPU",
    "POD",
    "MODEL",
    "ATTESTED",
    "BALANCE",
    "EARNED",
    "AGE",
)


def status_row(view: WorkerView, now: dt.datetime) -> list[str]:
    status = view.status
    ready = view.condition(ConditionType.READY)
    earnings = status.earnings
    return [
        view.name,
        status.phase or "-",
        ready.status.value if ready is not None else "-",
        status.node or "-",
        status.gpu or "-",
        status.pod or "-",
        model_short(view.worker.spec.model),
        attested_cell(view),
        format_ton(status.wallet.balance if status.wallet else None),
        str(earnings.earned_tokens) if earnings is not None else "-",
        age(view.created, now),
    ]


def status_table(views: Sequence[WorkerView], now: dt.datetime, *, all_namespaces: bool) -> str:
    """The ``kubectl cocoon status`` table, sorted by namespace and name."""
    ordered = sorted(views, key=lambda v: (v.namespace, v.name))
    if all_namespaces:
        return table(
            ("NAMESPACE", *STATUS_COLUMNS),
            ([v.namespace, *status_row(v, now)] for v in ordered),
        )
    return table(STATUS_COLUMNS, (status_row(v, now) for v in ordered))


def status_json(views: Sequence[WorkerView]) -> list[dict[str, Any]]:
    """One object per worker, machine values (nanoTON, full hashes, timestamps)."""
    out = []
    for v in sorted(views, key=lambda v: (v.namespace, v.name)):
        s = v.status
        ready = v.condition(ConditionType.READY)
        att = s.attestation
        out.append(
            {
                "namespace": v.namespace,
                "name": v.name,
                "phase": s.phase,
                "ready": ready.status.value if ready is not None else None,
                "node": s.node,
                "pod": s.pod,
                "model": {"name": v.worker.spec.model.name, "commit": v.worker.spec.model.commit},
                "attestation": {
                    "tcbStatus": att.tcb_status if att else None,
                    "trustRoot": att.trust_root if att else None,
                    "failure": att.failure if att else None,
                },
                "balanceNanoton": s.wallet.balance if s.wallet else None,
                "earnedTokens": s.earnings.earned_tokens if s.earnings else None,
                "paused": v.paused_by is not None,
                "creationTimestamp": v.created,
            }
        )
    return out


# ---- describe -------------------------------------------------------------------------


def _fields(pairs: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max(len(k) for k, _ in pairs) + 1
    return [f"{indent}{(k + ':').ljust(width)}  {v}".rstrip() for k, v in pairs]


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]


def _gpu_line(gpu: v1alpha1.GpuSummary | None, mode: v1alpha1.GpuEvidenceMode) -> str:
    """What the operator verified of the GPU itself, or where that check is left."""
    if mode is v1alpha1.GpuEvidenceMode.IN_GUEST:
        return "InGuest: checked by the attested image at boot"
    if gpu is None:
        return "Verify: not verified yet"
    return (
        f"driver {gpu.driver_version or '?'}, VBIOS {gpu.vbios_version or '?'},"
        f" revocation {gpu.revocation or '?'}"
    )


def _section(title: str, body: list[str]) -> list[str]:
    return [f"{title}:", *(body or [f"  {NONE}"])]


def ordered_conditions(conditions: Sequence[v1alpha1.Condition]) -> list[v1alpha1.Condition]:
    """The operator's conditions in their documented order, any others after, by type."""
    rank = {str(t): i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(conditions, key=lambda c: (rank.get(c.type, len(rank)), c.type))


def recent_events(events: Iterable[EventView], limit: int = EVENTS_SHOWN) -> list[EventView]:
    """The newest ``limit`` events, newest first (undated ones last)."""
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(events, key=lambda e: parse_rfc3339(e.time) or epoch, reverse=True)[:limit]


def describe(view: WorkerView, events: Sequence[EventView], now: dt.datetime) -> str:
    """The ``kubectl cocoon describe`` text."""
    spec, status = view.worker.spec, view.status
    lines = _fields(
        [
            ("Name", view.name),
            ("Namespace", view.namespace),
            ("Created", when(view.created, now)),
            ("Phase", status.phase or "-"),
            ("Paused", f"yes ({view.paused_by})" if view.paused_by else "no"),
            ("Network", spec.network.value),
            ("Model", f"{model_short(spec.model)} (verity {short(spec.model.verity_hash)})"),
            ("Release", spec.release.version),
            ("Coefficient", str(spec.coefficient)),
            ("Node", status.node or "-"),
            ("Pod", status.pod or "-"),
            ("GPU", status.gpu or "-"),
            ("Instance", _opt(status.instance)),
        ],
        indent="",
    )

    conds = ordered_conditions(status.conditions)
    cond_rows = (
        [
            c.type,
            c.status.value,
            c.reason,
            age(c.last_transition_time, now),
            _one_line(c.message) or "-",
        ]
        for c in conds
    )
    cond_table = table(("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"), cond_rows)
    lines += _section("Conditions", _indent(cond_table) if conds else [])

    att = status.attestation
    lines += _section(
        "Attestation",
        _fields(
            [
                ("Image hash", att.image_hash or "-"),
                ("MRTD", short(att.mrtd)),
                ("TCB status", att.tcb_status or "-"),
                ("Trust root", att.trust_root or "-"),
                ("Quote", short(att.quote_sha256)),
                ("REPORTDATA", short(att.report_data)),  # SHA-512 of the RA-TLS key
                (
                    "Captured",
                    when(att.quote_captured_at, now) if att.quote_captured_at else "-",
                ),
                ("From pod", att.pod or "-"),
                ("Verified", when(att.verified_at, now) if att.verified_at else "-"),
                ("Expires", when(att.expires_at, now) if att.expires_at else "-"),
                ("GPU", _gpu_line(att.gpu, spec.attestation.gpu.mode)),
                (
                    "Last failure",
                    f"{att.failure}, at {when(att.failed_at, now)}" if att.failure else NONE,
                ),
            ]
        )
        if att is not None
        else [],
    )

    chain = status.chain
    lines += _section(
        "Chain",
        _fields(
            [
                ("Image hash listed", yes_no(chain.image_hash_listed)),
                ("Model hash listed", yes_no(chain.model_hash_listed)),
                ("Model hash", chain.model_hash or "-"),
                ("Read by", chain.source or "-"),
                ("Checked", when(chain.checked_at, now) if chain.checked_at else "-"),
            ]
        )
        if chain is not None
        else [],
    )

    wallet = status.wallet
    lines += _section(
        "Wallet",
        _fields(
            [
                ("Address", wallet.address or "-"),
                (
                    "Balance",
                    "-"
                    if wallet.balance is None
                    else f"{format_ton(wallet.balance)} ({wallet.balance} nanoTON)",
                ),
                ("Funding", wallet.funding or "-"),
                ("Checked", when(wallet.checked_at, now) if wallet.checked_at else "-"),
                (
                    "Bounds",
                    f"minimum {format_ton(spec.funding.minimum)},"
                    f" target {format_ton(spec.funding.target)}",
                ),
            ]
        )
        if wallet is not None
        else [],
    )

    earn = status.earnings
    lines += _section(
        "Earnings",
        _fields(
            [
                ("Earned tokens", str(earn.earned_tokens)),
                ("Paid out tokens", str(earn.paid_out_tokens)),
            ]
        )
        if earn is not None
        else [],
    )

    lines += _section(
        "Revisions",
        _fields(
            [
                ("Current", status.current_revision or "-"),
                ("Target", status.target_revision or "-"),
                (
                    "Observed generation",
                    f"{_opt(status.observed_generation)} (of {_opt(view.generation)})",
                ),
            ]
        ),
    )

    shown = recent_events(events)
    event_rows = (
        [
            age(e.time, now) + (f" (x{e.count})" if e.count > 1 else ""),
            e.type or "-",
            e.reason or "-",
            e.source or "-",
            _one_line(e.message) or "-",
        ]
        for e in shown
    )
    event_table = table(("LAST SEEN", "TYPE", "REASON", "FROM", "MESSAGE"), event_rows)
    lines += _section("Events", _indent(event_table) if shown else [])
    return "\n".join(lines)


def describe_json(view: WorkerView, events: Sequence[EventView]) -> dict[str, Any]:
    """``describe -o json``: the parsed object and its recent events."""
    return {
        "metadata": {
            "namespace": view.namespace,
            "name": view.name,
            "uid": view.uid,
            "generation": view.generation,
            "creationTimestamp": view.created,
            "annotations": dict(view.annotations),
        },
        **view.worker.model_dump(mode="json", by_alias=True, exclude_none=True),
        "events": [
            {
                "type": e.type,
                "reason": e.reason,
                "message": e.message,
                "time": e.time,
                "count": e.count,
                "source": e.source,
            }
            for e in recent_events(events)
        ],
    }


# ---- attest ---------------------------------------------------------------------------


def attest_json(view: WorkerView) -> dict[str, Any]:
    """status.attestation and the Attested condition, as camelCase JSON (nulls kept)."""
    att = view.status.attestation
    cond = view.condition(ConditionType.ATTESTED)
    return {
        "namespace": view.namespace,
        "name": view.name,
        "attestation": att.model_dump(mode="json", by_alias=True) if att is not None else None,
        "condition": cond.model_dump(mode="json", by_alias=True) if cond is not None else None,
    }


# ---- pause / resume -------------------------------------------------------------------


@dataclass(frozen=True)
class PauseChange:
    """What ``pause``/``resume`` does to the annotation: before, after, and the merge patch."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def patch(self) -> dict[str, Any]:
        # In a JSON merge patch, null removes the key.
        return {"metadata": {"annotations": {PAUSE_ANNOTATION: self.after}}}


def pause_change(annotations: Mapping[str, str], *, pause: bool) -> PauseChange:
    """pause sets the annotation to "true"; resume removes it, whatever its value."""
    return PauseChange(annotations.get(PAUSE_ANNOTATION), "true" if pause else None)


def pause_message(view: WorkerView, change: PauseChange, *, pause: bool) -> str:
    """One line saying what changed (or that nothing did), plus a note on spec.paused."""
    ref = f"{RESOURCE}/{view.name} (namespace {view.namespace})"
    verb = "paused" if pause else "resumed"
    if change.changed:
        before = "<unset>" if change.before is None else repr(change.before)
        after = "<unset>" if change.after is None else repr(change.after)
        text = f"{ref} {verb}: annotation {PAUSE_ANNOTATION}: {before} -> {after}"
    else:
        state = f"{PAUSE_ANNOTATION}=true" if pause else f"no {PAUSE_ANNOTATION} annotation"
        text = f"{ref} already {verb} ({state}); nothing changed"
    if not pause and view.worker.spec.paused:
        text += "\nnote: spec.paused is true, so the worker stays paused until it is set to false"
    return text


def pause_json(view: WorkerView, change: PauseChange) -> dict[str, Any]:
    return {
        "namespace": view.namespace,
        "name": view.name,
        "annotation": PAUSE_ANNOTATION,
        "before": change.before,
        "after": change.after,
        "changed": change.changed,
        "specPaused": view.worker.spec.paused,
    }
