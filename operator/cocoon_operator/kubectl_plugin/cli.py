"""``kubectl cocoon``: argument parsing and the apiserver reads and writes behind it.

Everything shown is built by :mod:`cocoon_operator.kubectl_plugin.render`; this
module only fetches objects, parses them through the typed models and prints.

Exit status: 0 done, 1 the object was not found or the API failed (the message
names the object), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cocoon_operator.api import v1alpha1
from cocoon_operator.argparsing import Parser
from cocoon_operator.kubectl_plugin import render

API = (v1alpha1.GROUP, v1alpha1.VERSION)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = Path("~/.kube/config")


class PluginError(Exception):
    """A failure to report on stderr with exit status 1."""


# ---- connection and namespace ---------------------------------------------------------


def kubeconfig_path(explicit: str | None) -> str | None:
    """--kubeconfig, else $KUBECONFIG (may list several files), else ~/.kube/config
    when it exists; None means in-cluster."""
    if explicit:
        return explicit
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = DEFAULT_KUBECONFIG.expanduser()
    return str(default) if default.is_file() else None


def default_namespace(kubeconfig: str | None) -> str:
    """The current context's namespace, the pod's own in-cluster, else "default"."""
    if kubeconfig is None:
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    from kubernetes_asyncio.config import kube_config  # noqa: PLC0415 - keep `--help` fast

    try:
        _, active = kube_config.list_kube_config_contexts(kubeconfig)
    except Exception:  # the connection reports a broken kubeconfig properly
        return "default"
    context = (active or {}).get("context") or {}
    return str(context.get("namespace") or "default")


def _api_errors() -> tuple[type[Exception], ...]:
    """What a call to the apiserver raises when it fails (not when the plugin has a bug)."""
    import aiohttp  # noqa: PLC0415
    from kubernetes_asyncio.client.rest import ApiException  # noqa: PLC0415

    return (ApiException, aiohttp.ClientError, OSError)


def _api_error(err: Exception, what: str) -> PluginError:
    from kubernetes_asyncio.client.rest import ApiException  # noqa: PLC0415

    if isinstance(err, ApiException):
        if err.status == 404:
            return PluginError(f"{what} not found")
        try:
            detail = json.loads(err.body or "{}").get("message") or err.reason
        except (ValueError, AttributeError):
            detail = err.reason
        return PluginError(f"cannot access {what}: {err.status} {detail}")
    return PluginError(f"cannot access {what}: {type(err).__name__}: {err}")


def _worker_ref(namespace: str, name: str) -> str:
    return f'{render.RESOURCE} "{name}" in namespace "{namespace}"'


def _parse(obj: dict[str, Any]) -> render.WorkerView:
    try:
        return render.WorkerView.from_object(obj)
    except ValidationError as err:
        meta = obj.get("metadata") or {}
        ref = _worker_ref(meta.get("namespace", "?"), meta.get("name", "?"))
        raise PluginError(f"cannot parse {ref}: {err}") from err


async def _read_worker(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes_asyncio import client  # noqa: PLC0415

    try:
        obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            *API, namespace, v1alpha1.PLURAL, name
        )
    except _api_errors() as err:
        raise _api_error(err, _worker_ref(namespace, name)) from err
    return obj


async def _worker_events(api: Any, view: render.WorkerView) -> list[render.EventView]:
    from kubernetes_asyncio import client  # noqa: PLC0415

    selector = f"involvedObject.kind={v1alpha1.KIND},involvedObject.name={view.name}"
    try:
        listed = await client.CoreV1Api(api).list_namespaced_event(
            view.namespace, field_selector=selector
        )
    except _api_errors() as err:
        raise _api_error(err, f"events of {_worker_ref(view.namespace, view.name)}") from err
    events = []
    for item in listed.items:
        obj = api.sanitize_for_serialization(item)
        uid = (obj.get("involvedObject") or {}).get("uid")
        if uid and view.uid and uid != view.uid:  # an earlier worker of the same name
            continue
        events.append(render.EventView.from_object(obj))
    return events


# ---- subcommands ----------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


async def do_status(api: Any, args: argparse.Namespace) -> int:
    from kubernetes_asyncio import client  # noqa: PLC0415

    custom = client.CustomObjectsApi(api)
    where = "all namespaces" if args.all_namespaces else f'namespace "{args.namespace}"'
    try:
        if args.all_namespaces:
            listed = await custom.list_cluster_custom_object(*API, v1alpha1.PLURAL)
        else:
            listed = await custom.list_namespaced_custom_object(
                *API, args.namespace, v1alpha1.PLURAL
            )
    except _api_errors() as err:
        raise _api_error(err, f"{v1alpha1.PLURAL}.{v1alpha1.GROUP} in {where}") from err
    views = []
    for obj in listed.get("items", []):
        try:
            views.append(_parse(obj))
        except PluginError as err:
            print(f"warning: skipped: {err}", file=sys.stderr)
    if args.output == "json":
        _print_json(render.status_json(views))
    elif not views:
        print(f"No {v1alpha1.KIND}s found in {where}.", file=sys.stderr)
    else:
        now = dt.datetime.now(dt.UTC)
        print(render.status_table(views, now, all_namespaces=args.all_namespaces))
    return 0


async def do_describe(api: Any, args: argparse.Namespace) -> int:
    view = _parse(await _read_worker(api, args.namespace, args.name))
    events = await _worker_events(api, view)
    if args.output == "json":
        _print_json(render.describe_json(view, events))
    else:
        print(render.describe(view, events, dt.datetime.now(dt.UTC)))
    return 0


async def do_attest(api: Any, args: argparse.Namespace) -> int:
    view = _parse(await _read_worker(api, args.namespace, args.name))
    _print_json(render.attest_json(view))
    return 0


async def _set_paused(api: Any, args: argparse.Namespace, *, pause: bool) -> int:
    from kubernetes_asyncio import client  # noqa: PLC0415

    from cocoon_operator.k8s.client import MERGE_PATCH  # noqa: PLC0415

    view = _parse(await _read_worker(api, args.namespace, args.name))
    change = render.pause_change(view.annotations, pause=pause)
    if change.changed:
        try:
            await client.CustomObjectsApi(api).patch_namespaced_custom_object(
                *API,
                args.namespace,
                v1alpha1.PLURAL,
                args.name,
                change.patch,
                **MERGE_PATCH,
            )
        except _api_errors() as err:
            raise _api_error(err, _worker_ref(args.namespace, args.name)) from err
    if args.output == "json":
        _print_json(render.pause_json(view, change))
    else:
        print(render.pause_message(view, change, pause=pause))
    return 0


async def do_pause(api: Any, args: argparse.Namespace) -> int:
    return await _set_paused(api, args, pause=True)


async def do_resume(api: Any, args: argparse.Namespace) -> int:
    return await _set_paused(api, args, pause=False)


async def do_payout(api: Any, args: argparse.Namespace) -> int:
    """Ask for one payout now: a new value of the payout-request annotation, which
    the operator acts upon once, at its next check of the worker's chain facts."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    from cocoon_operator.k8s.client import MERGE_PATCH  # noqa: PLC0415

    view = _parse(await _read_worker(api, args.namespace, args.name))
    value = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {"metadata": {"annotations": {v1alpha1.PAYOUT_REQUEST_ANNOTATION: value}}}
    try:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            *API, args.namespace, v1alpha1.PLURAL, args.name, patch, **MERGE_PATCH
        )
    except _api_errors() as err:
        raise _api_error(err, _worker_ref(args.namespace, args.name)) from err
    ref = _worker_ref(view.namespace, view.name)
    if args.output == "json":
        _print_json(
            {"worker": ref, "annotation": v1alpha1.PAYOUT_REQUEST_ANNOTATION, "value": value}
        )
    else:
        print(
            f"payout requested for {ref} ({v1alpha1.PAYOUT_REQUEST_ANNOTATION}={value}); the"
            " operator asks the proxies at its next check: watch for the PayoutRequested Event"
        )
    return 0


Command = Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]


async def _with_api(command: Command, args: argparse.Namespace, kubeconfig: str | None) -> int:
    from kubernetes_asyncio import client  # noqa: PLC0415
    from kubernetes_asyncio.config import ConfigException  # noqa: PLC0415

    from cocoon_operator.k8s.client import load  # noqa: PLC0415

    try:
        configuration = await load(kubeconfig)
    except (ConfigException, OSError, ValueError) as err:
        where = kubeconfig or "in-cluster configuration"
        raise PluginError(f"cannot load {where}: {err}") from err
    async with client.ApiClient(configuration) as api:
        return await command(api, args)


# ---- arguments ------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before or after the subcommand; a subcommand's copy only sets what was given.
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="the worker's namespace (default: the kubeconfig context's, or default)",
    )
    parser.add_argument(
        "--kubeconfig", default=default, help="default: $KUBECONFIG, ~/.kube/config, in-cluster"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kubectl cocoon",
        description="Inspect and control COCOON workers (CocoonWorker resources).",
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, text: str, *, output: bool = True) -> Any:
        p = sub.add_parser(name, help=text, description=text)
        _common(p, top=False)
        if output:
            p.add_argument(
                "-o",
                "--output",
                choices=("text", "json"),
                default="text",
                help="text for people, json for scripts",
            )
        p.set_defaults(func=func)
        return p

    status = command("status", do_status, "list workers: phase, attestation, balance, earnings")
    status.add_argument(
        "-A", "--all-namespaces", action="store_true", help="workers of every namespace"
    )
    describe = command(
        "describe",
        do_describe,
        "conditions, attestation, chain, wallet, earnings, revisions and events of a worker",
    )
    describe.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    attest = command(
        "attest",
        do_attest,
        "print status.attestation and the Attested condition as JSON",
        output=False,
    )
    attest.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    pause = command("pause", do_pause, f"set the annotation {render.PAUSE_ANNOTATION}=true")
    pause.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    resume = command("resume", do_resume, f"remove the annotation {render.PAUSE_ANNOTATION}")
    resume.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    payout = command(
        "payout",
        do_payout,
        f"ask for one payout now (annotation {v1alpha1.PAYOUT_REQUEST_ANNOTATION})",
    )
    payout.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kubeconfig = kubeconfig_path(args.kubeconfig)
    if args.namespace is None:
        args.namespace = default_namespace(kubeconfig)
    try:
        return asyncio.run(_with_api(args.func, args, kubeconfig))
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point (``kubectl-cocoon``)."""
    sys.exit(main())
