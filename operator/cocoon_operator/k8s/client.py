"""kubernetes_asyncio clients for the tools beside the operator, never at import time.

The simulator's pod agent, the kubectl plugin and the tests use the generated
client; the operator and the node agent do not (see :mod:`.rest`). Callers
own the client's lifetime (``async with connect(...) as api``), which keeps
tests free to point each one at its own control plane.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from kubernetes_asyncio import client, config

# The client's typed signatures omit its ``_content_type`` switch; a merge patch
# (not a JSON patch) is what a partial document is.
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


async def load(kubeconfig: str | None = None, context: str | None = None) -> client.Configuration:
    """Configuration from ``kubeconfig``, ``$KUBECONFIG``, or the in-cluster service account.

    ``context`` picks a kubeconfig context other than the current one (kubectl's
    ``--context``); it means nothing in-cluster.
    """
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        await config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
    else:
        # kubernetes_asyncio leaves this one untyped.
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


@asynccontextmanager
async def connect(kubeconfig: str | None = None) -> AsyncIterator[client.ApiClient]:
    configuration = await load(kubeconfig)
    async with client.ApiClient(configuration) as api:
        yield api
