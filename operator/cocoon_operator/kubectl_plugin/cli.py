"""``kubectl cocoon``: argument parsing and the apiserver reads and writes behind it.

Everything shown is built by :mod:`cocoon_operator.kubectl_plugin.render`; this
module only fetches objects, parses them through the typed models and prints.

Exit status: 0 done, 1 the object was not found or the API failed (the message
names the object), 2 usage error, 3 (``logs`` only) some log sources were read and
some were unavailable. Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cocoon_operator import __version__
from cocoon_operator.api import pool, v1alpha1
from cocoon_operator.api.labels import COMMON_LABELS, PAUSE_ANNOTATION
from cocoon_operator.api.nodereport import REPORT_LABEL
from cocoon_operator.argparsing import Parser
from cocoon_operator.desired.launcher import LAUNCHER_CONTAINER
from cocoon_operator.kubectl_plugin import bundle, logs, render

API = (v1alpha1.GROUP, v1alpha1.VERSION)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = Path("~/.kube/config")
EXIT_PARTIAL = 3
#: The operator's own objects in its namespace carry the chart's part-of label.
CHART_PART_OF = "app.kubernetes.io/part-of=cocoon"
#: How many of the operator's last log lines a report keeps per pod.
DEFAULT_REPORT_LOG_LINES = 5000


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


def default_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The namespace of ``context`` (else the current context), the pod's own
    in-cluster, else "default"."""
    if kubeconfig is None:
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    from kubernetes_asyncio.config import kube_config  # noqa: PLC0415 - keep `--help` fast

    try:
        contexts, active = kube_config.list_kube_config_contexts(kubeconfig)
    except Exception:  # the connection reports a broken kubeconfig properly
        return "default"
    if context is not None:  # an unknown name is reported when the kubeconfig is loaded
        active = next((c for c in contexts or [] if c.get("name") == context), None)
    chosen = (active or {}).get("context") or {}
    return str(chosen.get("namespace") or "default")


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


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


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _log_kwargs(args: argparse.Namespace, container: str, *, tail: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"container": container}
    if args.since is not None:
        kwargs["since_seconds"] = args.since
    if tail and args.tail >= 0:
        kwargs["tail_lines"] = args.tail
    return kwargs


async def _launcher_logs(core: Any, args: argparse.Namespace) -> tuple[int, int]:
    """Print the worker's launcher pods' logs; (sources read, sources unavailable)."""
    ns, name = args.namespace, args.name
    read = unavailable = 0
    what = f"launcher pods of {_worker_ref(ns, name)}"
    try:
        pods = await core.list_namespaced_pod(ns, label_selector=logs.launcher_selector(name))
    except _api_errors() as err:
        _note(f"unavailable: {_api_error(err, what)}")
        return 0, 1
    if not pods.items:
        _note(f"note: no {what}")
    for pod in sorted(pods.items, key=lambda p: str(p.metadata.creation_timestamp)):
        pod_name = pod.metadata.name
        source = f"logs of launcher pod {ns}/{pod_name} (container {args.container})"
        try:
            text = await core.read_namespaced_pod_log(
                pod_name, ns, **_log_kwargs(args, args.container, tail=True)
            )
        except _api_errors() as err:
            _note(f"unavailable: {_api_error(err, source)}")
            unavailable += 1
            continue
        read += 1
        for line in str(text).splitlines():
            print(logs.prefix(pod_name, args.container) + line)
    return read, unavailable


async def _operator_logs(core: Any, args: argparse.Namespace) -> tuple[int, int]:
    """Print the operator's lines about the worker; (sources read, sources unavailable)."""
    op_ns = args.operator_namespace
    read = unavailable = 0
    what = f"operator pods in namespace {op_ns} ({args.operator_selector})"
    try:
        operators = await core.list_namespaced_pod(op_ns, label_selector=args.operator_selector)
    except _api_errors() as err:
        _note(f"unavailable: {_api_error(err, what)}")
        return 0, 1
    if not operators.items:
        _note(f"unavailable: no {what}; see --operator-namespace")
        return 0, 1
    keep = logs.LineFilter(args.namespace, args.name)
    for pod in operators.items:
        pod_name = pod.metadata.name
        source = f"logs of operator pod {op_ns}/{pod_name}"
        try:
            # --tail counts the lines kept, so every line since --since is read.
            text = await core.read_namespaced_pod_log(
                pod_name, op_ns, **_log_kwargs(args, logs.OPERATOR_CONTAINER, tail=False)
            )
        except _api_errors() as err:
            _note(f"unavailable: {_api_error(err, source)}")
            unavailable += 1
            continue
        read += 1
        for line in logs.last(
            [line for line in str(text).splitlines() if keep.keeps(line)], args.tail
        ):
            print(logs.prefix(pod_name, logs.OPERATOR_CONTAINER) + line)
    return read, unavailable


async def do_logs(api: Any, args: argparse.Namespace) -> int:
    """Launcher pods' logs as they are, then the operator's lines about the worker.

    Each source that cannot be read (on the local stack, whose kwok nodes have
    no kubelet to serve logs, every pod's) is named on stderr with the reason,
    and the others are still printed: exit 0 when every source was read, 3
    (:data:`EXIT_PARTIAL`) when some were, 1 when none.
    """
    from kubernetes_asyncio import client  # noqa: PLC0415

    core = client.CoreV1Api(api)
    try:
        await _read_worker(api, args.namespace, args.name)
    except PluginError as err:
        _note(f"note: {err}; showing the logs that name it")
    read, unavailable = await _launcher_logs(core, args)
    op_read, op_unavailable = await _operator_logs(core, args)
    read, unavailable = read + op_read, unavailable + op_unavailable
    if unavailable == 0:
        return 0
    return EXIT_PARTIAL if read else 1


def _as_dict(api: Any, obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = api.sanitize_for_serialization(obj)
    return data


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


@dataclass
class _Collector:
    """One report's collection: each step's failure recorded in the bundle, not raised."""

    api: Any
    args: argparse.Namespace
    out: bundle.Bundle = field(default_factory=bundle.Bundle)
    attempted: int = 0
    errors: int = 0

    async def step(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        self.attempted += 1
        try:
            return await call()
        except _api_errors() as err:
            self.errors += 1
            self.out.fail(what, str(_api_error(err, what)))
            return None

    def items(self, listed: Any) -> list[dict[str, Any]]:
        """The items of a typed list answer as JSON-like dicts (none when it failed)."""
        return [_as_dict(self.api, i) for i in listed.items] if listed is not None else []

    @property
    def where(self) -> str:
        return "all namespaces" if self.args.all_namespaces else f"namespace {self.args.namespace}"


async def _report_workers(c: _Collector) -> None:
    """CocoonWorkers, CocoonWorkerPools, their launcher pods and the Events about them."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    core, custom = client.CoreV1Api(c.api), client.CustomObjectsApi(c.api)
    ns, everywhere = c.args.namespace, c.args.all_namespaces
    involved: set[tuple[str, str]] = set()  # (kind, namespace/name)
    for kind, plural in ((v1alpha1.KIND, v1alpha1.PLURAL), (pool.POOL_KIND, pool.POOL_PLURAL)):
        call = (
            partial(custom.list_cluster_custom_object, *API, plural)
            if everywhere
            else partial(custom.list_namespaced_custom_object, *API, ns, plural)
        )
        listed = await c.step(f"{plural} in {c.where}", call)
        for obj in (listed or {}).get("items", []):
            involved.add((kind, _name(obj)))
            c.out.add_object(bundle.object_path(plural, obj), f"{kind} {_name(obj)}", obj)

    # The launcher pods (spec and status), by the labels the operator sets on them.
    selector = ",".join(f"{k}={v}" for k, v in sorted(COMMON_LABELS.items()))
    call = (
        partial(core.list_pod_for_all_namespaces, label_selector=selector)
        if everywhere
        else partial(core.list_namespaced_pod, ns, label_selector=selector)
    )
    for obj in c.items(await c.step(f"launcher pods in {c.where}", call)):
        involved.add(("Pod", _name(obj)))
        c.out.add_object(bundle.object_path("pods", obj), f"launcher Pod {_name(obj)}", obj)

    # The Events about any of those, one file per namespace, oldest first.
    call = (
        partial(core.list_event_for_all_namespaces)
        if everywhere
        else partial(core.list_namespaced_event, ns)
    )
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for obj in c.items(await c.step(f"events in {c.where}", call)):
        ref = obj.get("involvedObject") or {}
        if (str(ref.get("kind")), f"{ref.get('namespace')}/{ref.get('name')}") in involved:
            by_namespace.setdefault(str(ref.get("namespace")), []).append(obj)
    for namespace, events in sorted(by_namespace.items()):
        events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        c.out.add_object(
            f"namespaces/{namespace}/events.yaml",
            f"Events about workers, pools and launcher pods in {namespace}",
            events,
        )


async def _report_operator(c: _Collector) -> None:
    """The operator's side: its Deployment and DaemonSet specs, its pods' statuses, the
    chart values they show, the node reports and the operator's logs."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    core, apps = client.CoreV1Api(c.api), client.AppsV1Api(c.api)
    op_ns = c.args.operator_namespace
    operator_args: dict[str, Any] = {}
    workload_selectors: list[str] = []
    op_name = logs.DEFAULT_OPERATOR_SELECTOR.partition("=")[2]
    for kind, lister in (
        ("deployments", apps.list_namespaced_deployment),
        ("daemonsets", apps.list_namespaced_daemon_set),
    ):
        what = f"{kind} in namespace {op_ns} ({CHART_PART_OF})"
        listed = await c.step(what, partial(lister, op_ns, label_selector=CHART_PART_OF))
        if listed is not None and not listed.items:
            c.out.fail(what, "none found; see --operator-namespace")
        for obj in c.items(listed):
            c.out.add_object(bundle.object_path(kind, obj), f"{kind[:-1]} {_name(obj)}", obj)
            selector = bundle.match_labels_selector(obj)
            if selector:
                workload_selectors.append(selector)
            labels_ = obj["metadata"].get("labels") or {}
            if kind == "deployments" and labels_.get("app.kubernetes.io/name") == op_name:
                values = bundle.chart_values(obj, logs.OPERATOR_CONTAINER)
                operator_args = values["args"]
                c.out.add_object(
                    "chart-values.yaml",
                    "the chart's values as the operator Deployment shows them",
                    values,
                )

    # Their pods, by each workload's own selector (the chart's pods carry only those labels).
    for selector in workload_selectors:
        what = f"pods in namespace {op_ns} ({selector})"
        listed = await c.step(
            what, partial(core.list_namespaced_pod, op_ns, label_selector=selector)
        )
        for obj in c.items(listed):
            c.out.add_object(
                bundle.object_path("pods", obj),
                f"status of Pod {_name(obj)}",
                bundle.pod_summary(obj),
            )

    # Node reports: the agent's ConfigMaps in the namespace the operator trusts.
    report_ns = str(operator_args.get("node-report-namespace") or op_ns)
    what = f"node reports in namespace {report_ns} ({REPORT_LABEL})"
    listed = await c.step(
        what, partial(core.list_namespaced_config_map, report_ns, label_selector=REPORT_LABEL)
    )
    for obj in c.items(listed):
        c.out.add_object(bundle.object_path("node-reports", obj), f"node report {_name(obj)}", obj)

    # The operator's logs.
    selector = c.args.operator_selector
    what = f"operator pods in namespace {op_ns} ({selector})"
    listed = await c.step(what, partial(core.list_namespaced_pod, op_ns, label_selector=selector))
    if listed is not None and not listed.items:
        c.out.fail("operator logs", f"no pod in namespace {op_ns} matches {selector}")
    for pod in listed.items if listed is not None else []:
        pod_name = pod.metadata.name
        text = await c.step(
            f"logs of operator pod {op_ns}/{pod_name}",
            partial(
                core.read_namespaced_pod_log,
                pod_name,
                op_ns,
                container=logs.OPERATOR_CONTAINER,
                tail_lines=c.args.log_lines,
            ),
        )
        if text is not None:
            c.out.add_text(
                f"namespaces/{op_ns}/logs/{pod_name}.log",
                f"the last {c.args.log_lines} log lines of operator pod {op_ns}/{pod_name}",
                str(text),
            )


async def _report_crds(c: _Collector) -> None:
    from kubernetes_asyncio import client  # noqa: PLC0415

    ext = client.ApiextensionsV1Api(c.api)
    crds = []
    for plural in (v1alpha1.PLURAL, pool.POOL_PLURAL):
        name = f"{plural}.{v1alpha1.GROUP}"
        got = await c.step(
            f"CustomResourceDefinition {name}",
            partial(ext.read_custom_resource_definition, name),
        )
        if got is not None:
            crds.append(bundle.crd_versions(_as_dict(c.api, got)))
    if crds:
        c.out.add_object("cluster/crds.yaml", "the CRDs' versions", crds)


async def do_report(api: Any, args: argparse.Namespace) -> int:
    """Collect the bundle (each step's failure is recorded, not fatal), write it, say where.

    Exit 0 when the archive was written, whatever failed inside (the manifest
    lists it and each failure is a line on stderr); 1 when nothing could be
    collected at all (the apiserver unreachable) or the file cannot be written.
    """
    now = dt.datetime.now(dt.UTC)
    c = _Collector(api, args)
    await _report_workers(c)
    await _report_operator(c)
    await _report_crds(c)
    if c.errors == c.attempted:  # not one call answered: the apiserver, not the objects
        raise PluginError(f"nothing could be collected: {c.out.failed[0]['error']}")
    path = Path(args.output or bundle.archive_root(now) + ".tar.gz")
    scope = {
        "namespaces": "all" if args.all_namespaces else [args.namespace],
        "operatorNamespace": args.operator_namespace,
        "operatorSelector": args.operator_selector,
        "pluginVersion": __version__,
    }
    data = c.out.archive(now, scope)
    try:
        await asyncio.to_thread(path.write_bytes, data)
    except OSError as err:
        raise PluginError(f"cannot write {path}: {err.strerror or err}") from err
    for failure in c.out.failed:
        what, error = failure["what"], failure["error"]
        _note(f"not collected: {error if what in error else f'{what}: {error}'}")
    print(
        f"wrote {path}: {len(c.out.files)} files, {len(c.out.failed)} not collected"
        f" (listed in {bundle.MANIFEST})"
    )
    return 0


Command = Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]


async def _with_api(command: Command, args: argparse.Namespace, kubeconfig: str | None) -> int:
    from kubernetes_asyncio import client  # noqa: PLC0415
    from kubernetes_asyncio.config import ConfigException  # noqa: PLC0415

    from cocoon_operator.k8s.client import load  # noqa: PLC0415

    try:
        configuration = await load(kubeconfig, context=args.context)
    except (ConfigException, OSError, ValueError) as err:
        where = kubeconfig or "in-cluster configuration"
        if args.context:
            where += f" (context {args.context})"
        raise PluginError(f"cannot load {where}: {_one_line(str(err))}") from err
    async with client.ApiClient(configuration) as api:
        try:
            return await command(api, args)
        except _api_errors() as err:  # a call the command did not expect to fail
            raise _api_error(err, "the apiserver") from err


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
    parser.add_argument(
        "--context",
        default=default,
        help="the kubeconfig context to use (default: the current context)",
    )
    parser.add_argument("--version", action="version", version=f"kubectl-cocoon {__version__}")


def _all_namespaces(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help=f"{what} of every namespace"
    )


def _operator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operator-namespace",
        default=logs.DEFAULT_OPERATOR_NAMESPACE,
        help="the namespace the chart installed the operator in",
    )
    parser.add_argument(
        "--operator-selector",
        default=logs.DEFAULT_OPERATOR_SELECTOR,
        help="the label selector of the operator's pods (the chart's)",
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
    _all_namespaces(status, "workers")
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
    pause = command("pause", do_pause, f"set the annotation {PAUSE_ANNOTATION}=true")
    pause.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    resume = command("resume", do_resume, f"remove the annotation {PAUSE_ANNOTATION}")
    resume.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    payout = command(
        "payout",
        do_payout,
        f"ask for one payout now (annotation {v1alpha1.PAYOUT_REQUEST_ANNOTATION})",
    )
    payout.add_argument("name", metavar="NAME", help="the CocoonWorker's name")

    logs_ = command(
        "logs",
        do_logs,
        "the logs of a worker's launcher pods and the operator's lines about the worker",
        output=False,
    )
    logs_.add_argument("name", metavar="NAME", help="the CocoonWorker's name")
    logs_.add_argument(
        "--since",
        type=_since,
        metavar="DURATION",
        help="only lines newer than this (30s, 5m, 1h30m); default: all",
    )
    logs_.add_argument(
        "--tail",
        type=int,
        default=-1,
        metavar="N",
        help="the last N lines of each source (-1: all)",
    )
    logs_.add_argument(
        "--container",
        default=LAUNCHER_CONTAINER,
        help="the launcher pod's container to read (model: the model init container)",
    )
    _operator_options(logs_)

    report = command(
        "report",
        do_report,
        "write a redacted support bundle (.tar.gz): workers, pools, Events, launcher and"
        " operator pods, node reports, operator logs, chart values, CRD versions; never Secrets",
        output=False,
    )
    _all_namespaces(report, "workers, pools, launcher pods and Events")
    report.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the bundle; default: cocoon-report-<UTC time>.tar.gz here",
    )
    report.add_argument(
        "--log-lines",
        type=int,
        default=DEFAULT_REPORT_LOG_LINES,
        metavar="N",
        help="the operator's last N log lines per pod",
    )
    _operator_options(report)
    return parser


def _since(text: str) -> int:
    try:
        return logs.parse_since(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kubeconfig = kubeconfig_path(args.kubeconfig)
    if args.namespace is None:
        args.namespace = default_namespace(kubeconfig, args.context)
    try:
        return asyncio.run(_with_api(args.func, args, kubeconfig))
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point (``kubectl-cocoon``)."""
    sys.exit(main())
