"""Command line: run one simulated COCOON worker until SIGINT / SIGTERM.

Prints exactly one JSON line on stdout once both listeners are up (URLs, image
and model hashes, the test root's fingerprint), then serves. Exit 0 on a signal,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cocoon_operator.attestation import model_hash
from cocoon_operator.attestation._time import parse_instant
from cocoon_operator.attestation.testing.pki import DEFAULT_SEED, generate_test_pki
from cocoon_operator.attestation.testing.quotes import TdMeasurements
from cocoon_operator.simulator._server import (
    DEFAULT_MODEL,
    DEFAULT_RELEASE,
    Faults,
    SimulatorConfig,
    WorkerSimulator,
    worker_http_port,
)
from cocoon_operator.simulator._state import LoadModel


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cocoon_operator.simulator",
        description=(
            "Simulated COCOON worker (tests / local stack only): worker HTTP endpoints on "
            "--port and the same endpoints over RA-TLS on --tls-port, with TDX quotes signed "
            "by a TEST DCAP PKI that is trusted only when selected explicitly."
        ),
    )
    p.add_argument("--instance", type=int, default=0, help="worker instance 0..9 (default 0)")
    p.add_argument("--port", type=int, help="HTTP port (default 12000 + 10 * instance)")
    p.add_argument("--tls-port", type=int, help="RA-TLS port (default: HTTP port + 1)")
    p.add_argument("--host", default="127.0.0.1", help="loopback IP to listen on")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Name@commit:verityhash")
    p.add_argument("--owner-address", help="owner TON address (default: a derived fake one)")
    p.add_argument(
        "--release",
        default=DEFAULT_RELEASE,
        help="label the TD measurements (and so the image hash) are derived from",
    )
    p.add_argument("--coefficient", type=int, default=1000, help="per-mille (1000 = 1.0x)")
    p.add_argument("--disabled", action="store_true", help="start disabled")
    p.add_argument("--proxies", type=int, default=2, help="number of simulated proxies")
    p.add_argument("--wallet-balance", type=int, default=5_500_000_000, help="nanoTON")
    p.add_argument("--load", type=int, default=2, help="requests in flight while enabled")
    p.add_argument("--rps", type=float, default=1.0, help="requests completed per second")
    p.add_argument("--tokens-per-request", type=int, default=120)
    p.add_argument("--drain-seconds", type=float, default=5.0, help="drain time after disable")
    p.add_argument("--payout-seconds", type=float, default=1.0, help="duration of a payout")
    p.add_argument(
        "--rotate-seconds",
        type=float,
        default=3600.0,
        help="rotate the RA-TLS key this often (0: never; COCOON: hourly)",
    )
    p.add_argument("--quote-version", type=int, choices=(4, 5), default=4)
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=[name.replace("_", "-") for name in Faults.names()],
        help="misbehave from the start (repeatable); also settable at /simulator/fault",
    )
    p.add_argument("--image-unlisted", action="store_true", help="status.actual_image_hash=false")
    p.add_argument("--model-unlisted", action="store_true", help="status.actual_model=false")
    p.add_argument("--pki-seed", default=DEFAULT_SEED.decode(), help="test PKI seed")
    p.add_argument(
        "--pki-time",
        help="instant the test PKI is generated at (ISO 8601; default: start of the UTC day). "
        "Simulators with the same seed and time share one test root.",
    )
    p.add_argument("--root-out", type=Path, help="write the test root certificate (PEM) here")
    p.add_argument("--collateral-out", type=Path, help="write the collateral JSON here")
    p.add_argument(
        "--gpu-root-out", type=Path, help="write the test GPU device root certificate (PEM) here"
    )
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    port = args.port if args.port is not None else worker_http_port(args.instance)
    tls_port = args.tls_port if args.tls_port is not None else (port + 1 if port else 0)
    faults = Faults(**{name.replace("-", "_"): True for name in args.fault})
    return SimulatorConfig(
        instance=args.instance,
        host=args.host,
        port=port,
        tls_port=tls_port,
        model=args.model,
        owner_address=args.owner_address,
        measurements=TdMeasurements.from_label(args.release),
        coefficient=args.coefficient,
        enabled=not args.disabled,
        proxies=args.proxies,
        wallet_balance_nano=args.wallet_balance,
        load=LoadModel(
            load=args.load,
            requests_per_second=args.rps,
            tokens_per_request=args.tokens_per_request,
            drain_seconds=args.drain_seconds,
            payout_seconds=args.payout_seconds,
        ),
        image_listed=not args.image_unlisted,
        model_listed=not args.model_unlisted,
        rotate_every=timedelta(seconds=args.rotate_seconds) if args.rotate_seconds > 0 else None,
        quote_version=args.quote_version,
        faults=faults,
    )


async def _serve(sim: WorkerSimulator, args: argparse.Namespace) -> None:
    await sim.start()
    try:
        if args.root_out is not None:
            args.root_out.write_bytes(sim.pki.root_pem)
        if args.collateral_out is not None:
            args.collateral_out.write_text(sim.pki.collateral_json())
        if args.gpu_root_out is not None:
            args.gpu_root_out.write_bytes(sim.gpu_pki.root_pem)
        line = {
            "http": sim.http_url,
            "tls": sim.tls_url,
            "instance": sim.config.instance,
            "image_hash": sim.image_hash.hex(),
            "model": sim.config.model,
            "model_hash": model_hash(sim.config.model).hex(),
            "test_root_sha256": sim.trusted_root.fingerprint,
            "fmspc": sim.pki.platform.fmspc_hex,
            "faults": sim.faults.active(),
        }
        print(json.dumps(line), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.pki_time:
            pki_time = parse_instant(args.pki_time)
        else:
            pki_time = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        pki = generate_test_pki(now=pki_time, seed=args.pki_seed)
        sim = WorkerSimulator(config, pki=pki, clock=time.time)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(sim, args))
    return 0
