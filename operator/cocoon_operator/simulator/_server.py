"""The worker simulator: COCOON's worker HTTP port on loopback, and an RA-TLS stand-in.

Two listeners:

- the worker's port (``12000 + 10*i``, plain HTTP): what a COCOON worker's
  runner serves there, path for path and field for field, each behaviour
  citing COCOON's source (``runners/``; WorkerRunner.cpp unless named), plus
  the harness's own paths under :data:`_HARNESS_PREFIXES` (admin and a PCCS
  stand-in), which no COCOON path shares and no fault touches;
- the RA-TLS stand-in (``tls_port``): a TLS listener presenting the RA-TLS
  certificate, with the GPU evidence path. A real worker has no such port;
  it stays only until the attestation step's quote relay replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote as urlquote

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon_operator.attestation import Collateral, TrustedRoot, model_hash
from cocoon_operator.attestation.testing.gpu import (
    DEFAULT_GPU_SEED,
    GpuMeasurements,
    GpuTestPki,
    build_gpu_evidence,
    generate_test_gpu_pki,
)
from cocoon_operator.attestation.testing.pki import DEFAULT_SEED, DcapTestPki, generate_test_pki
from cocoon_operator.attestation.testing.quotes import TdMeasurements
from cocoon_operator.simulator._evidence import (
    RaTlsEvidence,
    TlsIdentity,
    make_evidence,
    private_key_pem,
)
from cocoon_operator.simulator._state import (
    NANO,
    LoadModel,
    ProxyState,
    WorkerState,
    derived_address,
)
from cocoon_operator.ton.client import TonClient
from cocoon_operator.ton.cocoonwallet import node_wallet_address_of_key
from cocoon_operator.ton.errors import TonError

# COCOON's runner waits for this much on its node wallet (BaseRunner.hpp:335-337).
START_FLOOR_NANO = 2_100_000_000

log = logging.getLogger(__name__)

# The line logged for each payout request, and its reader (:func:`payout_requests`).
PAYOUT_LOG = "payout of %s from proxy %s: %s"
_PAYOUT_LINE = re.compile(r"payout of (?P<name>\S+) from proxy (?P<proxy>\S+): (?P<answer>.*)$")


def payout_requests(log_text: str) -> dict[tuple[str, str], list[str]]:
    """Every payout request a log of simulators records, by (``SimulatorConfig.name``,
    proxy): the answers in order ("request sent" is a payout made, and paid for)."""
    out: dict[tuple[str, str], list[str]] = {}
    for line in log_text.splitlines():
        found = _PAYOUT_LINE.search(line)
        if found:
            out.setdefault((found["name"], found["proxy"]), []).append(found["answer"])
    return out


DEFAULT_MODEL = "Qwen/Qwen3-0.6B@c1899de289a04d12100db370d81485cdf75e47ca:" + "5e" * 32
DEFAULT_RELEASE = "cocoon-simulator-release"
BASE_PORT = 12000

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The harness's paths on the worker's port (no COCOON path starts so): the
# PCCS-compatible collateral service and the simulator's admin endpoints. They
# stay well-behaved whatever faults are set, and are not the worker's.
_HARNESS_PREFIXES = ("/sgx/", "/tdx/", "/simulator/")

# What /jsonstats reports for git_commit / git_commit_data (GitMetadata, :689-690).
SIMULATED_GIT_COMMIT = "0" * 40
SIMULATED_GIT_DATE = "simulator"
# /perf is td's actor statistics as text/plain (BaseRunner.cpp:695-699): not modelled.
_PERF_TEXT = "cocoon worker simulator: actor statistics are not simulated\n"


def worker_http_port(instance: int) -> int:
    """COCOON's host HTTP port for worker instance ``instance`` (12000 + 10 * i)."""
    return BASE_PORT + 10 * instance


@dataclass(frozen=True)
class Faults:
    """Ways to misbehave, for fault tests. All off by default; change them at run time."""

    tampered_evidence: bool = False  # one bit of the quote flipped: its signature fails
    wrong_model: bool = False  # reports another model; status.actual_model is false
    hang: bool = False  # worker endpoints never answer (the TLS handshake still completes)
    garbage_json: bool = False  # /jsonstats answers with broken JSON
    # The runner has not initialised: every worker path but /perf answers 400
    # "not found" (WorkerRunner.cpp:381-386), as before custom_initialize ran.
    not_initialised: bool = False
    # The RA-TLS port accepts connections and never completes a TLS handshake.
    ratls_hang: bool = False
    # The RA-TLS certificate carries garbage where the quote belongs.
    garbage_evidence: bool = False
    # The RA-TLS certificate's key is not the one the quote's REPORTDATA binds.
    foreign_key: bool = False
    # The GPU evidence (/attestation/gpu) has one signed byte flipped.
    gpu_tampered: bool = False
    # /jsonstats names a wallet other than the one its key and owner give.
    other_wallet: bool = False
    # The guest stopped refreshing: its latest relayed quote is two days old.
    stale_quote: bool = False
    # The node report files this VM's quote under another pod's uid.
    misfiled_quote: bool = False
    # The guest's health monitor reports another RTMR3 (and image hash) than its quotes.
    health_mismatch: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def active(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]


def _wallet_address(cfg: SimulatorConfig, owner: str) -> str:
    if cfg.node_wallet_key is not None:
        return node_wallet_address_of_key(cfg.node_wallet_key, owner).to_friendly(bounceable=False)
    return derived_address("node-wallet", cfg.wallet_label or owner, cfg.instance)


def _check_loopback(host: str) -> None:
    # An IP literal, not a name: "localhost" may bind two sockets with two ports.
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the simulator listens on a loopback IP address only (127.0.0.1, ::1), not {host!r}"
        )


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate. Ports 0 pick free ports (the in-process default)."""

    instance: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int = 0
    model: str = DEFAULT_MODEL
    owner_address: str | None = None
    root_contract_address: str | None = None
    # Names the node wallet when no key is given (a stand-alone simulator); default:
    # owner + instance.
    wallet_label: str | None = None
    # The guest's node_wallet_key: its wallet is then COCOON's CocoonWallet address for
    # the key and owner (BaseRunner.cpp derives it so; ton/cocoonwallet.py), the one the
    # operator funds.
    node_wallet_key: str | None = None
    measurements: TdMeasurements = field(
        default_factory=lambda: TdMeasurements.from_label(DEFAULT_RELEASE)
    )
    coefficient: int = 1000  # per-mille price multiplier
    enabled: bool = True
    proxies: int = 2
    wallet_balance_nano: int = 5_500_000_000
    # A TON API (the local chain's) on which the runner waits for its node wallet to
    # hold 2.1 TON before it initialises, as COCOON's runner does
    # (BaseRunner::cocoon_wallet_check_balance, runners/BaseRunner.cpp:1037-1054, with
    # min_wallet_balance() 2.1 TON, runners/BaseRunner.hpp:335-337): until then every
    # worker path answers 400 "not found" (WorkerRunner.cpp:381-386). None: the wallet
    # is taken as holding ``wallet_balance_nano`` from the start.
    ton_endpoint: str | None = None
    load: LoadModel = field(default_factory=LoadModel)
    image_listed: bool = True  # what the simulated root contract says about our image hash
    model_listed: bool = True  # ... and about our model hash
    ton_lag_seconds: float = 3.0
    ratls_validity: timedelta = timedelta(days=1)
    rotate_every: timedelta | None = None  # COCOON refreshes its RA-TLS key hourly
    quote_version: int = 4
    faults: Faults = field(default_factory=Faults)
    name: str = ""  # what the log calls this worker (the agent: namespace/pod/uid)
    # Where the worker's port listens when not on ``host``: the agent puts it where
    # the launcher's loopback forward is (launcher/_plan.py, difference 5), and the
    # launcher's control relay on ``host`` in front of it.
    worker_host: str | None = None
    # A listener of the harness's paths alone (admin, PCCS, and the worker's
    # documents read without faults: /simulator/jsonstats, /simulator/stats) on
    # ``host``: how tests reach a simulator whose worker port is not published,
    # as a person would with ``kubectl exec`` into the launcher pod.
    harness_port: int | None = None

    def __post_init__(self) -> None:
        _check_loopback(self.host)
        if self.worker_host is not None:
            _check_loopback(self.worker_host)
        if not 0 <= self.instance <= 9:
            raise ValueError("a COCOON worker instance is 0..9")
        if self.proxies < 0 or self.wallet_balance_nano < 0 or self.coefficient < 0:
            raise ValueError("proxies, wallet balance and coefficient must be >= 0")
        model_hash(self.model)  # validates Name@commit:verity
        if self.quote_version not in (4, 5):
            raise ValueError("quote_version is 4 or 5")


def _text(body: str) -> web.Response:
    # http_send_static_answer's default type (BaseRunner.hpp:612-616).
    return web.Response(text=body, content_type="text/html", charset="utf-8")


def _short_answer(message: str) -> web.Response:
    """``wrap_short_answer_to_http`` (WorkerRunner.h:184-192), tags in COCOON's order;
    the message goes out unescaped, as there."""
    return _text(
        "<!DOCTYPE html>\n<html><body>\n"
        f"{message}<br/>\n"
        '<a href="/stats">return to stats</a>\n</html></body>\n'
    )


def _get_args(raw_query: str) -> dict[str, str]:
    """``http_parse_url``'s arguments (BaseRunner.cpp:758-790): split on ``&`` and the
    first ``=``, nothing percent-decoded, the first of a repeated name kept (emplace)."""
    args: dict[str, str] = {}
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        args.setdefault(name, value)
    return args


_C_DECIMAL = re.compile(
    r"[ \t\n\v\f\r]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)",
    re.IGNORECASE,
)


def _strtod(text: str) -> float | None:
    """What ``strtod`` makes of ``text`` when it takes all of it, else None
    (WorkerRunner.h:174-178 refuses a value with anything left over). As in C,
    an empty string is taken whole, as 0. Hexadecimal floats are not simulated."""
    if text == "":
        return 0.0
    if not _C_DECIMAL.fullmatch(text):
        return None
    return float(text.lstrip(" \t\n\v\f\r"))


def _cpp_double(value: float) -> str:
    """A double as ``td::StringBuilder`` prints it: a default ``std::stringstream``,
    six significant digits (tdutils StringBuilder.cpp, ``operator<<(double)``)."""
    if math.isnan(value):
        return "nan" if math.copysign(1.0, value) > 0 else "-nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _simple_json(value: Any, indent: int = 0) -> str:
    """``SimpleJsonSerializer``'s text (runners/helpers/SimpleJsonSerializer.hpp): an
    element per line, two-space indent, integers exact, doubles in six digits."""
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {_simple_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}" if items else "{\n}"
    if isinstance(value, list):
        items = [pad + _simple_json(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]" if items else "[\n]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _cpp_double(value)
    if isinstance(value, int):
        return str(value)
    # add_value(td::Slice) writes the bytes between quotes, unescaped (:87-89).
    return f'"{value}"'


def _instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class WorkerSimulator:
    """A COCOON worker look-alike: HTTP endpoints, an RA-TLS listener and a PCCS stand-in.

    Build it, then ``await start()`` (or use :func:`start_simulator` / ``async with``).
    Its quotes are signed by a test DCAP PKI (``pki``; generated from
    :data:`DEFAULT_SEED` at the start of the current UTC day if not given) and
    verify only against ``pki.trusted_root`` selected explicitly.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        pki: DcapTestPki | None = None,
        gpu_pki: GpuTestPki | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self._clock = clock
        now = clock()
        day = _instant(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if pki is None:
            pki = generate_test_pki(now=day, seed=DEFAULT_SEED)
        self.pki = pki
        self._gpu_pki = gpu_pki
        self._day = day
        self.faults = self.config.faults
        cfg = self.config
        owner = cfg.owner_address or derived_address("owner", cfg.instance)
        self.owner_address = owner
        self.root_contract_address = cfg.root_contract_address or derived_address("root")
        self.state = WorkerState(
            model=cfg.load,
            wallet_address=_wallet_address(cfg, owner),
            wallet_balance=cfg.wallet_balance_nano,
            coefficient=cfg.coefficient,
            enabled=cfg.enabled,
            proxies=[
                ProxyState(
                    proxy_sc_address=derived_address("proxy-sc", i),
                    worker_sc_address=derived_address("worker-sc", owner, cfg.instance, i),
                    proxy_public_key=hashlib.sha256(f"proxy-key-{i}".encode()).hexdigest(),
                )
                for i in range(cfg.proxies)
            ],
            started_at=now,
        )
        self.evidence = self._new_evidence(generation=1)
        self._foreign_key = Ed25519PrivateKey.generate()  # for the foreign_key fault
        self._tls = TlsIdentity()
        self._install_certificate()
        self._runner: web.AppRunner | None = None
        self._ratls_runner: web.AppRunner | None = None  # the stand-in's own app
        self._http_port = 0
        self._tls_port = 0
        self._harness_port = 0
        self._harness_runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self._rotation_task: asyncio.Task[None] | None = None
        # Waiting for the node wallet's 2.1 TON on the chain (config.ton_endpoint).
        self.awaiting_funds = self.config.ton_endpoint is not None
        self._funds_task: asyncio.Task[None] | None = None
        # The RA-TLS listener: the TLS site, or (ratls_hang) a plain server holding sockets.
        self._tls_site: web.TCPSite | None = None
        self._hang_server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()
        self._listener_lock = asyncio.Lock()
        self._listener_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ evidence

    def _new_evidence(self, generation: int) -> RaTlsEvidence:
        return make_evidence(
            self.pki,
            self.config.measurements,
            now=_instant(self._clock()),
            generation=generation,
            validity=self.config.ratls_validity,
            quote_version=self.config.quote_version,
        )

    def _install_certificate(self) -> None:
        key = self._foreign_key if self.faults.foreign_key else self.evidence.private_key
        self._tls.install(self.certificate_pem, private_key_pem(key))

    @property
    def certificate_pem(self) -> bytes:
        """The RA-TLS certificate as served now (with the evidence faults that are on)."""
        return self.evidence.certificate_pem(
            tampered=self.faults.tampered_evidence,
            garbage=self.faults.garbage_evidence,
            signer=self._foreign_key if self.faults.foreign_key else None,
        )

    def relayed_quote(self) -> tuple[bytes, datetime]:
        """The latest quote the guest obtained through the host's quote relay, and when
        (with the evidence faults that are on)."""
        quote = self.evidence.relayed_quote(
            tampered=self.faults.tampered_evidence, garbage=self.faults.garbage_evidence
        )
        at = self.evidence.captured_at or self.evidence.not_before
        return quote, at - timedelta(days=2) if self.faults.stale_quote else at

    def rotate_certificate(self) -> RaTlsEvidence:
        """A new Ed25519 key, quote and certificate; new TLS handshakes present it."""
        self.evidence = self._new_evidence(generation=self.evidence.generation + 1)
        self._install_certificate()
        log.info("RA-TLS certificate rotated (generation %d)", self.evidence.generation)
        return self.evidence

    def set_faults(self, **changes: bool) -> Faults:
        """Turn faults on or off by name, e.g. ``set_faults(hang=True)``."""
        unknown = set(changes) - set(Faults.names())
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        before = self.faults
        self.faults = dataclasses.replace(self.faults, **changes)
        evidence = ("tampered_evidence", "garbage_evidence", "foreign_key")
        if any(getattr(before, f) != getattr(self.faults, f) for f in evidence):
            self._install_certificate()
        if not self.faults.hang:
            self._release.set()
            self._release = asyncio.Event()
        if before.ratls_hang != self.faults.ratls_hang and self._runner is not None:
            # Swapping listeners is I/O: done in the loop; await faults_applied().
            self._listener_task = asyncio.get_running_loop().create_task(self._sync_listener())
        return self.faults

    async def faults_applied(self) -> None:
        """Wait until the RA-TLS listener matches the ``ratls_hang`` fault."""
        if self._listener_task is not None:
            await self._listener_task

    async def _sync_listener(self) -> None:
        async with self._listener_lock:
            runner = self._ratls_runner
            if runner is None:
                return
            if self.faults.ratls_hang and self._hang_server is None:
                if self._tls_site is not None:
                    await self._tls_site.stop()
                    self._tls_site = None
                self._hang_server = await asyncio.start_server(
                    self._hold, self.host, self._tls_port
                )
            elif not self.faults.ratls_hang and self._hang_server is not None:
                await self._close_hang_server()
                await self._start_tls_site(runner, self._tls_port)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept, read whatever comes (a ClientHello), never answer."""
        self._held.add(writer)
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            self._held.discard(writer)
            writer.close()

    async def _close_hang_server(self) -> None:
        server, self._hang_server = self._hang_server, None
        if server is None:
            return
        server.close()
        for writer in list(self._held):
            writer.close()
        await server.wait_closed()

    async def _start_tls_site(self, runner: web.AppRunner, port: int) -> int:
        site = web.TCPSite(runner, self.host, port, ssl_context=self._tls.context)
        await site.start()
        self._tls_site = site
        return _last_bound_port(runner)

    # ------------------------------------------------------------------ identity facts

    @property
    def trusted_root(self) -> TrustedRoot:
        """The test root its quotes chain to (``production`` is False)."""
        return self.pki.trusted_root

    @property
    def collateral(self) -> Collateral:
        return self.pki.collateral

    @property
    def image_hash(self) -> bytes:
        return self.config.measurements.image_hash

    @property
    def reported_model(self) -> str:
        model = self.config.model
        if not self.faults.wrong_model:
            return model
        name, _, rest = model.partition("@")
        return f"{name}-wrong@{rest}"

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def tls_port(self) -> int:
        return self._tls_port

    @property
    def harness_port(self) -> int:
        """The harness-only listener's port on ``host`` (0: none)."""
        return self._harness_port

    @property
    def worker_host(self) -> str:
        """Where the worker's port listens."""
        return self.config.worker_host or self.host

    @property
    def http_url(self) -> str:
        host = self.worker_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._http_port}"

    @property
    def tls_url(self) -> str:
        return f"https://{self._url_host}:{self._tls_port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    # ------------------------------------------------------------------ documents
    #
    # What COCOON's worker writes on its HTTP port, field for field; runners/
    # paths in COCOON's repository, WorkerRunner.cpp unless named.

    def _counter(self, total: float, windows: list[float], scale: float = 1.0) -> list[float]:
        """An ``AmortCounterList`` as ``to_jb`` writes it: the total, then the 1s .. 1d
        rates (runners/helpers/AmortCounter.h:80-91)."""
        return [total * scale, *(w * scale for w in windows)]

    def jsonstats(self) -> dict[str, Any]:
        """The document ``GET /jsonstats`` serves: ``http_generate_json_stats`` (:663-730)."""
        now = self._clock()
        st = self.state
        in_flight = st.in_flight(now)
        windows = st.window_counts(now)
        per_request = st.model.tokens_per_request
        adjusted = per_request * st.coefficient / 1000
        completed = st.completed
        running = sum(1 for p in st.proxies if p.payout_running_until is not None)
        zeros = [0.0] * len(windows)
        return {
            "status": {  # :667-690
                "wallet_balance": st.wallet_balance,
                "actual_image_hash": self.config.image_listed,
                "actual_model": self.config.model_listed and not self.faults.wrong_model,
                "ton_last_synced_at": int(now - self.config.ton_lag_seconds),
                "enabled": True,  # a constant in COCOON (:688), whatever /request/disable did
                "git_commit": SIMULATED_GIT_COMMIT,
                "git_commit_data": SIMULATED_GIT_DATE,
            },
            "stats": {  # :692-704; received counts on arrival, success/failed on the end
                "queries": self._counter(completed + in_flight + st.failed, windows),
                "success": self._counter(completed, windows),
                "failed": self._counter(st.failed, zeros),
                "bytes_received": self._counter(completed, windows, 2048.0),
                "bytes_sent": self._counter(completed, windows, 4096.0),
                "time": self._counter(completed, windows, 0.8),
                "total_adjusted_tokens_used": self._counter(completed, windows, adjusted),
                "prompt_adjusted_tokens_used": self._counter(completed, windows, adjusted / 3),
                "cached_adjusted_tokens_used": self._counter(0.0, zeros),
                "completion_adjusted_tokens_used": self._counter(
                    completed, windows, adjusted * 2 / 3
                ),
                "reasoning_adjusted_tokens_used": self._counter(0.0, zeros),
            },
            "wallet": {  # BaseRunner.cpp:1076-1088
                "address": (
                    derived_address("another-wallet", st.wallet_address)
                    if self.faults.other_wallet
                    else st.wallet_address
                ),
                "balance": st.wallet_balance,
                "seqno": st.wallet_seqno,
                "pending_transactions_cnt": running,
                "active_transactions_cnt": running,
            },
            "localconfig": {  # :708-717
                "root_address": self.root_contract_address,
                "owner_address": self.owner_address,
                "model": self.reported_model,
                "coefficient": st.coefficient,  # the int32 per mille (WorkerRunner.h:199)
                "check_proxy_hash": True,
            },
            # store_root_contract_stat (:718, RootContractConfig.cpp:651-) is not
            # simulated: the simulator has no root contract config to show.
            "proxies": [  # WorkerProxyInfo.cpp:73-87, nothing more (no payout count)
                {
                    "sc_inited": True,
                    "proxy_sc_address": p.proxy_sc_address,
                    "proxy_public_key": p.proxy_public_key,
                    "sc_address": p.worker_sc_address,
                    "earned_tokens_committed_to_blockchain": p.committed_to_blockchain,
                    "earned_tokens_committed_to_proxy_db": p.earned_tokens,
                    "earned_tokens_max_known": p.earned_tokens,
                    "cached_out_tokens": p.cashed_out,
                    "expected_cached_out_tokens": p.expected_cashed_out,
                    "running_request": p.payout_running_until is not None,
                    "params_version": 1,
                }
                for p in st.proxies
            ],
        }

    def harness_facts(self) -> dict[str, Any]:
        """What the harness (``/simulator/state``) shows and no COCOON worker reports."""
        now = self._clock()
        return {
            "instance": self.config.instance,
            "image_hash": self.image_hash.hex(),
            "model": self.config.model,
            "model_hash": model_hash(self.config.model).hex(),
            "ratls_public_key": self.evidence.public_key.hex(),
            "certificate_generation": self.evidence.generation,
            "payouts": self.state.payouts,
            "faults": self.faults.active(),
            "http_port": self._http_port,
            "tls_port": self._tls_port,
            "harness_port": self._harness_port,
            "enabled": self.state.enabled,
            "active_requests": self.state.in_flight(now),
            "initialised": not (self.faults.not_initialised or self.awaiting_funds),
        }

    def stats_html(self) -> str:
        """``GET /stats``: ``http_generate_main`` (:521-661), its rows as COCOON writes
        them; the tables the operator does not read are left out."""
        now = self._clock()
        st = self.state
        in_flight = st.in_flight(now)
        doc = self.jsonstats()
        # :530-539: below 2.1 TON "too low", below 5 TON "low".
        balance = st.wallet_balance
        if balance < 2_100_000_000:
            wallet = '<span style="background-color:Crimson;">balance too low on '
        elif balance < 5 * NANO:
            wallet = '<span style="background-color:Gold;">balance low on '
        else:
            wallet = '<span style="background-color:Green;">balance ok on '
        if st.enabled:  # :583-589: is_force_disabled_, the state /jsonstats does not show
            enabled = (
                '<span style="background-color:Green;">yes '
                '<a href="/request/disable">disable</a></span>'
            )
        else:
            enabled = (
                '<span style="background-color:Crimson;">no '
                '<a href="/request/enable">enable</a></span>'
            )
        parts = [
            "<!DOCTYPE html>\n<html><body>\n<h1>STATUS</h1>\n<table>\n",
            f"<tr><td>wallet</td><td>{wallet}{st.wallet_address}</span></td></tr>\n",
            f"<tr><td>enabled</td><td>{enabled}</td></tr>\n",
            "</table>\n<h1>LOCAL CONFIG</h1>\n<table>\n",
            f"<tr><td>model</td><td>{doc['localconfig']['model']}</td></tr>\n",
            # :625-626: the per-mille int times 0.001, printed as a C++ stream prints doubles.
            f"<tr><td>coefficient</td><td>{_cpp_double(st.coefficient * 0.001)}"
            ' <a href="/request/change_coefficient">change</a></td></tr>\n',
            f"<tr><td>max_active_requests</td><td>{st.model.max_active_requests}</td></tr>\n",
            f"<tr><td>active_requests</td><td>{in_flight}</td></tr>\n",  # :628
            "</table>\n<h1>PROXIES</h1>\n",
        ]
        for proxy in doc["proxies"]:  # :652-657, WorkerProxyInfo.cpp:47-71
            address = proxy["proxy_sc_address"]
            owed = max(
                0,
                proxy["earned_tokens_committed_to_blockchain"]
                - proxy["expected_cached_out_tokens"],
            )
            take = f' <a href="/request/payout?proxy={address}">take now</a>' if owed else ""
            parts.append(
                f"<h2>PROXY {address}</h2>\n<table>\n"
                f"<tr><td>tokens cashed out</td><td>{proxy['cached_out_tokens']}</td></tr>\n"
                f"<tr><td>gained</td><td>{owed}{take}</td></tr>\n"
                "<tr><td>running request</td><td>"
                f"{'YES' if proxy['running_request'] else 'NO'}</td></tr>\n</table>\n"
            )
        parts.append("</body></html>\n")
        return "".join(parts)

    # ------------------------------------------------------------------ worker HTTP port

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if self.faults.hang and not request.path.startswith(_HARNESS_PREFIXES):
            release = self._release
            await release.wait()
            if self.faults.hang:  # released by stop(), not by clearing the fault
                raise web.HTTPServiceUnavailable(text="simulator stopping")
        return await handler(request)

    async def _worker(self, request: web.Request) -> web.StreamResponse:
        """Every request to the worker's port that is not the harness's.

        COCOON takes the URL's path up to ``?`` and splits the query itself,
        decoding nothing (BaseRunner.cpp:758-790); any method goes. ``/perf`` is
        answered before anything else (BaseRunner.cpp:580-583); the other
        paths exist once ``custom_initialize`` registered them
        (WorkerRunner.cpp:179-228). Before that, and for any other path, the
        worker's fallback answers ``400 not found`` with an empty body
        (WorkerRunner.cpp:381-386; ton's ``http::answer_error``).
        """
        path, args = request.rel_url.raw_path, _get_args(request.rel_url.raw_query_string)
        if path == "/perf":
            return web.Response(text=_PERF_TEXT, content_type="text/plain", charset="utf-8")
        handler = self._worker_paths.get(path)
        if handler is None or self.faults.not_initialised or self.awaiting_funds:
            return web.Response(status=400, reason="not found")
        return await handler(args)

    @property
    def _worker_paths(self) -> dict[str, Callable[[dict[str, str]], Awaitable[web.Response]]]:
        return {
            "/stats": self._stats,
            "/jsonstats": self._jsonstats,
            "/request/payout": self._payout,
            "/request/enable": self._enable,
            "/request/disable": self._disable,
            "/request/change_coefficient": self._change_coefficient,
        }

    async def _jsonstats(self, args: dict[str, str]) -> web.Response:
        if self.faults.garbage_json:
            body = '{"status": {"wallet_balance": 12, "enabled": tru'
        else:
            body = _simple_json(self.jsonstats())
        return web.Response(text=body, content_type="application/json")  # :192

    async def _stats(self, args: dict[str, str]) -> web.Response:
        return _text(self.stats_html())

    async def _enable(self, args: dict[str, str]) -> web.Response:
        self.state.set_enabled(True, self._clock())
        return _short_answer("state updated")  # WorkerRunner.h:168-171

    async def _disable(self, args: dict[str, str]) -> web.Response:
        self.state.set_enabled(False, self._clock())
        return _short_answer("state updated")

    async def _change_coefficient(self, args: dict[str, str]) -> web.Response:
        raw = args.get("coefficient")
        if raw is None:  # :222-227, the form of WorkerRunner.cpp:757-768
            return _text(
                "<!DOCTYPE html>\n<html><body>\nset new coefficient: "
                '<form method="GET" action="/request/change_coefficient">'
                '<input type="text" name="coefficient"><input type="submit" value="Submit">'
                "</form></body></html>\n"
            )
        d = _strtod(raw)
        if d is None:  # WorkerRunner.h:174-178, a 200 like any answer
            return _short_answer(f"failed to parse '{raw}' as double")
        if not -(2**31) <= d * 1000 < 2**31:
            # Undefined behaviour in COCOON's static_cast: refused, never guessed.
            return web.Response(status=400, reason="bad request")
        per_mille = math.trunc(d * 1000)  # WorkerRunner.h:180: the product, truncated
        self.state.set_coefficient(per_mille, self._clock())
        return _short_answer(f"coefficient set to {_cpp_double(per_mille * 0.001)}")  # :182

    async def _payout(self, args: dict[str, str]) -> web.Response:
        proxy = args.get("proxy", "")  # get_args["proxy"]: "" when absent (:200)
        answer = self.state.request_payout(proxy, self._clock())
        # One line per request: the crash tests count the payouts each pod made.
        log.info(PAYOUT_LOG, self.config.name or "worker", proxy, answer)
        return _short_answer(answer)

    # ------------------------------------------------------------------ RA-TLS stand-in
    #
    # STAND-IN, to be removed with the quote relay: a COCOON worker serves no
    # RA-TLS port to its host (scripts/cocoon-launch:293 forwards the HTTP port
    # only; the runner's rpc_ports_ are never set for a worker,
    # BaseRunner.cpp:294-298) and no /attestation/* path anywhere. The
    # attestation step reads its evidence here until the quote relay lands.

    async def _certificate(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.certificate_pem, content_type="application/x-pem-file")

    @property
    def gpu_pki(self) -> GpuTestPki:
        """The simulated GPU's device PKI: the one given, else the day's default, made
        on first use (most simulators are never asked for GPU evidence)."""
        if self._gpu_pki is None:
            self._gpu_pki = generate_test_gpu_pki(DEFAULT_GPU_SEED, now=self._day)
        return self._gpu_pki

    def gpu_evidence(self, nonce: bytes) -> bytes:
        """The simulated GPU's SPDM measurements signed over ``nonce`` (test device PKI)."""
        evidence = build_gpu_evidence(self.gpu_pki, nonce, GpuMeasurements())
        if self.faults.gpu_tampered:
            flipped = bytearray(evidence)
            flipped[-100] ^= 0x01  # inside the signed response, before the signature
            evidence = bytes(flipped)
        return evidence

    async def _gpu(self, request: web.Request) -> web.StreamResponse:
        try:
            nonce = bytes.fromhex(request.query.get("nonce", ""))
        except ValueError:
            nonce = b""
        if len(nonce) != 32:
            raise web.HTTPBadRequest(text="nonce: 64 hex digits (32 bytes) required")
        return web.json_response(
            {
                "evidence": self.gpu_evidence(nonce).hex(),
                "certificateChain": self.gpu_pki.chain_pem.decode(),
            }
        )

    # PCCS / Intel PCS v4 stand-in, so PccsCollateralSource works against the simulator.

    async def _pccs_tcb(self, request: web.Request) -> web.StreamResponse:
        col = self.collateral
        fmspc = request.query.get("fmspc", "").upper()
        if fmspc != self.pki.platform.fmspc_hex:
            raise web.HTTPNotFound(text=f"no TCB info for FMSPC {fmspc}")
        body = f'{{"tcbInfo":{col.tcb_info},"signature":"{col.tcb_info_signature.hex()}"}}'
        return web.Response(
            text=body,
            content_type="application/json",
            headers={"TCB-Info-Issuer-Chain": urlquote(col.tcb_info_issuer_chain, safe="")},
        )

    async def _pccs_qe(self, request: web.Request) -> web.StreamResponse:
        col = self.collateral
        body = (
            f'{{"enclaveIdentity":{col.qe_identity},'
            f'"signature":"{col.qe_identity_signature.hex()}"}}'
        )
        return web.Response(
            text=body,
            content_type="application/json",
            headers={
                "SGX-Enclave-Identity-Issuer-Chain": urlquote(col.qe_identity_issuer_chain, safe="")
            },
        )

    async def _pccs_pckcrl(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ca", "platform").lower() != "platform":
            raise web.HTTPNotFound(text="the test PKI has a platform CA only")
        col = self.collateral
        return web.Response(
            body=col.pck_crl,
            content_type="application/pkix-crl",
            headers={"SGX-PCK-CRL-Issuer-Chain": urlquote(col.pck_crl_issuer_chain, safe="")},
        )

    async def _pccs_rootcrl(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=self.collateral.root_ca_crl.hex(), content_type="text/plain")

    # Admin (never affected by faults).

    async def _admin_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                **self.harness_facts(),
                "faults": dataclasses.asdict(self.faults),
                "trusted_root_sha256": self.trusted_root.fingerprint,
                "fmspc": self.pki.platform.fmspc_hex,
            }
        )

    async def _admin_fault(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("name", "")
        value = request.query.get("enabled", "true").lower() in ("1", "true", "yes", "on")
        try:
            faults = self.set_faults(**{name: value})
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        await self.faults_applied()
        return web.json_response({"faults": dataclasses.asdict(faults)})

    async def _admin_rotate(self, request: web.Request) -> web.StreamResponse:
        evidence = self.rotate_certificate()
        return web.json_response(
            {"certificate_generation": evidence.generation, "public_key": evidence.public_key.hex()}
        )

    async def _admin_wallet(self, request: web.Request) -> web.StreamResponse:
        try:
            nano = int(request.query.get("balance", ""))
            self.state.set_wallet_balance(nano, self._clock())
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=f"balance must be an integer >= 0 (nanoTON): {exc}"
            ) from exc
        return web.json_response({"balance": self.state.wallet_balance})

    async def _admin_jsonstats(self, request: web.Request) -> web.StreamResponse:
        """The worker's /jsonstats document, whatever the faults (a test's look)."""
        return web.Response(text=_simple_json(self.jsonstats()), content_type="application/json")

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        return _text(self.stats_html())

    async def _admin_worker(self, request: web.Request) -> web.StreamResponse:
        """``/simulator/worker/<path>``: the worker's own ``/<path>``, unsigned, as a
        person reaches it with ``kubectl exec`` into the launcher pod (its loopback
        forward; docs/launcher.md). Faults apply as on the worker's port."""
        path = "/" + request.match_info["tail"]
        handler = self._worker_paths.get(path)
        if handler is None or self.faults.not_initialised or self.awaiting_funds:
            return web.Response(status=400, reason="not found")  # WorkerRunner.cpp:381-386
        return await handler(_get_args(request.rel_url.raw_query_string))

    def build_harness_app(self) -> web.Application:
        """The harness's paths alone (``harness_port``): nothing of the worker's."""
        app = web.Application()
        for path, handler in self._harness_routes():
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        return app

    def _harness_routes(self) -> list[tuple[str, Handler]]:
        return [
            ("/tdx/certification/v4/tcb", self._pccs_tcb),
            ("/tdx/certification/v4/qe/identity", self._pccs_qe),
            ("/sgx/certification/v4/pckcrl", self._pccs_pckcrl),
            ("/sgx/certification/v4/rootcacrl", self._pccs_rootcrl),
            ("/simulator/state", self._admin_state),
            ("/simulator/fault", self._admin_fault),
            ("/simulator/rotate", self._admin_rotate),
            ("/simulator/wallet", self._admin_wallet),
            ("/simulator/jsonstats", self._admin_jsonstats),
            ("/simulator/stats", self._admin_stats),
            ("/simulator/worker/{tail:.*}", self._admin_worker),
        ]

    def build_app(self) -> web.Application:
        """The worker's port: the harness's paths, then COCOON's worker for the rest."""
        app = web.Application(middlewares=[self._faults_middleware])
        for path, handler in self._harness_routes():
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        app.router.add_route("*", "/{tail:.*}", self._worker)
        return app

    def build_ratls_app(self) -> web.Application:
        """The RA-TLS stand-in's paths (see the section above): to be removed."""
        app = web.Application(middlewares=[self._faults_middleware])
        for path, handler in (
            ("/attestation/certificate", self._certificate),
            ("/attestation/gpu", self._gpu),
        ):
            app.router.add_get(path, handler)
        return app

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._release = asyncio.Event()
        runner = web.AppRunner(self.build_app(), shutdown_timeout=1.0, access_log=None)
        ratls = web.AppRunner(self.build_ratls_app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        await ratls.setup()
        harness = None
        try:
            await web.TCPSite(runner, self.worker_host, self.config.port).start()
            self._http_port = _last_bound_port(runner)
            self._tls_port = await self._start_tls_site(ratls, self.config.tls_port)
            if self.config.harness_port is not None:
                harness = web.AppRunner(self.build_harness_app(), access_log=None)
                await harness.setup()
                await web.TCPSite(harness, self.host, self.config.harness_port).start()
                self._harness_port = _last_bound_port(harness)
        except BaseException:
            await runner.cleanup()
            await ratls.cleanup()
            if harness is not None:
                await harness.cleanup()
            raise
        self._runner, self._ratls_runner = runner, ratls
        self._harness_runner = harness
        if self.faults.ratls_hang:
            await self._sync_listener()
        if self.config.rotate_every is not None:
            self._rotation_task = asyncio.create_task(
                self._rotate_forever(self.config.rotate_every.total_seconds())
            )
        if self.config.ton_endpoint is not None:
            self._funds_task = asyncio.create_task(self._wait_for_funds(self.config.ton_endpoint))

    async def _wait_for_funds(self, endpoint: str, interval: float = 1.0) -> None:
        """Read the node wallet's balance from the chain until it holds the start floor,
        then initialise (BaseRunner.cpp:1037-1054 re-checks on a timer likewise)."""
        async with TonClient(endpoint, timeout=5) as ton:
            while True:
                try:
                    balance = await ton.get_address_balance(self.state.wallet_address)
                except (TonError, OSError, TimeoutError) as exc:
                    log.info("%s: wallet balance not read: %s", self.config.name, exc)
                else:
                    if balance >= START_FLOOR_NANO:
                        self.state.set_wallet_balance(balance, self._clock())
                        self.awaiting_funds = False
                        log.info("%s: node wallet funded (%d nanoTON)", self.config.name, balance)
                        return
                await asyncio.sleep(interval)

    async def _rotate_forever(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.rotate_certificate()

    async def stop(self) -> None:
        if self._funds_task is not None:
            self._funds_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._funds_task
            self._funds_task = None
        if self._rotation_task is not None:
            self._rotation_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotation_task
            self._rotation_task = None
        self._release.set()
        runner, self._runner = self._runner, None
        async with self._listener_lock:
            ratls, self._ratls_runner = self._ratls_runner, None
            await self._close_hang_server()
            self._tls_site = None
        if runner is not None:
            await runner.cleanup()
        if ratls is not None:
            await ratls.cleanup()
        harness, self._harness_runner = self._harness_runner, None
        if harness is not None:
            await harness.cleanup()
        self._tls.close()

    async def __aenter__(self) -> WorkerSimulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _last_bound_port(runner: web.AppRunner) -> int:
    """The port of the most recently started site (ports 0 are chosen by the kernel)."""
    addresses = runner.addresses
    if not addresses:
        raise RuntimeError("the simulator has no bound socket")
    port: int = addresses[-1][1]
    return port


async def start_simulator(
    config: SimulatorConfig | None = None,
    *,
    pki: DcapTestPki | None = None,
    gpu_pki: GpuTestPki | None = None,
    clock: Clock = time.time,
    **overrides: Any,
) -> WorkerSimulator:
    """Build and start a simulator in this event loop; ``await sim.stop()`` when done.

    ``overrides`` replace fields of ``config`` (e.g. ``start_simulator(proxies=1)``).
    """
    base = config if config is not None else SimulatorConfig()
    if overrides:
        base = dataclasses.replace(base, **overrides)
    sim = WorkerSimulator(base, pki=pki, gpu_pki=gpu_pki, clock=clock)
    await sim.start()
    return sim


__all__ = [
    "BASE_PORT",
    "DEFAULT_MODEL",
    "DEFAULT_RELEASE",
    "NANO",
    "Faults",
    "SimulatorConfig",
    "WorkerSimulator",
    "start_simulator",
    "worker_http_port",
]
