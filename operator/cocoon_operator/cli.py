"""The ``cocoon-operator`` command: subcommands for people and scripts.

Each subcommand is a small function that parses arguments and calls the library;
output meant for scripts is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from cocoon_operator import __version__
from cocoon_operator.policy.launcherimages import LauncherImages
from cocoon_operator.policy.nodes import Eligibility, NodeFacts, eligibility


class RoutineTimerSuccesses(logging.Filter):
    """Drops kopf's ``Timer 'x' succeeded.`` lines (INFO, logger ``kopf.objects``).

    Every worker has a timer (the checks every few seconds, a slow resync) that
    nearly always find nothing to do: at 1,000 workers they were 98% of the operator's log (about
    160,000 lines in five minutes) and buried what changed, which the
    operator logs and records as Events itself. A timer that fails still logs;
    ``--verbose`` keeps these lines too. The text is kopf's (``f"{handler}
    succeeded."``, ``Timer 'id'`` for a timer).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        return not (
            record.levelno == logging.INFO
            and isinstance(msg, str)
            and msg.startswith("Timer '")
            and msg.endswith("' succeeded.")
        )


async def _gather_nodes(kubeconfig: str | None) -> list[NodeFacts]:
    from cocoon_operator.k8s.kubeconfig import load  # noqa: PLC0415 - keep `--help` fast
    from cocoon_operator.k8s.rest import Kube, path  # noqa: PLC0415

    async with Kube(load(kubeconfig)) as api:
        nodes = await api.request("GET", path("v1", "nodes"))
    return [
        NodeFacts(
            name=n["metadata"]["name"],
            labels=n["metadata"].get("labels") or {},
            allocatable=(n.get("status") or {}).get("allocatable") or {},
            unschedulable=bool((n.get("spec") or {}).get("unschedulable")),
        )
        for n in nodes.get("items") or []
    ]


def _nodes_table(rows: Sequence[Eligibility]) -> str:
    header = ("NODE", "ELIGIBLE", "GPUS", "PRODUCT", "REASONS")
    lines = [header] + [
        (
            r.node,
            "yes" if r.eligible else "no",
            str(r.passthrough_gpus),
            r.product or "-",
            ",".join(r.reasons) or "-",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def cmd_nodes(args: argparse.Namespace) -> int:
    """Show which nodes can host a worker VM and why the others cannot."""
    facts = asyncio.run(_gather_nodes(args.kubeconfig))
    rows = sorted((eligibility(f) for f in facts), key=lambda r: (not r.eligible, r.node))
    if args.json:
        payload = [
            {
                "node": r.node,
                "eligible": r.eligible,
                "passthroughGPUs": r.passthrough_gpus,
                "product": r.product,
                "reasons": [str(x) for x in r.reasons],
            }
            for r in rows
        ]
        print(json.dumps(payload, indent=2))
    else:
        print(_nodes_table(rows))
    return 0


def _namespaced(value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise ValueError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


async def _standby_health(endpoint: str | None) -> Any:
    """Answer the liveness probe while waiting for the Lease, so a follower is not
    restarted for waiting. Returns the aiohttp runner to clean up, or None."""
    if not endpoint:
        return None
    from urllib.parse import urlparse  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415

    url = urlparse(endpoint)

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(url.path or "/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, url.hostname, url.port or 80).start()
    return runner


async def _run_as_leader(
    args: argparse.Namespace, operator: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> int:
    """Run the operator only while this replica holds the Lease; exit 1 when it is lost."""
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import uuid  # noqa: PLC0415

    from cocoon_operator.k8s.kubeconfig import load  # noqa: PLC0415
    from cocoon_operator.k8s.leader import LeaderElector  # noqa: PLC0415
    from cocoon_operator.k8s.rest import Kube  # noqa: PLC0415

    identity = f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE", "default")
    async with Kube(load()) as api:
        elector = LeaderElector(
            api,
            namespace,
            args.leader_election_id,
            identity,
            lease_seconds=args.lease_seconds,
            renew_seconds=max(1.0, args.lease_seconds / 3),
        )
        standby = await _standby_health(args.liveness)
        try:
            await elector.acquire()
        finally:
            if standby is not None:
                await standby.cleanup()  # kopf serves the endpoint from now on
        stop = asyncio.Event()
        running = asyncio.create_task(operator(stop))
        holding = asyncio.create_task(elector.hold())
        done, _ = await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding in done:
            # Leadership lost: stop acting at once; the restarted process waits as a follower.
            stop.set()
            await running
            return 1
        holding.cancel()
        await elector.release()
        running.result()
    return 0


def funding_limits(
    max_target: Sequence[str], worker_daily_cap: Sequence[str], namespace_daily_cap: Sequence[str]
) -> Any:
    """The operator's funding limits (a ``policy.treasury.FundingLimits``) from the
    ``--funding-*`` flags: each value is ``TON`` (every namespace) or ``NAMESPACE=TON``
    (that namespace), the last one given winning. Raises ValueError naming the flag."""
    from cocoon_operator.policy.treasury import FundingLimits, NamespaceLimits  # noqa: PLC0415
    from cocoon_operator.ton.amounts import parse_ton  # noqa: PLC0415

    fields = {
        "max_target": ("--funding-max-target", max_target),
        "worker_daily_cap": ("--funding-worker-daily-cap", worker_daily_cap),
        "namespace_daily_cap": ("--funding-namespace-daily-cap", namespace_daily_cap),
    }
    default: dict[str, int] = {}
    per_ns: dict[str, dict[str, int]] = {}
    for attr, (flag, values) in fields.items():
        for value in values:
            namespace, sep, amount = value.rpartition("=")
            try:
                nano = parse_ton(amount)
            except ValueError as exc:
                raise ValueError(f"{flag} {value!r}: {exc}") from None
            if sep and not namespace:
                raise ValueError(f"{flag} {value!r}: expected TON or NAMESPACE=TON")
            (per_ns.setdefault(namespace, {}) if sep else default)[attr] = nano
    base = NamespaceLimits(**default)
    namespaces = {ns: dataclasses.replace(base, **own) for ns, own in per_ns.items()}
    return FundingLimits(base, namespaces)


def _image_hash(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"--registration-image-hash {text!r}: expected 64 hex digits")
    return value


def chain_options(args: argparse.Namespace) -> Any:
    """The chain step's options (a ``handlers.chain.ChainOptions``) from the ``run`` flags,
    the operator's money policy included. Raises ValueError naming a bad flag."""
    from cocoon_operator.api.v1alpha1 import TcbStatus  # noqa: PLC0415
    from cocoon_operator.handlers.chain import ChainOptions  # noqa: PLC0415
    from cocoon_operator.policy.treasury import RegistrationPolicy  # noqa: PLC0415
    from cocoon_operator.ton.amounts import parse_ton  # noqa: PLC0415
    from cocoon_operator.ton.wallet import WalletVersion  # noqa: PLC0415

    return ChainOptions(
        endpoint=args.ton_endpoint,
        api_key_file=args.ton_api_key_file,
        treasury_secret=_namespaced(args.treasury_secret) if args.treasury_secret else None,
        treasury_wallet=WalletVersion(args.treasury_wallet),
        ton_global_id=args.ton_global_id,
        global_daily_cap=parse_ton(args.funding_daily_cap),
        ledger=_namespaced(args.funding_ledger),
        check_seconds=args.chain_check_seconds,
        root_owner_secret=_namespaced(args.root_owner_secret) if args.root_owner_secret else None,
        registration_ledger=_namespaced(args.registration_ledger),
        funding_limits=funding_limits(
            args.funding_max_target, args.funding_worker_daily_cap, args.funding_namespace_daily_cap
        ),
        treasury_tcb=frozenset(TcbStatus(s) for s in args.treasury_tcb_status or ["UpToDate"]),
        registration=RegistrationPolicy(
            namespaces=frozenset(args.registration_namespace),
            image_hashes=frozenset(_image_hash(h) for h in args.registration_image_hash),
            daily_cap=parse_ton(args.registration_daily_cap),
        ),
    )


def _check_test_roots(args: argparse.Namespace) -> str | None:
    """What is wrong with the test-root flags, if anything (a GPU test root only
    on a stack that trusts a test DCAP root, so ``trustRoot: test`` covers both)."""
    dcap, gpu = args.attestation_test_root, args.gpu_attestation_test_root
    if dcap is not None and not dcap.is_file():
        return f"--attestation-test-root: no such file {dcap}"
    if gpu is not None and dcap is None:
        return "--gpu-attestation-test-root needs --attestation-test-root"
    if gpu is not None and not gpu.is_file():
        return f"--gpu-attestation-test-root: no such file {gpu}"
    return None


def without_generated_client() -> None:
    """Keep kubernetes_asyncio out of this process (call before importing kopf).

    kopf imports kubernetes_asyncio's models whenever the package is installed
    (it is, for the simulator and the kubectl plugin), only to recognise its
    objects in owner-reference helpers the operator never calls with them.
    Those imports are about a thousand modules and 35 MB of memory.
    A None in ``sys.modules`` makes the import fail as if the package were
    absent, which kopf handles; nothing in the operator process uses it (an
    import-linter contract says so). A process that already imported it (a
    test running the operator in-process) keeps it.
    """
    sys.modules.setdefault("kubernetes_asyncio", None)  # type: ignore[arg-type]


def _webhook_options(args: argparse.Namespace) -> Any:
    from cocoon_operator.handlers.admission import WebhookOptions  # noqa: PLC0415

    return WebhookOptions(
        addr=args.webhook_addr,
        port=args.webhook_port,
        host=args.webhook_host or args.webhook_addr,
        config_name=args.webhook_config,
        certfile=args.webhook_cert,
        keyfile=args.webhook_key,
    )


def _launcher_images(args: argparse.Namespace) -> LauncherImages:
    """The operator's launcher-image allow-list (ValueError when malformed)."""
    return LauncherImages.parse(args.launcher_image, allow_any=args.allow_any_launcher_image)


def _check_launcher_images(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``--launcher-image`` flags, if anything."""
    try:
        _launcher_images(args)
    except ValueError as exc:
        return f"cocoon-operator run: {exc}"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator (kopf) until interrupted."""
    without_generated_client()
    import kopf  # noqa: PLC0415 - the operator's dependencies load only for `run`

    from cocoon_operator.handlers import (  # noqa: PLC0415
        admission,
        attestation,
        chain,
        checks,
        control,
        pool,  # noqa: F401 - importing registers the pool handlers
        worker,  # importing registers the worker handlers
    )
    from cocoon_operator.metrics import Metrics  # noqa: PLC0415

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(RoutineTimerSuccesses())
    namespaces = args.namespace or []
    problem = _check_test_roots(args) or _check_launcher_images(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    memo = kopf.Memo()
    metrics = Metrics()
    images = _launcher_images(args)
    memo.update(
        metrics=metrics,
        probe_limit=args.max_concurrent_probes,
        max_recheck_stretch=args.max_recheck_stretch,
        launcher_images=images,
    )
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    if args.webhook_addr:
        if bool(args.webhook_cert) != bool(args.webhook_key):
            print("--webhook-cert and --webhook-key go together", file=sys.stderr)
            return 2
        admission.register(kopf.get_default_registry(), images)
        memo["webhook"] = _webhook_options(args)
    memo["attestation_options"] = attestation.AttestationOptions(
        pccs_url=args.pccs_url,
        test_root=args.attestation_test_root,
        gpu_test_root=args.gpu_attestation_test_root,
        check_seconds=args.attestation_check_seconds,
        boot_grace_seconds=args.attestation_boot_grace_seconds,
    )
    periodic: list[checks.Check] = []
    attest = attestation.register(kopf.get_default_registry(), args.attestation_check_seconds)
    if args.node_report_namespace:
        from cocoon_operator.handlers import nodes  # noqa: PLC0415

        memo["node_report_options"] = nodes.NodeReportOptions(
            namespace=args.node_report_namespace,
            grace_seconds=args.orphan_grace_seconds,
        )
        # As often as the attestation check: the shared timer keeps its tick.
        periodic.append(nodes.register(kopf.get_default_registry(), args.attestation_check_seconds))
    coefficient = control.register(kopf.get_default_registry(), args.attestation_check_seconds)
    if args.ton_endpoint:
        try:
            memo["chain_options"] = chain_options(args)
        except ValueError as exc:
            print(f"cocoon-operator run: {exc}", file=sys.stderr)
            return 2
        periodic.append(chain.register(kopf.get_default_registry(), args.chain_check_seconds))
    # The chain step first: its pinned connection to an attested worker shows the
    # attestation check the certificate, sparing that check a handshake.
    resync = checks.Check("resync", worker.resync_worker, worker.RESYNC_SECONDS, at_start=False)
    checks.register(
        kopf.get_default_registry(),
        [*periodic, attest, coefficient, resync],
        stretch=worker.routine_stretch,
        hurry=worker.not_ready,
    )

    async def operator(stop: asyncio.Event | None = None) -> None:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            standalone=True,
            memo=memo,
            stop_flag=stop,
        )

    if not args.leader_elect:
        asyncio.run(operator())
        return 0
    return asyncio.run(_run_as_leader(args, operator))


def _add_attestation_args(run: argparse.ArgumentParser) -> None:
    att = run.add_argument_group("attestation")
    att.add_argument(
        "--pccs-url",
        default="https://api.trustedservices.intel.com",
        help="PCCS or Intel PCS serving TDX collateral (API v4)",
    )
    att.add_argument(
        "--attestation-test-root",
        type=Path,
        default=None,
        help="trust this TEST root instead of Intel's (local stack only; never in production)",
    )
    att.add_argument(
        "--gpu-attestation-test-root",
        type=Path,
        default=None,
        help="with --attestation-test-root: verify GPU evidence (spec.attestation.gpu.mode"
        " Verify) against this TEST device root instead of NVIDIA's",
    )
    att.add_argument(
        "--attestation-check-seconds",
        type=float,
        default=10.0,
        help="how often each running worker's certificate is checked for changes",
    )
    att.add_argument(
        "--max-concurrent-probes",
        type=_positive_int,
        default=64,
        help="worker probes (certificate checks, verifications, stats reads) at once, in all;"
        " beyond it they queue, checks of workers not yet Ready first",
    )
    att.add_argument(
        "--max-recheck-stretch",
        type=_at_least_one,
        default=4.0,
        help="while the operator is overloaded (its event loop over 0.1 s late), Ready"
        " workers are re-checked up to this many times less often; 1: never",
    )
    att.add_argument(
        "--attestation-boot-grace-seconds",
        type=float,
        default=180.0,
        help="a new VM that does not answer yet is booting, not failing, for this long",
    )


def _add_chain_args(run: argparse.ArgumentParser) -> None:
    ton = run.add_argument_group(
        "chain: allow-lists, node wallets, funding (off without --ton-endpoint)"
    )
    ton.add_argument("--ton-endpoint", default=None, help="toncenter-compatible API v2 base URL")
    ton.add_argument("--ton-api-key-file", type=Path, default=None, help="file holding the API key")
    ton.add_argument(
        "--treasury-secret",
        default=None,
        help="NAMESPACE/NAME of the Secret with the treasury wallet (key 'mnemonic' or 'seed');"
        " without it node wallets are checked, never funded",
    )
    ton.add_argument(
        "--treasury-wallet",
        choices=["v4r2", "v5r1"],  # ton.wallet.WalletVersion, not imported to parse flags
        default="v4r2",
        help="the treasury's wallet contract: v4r2 sends 4 top-ups per message, v5r1 255 (for"
        " fleets beyond a few dozen workers). The same key has a different address under each",
    )
    ton.add_argument(
        "--ton-global-id",
        type=int,
        default=-239,  # ton.wallet.MAINNET_GLOBAL_ID
        help="the network's global id (config param 19: -239 mainnet, -3 testnet); a v5r1"
        " wallet's id, and so its address, depends on it",
    )
    ton.add_argument(
        "--funding-ledger",
        default="default/cocoon-funding-ledger",
        help="NAMESPACE/NAME of the ConfigMap recording every treasury message",
    )
    ton.add_argument(
        "--funding-daily-cap", default="1000", help="TON the treasury may send per UTC day, in all"
    )
    ton.add_argument(
        "--funding-max-target",
        action="append",
        default=[],
        metavar="[NAMESPACE=]TON",
        help="most a node wallet is topped up to, whatever spec.funding.target says (default"
        " 20; NAMESPACE=TON for one namespace; repeatable)",
    )
    ton.add_argument(
        "--funding-worker-daily-cap",
        action="append",
        default=[],
        metavar="[NAMESPACE=]TON",
        help="most one worker (and its node wallet) gets per UTC day, whatever"
        " spec.funding.dailyCap says (default 20; NAMESPACE=TON for one namespace; repeatable)",
    )
    ton.add_argument(
        "--funding-namespace-daily-cap",
        action="append",
        default=[],
        metavar="[NAMESPACE=]TON",
        help="most the workers of one namespace get per UTC day, together (default 100;"
        " NAMESPACE=TON for one namespace, 0: none; repeatable)",
    )
    ton.add_argument(
        "--treasury-tcb-status",
        action="append",
        default=[],
        choices=[
            "UpToDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
        ],
        help="a TCB status the treasury funds and the root owner's key registers for"
        " (repeatable; default UpToDate only, the one COCOON's own quote check accepts);"
        " a worker's spec.attestation.acceptedTcbStatuses cannot widen it",
    )
    ton.add_argument("--chain-check-seconds", type=float, default=30.0)
    ton.add_argument(
        "--root-owner-secret",
        default=None,
        help="NAMESPACE/NAME of the Secret with the wallet owning your own root contract (key"
        " 'mnemonic' or 'seed'); workers with spec.registerOnRoot get their attested hashes"
        " registered on it. Without it nothing is registered",
    )
    ton.add_argument(
        "--registration-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="a namespace whose workers' spec.registerOnRoot is honoured (repeatable; none by"
        " default: nothing is registered)",
    )
    ton.add_argument(
        "--registration-image-hash",
        action="append",
        default=[],
        metavar="HEX",
        help="an attested image hash the owner's key may add to the root (repeatable; none by"
        " default)",
    )
    ton.add_argument(
        "--registration-daily-cap",
        default="1",
        metavar="TON",
        help="most the root owner's wallet spends on registrations per UTC day (0.05 TON each)",
    )
    ton.add_argument(
        "--registration-ledger",
        default="default/cocoon-registration-ledger",
        help="NAMESPACE/NAME of the ConfigMap recording every registration message",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _at_least_one(text: str) -> float:
    value = float(text)
    if not value >= 1:  # also NaN
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _add_webhook_args(run: argparse.ArgumentParser) -> None:
    hook = run.add_argument_group("validating webhook (off unless --webhook-addr is given)")
    hook.add_argument("--webhook-addr", default=None, help="listen address, e.g. 0.0.0.0")
    hook.add_argument("--webhook-port", type=int, default=9443)
    hook.add_argument("--webhook-host", default=None, help="name the apiserver calls")
    hook.add_argument(
        "--webhook-config", default="cocoon.network", help="ValidatingWebhookConfiguration name"
    )
    hook.add_argument("--webhook-cert", default=None, help="PEM; self-signed when omitted")
    hook.add_argument("--webhook-key", default=None)


def _add_launcher_image_args(run: argparse.ArgumentParser) -> None:
    images = run.add_argument_group(
        "launcher images (the operator's allow-list; a worker's spec cannot widen it)"
    )
    images.add_argument(
        "--launcher-image",
        action="append",
        default=[],
        metavar="REF@sha256:DIGEST",
        help="a launcher image workers may run, by digest (repeatable); none given and no"
        " --allow-any-launcher-image: no worker starts",
    )
    images.add_argument(
        "--allow-any-launcher-image",
        action="store_true",
        help="run any spec.release.image (privileged, on the GPU nodes): development only",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cocoon-operator",
        description="Operate COCOON confidential GPU workers on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    nodes = sub.add_parser("nodes", help="list nodes and whether they can host a worker VM")
    nodes.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or in-cluster")
    nodes.add_argument("--json", action="store_true", help="one JSON document on stdout")
    nodes.set_defaults(func=cmd_nodes)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument(
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--verbose", action="store_true")
    lead = run.add_argument_group("leader election (for more than one replica)")
    lead.add_argument("--leader-elect", action="store_true", help="act only while holding a Lease")
    lead.add_argument("--leader-election-id", default="cocoon-operator", help="the Lease's name")
    lead.add_argument(
        "--leader-election-namespace", default=None, help="default: $POD_NAMESPACE or default"
    )
    lead.add_argument("--lease-seconds", type=int, default=15)
    run.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)"
    )
    _add_launcher_image_args(run)
    _add_webhook_args(run)
    _add_attestation_args(run)
    _add_chain_args(run)
    agents = run.add_argument_group("per-node agents (off without --node-report-namespace)")
    agents.add_argument(
        "--node-report-namespace",
        default=None,
        help="the namespace of the node agents' report ConfigMaps (only these are trusted)",
    )
    agents.add_argument(
        "--orphan-grace-seconds",
        type=float,
        default=60.0,
        help="a VM running without its launcher pod this long is reported as orphaned",
    )
    run.set_defaults(func=cmd_run)

    from cocoon_operator.attestation.cli import add_subparsers  # noqa: PLC0415

    add_subparsers(sub)
    from cocoon_operator.ton.cli import register as add_ton_subparsers  # noqa: PLC0415

    add_ton_subparsers(sub)
    from cocoon_operator.nodeagent.agent import add_subparsers as add_agent  # noqa: PLC0415

    add_agent(sub)
    from cocoon_operator.nodeagent._sweep import add_subparsers as add_sweep  # noqa: PLC0415

    add_sweep(sub)
    from cocoon_operator.launcher.cli import add_subparsers as add_launch  # noqa: PLC0415

    add_launch(sub)
    from cocoon_operator.models.cli import add_subparsers as add_model  # noqa: PLC0415

    add_model(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
