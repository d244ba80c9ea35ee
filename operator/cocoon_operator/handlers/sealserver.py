"""The nodes' seal servers: one DaemonSet per enclave in use, node labels while they are Ready.

On with ``--seal-servers`` (the chart's ``sealServer.enabled``). What a seal
server is, and why per enclave: desired/sealserver.py; the decisions:
policy/sealserver.py. Here only the I/O.

The watch events the operator already receives keep what the sweep needs in
memory (no list of the fleet per sweep): each worker's enclave (worker events),
the enclaves of existing launcher pods (pod events), each node's seal label
(node events), and each seal-server pod's node and readiness (a watch of the
operator's namespace of its own, as the node reports'). Every ``sweep_seconds`` the
sweep lists the DaemonSets of the operator's namespace (a handful), creates,
replaces (when the desired object's digest changed) or deletes them, and
patches the ``seal.cocoon.network/enclave`` label of nodes whose state moved.
The enclaves ready somewhere go to ``Deps.seal``, where worker reconciles read
them for their Scheduled condition.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from cocoon_operator.api import labels, v1alpha1
from cocoon_operator.api.labels import (
    DESIRED_HASH,
    ENCLAVE_ANNOTATION,
    LABEL_ENCLAVE,
    LAUNCHER_SELECTOR,
    SEAL_SERVER_ANNOTATION,
)
from cocoon_operator.desired.sealserver import (
    SELECTOR,
    SealRelease,
    SealServerOptions,
    seal_daemonset,
)
from cocoon_operator.handlers.runtime import WORKERS, Deps, Runtime
from cocoon_operator.k8s.reflect import list_and_watch
from cocoon_operator.k8s.rest import MERGE_PATCH, Kube, path
from cocoon_operator.policy import nodes as policy_nodes
from cocoon_operator.policy.sealserver import EnclaveUse, SealFacts, node_labels, wanted

log = logging.getLogger(__name__)


@dataclass
class SealServers:
    """What the watches showed, and the tasks of the sweep."""

    options: SealServerOptions
    sweep_seconds: float = 5.0
    allowed_releases: frozenset[tuple[str, str]] = frozenset()
    uses: dict[tuple[str, str], EnclaveUse] = field(default_factory=dict)
    launcher_ids: dict[str, str] = field(default_factory=dict)  # pod uid -> enclave id
    seal_pods: dict[str, tuple[str, str, bool]] = field(
        default_factory=dict
    )  # uid -> (node, id, ready)
    node_label: dict[str, str | None] = field(default_factory=dict)  # eligible nodes
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Until then (monotonic), nothing is deleted or unlabelled: a restarted
    # operator's watches have not yet shown every worker and seal-server pod, and
    # an empty picture must not take the fleet's seal servers away.
    settled_at: float = 0.0

    def settled(self) -> bool:
        return time.monotonic() >= self.settled_at

    def observe_worker(self, event_type: str | None, body: kopf.Body) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        self.uses.pop(key, None)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            return  # its launcher pod, while it exists, keeps the seal server
        try:
            release = v1alpha1.Release.model_validate((body.get("spec") or {}).get("release"))
        except ValidationError:
            return
        if release.files.enclave is not None:
            self.uses[key] = EnclaveUse(
                release.image, release.files.enclave, release.files.seal_server
            )

    def observe_launcher(self, event_type: str | None, body: kopf.Body) -> None:
        meta = body.get("metadata", {})
        uid = meta.get("uid", "")
        enclave_id = (meta.get("labels") or {}).get(LABEL_ENCLAVE)
        if event_type == "DELETED" or not enclave_id:
            self.launcher_ids.pop(uid, None)
        else:
            self.launcher_ids[uid] = enclave_id

    def observe_seal_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        uid = meta.get("uid", "")
        node = (body.get("spec") or {}).get("nodeName")
        enclave_id = (meta.get("labels") or {}).get(LABEL_ENCLAVE)
        if event_type == "DELETED" or not node or not enclave_id or meta.get("deletionTimestamp"):
            self.seal_pods.pop(uid, None)
            return
        conditions = (body.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        self.seal_pods[uid] = (node, enclave_id, ready)

    def observe_node(self, event_type: str | None, body: kopf.Body) -> None:
        meta = body.get("metadata", {})
        name = meta.get("name", "")
        node_labels_now = meta.get("labels") or {}
        current = node_labels_now.get(labels.SEAL_ENCLAVE)
        eligible = all(
            node_labels_now.get(k) == v for k, v in policy_nodes.required_node_labels().items()
        )
        if event_type == "DELETED" or not (eligible or current):
            self.node_label.pop(name, None)
        else:
            self.node_label[name] = current

    def ready_by_node(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for node, enclave_id, ready in self.seal_pods.values():
            if ready:
                out.setdefault(node, set()).add(enclave_id)
        return out


def _release_of(ds: dict[str, Any]) -> EnclaveUse | None:
    annotations = ds.get("metadata", {}).get("annotations") or {}
    enclave = annotations.get(ENCLAVE_ANNOTATION)
    containers = ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    if not enclave or not containers:
        return None
    return EnclaveUse(containers[0]["image"], enclave, annotations.get(SEAL_SERVER_ANNOTATION))


def desired(use: EnclaveUse, options: SealServerOptions) -> dict[str, Any]:
    """The DaemonSet with the annotations the sweep reads back (pure)."""
    ds = seal_daemonset(SealRelease(use.image, use.enclave, use.seal_server), options)
    digest = hashlib.sha256(json.dumps(ds, sort_keys=True).encode()).hexdigest()[:16]
    annotations = {DESIRED_HASH: digest, ENCLAVE_ANNOTATION: use.enclave}
    if use.seal_server is not None:
        annotations[SEAL_SERVER_ANNOTATION] = use.seal_server
    ds["metadata"]["annotations"] = annotations
    return ds


async def sweep(state: SealServers, deps: Deps) -> None:
    """Apply the DaemonSets and node labels the watched state calls for; publish readiness."""
    api: Kube = deps.api
    namespace = state.options.namespace
    collection = path("apps/v1", "daemonsets", namespace=namespace)
    selector = ",".join(f"{k}={v}" for k, v in SELECTOR.items())
    listed = await api.request("GET", collection, query={"labelSelector": selector})
    existing = {
        (ds["metadata"].get("labels") or {}).get(LABEL_ENCLAVE, ""): ds
        for ds in listed.get("items") or []
    }
    releases = {k: r for k, ds in existing.items() if (r := _release_of(ds)) is not None}
    want = wanted(
        state.uses.values(), state.launcher_ids.values(), releases, state.allowed_releases
    )
    for enclave_id, use in want.items():
        obj = desired(use, state.options)
        have = existing.get(enclave_id)
        if have is None:
            await api.request("POST", collection, body=obj)
            log.info("seal server for enclave %s: created %s", enclave_id, obj["metadata"]["name"])
        elif (have["metadata"].get("annotations") or {}).get(DESIRED_HASH) != obj["metadata"][
            "annotations"
        ][DESIRED_HASH]:
            obj["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
            url = path("apps/v1", "daemonsets", namespace=namespace, name=have["metadata"]["name"])
            await api.request("PUT", url, body=obj)
            log.info("seal server for enclave %s: updated %s", enclave_id, obj["metadata"]["name"])
    for enclave_id, ds in existing.items():
        if enclave_id not in want and state.settled():
            name = ds["metadata"]["name"]
            url = path("apps/v1", "daemonsets", namespace=namespace, name=name)
            await api.request_unless_gone("DELETE", url)
            log.info("seal server for enclave %s: no worker uses it, deleted %s", enclave_id, name)
    for node, value in node_labels(state.node_label, state.ready_by_node()).items():
        if value is None and not state.settled():
            continue
        body = {"metadata": {"labels": {labels.SEAL_ENCLAVE: value}}}
        await api.request_unless_gone(
            "PATCH", path("v1", "nodes", name=node), body=body, content_type=MERGE_PATCH
        )
        state.node_label[node] = value
        log.info("node %s: seal server label %s", node, value or "removed")
    ready_ids = frozenset(v for v in state.node_label.values() if v)
    if deps.seal is None or deps.seal.ready_ids != ready_ids:
        deps.seal = SealFacts(namespace, ready_ids, state.allowed_releases)


async def _watch_seal_pods(state: SealServers, api: Kube) -> None:
    """The seal-server pods of the operator's namespace, by a watch of its own: kopf
    watches only the namespaces of workers, which need not include this one."""
    namespace = state.options.namespace
    await list_and_watch(
        api,
        path("v1", "pods", namespace=namespace),
        query={"labelSelector": ",".join(f"{k}={v}" for k, v in SELECTOR.items())},
        observe=state.observe_seal_pod,
        what=f"seal-server pods in {namespace}",
    )


async def _sweep_forever(state: SealServers, deps: Deps) -> None:
    while True:
        try:
            await sweep(state, deps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("seal-server sweep: %s", exc)
        await asyncio.sleep(state.sweep_seconds)


@dataclass(frozen=True)
class SealServerRun:
    options: SealServerOptions
    sweep_seconds: float = 5.0
    settle_seconds: float = 30.0
    # (launcher image, enclave digest) pairs allowed: policy/sealserver.py, allowed.
    releases: frozenset[tuple[str, str]] = frozenset()


def register(registry: kopf.OperatorRegistry, runtime: Runtime, run: SealServerRun) -> None:
    """Add the seal-server step to ``registry``; its state lives in the closure."""
    state = SealServers(run.options, run.sweep_seconds, run.releases)

    async def start(**_: Any) -> None:
        deps = runtime.deps
        deps.seal = SealFacts(run.options.namespace, releases=run.releases)
        state.settled_at = time.monotonic() + run.settle_seconds
        state.tasks = [
            asyncio.create_task(_watch_seal_pods(state, deps.api), name="seal-server-pods"),
            asyncio.create_task(_sweep_forever(state, deps), name="seal-servers"),
        ]

    async def stop(**_: Any) -> None:
        for task in state.tasks:
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)

    async def worker_seen(*, type: str | None, body: kopf.Body, **_: Any) -> None:
        state.observe_worker(type, body)

    async def launcher_seen(*, type: str | None, body: kopf.Body, **_: Any) -> None:
        state.observe_launcher(type, body)

    async def node_seen(*, type: str | None, body: kopf.Body, **_: Any) -> None:
        state.observe_node(type, body)

    kopf.on.startup(id="seal-servers-start", registry=registry)(start)
    kopf.on.cleanup(id="seal-servers-stop", registry=registry)(stop)
    kopf.on.event(*WORKERS, id="seal-servers-workers", registry=registry)(worker_seen)
    kopf.on.event("pods", labels=LAUNCHER_SELECTOR, id="seal-servers-launchers", registry=registry)(
        launcher_seen
    )
    kopf.on.event("nodes", id="seal-servers-nodes", registry=registry)(node_seen)
