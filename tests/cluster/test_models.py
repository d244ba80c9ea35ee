"""Models on the nodes, on the local stack (docs/models.md).

The simulation agent stands in for each launcher pod's ``model`` init container
(``simulator/_models.py``: the real cache's lock, file names and progress
records, the build itself simulated) and publishes the node's cache in its node
report as the real agent does; the operator turns that into ``ModelReady`` and
prefers nodes that already hold a new pod's model.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.nodereport import REPORT_KEY, NodeReport, report_name
from tests.cluster.helpers import (
    condition_is,
    conditions,
    create_worker,
    example_worker,
    get_worker,
    worker_deleted,
)
from tests.cluster.operator import running_operator
from tests.cluster.simulated import example_model, running_agent
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually


def preparations(agent_log: Path, model: str) -> list[str]:
    """The nodes whose simulated cache prepared ``model`` from scratch, once per build
    (the agent logs ``preparing model ID in CACHE/NODE`` as the init container starts
    a build, and ``... is Ready on CACHE already`` when it finds it done)."""
    pattern = re.compile(rf"preparing model {re.escape(model)} in \S*/([^/\s]+)$")
    found = (pattern.search(line) for line in agent_log.read_text().splitlines())
    return [m.group(1) for m in found if m]


async def model_ready(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The worker once its node's report lists its model Ready (kwok runs the pod at
    once, so the init container's path of the condition is not the one waited for)."""
    verified = "the model's images are verified on node"
    return await eventually(
        condition_is(api, namespace, name, "ModelReady", "True", "Ready", verified),
        within=60,
        what=f"{name} ModelReady",
    )


async def test_two_workers_with_one_model_share_one_build_on_the_node_that_holds_it(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    model = example_model()
    with (
        running_agent(stack.kubeconfig, namespace, tmp_path) as agent,
        running_operator(stack.kubeconfig, namespace, log, *agent.operator_args()),
    ):
        await create_worker(api, namespace, "m0")
        first = await model_ready(api, namespace, "m0")
        node = first["status"]["node"]
        assert preparations(agent.log, model) == [node]

        # The second worker's pod prefers the node whose report lists the model Ready
        # (a preferred node-affinity term per such node), and its init container finds
        # the model there: no second build anywhere.
        await create_worker(api, namespace, "m1")
        second = await model_ready(api, namespace, "m1")
        assert second["status"]["node"] == node
        assert preparations(agent.log, model) == [node]
        assert (
            "the model's images are verified on node"
            in (conditions(second)["ModelReady"]["message"])
        )


async def test_a_wrong_verity_hash_fails_the_model_with_its_cause_and_starts_no_vm(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    wrong = "00" * 32
    with (
        running_agent(stack.kubeconfig, namespace, tmp_path) as agent,
        running_operator(stack.kubeconfig, namespace, log, *agent.operator_args()),
    ):
        model = {**example_worker()["spec"]["model"], "verityHash": wrong}
        await create_worker(api, namespace, "bad", model=model)
        failed = await eventually(
            condition_is(api, namespace, "bad", "ModelReady", "False", "Failed"),
            within=60,
            what="ModelReady Failed",
        )
        message = conditions(failed)["ModelReady"]["message"]
        # build-model's own words (scripts/build-model: the root hash check), and both hashes.
        assert "verity hash mismatch" in message
        assert wrong in message
        assert "HashMismatch" in message

        # No VM: the simulated init container failed, so the launcher never starts.
        # The agent's start of the pod ends at that failure (the line it logs then);
        # only that start could have started a VM.
        async def start_ended() -> bool:
            return "does not start: model ensure" in agent.log.read_text()

        await eventually(start_ended, within=30, what="the agent's start of the pod ended")
        worker = await get_worker(api, namespace, "bad")
        assert conditions(worker)["Attested"]["status"] != "True"
        assert conditions(worker)["Ready"]["status"] == "False"
        assert "started worker" not in agent.log.read_text()


async def node_models(api: client.ApiClient, namespace: str, node: str) -> set[str]:
    """The verity hashes the node's report lists in its model cache."""
    cm = await client.CoreV1Api(api).read_namespaced_config_map(report_name(node), namespace)
    report = NodeReport.model_validate_json(cm.data[REPORT_KEY])
    return {m.verity for m in report.models}


def gc_passes_while_idle(
    api: client.ApiClient, namespace: str, node: str, verity: str, *, count: int
) -> Callable[[], Awaitable[bool]]:
    """A probe: whether the simulation agent has run ``count`` gc passes since the model
    became collectable by age (idle ``GC_MIN_IDLE`` s, its progress file's stamp).

    The agent's loop runs its gc pass, then reads each VM's health monitor, then
    publishes the report (simulator/agent.py ``_heartbeat``): every new health
    reading in the report follows a pass made a moment before it. A reading that
    says the same as the last goes out only with a heartbeat (nodeagent/_publish.py
    ``said``), so the test's agent beats at every pass (``--heartbeat``). The gc
    keeps no count of its own passes, and logs only what it collects.
    """
    seen: set[str] = set()

    async def probe() -> bool:
        cm = await client.CoreV1Api(api).read_namespaced_config_map(report_name(node), namespace)
        report = NodeReport.model_validate_json(cm.data[REPORT_KEY])
        (model,) = [m for m in report.models if m.verity == verity]
        for vm in report.vms:
            if vm.health is None:
                continue
            read_at = dt.datetime.fromisoformat(vm.health.checked_at).timestamp()
            # A second of slack: the stamp's precision, and the pass just before it.
            if read_at > model.updated_at + GC_MIN_IDLE + 1:
                seen.add(vm.health.checked_at)
        return len(seen) >= count

    return probe


GC_MIN_IDLE = 3


async def test_a_deleted_workers_model_is_collected_when_the_policy_says_and_not_before(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    verity = example_worker()["spec"]["model"]["verityHash"]
    # The node agent's gc (nodeagent/_models.py gc_pass) with a policy keeping no
    # unused model at all, passing every second, models idle for 3 s collectable.
    gc = ("--model-gc-max-count", "0", "--model-gc-interval", "1")
    gc += ("--model-gc-min-idle-seconds", str(GC_MIN_IDLE))
    gc += ("--heartbeat", "1")  # every pass's health reading published: the probe's clock
    with (
        running_agent(stack.kubeconfig, namespace, tmp_path, *gc) as agent,
        running_operator(stack.kubeconfig, namespace, log, *agent.operator_args()),
    ):
        await create_worker(api, namespace, "g0")
        worker = await model_ready(api, namespace, "g0")
        node = worker["status"]["node"]
        assert verity in await node_models(api, namespace, node)

        # Not before: the VM's launcher record names the model, so however idle and
        # however strict the policy, several passes leave it.
        await eventually(
            gc_passes_while_idle(api, namespace, node, verity, count=3),
            within=60,
            what="three gc passes with the model idle",
        )
        assert verity in await node_models(api, namespace, node)
        assert "collected model" not in agent.log.read_text()

        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, "g0"
        )
        await eventually(worker_deleted(api, namespace, "g0"), within=60, what="g0 deleted")

        async def collected() -> bool:
            return verity not in await node_models(api, namespace, node)

        await eventually(collected, within=30, what="the model gone from the node's report")
        assert f"collected model {verity}" in agent.log.read_text()
