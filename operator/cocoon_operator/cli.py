"""The ``cocoon-operator`` command: subcommands for people and scripts.

Each subcommand is a small function that parses arguments and calls the library;
output meant for scripts is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cocoon_operator import __version__
from cocoon_operator.argparsing import Parser
from cocoon_operator.policy.launcherimages import LauncherImages
from cocoon_operator.policy.nodes import (
    Eligibility,
    HostSummary,
    NodeFacts,
    eligibility,
    host_summary,
)

if TYPE_CHECKING:
    import kopf

    from cocoon_operator.api.nodereport import NodeReport
    from cocoon_operator.handlers.admission import WebhookOptions
    from cocoon_operator.handlers.checks import Check
    from cocoon_operator.handlers.runtime import Runtime


class CommandError(Exception):
    """A failure the command explains in one line; ``main`` prints it without a traceback."""


class RoutineTimerSuccesses(logging.Filter):
    """Drops kopf's ``Timer 'x' succeeded.`` lines (INFO, logger ``kopf.objects``).

    Every worker had a kopf timer (the checks every few seconds, a slow resync) that
    nearly always found nothing to do: at a fleet's scale they were nearly all of the operator's
    log (docs/bench.md, "The measurements behind the code") and buried what changed, which the
    operator logs and records as Events itself. The workers' checks now have a scheduler of
    their own (handlers/checks.py); every pool still has its resync timer. A timer that fails
    still logs; ``--log-level debug`` (``--verbose``) keeps these lines too. The text is
    kopf's (``f"{handler} succeeded."``, ``Timer 'id'`` for a timer).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        return not (
            record.levelno == logging.INFO
            and isinstance(msg, str)
            and msg.startswith("Timer '")
            and msg.endswith("' succeeded.")
        )


LOG_FORMATS = ("plain", "full", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class LoggerName(logging.Filter):
    """Copies each record's logger name into ``record.logger``.

    The JSON format writes a record's extra attributes as fields and leaves the
    name out otherwise; with it a log pipeline can tell the operator's own lines
    (``cocoon_operator.*``) from kopf's (``kopf.objects`` for a resource's).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.logger = record.name
        return True


def configure_logging(log_format: str, log_level: str) -> logging.Handler:
    """Send every log record to stderr in ``log_format`` from ``log_level`` up; the handler.

    The formats are kopf's (``kopf.LogFormat``): ``plain`` the message alone,
    ``full`` with a timestamp, the logger and the level, ``json`` one object per
    line with ``message``, ``timestamp``, ``severity``, ``logger`` and, for a
    line about a resource, ``object`` (its apiVersion, kind, namespace, name,
    uid). Text formats start such a line with ``[namespace/name]``. Nothing is
    redacted here: secrets are kept out of messages where they are handled (the
    TON client replaces its API key in every error text and drops the cause:
    :meth:`cocoon_operator.ton.client.TonClient._redact`), which holds for every
    format. ``debug`` also keeps kopf's per-tick timer successes
    (:class:`RoutineTimerSuccesses`).
    """
    import kopf  # noqa: PLC0415 - only `run` needs kopf

    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log level {log_level!r}: one of {', '.join(LOG_LEVELS)}")
    kopf.configure(
        verbose=log_level == "debug",
        quiet=log_level in ("warning", "error"),
        log_format=kopf.LogFormat[log_format.upper()],
        log_prefix=None,  # kopf's choice: [namespace/name] in text, an `object` field in JSON
    )
    root = logging.getLogger()
    root.setLevel(log_level.upper())
    # kopf.configure replaced its own handler: the one it added last.
    handler = root.handlers[-1]
    handler.addFilter(LoggerName())
    objects = logging.getLogger("kopf.objects")
    for old in [f for f in objects.filters if isinstance(f, RoutineTimerSuccesses)]:
        objects.removeFilter(old)
    if log_level != "debug":
        objects.addFilter(RoutineTimerSuccesses())
    return handler


async def _gather_nodes(kubeconfig: str | None) -> list[NodeFacts]:
    import aiohttp  # noqa: PLC0415 - keep `--help` fast

    from cocoon_operator.k8s.kubeconfig import load  # noqa: PLC0415
    from cocoon_operator.k8s.rest import ApiError, Kube, path  # noqa: PLC0415

    connection = load(kubeconfig)
    try:
        async with Kube(connection, timeout=30.0) as api:
            nodes = await api.request("GET", path("v1", "nodes"))
    except ApiError as exc:
        raise CommandError(f"{connection.server}: {exc}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        why = str(exc) or type(exc).__name__
        raise CommandError(f"cannot reach the apiserver at {connection.server}: {why}") from None
    return [
        NodeFacts(
            name=n["metadata"]["name"],
            labels=n["metadata"].get("labels") or {},
            allocatable=(n.get("status") or {}).get("allocatable") or {},
            unschedulable=bool((n.get("spec") or {}).get("unschedulable")),
        )
        for n in nodes.get("items") or []
    ]


async def _gather_reports(kubeconfig: str | None, namespace: str) -> dict[str, NodeReport]:
    """The node agents' reports in ``namespace`` (the one the operator trusts), by node."""
    from cocoon_operator.api.nodereport import (  # noqa: PLC0415
        REPORT_KEY,
        REPORT_LABEL,
        NodeReport,
    )
    from cocoon_operator.k8s.kubeconfig import load  # noqa: PLC0415
    from cocoon_operator.k8s.rest import Kube, path  # noqa: PLC0415

    async with Kube(load(kubeconfig)) as api:
        listed = await api.request(
            "GET",
            path("v1", "configmaps", namespace=namespace),
            query={"labelSelector": f"{REPORT_LABEL}=true"},
        )
    out: dict[str, NodeReport] = {}
    for cm in listed.get("items") or []:
        try:
            report = NodeReport.model_validate_json((cm.get("data") or {}).get(REPORT_KEY, ""))
        except ValueError:
            continue
        out[report.node] = report
    return out


def _nodes_table(
    rows: Sequence[Eligibility], hosts: Mapping[str, HostSummary] | None = None
) -> str:
    header: tuple[str, ...] = ("NODE", "ELIGIBLE", "GPUS", "PRODUCT", "REASONS")
    if hosts is not None:
        header += ("QUOTE", "SEAL", "SEAL-LABEL", "VFIO", "CC")
    lines = [header]
    for r in rows:
        line: tuple[str, ...] = (
            r.node,
            "yes" if r.eligible else "no",
            str(r.passthrough_gpus),
            r.product or "-",
            ",".join(r.reasons) or "-",
        )
        if hosts is not None:
            h = hosts[r.node]
            line += (h.quote_service, h.seal_server, h.seal_label or "-", h.vfio, h.cc_mode or "-")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def cmd_nodes(args: argparse.Namespace) -> int:
    """Show which nodes can host a worker VM and why the others cannot."""
    facts = asyncio.run(_gather_nodes(args.kubeconfig))
    rows = sorted((eligibility(f) for f in facts), key=lambda r: (not r.eligible, r.node))
    hosts: dict[str, HostSummary] | None = None
    if args.reports_namespace:
        reports = asyncio.run(_gather_reports(args.kubeconfig, args.reports_namespace))
        hosts = {f.name: host_summary(f.labels, reports.get(f.name)) for f in facts}
    if args.json:
        payload: list[dict[str, Any]] = []
        for r in rows:
            item: dict[str, Any] = {
                "node": r.node,
                "eligible": r.eligible,
                "passthroughGPUs": r.passthrough_gpus,
                "product": r.product,
                "reasons": [str(x) for x in r.reasons],
            }
            if hosts is not None:
                h = hosts[r.node]
                item["host"] = {
                    "reported": h.reported,
                    "quoteService": h.quote_service,
                    "sealServer": h.seal_server,
                    "sealLabel": h.seal_label,
                    "ccMode": h.cc_mode,
                    "gpus": [{"pci": p, "driver": d, "vfio": v} for p, d, v in h.gpus],
                }
            payload.append(item)
        print(json.dumps(payload, indent=2))
    else:
        print(_nodes_table(rows, hosts))
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


async def _standby_webhook(args: argparse.Namespace) -> Any:
    """Answer admission reviews while waiting for the Lease, when the webhook has a
    mounted certificate (the chart's ``certSecret`` or cert-manager): the
    configurations then name the Service, which calls every replica, and a
    review a follower did not answer would pass unchecked. Both handlers need
    only the request and the operator's own configuration (the launcher-image
    allow-list) (:func:`handlers.admission.standby_review`). Returns the
    aiohttp runner and the certificate reloader to clean up, or None."""
    if not (args.webhook_addr and args.webhook_cert and args.webhook_key):
        return None  # self-signed: the leader names its own host, followers get nothing
    import ssl  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415

    from cocoon_operator.handlers.admission import standby_review  # noqa: PLC0415

    namespaces = args.namespace or []
    images = _launcher_images(args)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.webhook_cert, args.webhook_key)

    async def reload() -> None:
        # A renewed certificate (cert-manager) is picked up as kopf does: every minute.
        while True:
            await asyncio.sleep(60)
            try:
                context.load_cert_chain(args.webhook_cert, args.webhook_key)
            except (OSError, ssl.SSLError) as exc:
                logging.getLogger(__name__).warning("standby webhook certificate: %s", exc)

    async def serve(request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            return web.Response(status=400, text="not an AdmissionReview")
        if not isinstance(review, dict):
            return web.Response(status=400, text="not an AdmissionReview")
        answer = standby_review(
            request.match_info["id"],
            review,
            namespaces,
            images,
            allow_gpu_verify=args.allow_gpu_verify_mode,
        )
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/{id}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(
        runner, args.webhook_addr, args.webhook_port, ssl_context=context, reuse_address=True
    ).start()
    return runner, asyncio.create_task(reload())


def _lease_times(args: argparse.Namespace) -> Any:
    """The election's timing from the flags (client-go's proportions by default);
    ValueError naming the flags when they do not nest."""
    from cocoon_operator.policy.leader import LeaseTimes  # noqa: PLC0415

    try:
        return LeaseTimes(
            lease=args.lease_seconds,
            renew_deadline=args.renew_deadline_seconds or args.lease_seconds * 2 / 3,
            retry=args.retry_period_seconds or args.lease_seconds * 2 / 15,
        )
    except ValueError as exc:
        raise ValueError(
            f"--lease-seconds, --renew-deadline-seconds, --retry-period-seconds: {exc}"
        ) from None


async def _run_as_leader(
    args: argparse.Namespace, operator: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> int:
    """Run the operator only while this replica holds the Lease; exit 1 when it is lost."""
    import socket  # noqa: PLC0415
    import uuid  # noqa: PLC0415

    from cocoon_operator.k8s.kubeconfig import load  # noqa: PLC0415
    from cocoon_operator.k8s.leader import LeaderElector  # noqa: PLC0415
    from cocoon_operator.k8s.rest import Kube  # noqa: PLC0415

    times = _lease_times(args)
    identity = f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE", "default")
    async with Kube(load()) as api:
        elector = LeaderElector(
            api,
            namespace,
            args.leader_election_id,
            identity,
            times=times,
        )
        standby = await _standby_health(args.liveness)
        webhook = await _standby_webhook(args)
        try:
            await elector.acquire()
        finally:
            if standby is not None:
                await standby.cleanup()  # kopf serves the endpoint from now on
            if webhook is not None:
                webhook[1].cancel()
                await webhook[0].cleanup()  # and the webhook
        stop = asyncio.Event()
        running = asyncio.create_task(operator(stop))
        holding = asyncio.create_task(elector.hold())
        done, _ = await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding in done:
            # Leadership lost: stop acting at once; the restarted process waits as a
            # follower. A follower may take over ``lease - renew_deadline`` from now:
            # handlers that do not stop by then are cut off like a kill -9, which every
            # on-chain step survives (docs/funding.md).
            stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(running), times.lease - times.renew_deadline)
            except TimeoutError:
                logging.getLogger(__name__).error(
                    "leader election: handlers did not stop in time; exiting at once"
                )
                logging.shutdown()
                os._exit(1)
            return 1
        holding.cancel()
        await elector.release()
        running.result()
    return 0


def _check_process_flags(args: argparse.Namespace) -> str | None:
    """What is wrong with the collateral age or leader-election timing flags, if anything."""
    if not args.collateral_max_age_hours > 0:  # also NaN
        return "--collateral-max-age-hours must be positive"
    if not args.leader_elect:
        return None
    try:
        _lease_times(args)
    except ValueError as exc:
        return str(exc)
    return None


def funding_limits(
    max_target: Sequence[str],
    worker_daily_cap: Sequence[str],
    namespace_daily_cap: Sequence[str],
    before_start: Sequence[str] = (),
) -> Any:
    """The operator's funding limits (a ``policy.treasury.FundingLimits``) from the
    ``--funding-*`` flags: each value is ``TON`` (every namespace) or ``NAMESPACE=TON``
    (that namespace), the last one given winning; ``before_start``: the
    ``--fund-before-start-namespace`` values. Raises ValueError naming the flag."""
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
    for ns in before_start:
        if not ns or "=" in ns or "/" in ns:
            raise ValueError(f"--fund-before-start-namespace {ns!r}: expected a namespace or '*'")
    return FundingLimits(base, namespaces, frozenset(before_start))


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

    if args.fund_before_start_namespace and not args.treasury_secret:
        raise ValueError(
            "--fund-before-start-namespace needs --treasury-secret: without a treasury no"
            " wallet could be funded and those workers would never start"
        )
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
        root_owner_wallet=WalletVersion(args.root_owner_wallet),
        registration_ledger=_namespaced(args.registration_ledger),
        funding_limits=funding_limits(
            args.funding_max_target,
            args.funding_worker_daily_cap,
            args.funding_namespace_daily_cap,
            args.fund_before_start_namespace,
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


def _register_node_reports(args: argparse.Namespace, runtime: Runtime) -> Check:
    """The node-report step; returns its check for the checks' scheduler (run
    as often as the attestation check: the scheduler keeps its tick)."""
    import kopf  # noqa: PLC0415

    from cocoon_operator.handlers import nodes  # noqa: PLC0415
    from cocoon_operator.handlers.nodetracker import NodeReportOptions  # noqa: PLC0415

    options = NodeReportOptions(
        namespace=args.node_report_namespace,
        grace_seconds=args.orphan_grace_seconds,
        max_age_seconds=args.node_report_max_age_seconds,
    )
    return nodes.register(
        kopf.get_default_registry(), runtime, options, args.attestation_check_seconds
    )


def _register_seal_servers(args: argparse.Namespace, runtime: Runtime) -> str | None:
    """Register the seal-server step as the flags configure it; what is wrong with them."""
    import kopf  # noqa: PLC0415

    from cocoon_operator.desired.sealserver import SealServerOptions  # noqa: PLC0415
    from cocoon_operator.handlers.sealserver import SealServerRun, register  # noqa: PLC0415

    namespace = args.seal_server_namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        return "--seal-servers needs --seal-server-namespace (or $POD_NAMESPACE)"
    options = SealServerOptions(
        namespace=namespace,
        pull_policy=args.seal_server_pull_policy,
        sgx=args.seal_server_sgx,
        priority_class=args.seal_server_priority_class,
    )
    if args.seal_server_resources:
        try:
            resources = json.loads(args.seal_server_resources)
        except ValueError as exc:
            return f"--seal-server-resources is not JSON: {exc}"
        if not isinstance(resources, dict) or not all(
            k in ("requests", "limits") and isinstance(v, dict) for k, v in resources.items()
        ):
            return "--seal-server-resources: an object with requests and/or limits"
        options = dataclasses.replace(options, resources=resources)
    releases = set()
    for entry in args.seal_server_release:
        image, _, enclave = entry.rpartition("=")
        if not re.fullmatch(r"[^\s@=]+@sha256:[0-9a-f]{64}", image) or not re.fullmatch(
            r"[0-9a-f]{64}", enclave
        ):
            return f"--seal-server-release {entry!r}: expected REPO@sha256:DIGEST=ENCLAVE_SHA256"
        releases.add((image, enclave))
    register(
        kopf.get_default_registry(),
        runtime,
        SealServerRun(
            options,
            sweep_seconds=args.seal_server_sweep_seconds,
            settle_seconds=args.seal_server_settle_seconds,
            releases=frozenset(releases),
        ),
    )
    return None


def register_core(
    registry: kopf.OperatorRegistry, runtime: Runtime, *, webhook: WebhookOptions | None = None
) -> Check:
    """Register the handlers every operator process runs (its login, startup and
    cleanup, the indexes, the workers', the cordoned nodes' and the pools') in
    ``registry``; returns the workers' resync check for the checks' scheduler. Every
    handler module registers the same way: ``register(registry, runtime, ...)``.
    The optional steps are registered by :func:`cmd_run` as its flags say."""
    from cocoon_operator.handlers import cordon, indexes, pool, process, worker  # noqa: PLC0415

    process.register(registry, runtime, webhook=webhook)
    indexes.register(registry)
    resync = worker.register(registry, runtime)
    cordon.register(registry, runtime)
    pool.register(registry, runtime)
    return resync


def _tune_memory() -> str:
    """glibc's allocator (malloc.py) and asyncio's TLS read buffers (tlsbuffers.py), set
    before the first allocation and connection they are for; what was set, for the log."""
    from cocoon_operator.malloc import tune_allocator  # noqa: PLC0415
    from cocoon_operator.tlsbuffers import shrink_tls_read_buffers  # noqa: PLC0415

    allocator = tune_allocator()
    tls = shrink_tls_read_buffers()
    return (
        f"glibc allocator {allocator or 'as it was'};"
        f" TLS read buffer (asyncio's, ours) {tls or 'not settable'}"
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator (kopf) until interrupted."""
    without_generated_client()
    # Before the watches and the fleet's first events.
    memory = _tune_memory()
    import kopf  # noqa: PLC0415 - the operator's dependencies load only for `run`

    from cocoon_operator.handlers import (  # noqa: PLC0415
        admission,
        attestation,
        chain,
        checks,
        control,
        kopfbodies,
        process,
    )
    from cocoon_operator.handlers.runtime import Runtime, Settings  # noqa: PLC0415
    from cocoon_operator.metrics import Metrics  # noqa: PLC0415

    configure_logging(args.log_format, "debug" if args.verbose else args.log_level)
    # Before kopf's first event: each event's body freed once handled (kopfbodies.py).
    kopfbodies.install()
    logging.getLogger("cocoon_operator").debug("memory settings: %s", memory)
    namespaces = args.namespace or []
    problem = _check_test_roots(args) or _check_launcher_images(args) or _check_process_flags(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    metrics = Metrics()
    images = _launcher_images(args)
    runtime = Runtime(
        Settings(
            metrics=metrics,
            probe_limit=args.max_concurrent_probes,
            max_stretch=args.max_recheck_stretch,
            launcher_images=images,
            launcher_priority_class=args.launcher_priority_class,
            control_key_secret=args.control_key_secret
            or (os.environ.get("POD_NAMESPACE", "default"), "cocoon-operator-control-key"),
        )
    )
    registry = kopf.get_default_registry()
    webhook = None
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    if args.webhook_addr:
        if bool(args.webhook_cert) != bool(args.webhook_key):
            print("--webhook-cert and --webhook-key go together", file=sys.stderr)
            return 2
        admission.register(
            registry,
            images,
            namespaces,
            allow_gpu_verify=args.allow_gpu_verify_mode,
        )
        webhook = _webhook_options(args)
    resync = register_core(registry, runtime, webhook=webhook)
    attestation_options = attestation.AttestationOptions(
        pccs_url=args.pccs_url,
        test_root=args.attestation_test_root,
        gpu_test_root=args.gpu_attestation_test_root,
        allow_gpu_verify=args.allow_gpu_verify_mode,
        check_seconds=args.attestation_check_seconds,
        boot_grace_seconds=args.attestation_boot_grace_seconds,
        collateral_max_age_hours=args.collateral_max_age_hours,
    )
    periodic: list[checks.Check] = []
    attest = attestation.register(registry, runtime, attestation_options)
    if args.node_report_namespace:
        periodic.append(_register_node_reports(args, runtime))
    if args.seal_servers and (problem := _register_seal_servers(args, runtime)):
        print(f"cocoon-operator run: {problem}", file=sys.stderr)
        return 2
    coefficient = control.register(registry, runtime, args.attestation_check_seconds)
    if args.ton_endpoint:
        try:
            options = chain_options(args)
        except ValueError as exc:
            print(f"cocoon-operator run: {exc}", file=sys.stderr)
            return 2
        periodic.append(chain.register(registry, runtime, options, args.chain_check_seconds))
    checks.register(
        registry,
        runtime,
        [*periodic, attest, coefficient, resync],
        stretch=functools.partial(process.routine_stretch, runtime),
        hurry=process.not_ready,
    )

    async def operator(stop: asyncio.Event | None = None) -> None:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            standalone=True,
            stop_flag=stop,
        )

    from cocoon_operator.gctune import tune_collector  # noqa: PLC0415

    # Everything is imported and registered: frozen, and the thresholds set (gctune.py).
    frozen, thresholds = tune_collector()
    logging.getLogger("cocoon_operator").info(
        "garbage collector: %d objects frozen, thresholds %s", frozen, thresholds
    )
    if not args.leader_elect:
        asyncio.run(operator())
        return 0
    return asyncio.run(_run_as_leader(args, operator))


def _namespaced_arg(value: str) -> tuple[str, str]:
    try:
        return _namespaced(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_leader_args(run: argparse.ArgumentParser) -> None:
    lead = run.add_argument_group("leader election (for more than one replica)")
    lead.add_argument("--leader-elect", action="store_true", help="act only while holding a Lease")
    lead.add_argument("--leader-election-id", default="cocoon-operator", help="the Lease's name")
    lead.add_argument(
        "--leader-election-namespace", default=None, help="default: $POD_NAMESPACE or default"
    )
    lead.add_argument(
        "--lease-seconds",
        type=int,
        default=15,
        help="a Lease not renewed this long is taken over by another replica",
    )
    lead.add_argument(
        "--renew-deadline-seconds",
        type=float,
        default=None,
        help="stop acting when no renewal succeeded for this long (default: 2/3 of the lease)",
    )
    lead.add_argument(
        "--retry-period-seconds",
        type=float,
        default=None,
        help="renew or retry to acquire this often (default: 2/15 of the lease)",
    )


def _add_log_args(run: argparse.ArgumentParser) -> None:
    logs = run.add_argument_group("logs (on stderr)")
    logs.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="full",
        help="plain: the message alone; full: with time, logger and level; json: one object"
        " a line (message, timestamp, severity, logger, object)",
    )
    logs.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="the least severe level written; debug also keeps kopf's per-tick timer"
        " successes and kopf's own debug lines",
    )
    logs.add_argument("--verbose", action="store_true", help="the same as --log-level=debug")


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
        "--allow-gpu-verify-mode",
        action="store_true",
        help="accept spec.attestation.gpu.mode: Verify, which needs the project's own GPU"
        " evidence endpoint; COCOON's worker does not serve it (it attests its GPU in the"
        " guest), so without this flag Verify is refused at admission and never verifies",
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
    att.add_argument(
        "--collateral-max-age-hours",
        type=float,
        default=24.0,
        help="refetch TDX collateral (TCB info, QE identity, CRLs) at least this often,"
        " however far its nextUpdate is, so a TCB recovery or PCK revocation takes effect"
        " within this time (PCCS refreshes daily by default)",
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
        "--fund-before-start-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="fund the node wallets of this namespace's workers up to COCOON's 2.1 TON start"
        " floor before their VMs start, on the model hash alone (no attestation yet: a tenant"
        " holding the key can spend that, within the daily caps); '*' for every namespace;"
        " repeatable (default: none, wallets are funded once attested); needs --treasury-secret",
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
    ton.add_argument(
        "--chain-check-seconds",
        type=float,
        default=30.0,
        help="how often each attested worker's wallet, stats and allow-lists are read",
    )
    ton.add_argument(
        "--root-owner-secret",
        default=None,
        help="NAMESPACE/NAME of the Secret with the wallet owning your own root contract (key"
        " 'mnemonic' or 'seed'); workers with spec.registerOnRoot get their attested hashes"
        " registered on it. Without it nothing is registered",
    )
    ton.add_argument(
        "--root-owner-wallet",
        choices=["v4r2", "v5r1"],  # ton.wallet.WalletVersion
        default="v4r2",
        help="the root owner's wallet contract; the root's owner (read from its data) must be"
        " that key's wallet of this version, or nothing is registered (the refusal names the"
        " version that would match)",
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
    hook.add_argument("--webhook-port", type=int, default=9443, help="listen port")
    hook.add_argument("--webhook-host", default=None, help="name the apiserver calls")
    hook.add_argument(
        "--webhook-config", default="cocoon.network", help="ValidatingWebhookConfiguration name"
    )
    hook.add_argument("--webhook-cert", default=None, help="PEM; self-signed when omitted")
    hook.add_argument("--webhook-key", default=None, help="PEM key of --webhook-cert")


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
    images.add_argument(
        "--launcher-priority-class",
        default=None,
        metavar="NAME",
        help="the PriorityClass of the launcher pods the operator creates (none by default);"
        " pods created before a change keep theirs",
    )


def _add_library_subcommands(sub: Any) -> None:
    """The libraries' own subcommands, imported here to keep ``--help`` fast."""
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
    from cocoon_operator.release.cli import add_subparsers as add_release  # noqa: PLC0415

    add_release(sub)


def _add_nodes(sub: Any) -> None:
    nodes = sub.add_parser("nodes", help="list nodes and whether they can host a worker VM")
    nodes.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or in-cluster")
    nodes.add_argument("--json", action="store_true", help="one JSON document on stdout")
    nodes.add_argument(
        "--reports-namespace",
        default=None,
        help="also show the node agents' reports from this namespace (the chart's release"
        " namespace): quote service, seal server, GPUs on vfio-pci, CC mode",
    )
    nodes.set_defaults(func=cmd_nodes)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cocoon-operator",
        description="Operate COCOON confidential GPU workers on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, print Python's traceback instead of one line",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _add_nodes(sub)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument(
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    _add_log_args(run)
    run.add_argument(
        "--control-key-secret",
        default=None,
        type=_namespaced_arg,
        metavar="NAMESPACE/NAME",
        help="the Secret of the operator's Ed25519 control keys ('current', 'previous'),"
        " created with a new key if absent; launcher pods forward the worker's controls only"
        " when signed with it (default: $POD_NAMESPACE/cocoon-operator-control-key)",
    )
    _add_leader_args(run)
    run.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)"
    )
    _add_launcher_image_args(run)
    _add_webhook_args(run)
    _add_attestation_args(run)
    _add_chain_args(run)
    seal = run.add_argument_group("seal servers (off without --seal-servers)")
    seal.add_argument(
        "--seal-servers",
        action="store_true",
        help="run a seal-server DaemonSet per enclave in use; place VMs only where one is ready",
    )
    seal.add_argument(
        "--seal-server-namespace", default=None, help="their namespace (default: $POD_NAMESPACE)"
    )
    seal.add_argument(
        "--seal-server-release",
        action="append",
        default=[],
        metavar="IMAGE=ENCLAVE_SHA256",
        help="a release whose seal server may run: its launcher image by digest and"
        " its enclave's digest (as `release import` prints them); repeatable",
    )
    seal.add_argument(
        "--seal-server-pull-policy",
        default="IfNotPresent",
        choices=("Always", "IfNotPresent", "Never"),
        help="the seal-server pods' image pull policy",
    )
    seal.add_argument(
        "--seal-server-sgx",
        choices=("privileged", "device-plugin"),
        default="privileged",
        help="how the pods reach /dev/sgx_enclave and /dev/sgx_provision (docs/deploy.md)",
    )
    seal.add_argument(
        "--seal-server-resources",
        default=None,
        help='the container\'s resources as JSON, e.g. {"requests": {"cpu": "50m"}}',
    )
    seal.add_argument(
        "--seal-server-priority-class",
        default=None,
        help="the seal-server pods' PriorityClass (none by default)",
    )
    seal.add_argument(
        "--seal-server-sweep-seconds",
        type=float,
        default=5.0,
        help="how often the seal-server DaemonSets and node labels are reconciled",
    )
    seal.add_argument(
        "--seal-server-settle-seconds",
        type=float,
        default=30.0,
        help="after startup, delete no DaemonSet and remove no node label for this long",
    )
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
    agents.add_argument(
        "--node-report-max-age-seconds",
        type=float,
        default=900.0,
        help="a report not rewritten for this long vouches for nothing (the agent rewrites"
        " it every heartbeat, 300 s in the chart): its agent is taken as gone",
    )
    run.set_defaults(func=cmd_run)

    _add_library_subcommands(sub)
    return parser


def error_line(command: str, exc: BaseException) -> str | None:
    """The one line a failure of ``command`` is reported with, or None when it is not
    one a person can act on (a bug: the traceback says more).

    Expected failures: a :class:`CommandError`, a kubeconfig the client cannot
    use, an answer of the apiserver, a network or file error. The line is the
    exception's own text with its whitespace folded, as each of those texts is
    written to be shown (none holds a credential: the kubeconfig and TON errors
    leave them out where they are raised).
    """
    import aiohttp  # noqa: PLC0415 - only on an error

    from cocoon_operator.k8s.kubeconfig import KubeconfigError  # noqa: PLC0415
    from cocoon_operator.k8s.rest import ApiError  # noqa: PLC0415

    if isinstance(exc, CommandError | KubeconfigError | ApiError):
        text = str(exc)
    elif isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        return None
    return " ".join(f"cocoon-operator {command}: {text}".split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; an error is one line on stderr and status 1 (``--traceback``:
    Python's traceback). ``run`` keeps the traceback of an unexpected error, for
    the operator's log; Ctrl-C is status 130 without a word."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        line = error_line(args.command, exc)
        if line is None:
            if args.command == "run":
                raise
            line = " ".join(
                f"cocoon-operator {args.command}: unexpected {type(exc).__name__}: {exc}"
                " (--traceback shows where)".split()
            )
        print(line, file=sys.stderr)
        return 1
    return result


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
