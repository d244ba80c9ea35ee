"""A copy of some objects kept current by list and watch: kopf's indexes for what kopf
does not watch (the node agents' reports, the seal servers' pods in the operator's
own namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from cocoon_operator.k8s.rest import Kube

log = logging.getLogger(__name__)


Identity = tuple[str, str, str]  # namespace, name, uid


def _stub(obj: Mapping[str, Any]) -> tuple[Identity, dict[str, Any]]:
    """An object's identity, and what a DELETED event for it carries: its name,
    namespace and uid (as client-go's ``DeletedFinalStateUnknown`` does, no more)."""
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in ("namespace", "name", "uid") if k in meta}
    return (kept.get("namespace", ""), kept.get("name", ""), kept.get("uid", "")), {
        "metadata": kept
    }


async def list_and_watch(
    api: Kube,
    url_path: str,
    *,
    query: Mapping[str, str],
    observe: Callable[[str, dict[str, Any]], None],
    what: str,
    retry_seconds: float = 5.0,
) -> None:
    """Keep a copy of the objects at ``url_path`` (``query`` selects them), for ever.

    As an informer does: ``observe("ADDED", obj)`` each listed object, then
    ``observe(type, obj)`` each event of a watch from the list's
    resourceVersion. When the watch ends (the server's timeout, every five
    minutes) it lists again; when anything fails (an outage, a watch too old:
    410 Gone) it says so in one line naming ``what`` and lists again
    ``retry_seconds`` later. Ends only when cancelled.

    A list replaces the copy object by object: first ``observe("DELETED",
    stub)`` for each object seen before and not listed (the stub has its
    name, namespace and uid), then ``ADDED`` for each listed one. The copy is
    never emptied to be filled again, so a reader never finds an object
    missing that is there all along: checks that ran while a relist of the
    node reports was filling an emptied copy found their hosts unreported.

    It lets the event loop run after each object: a list, or a stream's
    buffered events, would otherwise be decoded and observed in one stretch.
    Node reports (about 60 KB for eight VMs) came in clumps of about 150 at
    3,000 workers, and each clump held every check and handler back for the
    whole of it (docs/bench.md); now for one report at most.
    """
    known: dict[Identity, dict[str, Any]] = {}

    def seen(kind: str, obj: dict[str, Any]) -> None:
        identity, stub = _stub(obj)
        if kind == "DELETED":
            known.pop(identity, None)
        else:
            known[identity] = stub
        observe(kind, obj)

    async def relist() -> str:
        """List, replace the copy, and return the list's resourceVersion. A function of
        its own so that the list is freed before the watch: held by the loop's frame
        it stayed alive the whole watch (five minutes), every node report's text at
        the list's time beside the newer ones (docs/bench.md)."""
        listed = await api.request("GET", url_path, query=query)
        items: list[dict[str, Any]] = listed.get("items") or []
        now_listed = {_stub(obj)[0] for obj in items}
        # Deletes first: a recreated object (same name, new uid) is then
        # added back after its old self goes, not removed after.
        for identity in [i for i in known if i not in now_listed]:
            seen("DELETED", known[identity])
        for obj in items:
            seen("ADDED", obj)
            await asyncio.sleep(0)
        return str(listed["metadata"]["resourceVersion"])

    while True:
        try:
            version = await relist()
            events = api.watch(url_path, query={**query, "resourceVersion": version})
            async with contextlib.aclosing(events):  # the stream closes however the loop ends
                async for event in events:
                    seen(event["type"], event["object"])
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watching %s: %s; retrying", what, exc)
            await asyncio.sleep(retry_seconds)
