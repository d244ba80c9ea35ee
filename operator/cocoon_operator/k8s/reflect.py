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


async def list_and_watch(
    api: Kube,
    url_path: str,
    *,
    query: Mapping[str, str],
    reset: Callable[[], None],
    observe: Callable[[str, dict[str, Any]], None],
    what: str,
    retry_seconds: float = 5.0,
) -> None:
    """Keep a copy of the objects at ``url_path`` (``query`` selects them), for ever.

    As an informer does: ``reset()`` the copy, ``observe("ADDED", obj)`` each
    listed object, then ``observe(type, obj)`` each event of a watch from the
    list's resourceVersion. When the watch ends (the server's timeout) it lists
    again; when anything fails (an outage, a watch too old: 410 Gone) it says
    so in one line naming ``what`` and lists again ``retry_seconds`` later.
    Ends only when cancelled.

    It lets the event loop run after each object: a list, or a stream's
    buffered events, would otherwise be decoded and observed in one stretch.
    Node reports (about 60 KB for eight VMs) came in clumps of about 150 at
    3,000 workers, and each clump held every check and handler back for the
    whole of it (docs/bench.md); now for one report at most.
    """
    while True:
        try:
            listed = await api.request("GET", url_path, query=query)
            reset()
            for obj in listed.get("items") or []:
                observe("ADDED", obj)
                await asyncio.sleep(0)
            version = listed["metadata"]["resourceVersion"]
            events = api.watch(url_path, query={**query, "resourceVersion": version})
            async with contextlib.aclosing(events):  # the stream closes however the loop ends
                async for event in events:
                    observe(event["type"], event["object"])
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watching %s: %s; retrying", what, exc)
            await asyncio.sleep(retry_seconds)
