"""Seal servers: the DaemonSet, which to run, node labels, and workers waiting for one (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cocoon_operator.api import labels
from cocoon_operator.api.conditions import Reason
from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.api.v1alpha1 import CocoonWorkerSpec, CocoonWorkerStatus
from cocoon_operator.desired.launcher import WorkerRef, launcher_pod
from cocoon_operator.desired.sealserver import (
    SealRelease,
    SealServerOptions,
    daemonset_name,
    seal_daemonset,
)
from cocoon_operator.policy.sealserver import (
    EnclaveUse,
    SealFacts,
    node_labels,
    waiting_message,
    wanted,
)
from cocoon_operator.policy.worker import PodFacts
from cocoon_operator.reconcile.worker import ObservedWorker, plan
from cocoon_operator.simulator._release import seal_digests
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text
from tests.unit.helpers import spec as example_spec

CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key

ENCLAVE = seal_digests()["enclave"]
SEAL = seal_digests()["sealServer"]
IMAGE = "registry.local/cocoon/launcher@sha256:" + "a" * 64
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REF = WorkerRef("w", "ns", "uid-1")


def spec(enclave: str | None = ENCLAVE) -> CocoonWorkerSpec:
    base = example_spec()
    files = {**base.release.files.model_dump(by_alias=True), "enclave": enclave}
    release = {**base.release.model_dump(by_alias=True), "files": files}
    return example_spec(release=release)


def container(ds: dict[str, Any]) -> dict[str, Any]:
    (only,) = ds["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def test_the_daemonset_runs_the_release_seal_server_checking_its_enclave() -> None:
    ds = seal_daemonset(SealRelease(IMAGE, ENCLAVE, SEAL), SealServerOptions(namespace="cocoon"))
    assert ds["metadata"] == {
        "name": f"cocoon-seal-{ENCLAVE[:16]}",
        "namespace": "cocoon",
        "labels": ds["spec"]["template"]["metadata"]["labels"],
    }
    c = container(ds)
    assert c["image"] == IMAGE
    assert c["args"][:2] == ["seal-server", "--release=/opt/cocoon/release"]
    assert f"--expect-enclave-sha256={ENCLAVE}" in c["args"]
    assert f"--expect-seal-server-sha256={SEAL}" in c["args"]
    assert "--port=12345" in c["args"]
    assert c["readinessProbe"]["exec"]["command"] == ["test", "-f", "/run/cocoon-seal/ready"]
    # The selector matches the template (the apiserver refuses it otherwise).
    tmpl = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= tmpl.items()
    assert tmpl["app.kubernetes.io/component"] == "seal-server"  # not a launcher pod


def test_the_daemonset_goes_where_worker_vms_go_and_holds_the_host_port() -> None:
    pod = seal_daemonset(SealRelease(IMAGE, ENCLAVE), SealServerOptions("cocoon"))["spec"][
        "template"
    ]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]}
    assert {labels.TDX_ENABLED, labels.CC_MODE_STATE, labels.GPU_WORKLOAD_CONFIG} <= keys
    assert pod["hostNetwork"] is True
    (port,) = pod["containers"][0]["ports"]
    assert (port["hostPort"], port["containerPort"]) == (12345, 12345)


def test_privileged_mode_mounts_the_two_sgx_devices_device_plugin_mode_asks_for_them() -> None:
    priv = container(seal_daemonset(SealRelease(IMAGE, ENCLAVE), SealServerOptions("c")))
    assert priv["securityContext"] == {"privileged": True}
    assert {m["mountPath"] for m in priv["volumeMounts"]} >= {
        "/dev/sgx_enclave",
        "/dev/sgx_provision",
    }
    plugin = container(
        seal_daemonset(SealRelease(IMAGE, ENCLAVE), SealServerOptions("c", sgx="device-plugin"))
    )
    assert "privileged" not in plugin["securityContext"]
    assert plugin["resources"]["limits"]["sgx.intel.com/enclave"] == "1"
    assert plugin["resources"]["limits"]["sgx.intel.com/provision"] == "1"
    assert not any(m["mountPath"].startswith("/dev/") for m in plugin["volumeMounts"])


def test_one_seal_server_per_enclave_the_same_release_every_time() -> None:
    a = EnclaveUse("reg/l@sha256:" + "b" * 64, ENCLAVE, SEAL)
    b = EnclaveUse("reg/l@sha256:" + "a" * 64, ENCLAVE, SEAL)
    other = EnclaveUse(IMAGE, "f" * 64)
    releases = {(u.image, u.enclave) for u in (a, b, other)}
    assert wanted([a, b, other], [], {}, releases) == {ENCLAVE[:16]: b, "f" * 16: other}
    assert wanted([b, a], [], {}, releases) == wanted([a, b], [], {}, releases)


def test_a_release_the_operator_does_not_list_gets_no_seal_server() -> None:
    """A worker's author names the image and the enclave; the DaemonSet runs privileged on
    every worker host and serves every tenant's VMs: only listed releases run."""
    listed = EnclaveUse(IMAGE, ENCLAVE)
    foreign = EnclaveUse("evil.example/x@sha256:" + "c" * 64, "f" * 64)
    same_enclave_other_image = EnclaveUse("evil.example/x@sha256:" + "c" * 64, ENCLAVE)
    releases = {(IMAGE, ENCLAVE)}
    assert wanted([foreign, same_enclave_other_image, listed], [], {}, releases) == {
        ENCLAVE[:16]: listed
    }
    assert wanted([foreign], [], {}, releases) == {}


def test_an_enclave_no_worker_names_is_kept_while_a_launcher_pod_of_it_exists() -> None:
    old = EnclaveUse(IMAGE, "e" * 64)
    assert wanted([], ["e" * 16], {"e" * 16: old}, set()) == {"e" * 16: old}
    assert wanted([], [], {"e" * 16: old}, set()) == {}


def test_node_labels_follow_ready_seal_servers_and_only_changes_are_returned() -> None:
    current = {"n1": None, "n2": "x" * 16, "n3": "y" * 16}
    ready = {"n1": {"y" * 16}, "n3": {"y" * 16}}
    assert node_labels(current, ready) == {"n1": "y" * 16, "n2": None}


def test_waiting_names_the_enclave_and_its_daemonset_until_one_is_ready() -> None:
    message = waiting_message(ENCLAVE, set(), "cocoon")
    assert message is not None
    assert ENCLAVE[:16] in message and f"cocoon/{daemonset_name(ENCLAVE)}" in message
    assert waiting_message(ENCLAVE, {ENCLAVE[:16]}, "cocoon") is None
    assert "spec.release.files.enclave" in (waiting_message(None, set(), "cocoon") or "")


def test_the_launcher_pod_requires_a_node_with_its_enclave_ready_only_when_seal_servers_run() -> (
    None
):
    def expressions(pod: dict[str, Any]) -> list[dict[str, Any]]:
        aff = pod["spec"]["affinity"]["nodeAffinity"]
        terms = aff["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        result: list[dict[str, Any]] = terms[0]["matchExpressions"]
        return result

    with_seal = launcher_pod(REF, spec(), InstanceSlot(0), control_key=CONTROL_KEY, seal=True)
    assert {"key": labels.SEAL_ENCLAVE, "operator": "In", "values": [ENCLAVE[:16]]} in expressions(
        with_seal
    )
    assert with_seal["metadata"]["labels"]["cocoon.network/enclave"] == ENCLAVE[:16]
    without = launcher_pod(REF, spec(), InstanceSlot(0), control_key=CONTROL_KEY)
    assert all(e["key"] != labels.SEAL_ENCLAVE for e in expressions(without))
    assert "cocoon.network/enclave" not in without["metadata"]["labels"]


def observed(
    s: CocoonWorkerSpec, seal: SealFacts | None, pods: tuple[PodFacts, ...] = ()
) -> ObservedWorker:
    return ObservedWorker(
        ref=REF,
        control_key=CONTROL_KEY,
        generation=1,
        spec=s,
        status=CocoonWorkerStatus(),
        pods=pods,
        instances_in_use={},
        seal=seal,
    )


def scheduled(p: Any) -> dict[str, Any]:
    result: dict[str, Any] = next(c for c in p.status["conditions"] if c["type"] == "Scheduled")
    return result


ALLOWED = frozenset({(example_spec().release.image, ENCLAVE)})


def test_a_worker_without_an_enclave_digest_gets_no_vm_and_is_told_why() -> None:
    p = plan(observed(spec(enclave=None), SealFacts("cocoon", releases=ALLOWED)), now=T0)
    assert p.apply == []
    cond = scheduled(p)
    assert cond["reason"] == Reason.SEAL_SERVER_NOT_READY
    assert "spec.release.files.enclave" in cond["message"]


def test_a_worker_waiting_for_a_seal_server_has_its_pod_created_and_says_why_it_waits() -> None:
    p = plan(observed(spec(), SealFacts("cocoon", releases=ALLOWED)), now=T0)
    (pod,) = p.apply
    assert pod["metadata"]["labels"]["cocoon.network/enclave"] == ENCLAVE[:16]
    cond = scheduled(p)
    assert (cond["status"], cond["reason"]) == ("False", Reason.SEAL_SERVER_NOT_READY)
    ready = plan(observed(spec(), SealFacts("cocoon", frozenset({ENCLAVE[:16]}), ALLOWED)), now=T0)
    assert scheduled(ready)["reason"] != Reason.SEAL_SERVER_NOT_READY


def test_without_seal_servers_nothing_changes() -> None:
    p = plan(observed(spec(enclave=None), None), now=T0)
    (pod,) = p.apply
    assert "cocoon.network/enclave" not in pod["metadata"]["labels"]
    assert scheduled(p)["reason"] != Reason.SEAL_SERVER_NOT_READY


def test_a_worker_of_a_release_not_listed_gets_no_vm_and_is_told_to_ask_the_admin() -> None:
    p = plan(observed(spec(), SealFacts("cocoon", frozenset({ENCLAVE[:16]}))), now=T0)
    assert p.apply == []
    cond = scheduled(p)
    assert cond["reason"] == Reason.SEAL_SERVER_NOT_READY
    assert "sealServer.releases" in cond["message"]
