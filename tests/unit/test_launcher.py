"""The launcher Pod and worker config builders (pure)."""

from __future__ import annotations

import configparser
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cocoon_operator.api import labels, v1alpha1
from cocoon_operator.api.labels import ANNOTATION_WORKER_INI, READINESS_GATE
from cocoon_operator.desired.config import (
    HF_TOKEN_FILE,
    MODELS_DIR,
    S3_CREDENTIALS_DIR,
    InstanceSlot,
    worker_config,
)
from cocoon_operator.desired.launcher import (
    _REVISION_FIELDS,
    CONFIG_PATH,
    launcher_pod,
    revision,
)
from cocoon_operator.workerapi import ControlSigner, generate_private_key_text
from tests.unit.helpers import WORKER, container, spec

# The operator's control public key the launcher pods built here trust.
CONTROL_KEY = ControlSigner.from_text(generate_private_key_text()).public_key

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("index", "port", "cid"), [(0, 12000, 6), (1, 12010, 16), (9, 12090, 96)])
def test_instance_slot_follows_cocoons_port_and_cid_rule(index: int, port: int, cid: int) -> None:
    slot = InstanceSlot(index)
    assert (slot.http_port, slot.vsock_cid) == (port, cid)


@pytest.mark.parametrize("index", [-1, 10])
def test_instance_slot_is_a_single_digit(index: int) -> None:
    with pytest.raises(ValueError, match="instance must be 0-9"):
        InstanceSlot(index)


def test_pod_requests_one_gpu_and_the_release_shape() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(2), control_key=CONTROL_KEY)
    resources = container(pod)["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["requests"][labels.PASSTHROUGH_GPU_RESOURCE] == "1"
    assert resources["requests"]["memory"] == "104Gi"  # 100 GiB of guest RAM and QEMU
    assert resources["requests"]["cpu"] == "33"
    args = container(pod)["args"]
    assert not any(a.startswith(("--vcpus", "--memory")) for a in args)  # cocoon-launch's
    assert f"--expect-kernel-sha256={spec().release.files.kernel}" in args


def test_pod_requires_tdx_and_cc_nodes() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY)
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    (term,) = terms
    required = {e["key"]: e for e in term["matchExpressions"]}
    assert required[labels.TDX_ENABLED]["values"] == ["true"]
    assert required[labels.CC_MODE_STATE]["values"] == ["on"]
    assert required[labels.GPU_WORKLOAD_CONFIG]["values"] == ["vm-passthrough"]
    assert required[labels.GPU_PRODUCT]["operator"] == "Exists"


def test_gpu_product_pins_the_node_label() -> None:
    pod = launcher_pod(
        WORKER, spec(gpu={"product": "NVIDIA-H200"}), InstanceSlot(0), control_key=CONTROL_KEY
    )
    (term,) = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    product = next(e for e in term["matchExpressions"] if e["key"] == labels.GPU_PRODUCT)
    assert product == {"key": labels.GPU_PRODUCT, "operator": "In", "values": ["NVIDIA-H200"]}


def test_host_port_makes_the_instance_unique_per_node() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(3), control_key=CONTROL_KEY)
    control, ratls = container(pod)["ports"]
    assert control["hostPort"] == control["containerPort"] == 12032
    assert ratls["hostPort"] == ratls["containerPort"] == 12031
    assert pod["metadata"]["labels"]["cocoon.network/instance"] == "3"


def test_the_launcher_pod_gets_the_operators_priority_class_and_none_by_default() -> None:
    plain = launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY)
    assert "priorityClassName" not in plain["spec"]  # the cluster's default priority
    ranked = launcher_pod(
        WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY, priority_class="gpu-workers"
    )
    assert ranked["spec"]["priorityClassName"] == "gpu-workers"
    # An operator setting: the pod's name (its revision) does not change with it.
    assert ranked["metadata"]["name"] == plain["metadata"]["name"]


def test_the_launcher_shares_the_hosts_pids_so_the_node_agent_finds_its_qemu() -> None:
    # The launcher records QEMU's pid (launcher/_run.py write_state) and the node
    # agent checks /proc/<pid>/cmdline on the host (vm_running): one pid namespace.
    assert (
        launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY)["spec"]["hostPID"]
        is True
    )


def test_the_workers_own_port_is_not_published_only_the_control_relay() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(3), control_key=CONTROL_KEY)
    published = {p["hostPort"]: p["name"] for p in container(pod)["ports"]}
    assert 12030 not in published  # COCOON's unauthenticated port (cocoon-launch:293)
    assert published[12032] == "worker-control"


def test_the_launcher_trusts_the_operators_control_key_and_says_which() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY)
    assert f"--control-public-key={CONTROL_KEY}" in container(pod)["args"]
    assert pod["metadata"]["annotations"]["cocoon.network/control-key"] == CONTROL_KEY


def test_a_control_key_that_is_no_ed25519_key_builds_no_pod() -> None:
    with pytest.raises(ValueError, match="control_key"):
        launcher_pod(WORKER, spec(), InstanceSlot(0), control_key="bm90IGEga2V5")


def test_pod_is_owned_gated_and_labelled() -> None:
    pod = launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY)
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["uid"] == WORKER.uid
    assert owner["controller"] is True
    assert owner["kind"] == "CocoonWorker"
    assert pod["spec"]["readinessGates"] == [{"conditionType": READINESS_GATE}]
    assert pod["metadata"]["labels"]["cocoon.network/worker"] == "worker-0"
    assert pod["metadata"]["name"] == f"worker-0-{revision(spec())}"


def test_secrets_are_mounted_never_inlined() -> None:
    s = spec(hfTokenSecretRef={"name": "hf", "key": "token"})
    pod = launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY)
    text = yaml.safe_dump(pod)
    assert "c2ltdWxhdGVkLW5vZGUtd2FsbGV0LWtleS0wMDAwMDA=" not in text
    secrets = next(v for v in pod["spec"]["volumes"] if v["name"] == "secrets")
    names = [src["secret"]["name"] for src in secrets["projected"]["sources"]]
    assert names == ["worker-0-wallet", "hf"]


def test_the_configuration_travels_in_the_pod_and_is_mounted_as_the_launchers_file() -> None:
    s = spec()
    slot = InstanceSlot(3)
    pod = launcher_pod(WORKER, s, slot, control_key=CONTROL_KEY)
    annotations = pod["metadata"]["annotations"]
    assert annotations[ANNOTATION_WORKER_INI] == worker_config(s, slot)
    digest = hashlib.sha256(worker_config(s, slot).encode()).hexdigest()[:16]
    assert annotations["cocoon.network/config-hash"] == digest
    # The launcher reads --config=CONFIG_PATH; the downward API writes the
    # annotation there (the kubelet resolves the field path).
    assert f"--config={CONFIG_PATH}" in container(pod)["args"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "config"]
    (item,) = volume["downwardAPI"]["items"]
    directory, file = CONFIG_PATH.rsplit("/", 1)
    assert item == {
        "path": file,
        "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_WORKER_INI}']"},
    }
    (mount,) = [m for m in container(pod)["volumeMounts"] if m["name"] == "config"]
    assert mount == {"name": "config", "mountPath": directory, "readOnly": True}


def test_tolerations_pass_through() -> None:
    s = spec(tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}])
    pod = launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY)
    assert pod["spec"]["tolerations"] == [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_revision_changes_with_model_release_owner_but_not_coefficient_or_funding() -> None:
    base = revision(spec())
    assert revision(spec(coefficient=1500)) == base
    assert revision(spec(funding={"minimum": 6_000_000_000, "target": 20_000_000_000})) == base
    assert revision(spec(paused=True)) == base
    model = {**spec().model.model_dump(by_alias=True, exclude_none=True), "name": "Other/Model"}
    assert revision(spec(model=model)) != base
    assert revision(spec(ownerAddress="0:" + "11" * 32)) != base
    release = spec().release.model_dump(by_alias=True)
    assert revision(spec(release={**release, "version": "sim-1.0.1"})) != base


def test_a_specs_revision_is_dumped_once_while_it_lives_and_a_copy_gets_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dumps = 0
    dump = v1alpha1.CocoonWorkerSpec.model_dump_json

    def counted(self: v1alpha1.CocoonWorkerSpec, **kwargs: Any) -> str:
        nonlocal dumps
        dumps += 1
        return dump(self, **kwargs)

    monkeypatch.setattr(v1alpha1.CocoonWorkerSpec, "model_dump_json", counted)
    s = spec()
    first = revision(s)
    assert [revision(s) for _ in range(3)] == [first] * 3
    assert dumps == 1
    model = {**s.model.model_dump(by_alias=True, exclude_none=True), "name": "Other/Model"}
    other = s.model_copy(update={"model": v1alpha1.ModelRef.model_validate(model)})
    assert revision(other) != first  # a copy is another object: its own revision
    assert dumps == 2


def test_worker_config_is_cocoons_node_section() -> None:
    s = spec(coefficient=1250)
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(worker_config(s, InstanceSlot(4)))
    node = parsed["node"]
    assert node["type"] == "worker"
    assert node["model"] == s.model.cocoon_id
    assert node["owner_address"] == s.owner_address
    assert node["root_contract_address"] == s.root_contract_address
    assert node["instance"] == "4"
    assert node["worker_coefficient"] == "1250"
    assert "node_wallet_key" not in node
    assert "hf_token" not in node
    assert parsed["launcher"]["node_wallet_key_file"].startswith("/run/secrets/")
    assert not parsed.has_option("launcher", "http_port")  # cocoon-launch: 12000 + 10*i
    assert node["fake_ton"] == "true"  # the local network: COCOON's fake-TON mode
    assert not parsed.has_option("node", "ton_config")


def test_a_real_network_names_the_ton_config_files_the_pod_mounts() -> None:
    ton = {"liteservers": {"name": "ton", "key": "global.config.json"}}
    s = spec(
        network="testnet", ton=ton, ownerAddress="0QC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH3wH"
    )
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(worker_config(s, InstanceSlot(0)))
    assert parsed["node"]["ton_config"] == "/etc/cocoon/ton/global.config.json"
    assert not parsed.has_option("node", "ton_config_base")  # the release's own
    assert not parsed.has_option("node", "fake_ton")
    pod = launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["ton-config"]["configMap"] == {
        "name": "ton",
        "items": [{"key": "global.config.json", "path": "global.config.json"}],
    }
    mounts = {m["name"]: m["mountPath"] for m in container(pod)["volumeMounts"]}
    assert mounts["ton-config"] == "/etc/cocoon/ton"


def test_the_revision_is_the_digest_of_the_canonical_form_it_always_was() -> None:
    """Pod names carry it: another digest for the same spec would restart every VM on
    upgrade. The cached path must give what the canonical form gives, and the
    example's revision is pinned."""
    tolerations = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for each in (spec(), spec(coefficient=1500), spec(tolerations=tolerations)):
        canonical = each.model_dump(mode="json", by_alias=True, include=set(_REVISION_FIELDS))
        # Fields added to spec.release.files later are in the form only when set.
        files = canonical["release"]["files"]
        for later in ("enclave", "sealServer"):
            if files[later] is None:
                del files[later]
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        assert revision(each) == digest[:10]
    # The example's own spec changed (its root address, when the local chain's
    # root took COCOON's params cell), so its pinned revision did; the digest
    # of a given spec did not.
    assert revision(spec()) == "1b5423e105"


def init_container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["initContainers"]
    result: dict[str, Any] = only
    return result


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c["volumeMounts"]}


def test_an_init_container_ensures_the_model_in_the_nodes_cache_before_the_launcher() -> None:
    s = spec()
    pod = launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY)
    init = init_container(pod)
    assert init["name"] == "model"
    assert init["image"] == container(pod)["image"] == s.release.image
    assert init["args"] == [
        "model",
        "ensure",
        f"--cache={MODELS_DIR}",
        f"--model={s.model.cocoon_id}",
    ]
    assert mounts(init)["models"] == {"name": "models", "mountPath": MODELS_DIR}  # read-write
    assert mounts(container(pod))["models"]["readOnly"] is True
    models = next(v for v in pod["spec"]["volumes"] if v["name"] == "models")
    assert models["hostPath"]["path"] == MODELS_DIR


def test_a_prebuilt_source_is_handed_to_model_ensure() -> None:
    source = {"tarUrl": "https://mirror/m.tar", "verityUrl": "file:///mirror/m.tar.verity"}
    s = spec(model={**spec().model.model_dump(by_alias=True), "source": source})
    args = init_container(launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY))["args"]
    assert args[-2:] == [
        "--source-tar=https://mirror/m.tar",
        "--source-verity=file:///mirror/m.tar.verity",
    ]


def test_the_init_container_sees_the_hf_token_and_never_the_node_wallet_key() -> None:
    s = spec(hfTokenSecretRef={"name": "hf", "key": "token"})
    pod = launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY)
    init = init_container(pod)
    assert f"--token-file={HF_TOKEN_FILE}" in init["args"]
    assert mounts(init)["hf-token"]["readOnly"] is True
    assert "secrets" not in mounts(init)
    token = next(v for v in pod["spec"]["volumes"] if v["name"] == "hf-token")
    (source,) = token["projected"]["sources"]
    assert source["secret"]["name"] == "hf"
    assert [i["key"] for i in source["secret"]["items"]] == ["token"]
    without = init_container(launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY))
    assert not any(a.startswith("--token-file") for a in without["args"])
    assert "hf-token" not in mounts(without)


def test_s3_credentials_reach_the_init_container_alone() -> None:
    source = {
        "tarUrl": "s3://models/m.tar",
        "verityUrl": "s3://models/m.tar.verity",
        "s3": {
            "endpoint": "https://minio.dc.example",
            "region": "eu-west-1",
            "credentialsSecretRef": {"name": "s3-ro"},
        },
    }
    s = spec(model={**spec().model.model_dump(by_alias=True), "source": source})
    pod = launcher_pod(WORKER, s, InstanceSlot(0), control_key=CONTROL_KEY)
    init = init_container(pod)
    assert init["args"][-3:] == [
        "--s3-region=eu-west-1",
        "--s3-endpoint=https://minio.dc.example",
        f"--s3-credentials-dir={S3_CREDENTIALS_DIR}",
    ]
    assert mounts(init)["s3-credentials"] == {
        "name": "s3-credentials",
        "mountPath": S3_CREDENTIALS_DIR,
        "readOnly": True,
    }
    assert "s3-credentials" not in mounts(container(pod))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "s3-credentials")
    assert volume["projected"]["sources"] == [{"secret": {"name": "s3-ro"}}]


def test_an_s3_endpoint_that_is_not_a_url_is_refused_naming_the_field() -> None:
    source = {"tarUrl": "s3://m/t", "verityUrl": "s3://m/v", "s3": {"endpoint": "minio:9000"}}
    with pytest.raises(ValidationError, match=r"model\.source\.s3\.endpoint"):
        spec(model={**spec().model.model_dump(by_alias=True), "source": source})


def test_the_init_container_is_modest_unprivileged_and_keeps_the_pod_guaranteed() -> None:
    init = init_container(launcher_pod(WORKER, spec(), InstanceSlot(0), control_key=CONTROL_KEY))
    resources = init["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "1", "memory": "2Gi"}
    security = init["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert not {"dev-kvm", "dev-vfio", "dev-vsock", "launcher-state"} & set(mounts(init))
