"""The Helm chart (charts/cocoon-operator): it lints and renders, installs into
the real local apiserver, and its RBAC is exactly enough: the real operator,
run with a token of the chart's ServiceAccount, reconciles a CocoonWorker with
no permission error, while the same token is refused what the operator never
does. ``helm uninstall`` removes the cluster-scoped objects again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from cocoon_operator.api import v1alpha1
from cocoon_operator.api.crd import all_crds
from cocoon_operator.api.instance import MAX_INSTANCES, InstanceSlot
from cocoon_operator.api.labels import LABEL_POOL, LABEL_WORKER, READINESS_GATE
from cocoon_operator.api.pool import POOL_PLURAL
from cocoon_operator.cli import build_parser
from cocoon_operator.k8s.client import connect
from tests.cluster.crds import install_crds
from tests.cluster.helpers import (
    API,
    CHART,
    conditions,
    create_worker,
    get_worker,
    release_for,
    worker_pods,
)
from tests.cluster.operator import running_operator
from tests.cluster.stack import REPO, Stack
from tests.cluster.wait import eventually

Doc = dict[str, Any]
# What a missing permission looks like in the operator's log: the API client's
# "(403) Reason: Forbidden", kopf's APIForbiddenError and its fallback warnings.
DENIED = re.compile(r"forbidden|not enough (rbac )?permissions", re.IGNORECASE)


def render(helm: Any, *args: str) -> list[Doc]:
    text = helm("template", "rel", str(CHART), "--namespace", "ops", *args)
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def user_facing(role: Doc) -> bool:
    """A ClusterRole aggregated into Kubernetes' view/edit/admin: users', not the operator's."""
    return any(k.startswith(AGGREGATE) for k in role["metadata"].get("labels", {}))


def granted(docs: list[Doc]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) over every Role and ClusterRole rendered for the
    operator and its node agent (not the roles aggregated into users' roles)."""
    out = set()
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    for doc in [r for r in roles if not user_facing(r)]:
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb))
    return out


def test_chart_lints_and_renders_hardened_defaults(helm: Any) -> None:
    helm("lint", "--strict", str(CHART))
    docs = render(helm)
    assert {d["kind"] for d in docs} == {
        # Upgraded with the chart, kept on uninstall (crds.enabled, crds.keep).
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "DaemonSet",
        "Service",
        # The node agents' writes bound to their own node's report.
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert (
        pod["serviceAccountName"]
        == one(docs, "ServiceAccount", "rel-cocoon-operator")["metadata"]["name"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["image"] == "cocoon-operator:0.1.0.dev0"
    assert c["args"][0] == "run"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert not [a for a in c["args"] if a.startswith(("--namespace", "--webhook"))]
    assert one(docs, "Service")["spec"]["ports"][0]["name"] == "metrics"
    # Cluster-wide: the workload rules are bound by a ClusterRoleBinding.
    bindings = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    assert bindings == {"rel-cocoon-operator", "rel-cocoon-operator-workloads"}
    rules = granted(docs)
    assert ("", "pods", "create") in rules
    assert ("cocoon.network", "cocoonworkers/status", "patch") in rules
    # Secrets: pool members' wallet keys and the control key Secret are created; the
    # control key Secret is the one read, by name, in the release namespace only.
    assert {r for r in rules if r[1] == "secrets"} == {
        ("", "secrets", "create"),
        ("", "secrets", "get"),
    }
    reads = [
        (role["metadata"].get("namespace"), rule.get("resourceNames"))
        for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
        for rule in role["rules"]
        if "secrets" in rule["resources"] and "get" in rule["verbs"]
    ]
    assert reads == [("ops", ["cocoon-operator-control-key"])], reads
    assert "--control-key-secret=ops/cocoon-operator-control-key" in c["args"]
    assert not [r for r in rules if r[1].endswith("webhookconfigurations")]
    assert not [r for r in rules if r[1] == "namespaces"]  # kopf needs them only when namespaced
    assert not [r for r in rules if "*" in r]


def test_chart_renders_the_node_agent_read_only_on_tdx_hosts_with_narrow_rbac(
    helm: Any,
) -> None:
    docs = render(helm)
    ds = one(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"feature.node.kubernetes.io/cpu-security.tdx.enabled": "true"}
    assert pod["serviceAccountName"] == "rel-cocoon-operator-node-agent"
    assert pod["securityContext"]["runAsNonRoot"] is True
    c, janitor = pod["containers"]
    assert c["image"] == "cocoon-node-agent:0.1.0.dev0"
    assert c["args"][:2] == ["node-agent", "--host-root=/host"]
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert all(m["readOnly"] for m in c["volumeMounts"])
    assert {m["mountPath"] for m in c["volumeMounts"]} == {
        "/host/sys",
        "/host/dev",
        "/host/proc",
        "/host/run/cocoon",
        "/host/var/lib/cocoon/models",  # the model cache's progress files (read-only)
    }
    # The janitor of launcher state: root without capabilities, one host directory.
    assert janitor["image"] == c["image"]
    assert janitor["args"][:2] == ["launcher-state-sweep", "--dir=/host/run/cocoon/pods"]
    sc = janitor["securityContext"]
    assert (sc["runAsUser"], sc["privileged"], sc["allowPrivilegeEscalation"]) == (0, False, False)
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    assert [m["mountPath"] for m in janitor["volumeMounts"]] == ["/host/run/cocoon/pods"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["launcher-pods"]["hostPath"]["path"] == "/run/cocoon/pods"
    # No selector of the operator's matches the agents' pods.
    agent_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert selects(ds["spec"]["selector"]["matchLabels"], agent_labels)
    assert not selects(one(docs, "Deployment")["spec"]["selector"]["matchLabels"], agent_labels)
    assert not selects(one(docs, "Service")["spec"]["selector"], agent_labels)
    # The agent: ConfigMaps in the release namespace, nothing else; the
    # operator reads them there and is told to trust that namespace only.
    agent_role = one(docs, "Role", "rel-cocoon-operator-node-agent")
    assert agent_role["metadata"]["namespace"] == "ops"
    assert agent_role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}
    ]
    # RBAC cannot narrow those to a name pattern: a policy binds each agent's
    # writes to its own node's report (proved against the apiserver in
    # test_installed_rbac_is_enough_for_the_operator_and_no_more).
    policy = one(docs, "ValidatingAdmissionPolicy")
    (only_agent,) = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:ops:rel-cocoon-operator-node-agent" in only_agent["expression"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "--node-report-max-age-seconds=900" in container(docs)["args"]
    bound = one(docs, "RoleBinding", "rel-cocoon-operator-node-agent")
    assert [s["name"] for s in bound["subjects"]] == ["rel-cocoon-operator-node-agent"]
    reader = one(docs, "RoleBinding", "rel-cocoon-operator-node-agent-reports")
    assert [s["name"] for s in reader["subjects"]] == ["rel-cocoon-operator"]
    assert "--node-report-namespace=ops" in container(docs)["args"]
    assert "--orphan-grace-seconds=60" in container(docs)["args"]

    off = render(helm, "--set", "nodeAgent.enabled=false")
    # The one Role left is the control key's (handlers/controlkey.py).
    assert not by_kind(off, "DaemonSet")
    assert [r["metadata"]["name"] for r in by_kind(off, "Role")] == [
        "rel-cocoon-operator-control-key"
    ]
    assert not by_kind(off, "ValidatingAdmissionPolicy")
    assert not [a for a in container(off)["args"] if a.startswith("--node-report")]


def test_chart_passes_the_allowed_launcher_images_and_allows_none_by_default(
    helm: Any,
) -> None:
    def image_args(*args: str) -> list[str]:
        flags = ("--launcher-image", "--allow-any-launcher-image")
        return [a for a in container(render(helm, *args))["args"] if a.startswith(flags)]

    assert image_args() == []  # the operator then starts no worker (docs/deploy.md)
    digest = "sha256:" + "fe" * 32
    listed = f"launcher.allowedImages={{registry.local/launcher@{digest},{digest}}}"
    assert image_args("--set", listed) == [
        f"--launcher-image=registry.local/launcher@{digest}",
        f"--launcher-image={digest}",
    ]
    assert image_args("--set", "launcher.allowAnyImage=true") == ["--allow-any-launcher-image"]


def test_with_leader_election_only_the_leader_is_named_in_the_webhook_configuration(
    helm: Any,
) -> None:
    """Followers serve nothing: behind the Service they would receive admission
    reviews they cannot answer, which fail open (unchecked addresses, no finalizer).
    The leader writes its own pod IP into the configurations it manages."""
    docs = render(helm, "--set", "replicaCount=2,leaderElection.enabled=true,webhook.enabled=true")
    c = container(docs)
    assert "--webhook-host=$(POD_IP)" in c["args"]
    (ip,) = [e for e in c["env"] if e["name"] == "POD_IP"]
    assert ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # One replica: the Service name, as before.
    single = container(render(helm, "--set", "webhook.enabled=true"))
    assert "--webhook-host=rel-cocoon-operator-webhook.ops.svc" in single["args"]
    assert not [e for e in single["env"] if e["name"] == "POD_IP"]


def test_chart_renders_webhook_and_watched_namespaces(helm: Any) -> None:
    docs = render(
        helm,
        "--set",
        "webhook.enabled=true,webhook.certSecret=cocoon-webhook-tls",
        "--set",
        "watchNamespaces={team-a,team-b}",
    )
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    host = "rel-cocoon-operator-webhook.ops.svc"
    for arg in (
        "--webhook-addr=0.0.0.0",
        "--webhook-port=9443",
        f"--webhook-host={host}",
        "--webhook-config=rel-cocoon-operator.cocoon.network",
        "--webhook-cert=/etc/cocoon-operator/webhook/tls.crt",
        "--webhook-key=/etc/cocoon-operator/webhook/tls.key",
    ):
        assert arg in args
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (tls,) = [v for v in pod["volumes"] if v["name"] == "webhook-tls"]
    assert tls["secret"]["secretName"] == "cocoon-webhook-tls"
    svc = one(docs, "Service", "rel-cocoon-operator-webhook")
    assert svc["spec"]["ports"] == [
        {"name": "webhook", "port": 9443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    # Namespaced: one RoleBinding per namespace, no cluster-wide workload rights.
    role_bindings = [
        b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"].endswith("-workloads")
    ]
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")} == {
        "rel-cocoon-operator"
    }
    cluster = one(docs, "ClusterRole", "rel-cocoon-operator")
    both = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    webhook_rules = [r for r in cluster["rules"] if r["resources"] == both]
    assert webhook_rules == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": both,
            "verbs": ["create"],
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": both,
            "resourceNames": ["rel-cocoon-operator.cocoon.network"],
            "verbs": ["patch", "delete"],
        },
    ]
    assert ("", "namespaces", "watch") in granted(docs)
    # Without a Secret the operator self-signs: no volume, no cert arguments.
    docs = render(helm, "--set", "webhook.enabled=true")
    assert not [a for a in container(docs)["args"] if a.startswith("--webhook-cert")]


def test_chart_renders_registration_with_one_more_secret_and_its_ledger(helm: Any) -> None:
    chain = "chain.endpoint=https://toncenter.example/api/v2"
    docs = render(helm, "--set", chain)
    assert not [a for a in container(docs)["args"] if a.startswith("--root-owner-secret")]
    assert not [d for d in by_kind(docs, "Role") if "root-owner" in d["metadata"]["name"]]

    owner = "chain.rootOwnerSecret.name=root-owner,chain.rootOwnerSecret.namespace=keys"
    docs = render(helm, "--set", chain, "--set", owner)
    args = container(docs)["args"]
    assert "--root-owner-secret=keys/root-owner" in args
    assert "--registration-ledger=ops/cocoon-registration-ledger" in args
    # The owner's wallet version (v4r2 by default) and the network id a v5r1
    # owner's address depends on, with no treasury configured.
    assert "--root-owner-wallet=v4r2" in args and "--ton-global-id=-239" in args
    v5 = "chain.rootOwnerWallet=v5r1,chain.globalId=-3"
    args = container(render(helm, "--set", chain, "--set", owner, "--set", v5))["args"]
    assert "--root-owner-wallet=v5r1" in args and "--ton-global-id=-3" in args
    role = one(docs, "Role", "rel-cocoon-operator-root-owner")
    assert role["metadata"]["namespace"] == "keys"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["root-owner"],
            "verbs": ["get"],
        }
    ]
    binding = one(docs, "RoleBinding", "rel-cocoon-operator-root-owner")
    assert binding["roleRef"]["name"] == "rel-cocoon-operator-root-owner"
    ledger = one(docs, "Role", "rel-cocoon-operator-registration-ledger")
    assert {"resourceNames": ["cocoon-registration-ledger"]}.items() <= ledger["rules"][1].items()
    assert ledger["rules"][1]["verbs"] == ["get", "update"]

    out = helm("template", "rel", str(CHART), "--set", "chain.rootOwnerSecret.name=x", check=False)
    assert "chain.rootOwnerSecret is set but chain.endpoint is empty" in out


def test_chart_renders_the_treasury_wallet_version_and_refuses_unknown_ones(helm: Any) -> None:
    chain = "chain.endpoint=https://toncenter.example/api/v2,chain.treasurySecret.name=treasury"
    args = container(render(helm, "--set", chain))["args"]
    assert "--treasury-wallet=v4r2" in args  # the default: an upgrade keeps its address
    assert "--ton-global-id=-239" in args
    testnet = "chain.treasuryWallet=v5r1,chain.globalId=-3"
    args = container(render(helm, "--set", chain, "--set", testnet))["args"]
    assert "--treasury-wallet=v5r1" in args and "--ton-global-id=-3" in args
    out = helm(
        "template",
        "rel",
        str(CHART),
        "--set",
        chain,
        "--set",
        "chain.treasuryWallet=v3r2",
        check=False,
    )
    assert "treasuryWallet" in out and "v5r1" in out, out


def test_chart_logs_json_at_info_by_default_and_takes_both_settings(helm: Any) -> None:
    args = container(render(helm))["args"]
    assert "--log-format=json" in args
    assert "--log-level=info" in args
    args = container(render(helm, "--set", "logging.format=full,logging.level=debug"))["args"]
    assert "--log-format=full" in args
    assert "--log-level=debug" in args
    assert not [a for a in args if a in ("--log-format=json", "--log-level=info")]
    agent = next(d for d in render(helm) if d["kind"] == "DaemonSet")
    agent_args = agent["spec"]["template"]["spec"]["containers"][0]["args"]
    assert agent_args[0] == "node-agent"
    assert {"--log-format=json", "--log-level=info"} <= set(agent_args)
    # The same words the operator takes, and only those.
    for bad in ("logging.format=yaml", "logging.level=trace", "logging.colour=true"):
        out = helm("template", "rel", str(CHART), "--set", bad, check=False)
        assert "Error" in out, bad


def test_chart_renders_the_operators_money_policy_with_finite_defaults(helm: Any) -> None:
    chain = "chain.endpoint=https://toncenter.example/api/v2,chain.treasurySecret.name=treasury"
    args = container(render(helm, "--set", chain))["args"]
    # Finite by default: no worker's spec decides what the treasury pays.
    assert "--funding-max-target=20" in args
    assert "--funding-worker-daily-cap=20" in args
    assert "--funding-namespace-daily-cap=100" in args
    assert "--treasury-tcb-status=UpToDate" in args
    owner = "chain.rootOwnerSecret.name=root-owner"
    args = container(render(helm, "--set", chain, "--set", owner))["args"]
    assert "--registration-daily-cap=1" in args
    assert not [a for a in args if a.startswith("--registration-namespace")]  # none allowed
    image = "ab" * 32
    args = container(
        render(
            helm,
            "--set",
            chain,
            "--set",
            owner,
            "--set",
            "chain.registration.namespaces={team-a}",
            "--set",
            f"chain.registration.imageHashes={{{image}}}",
            "--set-string",
            "chain.fundingLimits.namespaces.team-a.namespaceDailyCap=500",
        )
    )["args"]
    assert "--registration-namespace=team-a" in args
    assert f"--registration-image-hash={image}" in args
    assert "--funding-namespace-daily-cap=team-a=500" in args
    for bad in ("chain.fundingLimits.maxTarget=lots", "chain.treasuryTcbStatuses={Whatever}"):
        out = helm("template", "rel", str(CHART), "--set", chain, "--set", bad, check=False)
        assert "Error" in out, bad


def test_chart_funds_before_start_only_where_named_and_reads_secrets_only_there(
    helm: Any,
) -> None:
    chain = "chain.endpoint=https://toncenter.example/api/v2,chain.treasurySecret.name=treasury"
    docs = render(helm, "--set", chain)
    assert not [a for a in container(docs)["args"] if a.startswith("--fund-before-start")]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-start-funding")]
    named = "chain.fundingLimits.beforeStartNamespaces={team-a,team-b}"
    docs = render(helm, "--set", chain, "--set", named)
    args = container(docs)["args"]
    assert "--fund-before-start-namespace=team-a" in args
    assert "--fund-before-start-namespace=team-b" in args
    (role,) = [
        d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("-start-funding")
    ]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    bindings = [
        d for d in by_kind(docs, "RoleBinding") if d["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert not [
        d
        for d in by_kind(docs, "ClusterRoleBinding")
        if d["roleRef"]["name"] == role["metadata"]["name"]
    ]
    everywhere = render(
        helm, "--set", chain, "--set", "chain.fundingLimits.beforeStartNamespaces={*}"
    )
    assert "--fund-before-start-namespace=*" in container(everywhere)["args"]
    assert [
        d
        for d in by_kind(everywhere, "ClusterRoleBinding")
        if d["roleRef"]["name"] == role["metadata"]["name"]
    ]
    for bad in ("chain.fundingLimits.beforeStartNamespaces={Bad_NS}",):
        out = helm("template", "rel", str(CHART), "--set", chain, "--set", bad, check=False)
        assert "Error" in out, bad


def test_chart_refuses_bad_values(helm: Any) -> None:
    for bad in ("replicaCount=2", "nonsense=1", "webhook.port=0", "watchNamespaces={Bad_NS}"):
        out = helm("template", "rel", str(CHART), "--set", bad, check=False)
        assert "Error" in out, bad


# --- optional objects: disruption budget, monitoring, dashboards, cert-manager ----

EVERYTHING = (
    "replicaCount=3,leaderElection.enabled=true,webhook.enabled=true,"
    "webhook.certManager.enabled=true,monitoring.serviceMonitor.enabled=true,"
    "monitoring.prometheusRule.enabled=true,dashboards.enabled=true,networkPolicy.enabled=true"
)
OPTIONAL_KINDS = {
    "PodDisruptionBudget",
    "ServiceMonitor",
    "PrometheusRule",
    "Issuer",
    "Certificate",
    "NetworkPolicy",
}


def pod_labels(docs: list[Doc]) -> dict[str, str]:
    labels: dict[str, str] = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_chart_lints_with_every_option_enabled(helm: Any) -> None:
    helm("lint", "--strict", str(CHART), "--set", EVERYTHING)
    docs = render(helm, "--set", EVERYTHING)
    assert {d["kind"] for d in docs} >= OPTIONAL_KINDS
    assert "rel-cocoon-operator-dashboards" in {
        d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")
    }
    # Secrets are referenced by name only: the chart renders none.
    assert not by_kind(docs, "Secret")


def test_chart_renders_no_optional_object_by_default(helm: Any) -> None:
    docs = render(helm)
    assert not OPTIONAL_KINDS & {d["kind"] for d in docs}
    assert not by_kind(docs, "ConfigMap")


def test_chart_renders_pod_disruption_budget_only_with_replicas_to_spare(helm: Any) -> None:
    # One replica: a budget would only block node drains, so none.
    assert not by_kind(render(helm, "--set", "leaderElection.enabled=true"), "PodDisruptionBudget")
    docs = render(helm, "--set", "replicaCount=2,leaderElection.enabled=true")
    pdb = one(docs, "PodDisruptionBudget", "rel-cocoon-operator")
    assert pdb["metadata"]["namespace"] == "ops"
    assert pdb["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdb["spec"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selects(selector, pod_labels(docs))
    # maxUnavailable, when set, replaces minAvailable; percentages stay strings.
    docs = render(
        helm,
        "--set",
        "replicaCount=4,leaderElection.enabled=true,podDisruptionBudget.maxUnavailable=50%",
    )
    spec = one(docs, "PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == "50%"
    assert "minAvailable" not in spec
    docs = render(
        helm,
        "--set",
        "replicaCount=2,leaderElection.enabled=true,podDisruptionBudget.enabled=false",
    )
    assert not by_kind(docs, "PodDisruptionBudget")


def test_chart_renders_service_monitor_for_the_metrics_service_only(helm: Any) -> None:
    docs = render(
        helm,
        "--set",
        "webhook.enabled=true,monitoring.serviceMonitor.enabled=true,"
        "monitoring.serviceMonitor.labels.release=kube-prometheus-stack,"
        "monitoring.serviceMonitor.interval=15s",
    )
    monitor = one(docs, "ServiceMonitor", "rel-cocoon-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    metrics_svc = one(docs, "Service", "rel-cocoon-operator-metrics")
    webhook_svc = one(docs, "Service", "rel-cocoon-operator-webhook")
    assert selects(selector, metrics_svc["metadata"]["labels"])
    assert not selects(selector, webhook_svc["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = metrics_svc["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    assert endpoint["interval"] == "15s"
    assert endpoint["path"] == "/metrics"
    # The Service it scrapes reaches the operator's metrics port.
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": port["targetPort"], "containerPort": port["port"], "protocol": "TCP"} in c[
        "ports"
    ]
    assert selects(metrics_svc["spec"]["selector"], pod_labels(docs))


def test_chart_renders_prometheus_rule_scoped_to_the_release(helm: Any) -> None:
    docs = render(
        helm,
        "--set",
        "monitoring.prometheusRule.enabled=true,monitoring.prometheusRule.labels.release=prom,"
        "monitoring.prometheusRule.alertLabels.team=gpu,monitoring.prometheusRule.notReadyFor=45m,"
        "monitoring.prometheusRule.walletMinimumNanoton=7000000000",
    )
    rule = one(docs, "PrometheusRule", "rel-cocoon-operator")
    assert rule["metadata"]["labels"]["release"] == "prom"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "CocoonWorkersNotReady",
        "CocoonWorkersFailed",
        "CocoonAttestationRejected",
        "CocoonWalletBelowMinimum",
        "CocoonWalletBelowStartFloor",
        "CocoonChainErrors",
        "CocoonReconcileErrors",
        "CocoonOperatorOverloaded",
        "CocoonOperatorMemoryHigh",
        "CocoonOperatorNoLeader",
    } <= set(rules)
    assert "${" not in json.dumps(rule)  # every placeholder filled
    for name, r in rules.items():
        # Only this release's series: what its ServiceMonitor scrape is labelled.
        assert 'job="rel-cocoon-operator-metrics",namespace="ops"' in r["expr"], name
        assert r["labels"]["team"] == "gpu", name
        assert r["labels"]["severity"] in {"warning", "critical"}, name
    assert rules["CocoonWorkersNotReady"]["for"] == "45m"
    assert rules["CocoonWalletBelowMinimum"]["expr"].endswith("< 7000000000")
    # Prometheus's own templating reaches the rule untouched.
    assert "{{ $labels.reason }}" in rules["CocoonAttestationRejected"]["annotations"]["summary"]
    # A selector of one's own, for another way of scraping.
    docs = render(
        helm,
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set-string",
        'monitoring.prometheusRule.selector=job="cocoon"',
    )
    for group in one(docs, "PrometheusRule")["spec"]["groups"]:
        for r in group["rules"]:
            assert 'job="cocoon"' in r["expr"] and "rel-cocoon-operator" not in r["expr"]


def test_chart_renders_dashboard_config_map_for_the_grafana_sidecar(helm: Any) -> None:
    shipped = json.loads((CHART / "files" / "dashboards" / "cocoon-operator.json").read_text())
    docs = render(
        helm,
        "--set",
        "dashboards.enabled=true,dashboards.namespace=monitoring,"
        "dashboards.annotations.grafana_folder=COCOON",
    )
    cm = one(docs, "ConfigMap", "rel-cocoon-operator-dashboards")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "COCOON"}
    assert json.loads(cm["data"]["cocoon-operator.json"]) == shipped
    docs = render(helm, "--set", "dashboards.enabled=true,dashboards.label=my_dashboards")
    cm = one(docs, "ConfigMap", "rel-cocoon-operator-dashboards")
    assert cm["metadata"]["namespace"] == "ops"
    assert cm["metadata"]["labels"]["my_dashboards"] == "1"


def webhook_tls_secret(docs: list[Doc]) -> str | None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    found = [v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "webhook-tls"]
    return found[0] if found else None


def test_chart_renders_cert_manager_certificate_for_the_webhook(helm: Any) -> None:
    # The default stays the operator's own self-signed certificate.
    docs = render(helm, "--set", "webhook.enabled=true")
    assert not by_kind(docs, "Certificate") and not by_kind(docs, "Issuer")
    assert webhook_tls_secret(docs) is None

    docs = render(helm, "--set", "webhook.enabled=true,webhook.certManager.enabled=true")
    cert = one(docs, "Certificate", "rel-cocoon-operator-webhook")
    issuer = one(docs, "Issuer", "rel-cocoon-operator-selfsigned")
    assert issuer["spec"] == {"selfSigned": {}}
    assert cert["spec"]["issuerRef"] == {
        "name": "rel-cocoon-operator-selfsigned",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    args = container(docs)["args"]
    assert cert["spec"]["dnsNames"] == [
        a.removeprefix("--webhook-host=") for a in args if a.startswith("--webhook-host=")
    ]
    assert cert["spec"]["dnsNames"] == ["rel-cocoon-operator-webhook.ops.svc"]
    # The Secret cert-manager writes is the one the operator is given.
    assert cert["spec"]["secretName"] == "rel-cocoon-operator-webhook-tls"
    assert webhook_tls_secret(docs) == cert["spec"]["secretName"]
    assert "--webhook-cert=/etc/cocoon-operator/webhook/tls.crt" in args
    assert "--webhook-key=/etc/cocoon-operator/webhook/tls.key" in args

    # An issuer of one's own, and a Secret name of one's own.
    docs = render(
        helm,
        "--set",
        "webhook.enabled=true,webhook.certManager.enabled=true,webhook.certSecret=hook-tls,"
        "webhook.certManager.issuerRef.name=corp-ca,webhook.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert not by_kind(docs, "Issuer")
    cert = one(docs, "Certificate")
    assert cert["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert cert["spec"]["secretName"] == "hook-tls" == webhook_tls_secret(docs)


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [
        ("--set", "podDisruptionBudget.minAvailable=most", "podDisruptionBudget/minAvailable"),
        ("--set", "podDisruptionBudget.bogus=1", "bogus"),
        ("--set", "podDisruptionBudget.minAvailable=", "podDisruptionBudget"),
        (
            "--set",
            "replicaCount=2,leaderElection.enabled=true,podDisruptionBudget.minAvailable=2",
            "podDisruptionBudget.minAvailable",
        ),
        ("--set", "monitoring.serviceMonitor.interval=soon", "monitoring/serviceMonitor/interval"),
        ("--set", "monitoring.serviceMonitor.bogus=1", "bogus"),
        (
            "--set",
            "metrics.enabled=false,monitoring.serviceMonitor.enabled=true",
            "monitoring.serviceMonitor.enabled",
        ),
        (
            "--set",
            "metrics.enabled=false,monitoring.prometheusRule.enabled=true",
            "monitoring.prometheusRule.enabled",
        ),
        (
            "--set",
            "monitoring.prometheusRule.walletMinimumNanoton=-1",
            "monitoring/prometheusRule/walletMinimumNanoton",
        ),
        (
            "--set",
            "monitoring.prometheusRule.chainErrorRatio=2",
            "monitoring/prometheusRule/chainErrorRatio",
        ),
        (
            "--set-string",
            'monitoring.prometheusRule.selector=job="x"}',
            "monitoring/prometheusRule/selector",
        ),
        ("--set", "dashboards.label=not a label", "dashboards/label"),
        ("--set", "dashboards.bogus=1", "bogus"),
        ("--set", "webhook.certManager.enabled=true", "webhook.certManager.enabled"),
        (
            "--set",
            "webhook.enabled=true,webhook.certManager.issuerRef.kind=issuer",
            "webhook/certManager/issuerRef/kind",
        ),
        ("--set", "webhook.certManager.duration=1y", "webhook/certManager/duration"),
        ("--set", "webhook.certManager.bogus=1", "bogus"),
        ("--set", "nodeAgent.intervalSeconds=0", "nodeAgent/intervalSeconds"),
        ("--set", "nodeAgent.image.digest=latest", "nodeAgent/image/digest"),
        ("--set", "nodeAgent.bogus=1", "bogus"),
        ("--set", "nodeAgent.launcherStateGraceSeconds=5", "nodeAgent/launcherStateGraceSeconds"),
        ("--set", "launcher.allowedImages={registry.local/launcher:1.0}", "launcher/allowedImages"),
        ("--set", "launcher.allowAnyImage=yes", "launcher/allowAnyImage"),
    ],
)
def test_chart_refuses_bad_optional_values(helm: Any, flag: str, value: str, key: str) -> None:
    out = helm("template", "rel", str(CHART), flag, value, check=False)
    assert "Error" in out, value
    assert key in out, f"{value}: the error does not name {key}:\n{out}"


# --- CRDs, spreading, priorities, user roles, network policy, runbooks ----------


def crd_docs(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}


def test_chart_renders_the_generated_crds_labelled_and_kept_on_uninstall(helm: Any) -> None:
    """The chart's CRDs are the models' (hack/gen-crds), so `helm upgrade` applies
    exactly what the operator expects; Helm's keep policy unless crds.keep=false."""
    crds = crd_docs(render(helm))
    generated = {c["metadata"]["name"]: c for c in all_crds().values()}
    assert sorted(crds) == sorted(generated)
    for name, crd in crds.items():
        # Everything but metadata as generated (the template reads and writes YAML:
        # no number, string or rule may change on the way).
        assert {k: v for k, v in crd.items() if k != "metadata"} == {
            k: v for k, v in generated[name].items() if k != "metadata"
        }, name
        assert crd["metadata"]["annotations"] == {
            **generated[name]["metadata"]["annotations"],
            "helm.sh/resource-policy": "keep",
        }
        labels = crd["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert "namespace" not in crd["metadata"]  # cluster-scoped
    unkept = crd_docs(render(helm, "--set", "crds.keep=false"))
    assert sorted(unkept) == sorted(generated)
    assert not [
        c for c in unkept.values() if "helm.sh/resource-policy" in c["metadata"]["annotations"]
    ]
    assert crd_docs(render(helm, "--set", "crds.enabled=false")) == {}
    out = helm("template", "rel", str(CHART), "--set", "crds.bogus=1", check=False)
    assert "Error" in out and "bogus" in out


def spread(docs: list[Doc]) -> list[Doc]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    constraints: list[Doc] = pod.get("topologySpreadConstraints", [])
    return constraints


def test_chart_spreads_operator_replicas_over_nodes_only_when_there_are_several(
    helm: Any,
) -> None:
    assert spread(render(helm)) == []  # one replica: nothing to spread
    docs = render(helm, "--set", "replicaCount=3,leaderElection.enabled=true")
    (constraint,) = spread(docs)
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["maxSkew"] == 1
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still runs
    assert selects(constraint["labelSelector"]["matchLabels"], pod_labels(docs))
    assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    hard = render(
        helm,
        "--set",
        "replicaCount=2,leaderElection.enabled=true,topologySpread.whenUnsatisfiable=DoNotSchedule",
    )
    assert spread(hard)[0]["whenUnsatisfiable"] == "DoNotSchedule"
    off = render(
        helm, "--set", "replicaCount=2,leaderElection.enabled=true,topologySpread.enabled=false"
    )
    assert spread(off) == []
    zone = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
    }
    own = render(
        helm,
        "--set-json",
        f"topologySpreadConstraints=[{json.dumps(zone)}]",
    )
    assert spread(own) == [zone]
    out = helm(
        "template",
        "rel",
        str(CHART),
        "--set",
        "topologySpread.whenUnsatisfiable=Sometimes",
        check=False,
    )
    assert "Error" in out and "whenUnsatisfiable" in out


def test_chart_sets_priority_classes_of_the_operator_agents_seal_servers_and_launchers(
    helm: Any,
) -> None:
    docs = render(helm)
    assert not [a for a in container(docs)["args"] if "priority-class" in a]
    assert "priorityClassName" not in one(docs, "Deployment")["spec"]["template"]["spec"]
    docs = render(
        helm,
        "--set",
        "priorityClassName=ops-critical,nodeAgent.priorityClassName=node-critical,"
        "launcher.priorityClassName=gpu-workers,sealServer.enabled=true,"
        "sealServer.priorityClassName=node-critical",
    )
    assert (
        one(docs, "Deployment")["spec"]["template"]["spec"]["priorityClassName"] == "ops-critical"
    )
    agent = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert agent["priorityClassName"] == "node-critical"
    args = container(docs)["args"]
    # The pods the operator creates: launcher pods and seal-server DaemonSets.
    assert "--launcher-priority-class=gpu-workers" in args
    assert "--seal-server-priority-class=node-critical" in args
    # The operator takes the flag (the builder is tested in tests/unit/test_launcher.py).
    parsed = build_parser().parse_args(["run", "--launcher-priority-class=gpu-workers"])
    assert parsed.launcher_priority_class == "gpu-workers"
    out = helm(
        "template", "rel", str(CHART), "--set", "launcher.priorityClassName=Bad_Name", check=False
    )
    assert "Error" in out and "priorityClassName" in out


def test_chart_aggregates_read_and_write_rules_into_users_view_and_edit_roles(
    helm: Any,
) -> None:
    docs = render(helm)
    view = one(docs, "ClusterRole", "rel-cocoon-operator-view")
    edit = one(docs, "ClusterRole", "rel-cocoon-operator-edit")
    assert view["metadata"]["labels"][f"{AGGREGATE}view"] == "true"
    assert f"{AGGREGATE}edit" not in view["metadata"]["labels"]
    assert edit["metadata"]["labels"][f"{AGGREGATE}edit"] == "true"
    assert edit["metadata"]["labels"][f"{AGGREGATE}admin"] == "true"

    def rules(role: Doc) -> set[tuple[str, str, str]]:
        return {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    read = rules(view)
    assert {v for _, _, v in read} == {"get", "list", "watch"}
    assert {r for _, r, _ in read} >= {"cocoonworkers", "cocoonworkerpools"}
    write = rules(edit)
    assert ("cocoon.network", "cocoonworkers", "create") in write
    assert ("cocoon.network", "cocoonworkerpools/scale", "patch") in write
    for g, r, v in read | write:
        assert g == "cocoon.network" and "secret" not in r, (g, r, v)
        # A status is the operator's word: users never write it.
        assert not (r.endswith("/status") and v not in ("get", "list", "watch")), (r, v)
    off = render(helm, "--set", "rbac.aggregateToUserRoles=false")
    assert not [d for d in by_kind(off, "ClusterRole") if user_facing(d)]


def test_chart_renders_an_operator_network_policy_only_when_asked(helm: Any) -> None:
    assert not by_kind(render(helm), "NetworkPolicy")
    docs = render(
        helm,
        "--set",
        "networkPolicy.enabled=true,webhook.enabled=true,"
        "chain.endpoint=https://toncenter.example:8443/api/v2,"
        "networkPolicy.apiServer.cidrs={10.0.0.1/32},networkPolicy.workerCidrs={10.20.0.0/16}",
    )
    policy = one(docs, "NetworkPolicy", "rel-cocoon-operator")
    spec = policy["spec"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels(docs))
    assert not selects(
        spec["podSelector"]["matchLabels"],
        one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"],
    )
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080, 9090, 9443}  # liveness, metrics, webhook: nothing else
    egress = spec["egress"]

    def ports(rule: Doc) -> set[int]:
        return {int(p["port"]) for p in rule["ports"]}

    api = next(r for r in egress if ports(r) == {443, 6443})
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    dns = next(r for r in egress if 53 in ports(r))
    assert {p["protocol"] for p in dns["ports"]} == {"UDP", "TCP"}
    # The TON endpoint's own port, and the PCCS's (https: 443).
    assert any(ports(r) == {443, 8443} for r in egress)
    # Every instance's control relay and RA-TLS port, and only those.
    relays = {InstanceSlot(i).control_port for i in range(MAX_INSTANCES)}
    ratls = {InstanceSlot(i).ratls_port for i in range(MAX_INSTANCES)}
    workers = next(r for r in egress if ports(r) & relays)
    assert ports(workers) == relays | ratls
    assert workers["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    # Nothing else allowed out.
    assert len(egress) == 4
    # Without the webhook and metrics, their ports are closed too.
    quiet = render(helm, "--set", "networkPolicy.enabled=true,metrics.enabled=false")
    (only,) = one(quiet, "NetworkPolicy")["spec"]["ingress"]
    assert [p["port"] for p in only["ports"]] == [8080]
    out = helm(
        "template", "rel", str(CHART), "--set", "networkPolicy.workerCidrs={10.0.0.0}", check=False
    )
    assert "Error" in out and "workerCidrs" in out


def test_chart_alerts_link_their_runbooks_under_the_base_url_given(helm: Any) -> None:
    def urls(*args: str) -> dict[str, str]:
        docs = render(helm, "--set", "monitoring.prometheusRule.enabled=true", *args)
        return {
            r["alert"]: r["annotations"]["runbook_url"]
            for g in one(docs, "PrometheusRule")["spec"]["groups"]
            for r in g["rules"]
        }

    plain = urls()
    assert plain["CocoonOrphanedVM"] == "docs/runbooks.md#cocoonorphanedvm"
    base = "https://git.example/cocoon-operator/blob/v0.3.0/"
    hosted = urls("--set", f"monitoring.prometheusRule.runbookBaseUrl={base}")
    assert hosted == {alert: base + url for alert, url in plain.items()}
    out = helm(
        "template",
        "rel",
        str(CHART),
        "--set",
        "monitoring.prometheusRule.runbookBaseUrl=git.example/no-scheme",
        check=False,
    )
    assert "Error" in out and "runbookBaseUrl" in out


# --- installed into the local control plane -----------------------------------


async def sa_kubeconfig(
    api: client.ApiClient,
    stack: Stack,
    namespace: str,
    sa: str,
    path: Path,
    *,
    bound_to: client.V1Pod | None = None,
) -> Path:
    """A kubeconfig for ``sa``: the stack's server and CA, a TokenRequest token;
    ``bound_to`` a pod, as the kubelet gets it for the pod (naming the pod's node)."""
    request: Any = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    if bound_to is not None:
        request["spec"]["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": bound_to.metadata.name,
            "uid": bound_to.metadata.uid,
        }
    token = await client.CoreV1Api(api).create_namespaced_service_account_token(
        sa, namespace, request
    )
    admin = json.loads(stack.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.status.token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa}}],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))  # noqa: ASYNC240 - a small local file
    path.chmod(0o600)  # noqa: ASYNC240
    return path


async def can(
    api: client.ApiClient,
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str | None = None,
    subresource: str | None = None,
    name: str | None = None,
) -> bool:
    review: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "namespace": namespace,
                "subresource": subresource,
                "name": name,
            }
        },
    }
    got = await client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(got.status.allowed)


async def exists(read: Any, *args: Any) -> bool:
    try:
        await read(*args)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


POOL_EXAMPLE = REPO / "examples" / "cocoonworkerpool.yaml"


async def create_pool(api: client.ApiClient, namespace: str) -> None:
    body = yaml.safe_load(POOL_EXAMPLE.read_text())
    body["spec"]["replicas"] = 1
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        *API, namespace, POOL_PLURAL, body
    )


async def pool_members(api: client.ApiClient, namespace: str) -> list[Doc]:
    got = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        *API, namespace, v1alpha1.PLURAL, label_selector=LABEL_POOL
    )
    return list(got["items"])


async def release_finalizers(api: client.ApiClient, namespace: str) -> None:
    """After a failure with no operator left: let the namespace go."""
    custom = client.CustomObjectsApi(api)
    workers = await custom.list_namespaced_custom_object(*API, namespace, v1alpha1.PLURAL)
    for worker in workers["items"]:
        with contextlib.suppress(ApiException):
            await custom.patch_namespaced_custom_object(
                *API,
                namespace,
                v1alpha1.PLURAL,
                worker["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )


async def test_installed_rbac_is_enough_for_the_operator_and_no_more(
    stack: Stack, api: client.ApiClient, namespace: str, helm: Any, tmp_path: Path
) -> None:
    release = release_for(namespace)
    fullname = f"{release}-cocoon-operator"
    rbac = client.RbacAuthorizationV1Api(api)
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        # The stack's CRDs are the tests' (the session's crds fixture), shared by every test:
        # installed as without the chart's CRD templates.
        "--set",
        "crds.enabled=false",
        kubeconfig=stack.kubeconfig,
    )
    try:
        core = client.CoreV1Api(api)
        assert await exists(core.read_namespaced_service_account, fullname, namespace)
        assert await exists(rbac.read_cluster_role, fullname)
        assert await exists(rbac.read_cluster_role_binding, fullname)
        assert await exists(rbac.read_cluster_role, f"{fullname}-workloads")
        assert await exists(rbac.read_namespaced_role_binding, f"{fullname}-workloads", namespace)
        assert not await exists(rbac.read_cluster_role_binding, f"{fullname}-workloads")
        deployment = await client.AppsV1Api(api).read_namespaced_deployment(fullname, namespace)
        assert deployment.spec.template.spec.security_context.run_as_user == 65532

        # The Deployment's pod passes admission (its security settings are valid).
        async def operator_pod() -> list[client.V1Pod]:
            pods = await core.list_namespaced_pod(
                namespace, label_selector=f"app.kubernetes.io/instance={release}"
            )
            return list(pods.items)

        await eventually(operator_pod, within=60, what="the chart's operator pod created")

        kubeconfig = await sa_kubeconfig(api, stack, namespace, fullname, tmp_path / "sa.json")
        async with connect(str(kubeconfig)) as sa:
            assert await can(sa, "create", "pods", namespace=namespace)
            assert await can(sa, "patch", "pods", namespace=namespace, subresource="status")
            assert await can(
                sa, "patch", "cocoonworkers", group=v1alpha1.GROUP, namespace=namespace
            )
            assert await can(sa, "watch", "nodes")
            # What it never does:
            assert not await can(sa, "delete", "nodes")
            assert not await can(sa, "patch", "nodes")
            assert not await can(sa, "list", "secrets", namespace=namespace)
            assert not await can(sa, "get", "secrets", namespace=namespace)
            # ... but its own control key Secret (handlers/controlkey.py), by name.
            assert await can(
                sa, "get", "secrets", namespace=namespace, name="cocoon-operator-control-key"
            )
            assert not await can(
                sa, "get", "secrets", namespace="default", name="cocoon-operator-control-key"
            )
            assert not await can(sa, "delete", "configmaps", namespace=namespace)
            assert not await can(sa, "create", "pods", namespace="default")
            assert not await can(sa, "list", "pods")  # not cluster-wide: one namespace
            assert not await can(sa, "update", "cocoonworkers", group=v1alpha1.GROUP)
            assert not await can(
                sa, "delete", "cocoonworkerpools", group=v1alpha1.GROUP, namespace=namespace
            )
            assert not await can(sa, "watch", "secrets", namespace=namespace)
            assert not await can(
                sa,
                "create",
                "validatingwebhookconfigurations",
                group="admissionregistration.k8s.io",
            )
            assert not await can(sa, "create", "clusterroles", group="rbac.authorization.k8s.io")
            # A refused call, for real: the apiserver answers 403.
            with pytest.raises(ApiException) as refused:
                await client.CoreV1Api(sa).list_namespaced_secret(namespace)
            assert refused.value.status == 403

        custom = client.CustomObjectsApi(api)
        log = tmp_path / "operator.log"
        # No simulated worker answers here: with no boot grace the first
        # check already writes its (negative) verdict, which uses pods/status.
        no_grace = ("--attestation-boot-grace-seconds", "0")
        # As the chart runs it: the node agents' reports are read from here.
        reports = ("--node-report-namespace", namespace)

        # The DaemonSet's pods pass admission, on the TDX hosts only.
        async def agent_pods() -> list[client.V1Pod]:
            pods = await core.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/component=node-agent"
            )
            return list(pods.items)

        agents = await eventually(agent_pods, within=60, what="the chart's node agent pods")
        hosts = {p.spec.node_name for p in agents}
        tdx = await core.list_node(
            label_selector="feature.node.kubernetes.io/cpu-security.tdx.enabled=true"
        )
        assert hosts <= {n.metadata.name for n in tdx.items}, hosts

        # The agent, with the token bound to its pod (as the kubelet gives it),
        # publishes its own node's report and may do nothing else.
        agent_sa = f"{fullname}-node-agent"
        agent_pod = agents[0]
        node = agent_pod.spec.node_name
        agent_config = await sa_kubeconfig(
            api, stack, namespace, agent_sa, tmp_path / "agent.json", bound_to=agent_pod
        )
        unbound_config = await sa_kubeconfig(
            api, stack, namespace, agent_sa, tmp_path / "unbound.json"
        )
        host = tmp_path / "host"
        host.mkdir()

        async def publish(config: Path, as_node: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "cocoon_operator",
                    "node-agent",
                    "--once",
                    f"--node-name={as_node}",
                    f"--namespace={namespace}",
                    f"--kubeconfig={config}",
                    f"--host-root={host}",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        # The policy takes effect within moments of its creation.
        async def refused_for_another_node() -> bool:
            other = await publish(agent_config, "some-other-node")
            return other.returncode != 0 and "may write only ConfigMap" in other.stderr

        await eventually(refused_for_another_node, within=30, what="the report policy")
        assert not await exists(
            core.read_namespaced_config_map, "cocoon-node-some-other-node", namespace
        )
        published = await publish(agent_config, node)
        assert published.returncode == 0, published.stderr[-2000:]
        assert await exists(core.read_namespaced_config_map, f"cocoon-node-{node}", namespace)
        # A token not bound to a pod names no node: nothing is written with it.
        unbound = await publish(unbound_config, node)
        assert unbound.returncode != 0
        assert "token bound to its pod" in unbound.stderr, unbound.stderr[-2000:]
        async with connect(str(agent_config)) as agent:
            assert not await can(agent, "list", "configmaps", namespace=namespace)
            assert not await can(agent, "delete", "configmaps", namespace=namespace)
            assert not await can(agent, "get", "secrets", namespace=namespace)
            assert not await can(agent, "get", "pods", namespace=namespace)
            assert not await can(agent, "get", "nodes")
            assert not await can(agent, "create", "configmaps", namespace="default")
            # RBAC lets it create and patch ConfigMaps here; the policy refuses every
            # one but its own report, the funding ledger first.
            agent_core = client.CoreV1Api(agent)
            ledger = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="cocoon-funding-ledger"),
                data={"ledger.json": "{}"},
            )
            with pytest.raises(ApiException) as refused_ledger:
                await agent_core.create_namespaced_config_map(namespace, ledger)
            assert refused_ledger.value.status == 403
            assert "may write only ConfigMap" in refused_ledger.value.body
            await core.create_namespaced_config_map(namespace, ledger)  # as the operator would
            with pytest.raises(ApiException) as reset:
                await agent_core.patch_namespaced_config_map(
                    "cocoon-funding-ledger", namespace, {"data": {"ledger.json": "{}"}}
                )
            assert reset.value.status == 403

        # As the chart runs it: its control key Secret in the release namespace.
        keys = ("--control-key-secret", f"{namespace}/cocoon-operator-control-key")
        with running_operator(kubeconfig, namespace, log, *no_grace, *reports, *keys) as proc:
            await create_worker(api, namespace, "w0")

            # Its launcher pod made and placed. (Not a phase: on the node whose report
            # this test's real agent published, the model is not listed, and kwok runs
            # no init container to say otherwise, so ModelReady stays Preparing there.)
            async def scheduled() -> Doc | None:
                w = await get_worker(api, namespace, "w0")
                status = conditions(w).get("Scheduled", {}).get("status")
                return w if status == "True" else None

            await eventually(scheduled, within=90, what="w0 Scheduled")

            # The attestation step wrote the pod's gate (pods/status) and the
            # worker's status.attestation. Whether a simulated worker answers
            # on this stack or not, the verdict is negative: no Intel evidence.
            async def gate_written() -> client.V1PodCondition | None:
                pods = await worker_pods(api, namespace, "w0")
                conds = [c for p in pods for c in p.status.conditions or []]
                return next((c for c in conds if c.type == READINESS_GATE), None)

            gate = await eventually(gate_written, within=60, what="the pod's attestation gate")
            assert gate.status == "False"

            async def summary_written() -> Doc | None:
                w = await get_worker(api, namespace, "w0")
                return w if w.get("status", {}).get("attestation") else None

            worker = await eventually(summary_written, within=30, what="status.attestation")
            assert conditions(worker)["Attested"]["status"] == "False"
            # Events are created (the operator ignores a 403 on Events, so look).
            events = await core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=w0"
            )
            assert "LauncherCreated" in {e.reason for e in events.items}

            # Deletion: pod deleted, finalizer released (kopf's patch).
            await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                *API, namespace, v1alpha1.PLURAL, "w0"
            )

            async def worker_gone() -> bool:
                return not await exists(get_worker, api, namespace, "w0")

            await eventually(worker_gone, within=90, what="worker deleted (finalizer released)")
            assert await worker_pods(api, namespace, "w0") == []

            # A pool: the operator creates its member (and the member's wallet
            # key Secret), writes the pool's status, and the member goes with it.
            await create_pool(api, namespace)

            async def member_and_key() -> str | None:
                members = await pool_members(api, namespace)
                if not members:
                    return None
                name = members[0]["metadata"]["name"]
                key = f"{name}-wallet"
                return name if await exists(core.read_namespaced_secret, key, namespace) else None

            member = await eventually(member_and_key, within=60, what="pool member and wallet")

            async def pool_status() -> bool:
                pool = await custom.get_namespaced_custom_object(
                    *API, namespace, POOL_PLURAL, "fleet"
                )
                return bool(pool.get("status", {}).get("replicas"))

            await eventually(pool_status, within=60, what="the pool's status.replicas")
            await eventually(
                lambda: worker_pods(api, namespace, member), within=60, what="member's pod"
            )
            await custom.delete_namespaced_custom_object(
                *API, namespace, POOL_PLURAL, "fleet", propagation_policy="Foreground"
            )

            async def members_gone() -> bool:
                return not await pool_members(api, namespace)

            await eventually(members_gone, within=90, what="pool members deleted")
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
        text = log.read_text()
        denied = [line for line in text.splitlines() if DENIED.search(line)]
        assert not denied, "permission errors in the operator's log:\n" + "\n".join(denied[:20])
        pods = await core.list_namespaced_pod(namespace, label_selector=LABEL_WORKER)
        assert pods.items == []
    finally:
        await release_finalizers(api, namespace)
        helm("uninstall", release, "--namespace", namespace, "--wait", kubeconfig=stack.kubeconfig)
    assert not await exists(rbac.read_cluster_role, fullname)
    assert not await exists(rbac.read_cluster_role, f"{fullname}-workloads")
    assert not await exists(rbac.read_cluster_role_binding, fullname)


async def test_cluster_wide_install_grants_workloads_everywhere_but_no_secrets(
    stack: Stack, api: client.ApiClient, namespace: str, helm: Any, tmp_path: Path
) -> None:
    release = release_for(namespace)
    fullname = f"{release}-cocoon-operator"
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "replicaCount=0,webhook.enabled=true,leaderElection.enabled=true,crds.enabled=false",
        kubeconfig=stack.kubeconfig,
    )
    try:
        kubeconfig = await sa_kubeconfig(api, stack, namespace, fullname, tmp_path / "sa.json")
        async with connect(str(kubeconfig)) as sa:
            assert await can(sa, "list", "pods")
            assert await can(sa, "watch", "cocoonworkers", group=v1alpha1.GROUP)
            assert await can(sa, "create", "events", namespace="default")
            for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
                assert await can(sa, "create", kind, group="admissionregistration.k8s.io")
                # only its own, by name
                assert not await can(sa, "delete", kind, group="admissionregistration.k8s.io")
            assert await can(
                sa, "create", "leases", group="coordination.k8s.io", namespace=namespace
            )
            assert not await can(
                sa, "create", "leases", group="coordination.k8s.io", namespace="default"
            )
            assert not await can(sa, "list", "secrets")
            assert not await can(sa, "list", "namespaces")  # kopf needs it only when namespaced
            assert not await can(sa, "delete", "nodes")
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", kubeconfig=stack.kubeconfig)


def test_chart_refuses_kubernetes_older_than_1_30(helm: Any) -> None:
    """ValidatingAdmissionPolicy (GA in 1.30) binds each node agent to its own report."""
    old = helm("template", "rel", str(CHART), "--kube-version", "1.29.9", check=False)
    assert "chart requires kubeVersion: >=1.30.0-0" in old
    assert by_kind(render(helm, "--kube-version", "1.30.0"), "Deployment")


# --- upgrades: the CRDs move with the chart ------------------------------------

# Chart 0.2.0, the last without CRD templates: main as this chart's branch forked
# from it. Its CRDs were in its crds/, which Helm installs once and never upgrades.
PREVIOUS_CHART_COMMIT = "c344345be0af6450fc806c2171a3dd8340783bb2"
PREVIOUS_CHART_VERSION = "0.2.0"
CRD_NAMES = sorted(c["metadata"]["name"] for c in all_crds().values())
# What Helm checks before taking an existing object into a release, and what
# the chart adds; removed again after each test (the stack's CRDs are shared).
HELM_LABELS = (
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "helm.sh/chart",
)
HELM_ANNOTATIONS = (
    "meta.helm.sh/release-name",
    "meta.helm.sh/release-namespace",
    "helm.sh/resource-policy",
)


def previous_chart(dest: Path) -> Path:
    """The previous chart version, from the repository's history (as a chart
    repository would serve it)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_CHART_COMMIT, "charts"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"commit {PREVIOUS_CHART_COMMIT} (chart {PREVIOUS_CHART_VERSION}) not in this"
            f" clone (a shallow clone?): {archive.stderr.decode()[-500:]}"
        )
    tar = dest / "previous.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as bundle:
        bundle.extractall(dest, filter="data")
    chart = dest / "charts" / "cocoon-operator"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == PREVIOUS_CHART_VERSION
    return chart


def kubectl(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(stack.bin / "kubectl"), f"--kubeconfig={stack.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def adopt_crds(stack: Stack, release: str, namespace: str) -> None:
    """The one-time step docs/deploy.md gives for CRDs Helm did not create: the
    ownership label and annotations Helm checks before it takes an object over."""
    for crd in CRD_NAMES:
        kubectl(stack, "label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl(
            stack,
            "annotate",
            "crd",
            crd,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
            "--overwrite",
        )


async def disown_crds(api: client.ApiClient) -> None:
    """Leave the stack's CRDs as the other tests expect them: no release's, and the
    generated ones applied again (the upgrade test installed the previous chart's).
    The one place a test applies the CRDs itself: the session's ``crds`` fixture
    installs them once, and these two Helm tests are the only ones that change them."""
    ext = client.ApiextensionsV1Api(api)
    for crd in CRD_NAMES:
        patch = {
            "metadata": {
                "labels": dict.fromkeys(HELM_LABELS),
                "annotations": dict.fromkeys(HELM_ANNOTATIONS),
            }
        }
        with contextlib.suppress(ApiException):
            await ext.patch_custom_resource_definition(
                crd, patch, _content_type="application/merge-patch+json"
            )
    await install_crds(api)


async def live_crd(api: client.ApiClient, name: str) -> Doc:
    crd = await client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    got: Doc = api.sanitize_for_serialization(crd)
    return got


def network_field(crd: Doc) -> Doc:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    field: Doc = schema["properties"]["spec"]["properties"]["network"]
    return field


async def test_helm_upgrade_from_the_previous_chart_upgrades_the_crds_and_leaves_workers(
    stack: Stack, api: client.ApiClient, namespace: str, helm: Any, tmp_path: Path
) -> None:
    """As docs/deploy.md says, from chart 0.2.0 installed as its docs said: Helm
    refuses CRDs it did not create until the one-time adoption, then `helm
    upgrade` applies the chart's CRDs; a CocoonWorker created before is untouched."""
    release = release_for(namespace)
    old = previous_chart(tmp_path)
    assert (old / "crds").is_dir() and not (old / "templates" / "crds.yaml").exists()
    try:
        # The previous version, installed the way its docs said: its crds/ applied
        # (on a fresh cluster Helm would have created them from there, just as
        # unowned; on this shared stack they exist, applied by the tests, hence
        # --force-conflicts over the tests' field manager), then the chart.
        kubectl(stack, "apply", "--server-side", "--force-conflicts", "-f", str(old / "crds"))
        previous = await live_crd(api, "cocoonworkers.cocoon.network")
        # The schema element this chart version changes is the previous one's.
        assert "description" not in network_field(previous)
        helm(
            "install",
            release,
            str(old),
            "--namespace",
            namespace,
            "--set",
            "replicaCount=0,nodeAgent.enabled=false",
            kubeconfig=stack.kubeconfig,
        )
        before = await create_worker(api, namespace, "w0")

        # --reuse-values keeps the previous chart's defaults, which know nothing of
        # the new chart's values: the docs say --reset-then-reuse-values instead.
        upgrade = ("upgrade", release, str(CHART), "--namespace", namespace)
        stale = helm(*upgrade, "--reuse-values", kubeconfig=stack.kubeconfig, check=False)
        assert "UPGRADE FAILED" in stale and "nil pointer" in stale, stale
        # Helm takes over no object it did not create without being told to.
        refused = helm(
            *upgrade, "--reset-then-reuse-values", kubeconfig=stack.kubeconfig, check=False
        )
        assert "invalid ownership metadata" in refused, refused
        assert "CustomResourceDefinition" in refused
        assert "description" not in network_field(
            await live_crd(api, "cocoonworkers.cocoon.network")
        )

        adopt_crds(stack, release, namespace)
        helm(*upgrade, "--reset-then-reuse-values", "--wait", kubeconfig=stack.kubeconfig)

        # The CRDs are the chart's now: its schema, its labels, Helm's keep policy.
        chart_crds = {c["metadata"]["name"]: c for c in all_crds().values()}
        for name in CRD_NAMES:
            crd = await live_crd(api, name)
            assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
            assert crd["metadata"]["labels"]["helm.sh/chart"] == "cocoon-operator-0.3.0"
            assert (
                crd["spec"]["versions"][0]["schema"]
                == chart_crds[name]["spec"]["versions"][0]["schema"]
            ), name
        upgraded = await live_crd(api, "cocoonworkers.cocoon.network")
        assert network_field(upgraded)["description"].startswith("the TON network")
        assert upgraded["metadata"]["generation"] > previous["metadata"]["generation"]

        # The worker created before: the same object, not rewritten.
        after = await get_worker(api, namespace, "w0")
        for key in ("uid", "generation", "resourceVersion", "creationTimestamp"):
            assert after["metadata"][key] == before["metadata"][key], key
        assert after["spec"] == before["spec"]
        history = helm(
            "history", release, "--namespace", namespace, "-o", "json", kubeconfig=stack.kubeconfig
        )
        charts = [h["chart"] for h in json.loads(history)]
        assert charts[0] == f"cocoon-operator-{PREVIOUS_CHART_VERSION}"
        assert charts[-1] == "cocoon-operator-0.3.0"
    finally:
        helm(
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--wait",
            kubeconfig=stack.kubeconfig,
            check=False,
        )
        await disown_crds(api)


async def subject_can(
    api: client.ApiClient,
    user: str,
    verb: str,
    resource: str,
    namespace: str,
    *,
    group: str = "cocoon.network",
    subresource: str | None = None,
) -> bool:
    review: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "namespace": namespace,
                "subresource": subresource,
            },
        },
    }
    got = await client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(got.status.allowed)


async def test_helm_uninstall_keeps_the_crds_and_workers_and_user_roles_aggregate(
    stack: Stack, api: client.ApiClient, namespace: str, helm: Any
) -> None:
    """crds.keep (the default): `helm uninstall` leaves the CRDs, so no CocoonWorker
    goes with them. Meanwhile Kubernetes' view and edit roles carry the chart's
    rules for CocoonWorkers, view with nothing on Secrets."""
    release = release_for(namespace)
    rbac = client.RbacAuthorizationV1Api(api)
    try:
        adopt_crds(stack, release, namespace)
        helm(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            # Two replicas spread over nodes, and the NetworkPolicy: the apiserver
            # takes both as rendered.
            "replicaCount=2,leaderElection.enabled=true,nodeAgent.enabled=false,"
            "networkPolicy.enabled=true,webhook.enabled=true",
            kubeconfig=stack.kubeconfig,
        )
        fullname = f"{release}-cocoon-operator"
        policy = await client.NetworkingV1Api(api).read_namespaced_network_policy(
            fullname, namespace
        )
        assert policy.spec.policy_types == ["Ingress", "Egress"]

        async def spread_pods() -> list[client.V1Pod]:
            pods = await client.CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=f"app.kubernetes.io/instance={release}"
            )
            return pods.items if len(pods.items) == 2 else []

        for pod in await eventually(spread_pods, within=60, what="two operator pods"):
            (constraint,) = pod.spec.topology_spread_constraints
            assert constraint.topology_key == "kubernetes.io/hostname"
        crd = await live_crd(api, "cocoonworkers.cocoon.network")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        worker = await create_worker(api, namespace, "w0")

        # A namespace's viewer and editor, through Kubernetes' own ClusterRoles.
        for user, role in (("viewer", "view"), ("editor", "edit")):
            await rbac.create_namespaced_role_binding(
                namespace,
                {
                    "metadata": {"name": user},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                    ],
                },
            )

        async def aggregated() -> bool:  # the controller-manager's aggregation
            return await subject_can(api, "viewer", "list", "cocoonworkers", namespace) and (
                await subject_can(api, "editor", "create", "cocoonworkers", namespace)
            )

        await eventually(aggregated, within=30, what="the chart's rules in view and edit")
        assert await subject_can(api, "viewer", "get", "cocoonworkerpools", namespace)
        # view's rules reach edit through Kubernetes' own aggregation label.
        assert await subject_can(api, "editor", "list", "cocoonworkers", namespace)
        assert not await subject_can(api, "viewer", "create", "cocoonworkers", namespace)
        assert not await subject_can(api, "viewer", "get", "secrets", namespace, group="")
        assert await subject_can(
            api, "editor", "patch", "cocoonworkerpools", namespace, subresource="scale"
        )
        assert not await subject_can(
            api, "editor", "patch", "cocoonworkers", namespace, subresource="status"
        )

        out = helm(
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--wait",
            kubeconfig=stack.kubeconfig,
            check=False,
        )
        assert "kept due to the resource policy" in out, out
        # Kept, with every worker; the release's other cluster-scoped objects are gone.
        for name in CRD_NAMES:
            assert await exists(
                client.ApiextensionsV1Api(api).read_custom_resource_definition, name
            )
        after = await get_worker(api, namespace, "w0")
        assert after["metadata"]["uid"] == worker["metadata"]["uid"]
        assert not await exists(rbac.read_cluster_role, f"{release}-cocoon-operator-view")
        assert not await subject_can(api, "viewer", "list", "cocoonworkers", namespace)
    finally:
        helm(
            "uninstall", release, "--namespace", namespace, kubeconfig=stack.kubeconfig, check=False
        )
        await disown_crds(api)
