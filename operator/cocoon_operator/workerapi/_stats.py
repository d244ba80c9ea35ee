"""What a COCOON worker's HTTP port says about it: ``/jsonstats`` and two rows of ``/stats``.

Every field read here is one COCOON writes; each is cited by file and line of
``runners/`` in COCOON's repository (``WorkerRunner.cpp`` unless named). What
COCOON does *not* write is not read, however useful it would be:

- ``status.enabled`` is the constant ``true`` (WorkerRunner.cpp:688), whatever
  ``/request/disable`` did, so the real state comes from ``/stats`` (below);
- there is no ``active_requests`` in the JSON (the runner counts them in
  ``active_requests_``, WorkerRunner.h:200, and prints them on ``/stats`` only,
  WorkerRunner.cpp:628);
- a proxy's entry (WorkerProxyInfo.cpp:73-87) has no payout count: a payout
  shows as ``running_request`` while it runs and as ``expected_cached_out_tokens``
  jumping to the tokens committed when it was sent (WorkerProxyInfo.h:84-86).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class WorkerStatsError(Exception):
    """The worker answered, but not with what COCOON workers serve."""


class WorkerNotInitialisedError(WorkerStatsError):
    """The runner has not initialised: every path but ``/perf`` answers 400 "not found".

    COCOON registers ``/stats``, ``/jsonstats`` and the ``/request/...``
    controls in ``custom_initialize`` (WorkerRunner.cpp:179-228), which runs
    only once tonlib has synced and the root contract's config was read
    (BaseRunner.cpp:327-331, :351-359); until then the worker's fallback answers every
    path with ``400 not found`` (WorkerRunner.cpp:381-386). Not a failure of
    the worker: it has no proxies, requests or payouts yet.
    """


@dataclass(frozen=True)
class ProxyEarnings:
    """One entry of ``proxies`` (WorkerProxyInfo.cpp:73-87), in tokens."""

    address: str  # proxy_sc_address (:76), what /request/payout?proxy= takes
    inited: bool  # sc_inited (:75): the worker contract is deployed
    committed: int  # earned_tokens_committed_to_blockchain (:79): signed by the proxy
    cashed_out: int  # cached_out_tokens (:82): processed by the worker contract
    # expected_cached_out_tokens (:83): max(cashed_out, what the last payout sent
    # covers) (WorkerProxyInfo.h:56-58); a payout request raises it at once.
    expected_cashed_out: int
    running: bool  # running_request (:84): a payout message is on its way

    @property
    def to_pay_out(self) -> int:
        """COCOON's own ``to_payout()`` (WorkerProxyInfo.h:64-67): what a payout now pays."""
        return max(0, self.committed - self.expected_cashed_out)


@dataclass(frozen=True)
class WorkerStats:
    """What the operator uses of ``/jsonstats`` (token counts, not money)."""

    wallet_address: str  # wallet.address (BaseRunner.cpp:1082)
    image_hash_listed: bool  # status.actual_image_hash (:672-677): the worker's own reading
    model_listed: bool  # status.actual_model (:678-683)
    coefficient: int  # localconfig.coefficient (:714): per-mille, an int32 (WorkerRunner.h:199)
    proxies: tuple[ProxyEarnings, ...] = ()

    @property
    def earned_tokens(self) -> int:
        return sum(p.committed for p in self.proxies)

    @property
    def paid_out_tokens(self) -> int:
        return sum(p.cashed_out for p in self.proxies)

    @property
    def unpaid_tokens(self) -> int:
        """Tokens a payout now would pay: not cashed out, and no payout sent for them."""
        return sum(p.to_pay_out for p in self.proxies)

    @property
    def payout_running(self) -> bool:
        return any(p.running for p in self.proxies)

    def proxy(self, address: str) -> ProxyEarnings | None:
        return next((p for p in self.proxies if p.address == address), None)


def _field(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    # bool is an int in Python; COCOON's integers are never true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WorkerStatsError(f"jsonstats: {where}{key} is missing or not {kind.__name__}")
    return value


def _proxy(doc: Any, index: int) -> ProxyEarnings:
    if not isinstance(doc, dict):
        raise WorkerStatsError(f"jsonstats: proxies[{index}] is not an object")
    where = f"proxies[{index}]."
    return ProxyEarnings(
        address=_field(doc, "proxy_sc_address", str, where),
        inited=_field(doc, "sc_inited", bool, where),
        committed=_field(doc, "earned_tokens_committed_to_blockchain", int, where),
        cashed_out=_field(doc, "cached_out_tokens", int, where),
        expected_cashed_out=_field(doc, "expected_cached_out_tokens", int, where),
        running=_field(doc, "running_request", bool, where),
    )


def parse_stats(doc: Any) -> WorkerStats:
    """The fields above, each required: a document without them is an error, not zeros.

    Served only after ``custom_initialize`` began, which creates the node
    wallet in the same step (WorkerRunner.cpp:230, BaseRunner.cpp:1031), so
    ``wallet`` (written only when the wallet exists, BaseRunner.cpp:1076-1088)
    is always there in a real answer.
    """
    if not isinstance(doc, dict):
        raise WorkerStatsError("jsonstats is not an object")
    status, wallet, local = doc.get("status"), doc.get("wallet"), doc.get("localconfig")
    proxies = doc.get("proxies")
    if (
        not isinstance(status, dict)
        or not isinstance(wallet, dict)
        or not isinstance(local, dict)
        or not isinstance(proxies, list)
    ):
        raise WorkerStatsError("jsonstats lacks status, wallet, localconfig or proxies")
    address = _field(wallet, "address", str, "wallet.")
    if not address:
        raise WorkerStatsError("jsonstats has no wallet address")
    return WorkerStats(
        wallet_address=address,
        image_hash_listed=_field(status, "actual_image_hash", bool, "status."),
        model_listed=_field(status, "actual_model", bool, "status."),
        coefficient=_field(local, "coefficient", int, "localconfig."),
        proxies=tuple(_proxy(p, i) for i, p in enumerate(proxies)),
    )


@dataclass(frozen=True)
class StatusPage:
    """The two facts only ``/stats`` (HTML, ``http_generate_main``) gives; None when the
    page did not show the row as COCOON writes it."""

    enabled: bool | None  # "yes"/"no" of the enabled row (WorkerRunner.cpp:583-589)
    active_requests: int | None  # active_requests_ (WorkerRunner.cpp:628)


# WorkerRunner.cpp:583-589: a green "yes <a ...>disable</a>" or a crimson "no <a ...>enable</a>".
_ENABLED_ROW = re.compile(r"<tr><td>enabled</td><td><span [^>]*>(yes|no) <a ")
# WorkerRunner.cpp:628, an int32 printed in decimal.
_ACTIVE_ROW = re.compile(r"<tr><td>active_requests</td><td>(-?\d{1,10})</td></tr>")


def parse_status_page(page: str) -> StatusPage:
    """The worker's real enabled state and its requests in flight, from ``/stats``.

    ``active_requests_`` goes up when a proxy's request is taken
    (WorkerRunner.cpp:71) and down when its answer or error has gone
    (WorkerRunner.h:97-99, from WorkerRunningRequest.cpp:318): the exact count
    the drain waits on. ``/jsonstats`` has no equivalent: its request counters
    (``stats.queries``/``success``/``failed``) count a failed request twice
    (WorkerRunningRequest.cpp:165 and :313) and are printed with six
    significant digits (``std::stringstream`` defaults, via
    SimpleJsonSerializer.hpp:79-81), so their difference is no count.
    """
    enabled = _ENABLED_ROW.search(page)
    active = _ACTIVE_ROW.search(page)
    return StatusPage(
        enabled=None if enabled is None else enabled[1] == "yes",
        active_requests=None if active is None else int(active[1]),
    )
