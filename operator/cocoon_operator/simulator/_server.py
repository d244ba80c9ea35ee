"""The worker simulator: an aiohttp application on loopback, over plain HTTP and RA-TLS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import html
import ipaddress
import logging
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
from cocoon_operator.attestation.testgpu import (
    DEFAULT_GPU_SEED,
    GpuMeasurements,
    GpuTestPki,
    build_gpu_evidence,
    generate_test_gpu_pki,
)
from cocoon_operator.attestation.testpki import (
    DEFAULT_SEED,
    DcapTestPki,
    TdMeasurements,
    generate_test_pki,
)
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

# Paths that stay well-behaved whatever faults are set: the PCCS-compatible
# collateral service and the simulator's own admin endpoints.
_EXEMPT_PREFIXES = ("/sgx/", "/tdx/", "/simulator/")


def worker_http_port(instance: int) -> int:
    """COCOON's host HTTP port for worker instance ``instance`` (12000 + 10 * i)."""
    return BASE_PORT + 10 * instance


@dataclass(frozen=True)
class Faults:
    """Ways to misbehave, for fault tests. All off by default; change them at run time."""

    tampered_evidence: bool = False  # one bit of the quote flipped: its signature fails
    wrong_model: bool = False  # reports another model; status.actual_model is false
    hang: bool = False  # worker endpoints never answer (the TLS handshake still completes)
    garbage_json: bool = False  # /jsonstats and /perf answer with broken JSON
    # The RA-TLS port accepts connections and never completes a TLS handshake.
    ratls_hang: bool = False
    # The RA-TLS certificate carries garbage where the quote belongs.
    garbage_evidence: bool = False
    # The RA-TLS certificate's key is not the one the quote's REPORTDATA binds.
    foreign_key: bool = False
    # The GPU evidence (/attestation/gpu) has one signed byte flipped.
    gpu_tampered: bool = False
    # The guest stopped refreshing: its latest relayed quote is two days old.
    stale_quote: bool = False
    # The node report files this VM's quote under another pod's uid.
    misfiled_quote: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def active(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]


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
    # Names the node wallet (COCOON derives it from node_wallet_key); default: owner + instance.
    wallet_label: str | None = None
    measurements: TdMeasurements = field(
        default_factory=lambda: TdMeasurements.from_label(DEFAULT_RELEASE)
    )
    coefficient: int = 1000  # per-mille price multiplier
    enabled: bool = True
    proxies: int = 2
    wallet_balance_nano: int = 5_500_000_000
    load: LoadModel = field(default_factory=LoadModel)
    image_listed: bool = True  # what the simulated root contract says about our image hash
    model_listed: bool = True  # ... and about our model hash
    ton_lag_seconds: float = 3.0
    ratls_validity: timedelta = timedelta(days=1)
    rotate_every: timedelta | None = None  # COCOON refreshes its RA-TLS key hourly
    quote_version: int = 4
    faults: Faults = field(default_factory=Faults)
    name: str = ""  # what the log calls this worker (the agent: namespace/pod/uid)

    def __post_init__(self) -> None:
        _check_loopback(self.host)
        if not 0 <= self.instance <= 9:
            raise ValueError("a COCOON worker instance is 0..9")
        if self.proxies < 0 or self.wallet_balance_nano < 0 or self.coefficient < 0:
            raise ValueError("proxies, wallet balance and coefficient must be >= 0")
        model_hash(self.model)  # validates Name@commit:verity
        if self.quote_version not in (4, 5):
            raise ValueError("quote_version is 4 or 5")


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/html")


def _short_answer(message: str) -> web.Response:
    """COCOON's control endpoints answer 200 with a tiny HTML page carrying the outcome."""
    return _text(
        "<!DOCTYPE html>\n<html><body>\n"
        f"{html.escape(message)}<br/>\n"
        '<a href="/stats">return to stats</a>\n</body></html>\n'
    )


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
            wallet_address=derived_address("node-wallet", cfg.wallet_label or owner, cfg.instance),
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
        self._http_port = 0
        self._tls_port = 0
        self._release = asyncio.Event()
        self._rotation_task: asyncio.Task[None] | None = None
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
            runner = self._runner
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
    def http_url(self) -> str:
        return f"http://{self._url_host}:{self._http_port}"

    @property
    def tls_url(self) -> str:
        return f"https://{self._url_host}:{self._tls_port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    # ------------------------------------------------------------------ documents

    def _stats_row(self, total: float, windows: list[float], scale: float = 1.0) -> list[float]:
        return [round(total * scale, 3), *(round(w * scale, 3) for w in windows)]

    def jsonstats(self) -> dict[str, Any]:
        """The document ``GET /jsonstats`` serves (COCOON's keys, plus a ``simulator`` block)."""
        now = self._clock()
        st = self.state
        in_flight = st.in_flight(now)
        windows = st.window_counts(now)
        per_request = st.model.tokens_per_request
        adjusted = per_request * st.coefficient / 1000
        completed = st.completed
        running = sum(1 for p in st.proxies if p.payout_running_until is not None)
        return {
            "status": {
                "wallet_balance": st.wallet_balance,
                "actual_image_hash": self.config.image_listed,
                "actual_model": self.config.model_listed and not self.faults.wrong_model,
                "ton_last_synced_at": int(now - self.config.ton_lag_seconds),
                "enabled": st.enabled,
                "active_requests": in_flight,
            },
            "stats": {
                "queries": self._stats_row(completed + in_flight + st.failed, windows),
                "success": self._stats_row(completed, windows),
                "failed": self._stats_row(st.failed, [0.0] * len(windows)),
                "bytes_received": self._stats_row(completed, windows, 2048.0),
                "bytes_sent": self._stats_row(completed, windows, 4096.0),
                "time": self._stats_row(completed, windows, 0.8),
                "total_adjusted_tokens_used": self._stats_row(completed, windows, adjusted),
                "prompt_adjusted_tokens_used": self._stats_row(completed, windows, adjusted / 3),
                "cached_adjusted_tokens_used": self._stats_row(0.0, [0.0] * len(windows)),
                "completion_adjusted_tokens_used": self._stats_row(
                    completed, windows, adjusted * 2 / 3
                ),
                "reasoning_adjusted_tokens_used": self._stats_row(0.0, [0.0] * len(windows)),
            },
            "wallet": {
                "address": st.wallet_address,
                "balance": st.wallet_balance,
                "seqno": st.wallet_seqno,
                "pending_transactions_cnt": running,
                "active_transactions_cnt": running,
            },
            "localconfig": {
                "root_address": self.root_contract_address,
                "owner_address": self.owner_address,
                "model": self.reported_model,
                "coefficient": st.coefficient,
                "check_proxy_hash": True,
                "max_active_requests": st.model.max_active_requests,
            },
            "proxies": [
                {
                    "sc_inited": True,
                    "proxy_sc_address": p.proxy_sc_address,
                    "proxy_public_key": p.proxy_public_key,
                    "sc_address": p.worker_sc_address,
                    "earned_tokens_committed_to_blockchain": p.committed_to_blockchain,
                    "earned_tokens_committed_to_proxy_db": p.earned_tokens,
                    "earned_tokens_max_known": p.earned_tokens,
                    "cached_out_tokens": p.cashed_out,
                    "expected_cached_out_tokens": (
                        p.payout_amount if p.payout_running_until is not None else p.cashed_out
                    ),
                    "running_request": p.payout_running_until is not None,
                    "params_version": 1,
                    "payouts": p.payouts,
                }
                for p in st.proxies
            ],
            "simulator": {
                "instance": self.config.instance,
                "image_hash": self.image_hash.hex(),
                "model": self.config.model,
                "model_hash": model_hash(self.config.model).hex(),
                "ratls_public_key": self.evidence.public_key.hex(),
                "certificate_generation": self.evidence.generation,
                "payouts": st.payouts,
                "faults": self.faults.active(),
                "http_port": self._http_port,
                "tls_port": self._tls_port,
            },
        }

    def perf(self) -> dict[str, Any]:
        """``GET /perf``: the simulator's own performance summary (not COCOON's format)."""
        now = self._clock()
        st = self.state
        in_flight = st.in_flight(now)
        rate = st.model.requests_per_second if st.enabled else 0.0
        return {
            "uptime_seconds": round(now - st.started_at, 3),
            "active_requests": in_flight,
            "requests_per_second": rate,
            "tokens_per_second": rate * st.model.tokens_per_request,
            "mean_request_seconds": (st.model.load / rate) if rate > 0 else None,
            "completed_requests": round(st.completed, 3),
        }

    def stats_html(self) -> str:
        doc = self.jsonstats()
        parts = ["<!DOCTYPE html>\n<html><body>\n<h1>COCOON worker simulator</h1>\n"]
        for section in ("status", "wallet", "localconfig", "simulator"):
            parts.append(f"<h2>{section}</h2>\n<table>\n")
            for key, value in doc[section].items():
                parts.append(
                    f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>\n"
                )
            parts.append("</table>\n")
        parts.append("<h2>proxies</h2>\n<table>\n")
        for proxy in doc["proxies"]:
            address = html.escape(proxy["proxy_sc_address"])
            parts.append(
                f"<tr><td>{address}</td><td>earned {proxy['earned_tokens_max_known']}</td>"
                f"<td>committed {proxy['earned_tokens_committed_to_blockchain']}</td>"
                f"<td>cashed out {proxy['cached_out_tokens']}</td>"
                f'<td><a href="/request/payout?proxy={urlquote(proxy["proxy_sc_address"])}">'
                "take now</a></td></tr>\n"
            )
        parts.append("</table>\n</body></html>\n")
        return "".join(parts)

    # ------------------------------------------------------------------ HTTP handlers

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if self.faults.hang and not request.path.startswith(_EXEMPT_PREFIXES):
            release = self._release
            await release.wait()
            if self.faults.hang:  # released by stop(), not by clearing the fault
                raise web.HTTPServiceUnavailable(text="simulator stopping")
        return await handler(request)

    async def _jsonstats(self, request: web.Request) -> web.StreamResponse:
        if self.faults.garbage_json:
            return web.Response(
                text='{"status": {"wallet_balance": 12, "enabled": tru',
                content_type="application/json",
            )
        return web.json_response(self.jsonstats())

    async def _perf(self, request: web.Request) -> web.StreamResponse:
        if self.faults.garbage_json:
            return web.Response(text="{perf: [1, 2,", content_type="application/json")
        return web.json_response(self.perf())

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return _text(self.stats_html())

    async def _enable(self, request: web.Request) -> web.StreamResponse:
        self.state.set_enabled(True, self._clock())
        return _short_answer("state updated")

    async def _disable(self, request: web.Request) -> web.StreamResponse:
        self.state.set_enabled(False, self._clock())
        return _short_answer("state updated")

    async def _change_coefficient(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("coefficient")
        if raw is None:
            return _text(
                "<!DOCTYPE html>\n<html><body>\nset new coefficient: "
                '<form method="GET" action="/request/change_coefficient">'
                '<input type="text" name="coefficient"><input type="submit" value="Submit">'
                "</form></body></html>\n"
            )
        try:
            multiplier = float(raw)
        except ValueError:
            return _short_answer(f"failed to parse '{raw}' as double")
        per_mille = int(multiplier * 1000)
        self.state.set_coefficient(per_mille, self._clock())
        return _short_answer(f"coefficient set to {per_mille / 1000:g}")

    async def _payout(self, request: web.Request) -> web.StreamResponse:
        proxy = request.query.get("proxy", "")
        answer = self.state.request_payout(proxy, self._clock())
        # One line per request: the crash tests count the payouts each pod made.
        log.info(PAYOUT_LOG, self.config.name or "worker", proxy, answer)
        return _short_answer(answer)

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
                "faults": dataclasses.asdict(self.faults),
                "certificate_generation": self.evidence.generation,
                "image_hash": self.image_hash.hex(),
                "trusted_root_sha256": self.trusted_root.fingerprint,
                "fmspc": self.pki.platform.fmspc_hex,
                "enabled": self.state.enabled,
                "active_requests": self.state.in_flight(self._clock()),
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

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_middleware])
        routes: list[tuple[str, Handler]] = [
            ("/jsonstats", self._jsonstats),
            ("/stats", self._stats),
            ("/perf", self._perf),
            ("/request/enable", self._enable),
            ("/request/disable", self._disable),
            ("/request/change_coefficient", self._change_coefficient),
            ("/request/payout", self._payout),
            ("/attestation/certificate", self._certificate),
            ("/attestation/gpu", self._gpu),
            ("/tdx/certification/v4/tcb", self._pccs_tcb),
            ("/tdx/certification/v4/qe/identity", self._pccs_qe),
            ("/sgx/certification/v4/pckcrl", self._pccs_pckcrl),
            ("/sgx/certification/v4/rootcacrl", self._pccs_rootcrl),
            ("/simulator/state", self._admin_state),
            ("/simulator/fault", self._admin_fault),
            ("/simulator/rotate", self._admin_rotate),
            ("/simulator/wallet", self._admin_wallet),
        ]
        for path, handler in routes:
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        return app

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._release = asyncio.Event()
        runner = web.AppRunner(self.build_app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.config.port).start()
            self._http_port = _last_bound_port(runner)
            self._tls_port = await self._start_tls_site(runner, self.config.tls_port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.faults.ratls_hang:
            await self._sync_listener()
        if self.config.rotate_every is not None:
            self._rotation_task = asyncio.create_task(
                self._rotate_forever(self.config.rotate_every.total_seconds())
            )

    async def _rotate_forever(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.rotate_certificate()

    async def stop(self) -> None:
        if self._rotation_task is not None:
            self._rotation_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotation_task
            self._rotation_task = None
        self._release.set()
        runner, self._runner = self._runner, None
        async with self._listener_lock:
            await self._close_hang_server()
            self._tls_site = None
        if runner is not None:
            await runner.cleanup()
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
