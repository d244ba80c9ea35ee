"""``cocoon-operator node-agent``: probe this host and publish its report, in a loop.

    cocoon-operator node-agent --node-name "$NODE_NAME" --namespace "$POD_NAMESPACE"
        [--host-root /host] [--interval 15] [--heartbeat 300] [--once]

``--once`` probes, publishes and prints the report as one JSON document (for a
person checking a host). A failed pass is logged and retried next interval;
the agent itself never exits on a transient error.
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
from cocoon_operator.k8s.kubeconfig import load
from cocoon_operator.k8s.rest import Kube
from cocoon_operator.nodeagent._probe import HostView, probe
from cocoon_operator.nodeagent._publish import Publisher

log = logging.getLogger("cocoon_operator.nodeagent")


async def _run(args: argparse.Namespace) -> int:
    host = HostView(args.host_root)
    async with Kube(load(args.kubeconfig)) as api:
        publisher = Publisher(api, args.namespace, dt.timedelta(seconds=args.heartbeat))
        while True:
            try:
                report = await asyncio.to_thread(probe, args.node_name, host)
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
        "--heartbeat", type=float, default=300.0, help="rewrite an unchanged report this often"
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
    agent.set_defaults(func=cmd_node_agent)
