"""No control request but the operator's reaches a worker through what the operator deploys.

COCOON's worker port is unauthenticated plain HTTP (BaseRunner.cpp:735-790;
the controls at WorkerRunner.cpp:195-228). The launcher pod publishes only its
control relay (launcher/_controlrelay.py), run here by the simulation agent in
front of the simulated worker, which listens where QEMU's loopback forward is.
A client without the operator's key is refused on every port the pod
publishes, and nothing answers at the node's address on the worker's own
port; the operator's own signed drain and payout still work.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.labels import LABEL_INSTANCE
from cocoon_operator.workerapi import (
    ControlRefusedError,
    ControlSigner,
    WorkerClient,
    generate_private_key_text,
)
from tests.cluster.helpers import (
    attested_is,
    create_worker,
    event_reasons,
    owed_by_every_proxy,
    pod_conditions,
    simulator_page,
    simulator_stats,
)
from tests.cluster.operator import StartOperator
from tests.cluster.simulated import Agent, running_agent
from tests.cluster.stack import Stack
from tests.cluster.wait import eventually

SECRET = "control-key"


@pytest.fixture
async def agent(
    stack: Stack, api: client.ApiClient, namespace: str, tmp_path: Path
) -> AsyncIterator[Agent]:
    with running_agent(stack.kubeconfig, namespace, tmp_path) as running:
        yield running


async def unsigned(url: str) -> tuple[int, str] | str:
    """(status, body) of an unsigned GET, or why nothing answered."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as resp,
        ):
            return resp.status, await resp.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"no HTTP answer: {type(exc).__name__}"


async def test_a_client_without_the_operators_key_is_refused_and_the_operators_drain_pays_out(
    api: client.ApiClient,
    namespace: str,
    agent: Agent,
    tmp_path: Path,
    operator: StartOperator,
) -> None:
    log = tmp_path / "operator.log"
    args = (*agent.operator_args(), f"--control-key-secret={namespace}/{SECRET}")
    proc = operator(*args, log=log)
    await create_worker(api, namespace, "w")
    await eventually(attested_is(api, namespace, "w", "True"), within=60, what="attested")
    pod, _ = await pod_conditions(api, namespace, "w")
    host = pod.status.host_ip
    slot = InstanceSlot(int(pod.metadata.labels[LABEL_INSTANCE]))
    proxy = (await simulator_stats(pod))["proxies"][0]["proxy_sc_address"]

    # Every port the pod publishes refuses a control without the operator's key.
    published = [p.host_port for p in pod.spec.containers[0].ports if p.host_port]
    assert published
    for port in published:
        for target in ("/request/disable", f"/request/payout?proxy={proxy}", "/jsonstats"):
            answer = await unsigned(f"http://{host}:{port}{target}")
            assert isinstance(answer, str) or answer[0] != 200, (port, target, answer)
    relay = f"http://{host}:{slot.control_port}"
    assert await unsigned(relay + "/request/disable") == (
        401,
        "control relay: unsigned: no operator signature\n",
    )
    # The worker's own port is not open at the node's address at all.
    assert isinstance(await unsigned(f"http://{host}:{slot.http_port}/jsonstats"), str)

    # Signed, but with a key that is not the operator's: refused as well.
    stranger = ControlSigner.from_text(generate_private_key_text())
    async with WorkerClient(
        host, slot.control_port, signer=stranger, audience=pod.metadata.uid
    ) as other:
        with pytest.raises(ControlRefusedError) as refused:
            await other.payout(proxy)
    assert refused.value.code == "bad-signature"
    assert (await simulator_page(pod)).enabled is True  # WorkerRunner.cpp:583-589
    answers = agent.payout_answers()
    assert not any(pod.metadata.uid in name for name, _ in answers), answers

    # The key the pod trusts is the one the operator created in its Secret.
    secret = await client.CoreV1Api(api).read_namespaced_secret(SECRET, namespace)
    operator_key = ControlSigner.from_text(base64.b64decode(secret.data["current"]).decode())
    assert pod.metadata.annotations["cocoon.network/control-key"] == operator_key.public_key
    async with WorkerClient(
        host, slot.control_port, signer=operator_key, audience=pod.metadata.uid
    ) as own:
        assert (await own.stats()).coefficient == 1000

    # The operator's own controls go through: deletion disables, drains, pays out.
    await eventually(owed_by_every_proxy(pod), within=60, what="tokens owed by each proxy")
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "cocoon.network", "v1alpha1", namespace, "cocoonworkers", "w"
    )

    async def gone() -> bool:
        pods = await client.CoreV1Api(api).list_namespaced_pod(namespace)
        return not pods.items

    await eventually(gone, within=90, what="the pod gone after its drain")
    reasons = await event_reasons(api, namespace, "w")
    assert {"Draining", "PayoutRequested"} <= reasons.keys(), reasons
    paid = [a for (name, _), a in agent.payout_answers().items() if pod.metadata.uid in name]
    assert any("request sent" in a for answers in paid for a in answers), paid
    assert proc.poll() is None, log.read_text()[-3000:]
