"""Kubernetes Events for the changes the operator makes.

kopf can post Events, but only through its logging bridge, which would also
post a message for every handler run; the operator keeps that bridge at
WARNING and records its own Events here, one per change it makes.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from cocoon_operator.k8s.rest import ApiError, Forbidden, Kube, NotFound, path

COMPONENT = "cocoon-operator"
MAX_MESSAGE = 1024


async def record(
    api: Kube,
    obj: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    warning: bool = False,
    now: dt.datetime,
) -> None:
    """Post an Event about ``obj``; a vanished namespace is not an error."""
    meta = obj["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    event: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await api.request("POST", path("v1", "events", namespace=meta["namespace"]), body=event)
    except ApiError as err:
        # A terminating namespace refuses new objects (403 with that reason, or
        # 404): the Event has nowhere to go. Any other 403 is missing RBAC and
        # must be seen, not swallowed.
        terminating = isinstance(err, Forbidden) and "terminat" in err.body
        if not isinstance(err, NotFound) and not terminating:
            raise
