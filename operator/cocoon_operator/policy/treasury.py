"""The operator's own limits on what a worker may get from its money (pure).

A CocoonWorker's author writes its spec and, with status rights, its status;
neither is trusted with the treasury or the root owner's key. Everything here
comes from the operator's configuration (``cocoon-operator run`` flags, set
from the chart's values by whoever installs the operator), and each function
takes what the operator itself observed or verified, never a worker's status:

- funding: a per-worker target cap, a per-worker (and so per-wallet) daily cap
  and a per-namespace daily cap, with per-namespace overrides
  (:class:`FundingLimits`); the namespace cap is enforced in the treasury's
  planner against its durable ledger (:func:`cocoon_operator.funding.plan_topups`);
- funding before a VM starts, in the namespaces the operator names
  (:attr:`FundingLimits.before_start`): up to COCOON's start floor only
  (:func:`start_funding_bounds`), within the same caps;
- attestation: the TCB statuses the treasury pays for, whatever a worker's own
  ``acceptedTcbStatuses`` lets through (:func:`tcb_refusal`);
- registration on a root the operator owns: which namespaces and image hashes
  may be registered, and the owner wallet's daily spending
  (:class:`RegistrationPolicy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR, NANO_PER_TON, Funding, TcbStatus

# Finite defaults (the chart's too). The spec's defaults (target 10 TON,
# minimum 5 TON) fit within them; COCOON's runner needs 2.1 TON to start and
# warns below 5 (BaseRunner.cpp, see api/v1alpha1.py).
MAX_TARGET_DEFAULT = 20 * NANO_PER_TON
WORKER_DAILY_CAP_DEFAULT = 20 * NANO_PER_TON
NAMESPACE_DAILY_CAP_DEFAULT = 100 * NANO_PER_TON

# COCOON's own quote check accepts only SGX_QL_QV_RESULT_OK, i.e. UpToDate
# (tee/cocoon/tdx.cpp:882-885, validate_quote): a proxy refuses a worker whose
# TCB is anything else (SWHardeningNeeded included), so the treasury pays for
# UpToDate only unless its operator says otherwise.
TREASURY_TCB_DEFAULT: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE})

# 0.05 TON per owner command (handlers/registration.py COMMAND_NANOTON): 1 TON
# a day is 20 registrations.
REGISTRATION_DAILY_CAP_DEFAULT = 1 * NANO_PER_TON


class PolicyCode(StrEnum):
    """Stable reasons (the WalletFunded condition's, Events') naming an operator limit."""

    FUNDING_LIMITED = "FundingLimited"  # a cap of the operator's config held it back or cut it
    SHARED_WALLET = "SharedWallet"  # another worker's wallet: topped up for that one
    TCB_NOT_FUNDED = "TcbNotFunded"  # attested, but not at a TCB status the treasury pays for
    REGISTRATION_REFUSED = "RegistrationRefused"


@dataclass(frozen=True)
class NamespaceLimits:
    """The funding limits for one namespace, in nanoTON."""

    max_target: int = MAX_TARGET_DEFAULT
    worker_daily_cap: int = WORKER_DAILY_CAP_DEFAULT
    namespace_daily_cap: int = NAMESPACE_DAILY_CAP_DEFAULT


# ``FundingLimits.before_start`` naming every namespace.
ALL_NAMESPACES = "*"


@dataclass(frozen=True)
class FundingLimits:
    """``default`` for every namespace, ``namespaces`` for those set otherwise.

    ``before_start``: the namespaces whose workers' node wallets the operator
    funds up to COCOON's start floor before their VMs start (``*``: all); none
    by default. Whoever holds a node wallet key can spend what its wallet
    holds, and before the VM starts nothing is attested: opting a namespace in
    trusts its tenants with up to the floor per worker and day (within the
    daily caps), in exchange for runners that never sit waiting for funds.
    """

    default: NamespaceLimits = NamespaceLimits()
    namespaces: Mapping[str, NamespaceLimits] = field(default_factory=dict)
    before_start: frozenset[str] = frozenset()

    def of(self, namespace: str) -> NamespaceLimits:
        return self.namespaces.get(namespace, self.default)

    def funds_before_start(self, namespace: str) -> bool:
        """Whether workers of ``namespace`` get their start floor before their VM starts."""
        return ALL_NAMESPACES in self.before_start or namespace in self.before_start

    def namespace_daily_cap(self, namespace: str) -> int:
        return self.of(namespace).namespace_daily_cap


@dataclass(frozen=True)
class Bounds:
    """What a worker is topped up to and may get per day, after the operator's limits."""

    target: int
    daily_cap: int
    capped: str | None = None  # which spec value the operator's limits lowered, and to what


def _ton(nano: int) -> str:
    return f"{nano / NANO_PER_TON:g} TON"


def funding_bounds(spec: Funding, namespace: str, limits: FundingLimits) -> Bounds:
    """The spec's target and daily cap, each lowered to the operator's limit for
    ``namespace``. A target above the limit is funded up to the limit, not
    refused: the worker still runs (COCOON's runner needs 2.1 TON, the minimum
    at least that), and the condition says which limit applied."""
    own = limits.of(namespace)
    target = min(spec.target, own.max_target)
    daily = own.worker_daily_cap
    if spec.daily_cap is not None:
        daily = min(spec.daily_cap, own.worker_daily_cap)
    notes = []
    if target < spec.target:
        notes.append(
            f"spec.funding.target {_ton(spec.target)} capped at the operator's"
            f" {_ton(own.max_target)} (--funding-max-target)"
        )
    if spec.daily_cap is not None and daily < spec.daily_cap:
        notes.append(
            f"spec.funding.dailyCap {_ton(spec.daily_cap)} capped at the operator's"
            f" {_ton(own.worker_daily_cap)} (--funding-worker-daily-cap)"
        )
    return Bounds(target, daily, "; ".join(notes) or None)


# What a top-up before start adds to COCOON's start floor: an account pays its storage
# fee at each transaction, an uninitialised node wallet included (on the local chain,
# a nanoTON on a later credit), and COCOON's runner wants balance >= 2.1 TON exactly
# (BaseRunner.cpp:1045). A wallet topped up to the floor and no more could drop a
# nanoTON under it at its next credit and be topped up again for a nanoTON, paying
# a transfer fee each time; 0.001 TON covers such fees for years.
START_FUNDING_MARGIN = 1_000_000


def start_funding_bounds(spec: Funding, namespace: str, limits: FundingLimits) -> Bounds:
    """What a worker's node wallet is topped up to before its VM starts: COCOON's start
    floor (the runner waits for 2.1 TON before anything else,
    ``BaseRunner::min_wallet_balance()``, runners/BaseRunner.hpp:335-337, passed at
    runners/worker/WorkerRunner.cpp:230-231) and :data:`START_FUNDING_MARGIN`, no
    more; never above the operator's target cap; within the same per-worker daily cap
    as the top-up to the target after attestation: both are counted against one
    worker and one wallet in the treasury's ledger. Nothing is attested yet, so
    nothing more is paid."""
    bounds = funding_bounds(spec, namespace, limits)
    target = min(FUNDING_FLOOR + START_FUNDING_MARGIN, bounds.target)
    capped = None
    if target < FUNDING_FLOOR:
        capped = (
            f"the start floor {_ton(FUNDING_FLOOR)} is above the operator's"
            f" {_ton(bounds.target)} (--funding-max-target)"
        )
    return Bounds(target, bounds.daily_cap, capped)


def tcb_refusal(tcb_status: str, accepted: frozenset[TcbStatus]) -> str | None:
    """Why the treasury (and the root owner's key) does nothing for a worker whose
    evidence this operator verified at ``tcb_status``; None when it may.

    ``tcb_status`` comes from this operator's own memory of its last verification
    of the worker's current pod (``LastVerification``), never from the status. A
    worker's ``acceptedTcbStatuses`` decides whether it runs and is Attested, not
    whether the operator's money or key works for it.
    """
    if tcb_status in {s.value for s in accepted}:
        return None
    allowed = ", ".join(sorted(s.value for s in accepted)) or "none"
    return (
        f"attested at TCB {tcb_status or 'unknown'}, which the operator's treasury does not"
        f" accept (--treasury-tcb-status: {allowed})"
    )


@dataclass(frozen=True)
class RegistrationPolicy:
    """Which workers may have hashes registered with the root owner's key, and how much
    the owner wallet may spend per UTC day (nanoTON, pending messages included).

    Empty ``namespaces`` or ``image_hashes``: nothing of that kind is allowed.
    """

    namespaces: frozenset[str] = frozenset()
    image_hashes: frozenset[str] = frozenset()  # lower-case hex
    daily_cap: int = REGISTRATION_DAILY_CAP_DEFAULT


def registration_refusal(
    policy: RegistrationPolicy, namespace: str, needed: list[tuple[str, str]]
) -> str | None:
    """Why the hashes ``needed`` (``(list, hex)``, list ``model`` or ``worker``) of a
    worker in ``namespace`` are not registered; None when they may be."""
    if namespace not in policy.namespaces:
        return (
            f"namespace {namespace} may not register hashes on the root"
            " (the operator's --registration-namespace)"
        )
    images = [h for kind, h in needed if kind == "worker" and h.lower() not in policy.image_hashes]
    if images:
        return (
            f"image hash {images[0]} is not one the operator may register"
            " (--registration-image-hash)"
        )
    return None


def owner_cap_refusal(spent_today: int, asking: int, daily_cap: int) -> str | None:
    """Why the root owner's wallet sends nothing now: ``asking`` more nanoTON would take
    today's total (``spent_today``, pending included) past ``daily_cap``."""
    if spent_today + asking > daily_cap:
        return (
            f"the root owner's daily cap ({_ton(daily_cap)}, --registration-daily-cap) would"
            f" be passed: {_ton(spent_today)} spent today, {_ton(asking)} more asked"
        )
    return None
