"""``cocoon-operator node-agent``: probe this host and publish its report, in a loop.

    cocoon-operator node-agent --node-name "$NODE_NAME" --namespace "$POD_NAMESPACE"
        [--host-root /host] [--interval 15] [--heartbeat 300] [--once]
        [--model-cache DIR] [--gc-max-bytes N] [--gc-max-count N]
        [--gc-max-age-seconds S] [--gc-min-idle-seconds S] [--gc-interval S]

``--once`` probes, publishes and prints the report as one JSON document (for a
person checking a host). A failed pass is logged and retried next interval;
the agent itself never exits on a transient error.

The report lists the models of the node's cache (``--model-cache``, by default
the host's ``/var/lib/cocoon/models`` under ``--host-root``). With any
``--gc-max-*`` limit, the agent also collects unused models every
``--gc-interval`` seconds (:mod:`cocoon_operator.nodeagent._models`); it then
needs the cache mounted read-write, as root (the cache is root's).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cocoon_operator import logformat
from cocoon_operator.argparsing import positive_seconds
from cocoon_operator.k8s.kubeconfig import load
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.models import GcPolicy
from cocoon_operator.nodeagent._models import MODEL_CACHE_DIR, GcOptions, gc_pass
from cocoon_operator.nodeagent._probe import LAUNCHER_STATE_DIR, HostView, probe
from cocoon_operator.nodeagent._publish import Publisher

log = logging.getLogger("cocoon_operator.nodeagent")


def gc_options(args: argparse.Namespace) -> GcOptions:
    return GcOptions(
        GcPolicy(
            max_age=args.gc_max_age_seconds,
            max_count=args.gc_max_count,
            max_bytes=args.gc_max_bytes,
        ),
        interval=args.gc_interval,
        min_idle=args.gc_min_idle_seconds,
    )


async def _gc_forever(cache: Path, state_dir: Path, options: GcOptions) -> None:
    while True:
        try:
            result = await asyncio.to_thread(gc_pass, cache, state_dir, options)
            if result.busy:
                log.info("models being prepared, not collected: %s", ", ".join(result.busy))
        except OSError as exc:
            log.warning("model gc in %s: %s", cache, exc.strerror or exc)
        await asyncio.sleep(options.interval)


async def _run(args: argparse.Namespace) -> int:
    host = HostView(args.host_root)
    cache = args.model_cache or host.path(MODEL_CACHE_DIR)
    gc = gc_options(args)
    tasks: list[asyncio.Task[None]] = []
    if gc.enabled and not args.once:
        tasks.append(asyncio.create_task(_gc_forever(cache, host.path(LAUNCHER_STATE_DIR), gc)))
    async with Kube(load(args.kubeconfig)) as api:
        publisher = Publisher(api, args.namespace, dt.timedelta(seconds=args.heartbeat))
        while True:
            try:
                report = await asyncio.to_thread(probe, args.node_name, host, model_cache=cache)
                wrote = await publisher.publish(report, dt.datetime.now(dt.UTC))
            except Exception as exc:
                if args.once:
                    raise
                log.warning("node report for %s not published: %s", args.node_name, exc)
            else:
                if wrote:
                    failing = ", ".join(c.name for c in report.failing()) or "none"
                    log.info(
                        "report for %s: %d GPU(s), %d VM(s), failing checks: %s",
                        args.node_name,
                        len(report.gpus),
                        len(report.vms),
                        failing,
                    )
                if args.once:
                    print(report.model_dump_json(by_alias=True, indent=2))
                    return 0
            await asyncio.sleep(args.interval)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def cmd_node_agent(args: argparse.Namespace) -> int:
    if not args.node_name or not args.namespace:
        print("node-agent: --node-name and --namespace are required", file=sys.stderr)
        return 2
    logformat.configure(args.log_format, args.log_level)
    return asyncio.run(_run(args))


def add_subparsers(sub: Any) -> None:
    agent = sub.add_parser("node-agent", help="report this host's readiness, GPUs and VMs")
    agent.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="the node reported on (default: $NODE_NAME, the chart's downward API)",
    )
    agent.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="where the report ConfigMap goes (default: $POD_NAMESPACE)",
    )
    agent.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or in-cluster")
    agent.add_argument(
        "--host-root", type=Path, default=Path("/host"), help="where the host's files are mounted"
    )
    agent.add_argument("--interval", type=float, default=15.0, help="seconds between probes")
    agent.add_argument(
        "--heartbeat",
        type=positive_seconds,
        default=300.0,
        help="rewrite an unchanged report at least this often (at a phase drawn at random)",
    )
    agent.add_argument("--once", action="store_true", help="probe and publish once, print it")
    agent.add_argument(
        "--log-format",
        choices=logformat.LOG_FORMATS,
        default="full",
        help="as the operator's: plain, full (time, logger, level) or json",
    )
    agent.add_argument(
        "--log-level", choices=logformat.LOG_LEVELS, default="info", help="the least severe level"
    )
    agent.add_argument(
        "--model-cache",
        type=Path,
        default=None,
        help="the node's model cache (default: var/lib/cocoon/models under --host-root)",
    )
    agent.add_argument(
        "--gc-max-bytes",
        type=_non_negative,
        default=None,
        help="keep at most this many bytes of unused models",
    )
    agent.add_argument(
        "--gc-max-count",
        type=_non_negative,
        default=None,
        help="keep at most this many unused models",
    )
    agent.add_argument(
        "--gc-max-age-seconds", type=float, default=None, help="remove models unused this long"
    )
    agent.add_argument(
        "--gc-min-idle-seconds",
        type=float,
        default=600.0,
        help="never collect a model used more recently than this (its VM may be starting)",
    )
    agent.add_argument("--gc-interval", type=float, default=600.0, help="seconds between gcs")
    agent.set_defaults(func=cmd_node_agent)
