"""``kubectl cocoon`` rendering: objects in, text out, no cluster."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from cocoon_operator.api.labels import PAUSE_ANNOTATION
from cocoon_operator.kubectl_plugin import cli as plugin_cli
from cocoon_operator.kubectl_plugin import render
from cocoon_operator.kubectl_plugin.render import EventView, WorkerView

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
MRTD = "ab" * 48
IMAGE = "c0" * 32
CERT = "d1" * 32
MODEL_HASH = "e2" * 32

SPEC: dict[str, Any] = {
    "network": "local",
    "release": {
        "version": "sim-1.0.0",
        "image": "registry.local/cocoon/launcher@sha256:" + "f" * 64,
        "files": {
            "ovmf": "1" * 64,
            "image": "4" * 64,
            "kernel": "2" * 64,
            "initrd": "3" * 64,
            "cmdline": "5" * 64,
        },
    },
    "model": {
        "name": "Qwen/Qwen3-8B",
        "commit": "9b5a8ef0fa05a010d8339363a7eb176c14275e51",
        "verityHash": "7ed74afe17a2c27c8292ffadf79b8f88d255891766fa2ddd9850e2e595c792ec",
    },
    "ownerAddress": "UQC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH6GC",
    "rootContractAddress": "EQCIn28wIKAZ9cTL8ouR65jA1kspvSQosdLN39Mu0lonamXJ",
    "nodeWalletKeySecretRef": {"name": "worker-0-wallet", "key": "node-wallet-key"},
}


def cond(kind: str, status: str, reason: str, message: str = "", at: str = "2026-03-01T11:55:00Z"):
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": at,
    }


READY_STATUS: dict[str, Any] = {
    "phase": "Ready",
    "node": "sim-cc-0",
    "pod": "w0-r1a2b3-0",
    "gpu": "0000:17:00.0",
    "instance": 0,
    "observedGeneration": 1,
    "currentRevision": "r1a2b3",
    "targetRevision": "r1a2b3",
    "conditions": [
        # Deliberately out of order: describe shows the documented order.
        cond("Ready", "True", "Ready", "worker is serving"),
        cond("Scheduled", "True", "Scheduled", "on sim-cc-0", "2026-03-01T11:00:00Z"),
        cond("VMRunning", "True", "VMRunning"),
        cond("Attested", "True", "EvidenceVerified", "TDX evidence verified (TCB UpToDate)"),
        cond("OnChainAllowed", "True", "Listed"),
        cond("WalletFunded", "True", "Funded", "balance 12.3456789 TON"),
    ],
    "attestation": {
        "imageHash": IMAGE,
        "mrtd": MRTD,
        "tcbStatus": "UpToDate",
        "trustRoot": "test",
        "quoteSha256": CERT,
        "reportData": "e2" * 64,
        "pod": "w0-r1a2b3-0",
        "verifiedAt": "2026-03-01T11:57:00Z",
        "expiresAt": "2026-03-01T12:27:00Z",
    },
    "chain": {
        "imageHashListed": True,
        "modelHashListed": True,
        "modelHash": MODEL_HASH,
        "source": "worker",
        "checkedAt": "2026-03-01T11:59:30Z",
    },
    "wallet": {
        "address": "0:" + "a" * 64,
        "balance": 12_345_678_901,
        "funding": "topped up 7.5 TON (intent 3, confirmed)",
        "checkedAt": "2026-03-01T11:59:30Z",
    },
    "earnings": {"earnedTokens": 123456, "paidOutTokens": 100000, "payouts": 2},
}


def obj(
    name: str = "w0",
    namespace: str = "team-a",
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    **spec_changes: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": "uid-" + name,
        "generation": 1,
        "creationTimestamp": "2026-03-01T10:00:00Z",
    }
    if annotations is not None:
        meta["annotations"] = annotations
    out: dict[str, Any] = {
        "apiVersion": "cocoon.network/v1alpha1",
        "kind": "CocoonWorker",
        "metadata": meta,
        "spec": {**copy.deepcopy(SPEC), **spec_changes},
    }
    if status is not None:
        out["status"] = copy.deepcopy(status)
    return out


def view(**kwargs: Any) -> WorkerView:
    return WorkerView.from_object(obj(**kwargs))


# ---- formatters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanoton", "text"),
    [
        (None, "-"),
        (0, "0.000 TON"),
        (1, "0.000 TON"),
        (999_999, "0.000 TON"),
        (1_000_000, "0.001 TON"),
        (2_100_000_000, "2.100 TON"),
        (4_999_999_999, "4.999 TON"),  # toward zero: never shown as reaching 5
        (12_345_678_901, "12.345 TON"),
        (10_000 * 10**9, "10000.000 TON"),
        (-1, "-1 nanoTON (invalid)"),  # not a Grams value: not rounded into a balance
    ],
)
def test_format_ton(nanoton: int | None, text: str) -> None:
    assert render.format_ton(nanoton) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (7 * 60 + 12, "7m12s"),
        (45 * 60, "45m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (5 * 3600, "5h"),
        (30 * 3600, "30h"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400 + 20 * 86400, "3y20d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert render.human_duration(seconds) == text


def test_timestamps_absolute_and_relative() -> None:
    assert render.age("2026-03-01T11:55:00Z", NOW) == "5m"
    assert render.age(None, NOW) == "-"
    assert render.age("not a time", NOW) == "-"
    assert render.when("2026-03-01T11:55:00Z", NOW) == "2026-03-01T11:55:00Z (5m ago)"
    assert render.when("2026-03-01T12:27:00Z", NOW) == "2026-03-01T12:27:00Z (in 27m)"


# ---- status ---------------------------------------------------------------------------


def test_status_table_of_a_ready_worker() -> None:
    text = render.status_table([view(status=READY_STATUS)], NOW, all_namespaces=False)
    header, row = text.splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "READY",
        "NODE",
        "GPU",
        "POD",
        "MODEL",
        "ATTESTED",
        "BALANCE",
        "EARNED",
        "AGE",
    ]
    assert row.split() == [
        "w0",
        "Ready",
        "True",
        "sim-cc-0",
        "0000:17:00.0",
        "w0-r1a2b3-0",
        "Qwen/Qwen3-8B@9b5a8ef",
        "UpToDate/test",
        "12.345",
        "TON",
        "123456",
        "120m",
    ]
    # Columns line up: every value starts where its header does.
    assert row.index("Qwen/") == header.index("MODEL")
    assert row.index("12.345") == header.index("BALANCE")


def test_status_table_with_missing_status_fields() -> None:
    text = render.status_table([view(name="new")], NOW, all_namespaces=False)
    row = text.splitlines()[1].split()
    assert row == ["new", "-", "-", "-", "-", "-", "Qwen/Qwen3-8B@9b5a8ef", "-", "-", "-", "120m"]


def test_status_table_all_namespaces_sorted() -> None:
    views = [
        view(name="b", namespace="team-b"),
        view(name="z", namespace="team-a", status=READY_STATUS),
        view(name="a", namespace="team-b"),
    ]
    lines = render.status_table(views, NOW, all_namespaces=True).splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["team-a", "z"],
        ["team-b", "a"],
        ["team-b", "b"],
    ]


def test_attested_cell_names_the_failed_step() -> None:
    status = copy.deepcopy(READY_STATUS)
    status["attestation"] = {
        "pod": "w0-r1a2b3-0",
        "failure": "tcb: TCB status OutOfDate is not accepted",
        "failedAt": "2026-03-01T11:59:00Z",
    }
    status["conditions"][3] = cond("Attested", "False", "EvidenceRejected", "tcb: ...")
    assert render.attested_cell(view(status=status)) == "failed: tcb"


def test_attested_cell_keeps_valid_evidence_through_an_unreachable_check() -> None:
    status = copy.deepcopy(READY_STATUS)
    status["attestation"]["failure"] = "unreachable: connect 127.1.0.1:12001: refused"
    assert render.attested_cell(view(status=status)) == "UpToDate/test (last check: unreachable)"


def test_attested_cell_before_any_evidence_shows_the_reason() -> None:
    status = {"conditions": [cond("Attested", "False", "AwaitingAttestation")]}
    assert render.attested_cell(view(status=status)) == "AwaitingAttestation"


def test_status_json_keeps_machine_values() -> None:
    (row,) = render.status_json([view(status=READY_STATUS, annotations={})])
    assert row["balanceNanoton"] == 12_345_678_901
    assert row["earnedTokens"] == 123456
    assert row["model"]["commit"] == SPEC["model"]["commit"]
    assert row["attestation"] == {"tcbStatus": "UpToDate", "trustRoot": "test", "failure": None}
    assert row["paused"] is False
    json.dumps(row)  # serialisable as is
    (bare,) = render.status_json([view()])
    assert bare["balanceNanoton"] is None
    assert bare["ready"] is None


def test_parsing_refuses_a_malformed_status() -> None:
    bad = copy.deepcopy(READY_STATUS)
    bad["wallet"]["balance"] = "lots"
    with pytest.raises(ValidationError):
        view(status=bad)


# ---- describe -------------------------------------------------------------------------

EVENTS = [
    EventView(
        "Normal",
        f"Reason{i:02d}",
        f"message {i}",
        f"2026-03-01T11:{i:02d}:00Z",
        source="cocoon-operator",
    )
    for i in range(14)
]


def test_describe_shows_every_section() -> None:
    text = render.describe(view(status=READY_STATUS), EVENTS, NOW)
    lines = text.splitlines()
    for title in (
        "Conditions:",
        "Attestation:",
        "Chain:",
        "Wallet:",
        "Earnings:",
        "Revisions:",
        "Events:",
    ):
        assert title in lines
    # Conditions in the documented order, with the time since each flipped.
    start = lines.index("Conditions:")
    rows = [line.split() for line in lines[start + 2 : start + 8]]
    assert [r[0] for r in rows] == [
        "Scheduled",
        "VMRunning",
        "Attested",
        "OnChainAllowed",
        "WalletFunded",
        "Ready",
    ]
    assert rows[0][:4] == ["Scheduled", "True", "Scheduled", "60m"]
    assert rows[2][:4] == ["Attested", "True", "EvidenceVerified", "5m"]
    assert "TDX evidence verified (TCB UpToDate)" in lines[start + 4]
    assert f"  Image hash:    {IMAGE}" in lines
    assert "  MRTD:          abababababababab..." in lines
    assert "  TCB status:    UpToDate" in lines
    assert "  Trust root:    test" in lines
    assert "  Verified:      2026-03-01T11:57:00Z (3m ago)" in lines
    assert "  Expires:       2026-03-01T12:27:00Z (in 27m)" in lines
    assert "  Last failure:  <none>" in lines
    assert "  GPU:           InGuest: checked by the attested image at boot" in lines
    assert "  Image hash listed:  yes" in lines
    assert f"  Model hash:         {MODEL_HASH}" in lines
    assert "  Balance:  12.345 TON (12345678901 nanoTON)" in lines
    assert "  Funding:  topped up 7.5 TON (intent 3, confirmed)" in lines
    assert "  Bounds:   minimum 5.000 TON, target 10.000 TON" in lines
    assert "  Earned tokens:    123456" in lines
    assert not any("Payouts" in line for line in lines)  # COCOON reports no count
    assert "  Current:              r1a2b3" in lines
    assert "  Observed generation:  1 (of 1)" in lines
    assert "Paused:       no" in lines


def test_describe_shows_what_the_operator_verified_of_the_gpu() -> None:
    verify = {"gpu": {"mode": "Verify"}}
    pending = render.describe(view(status=READY_STATUS, attestation=verify), [], NOW)
    assert "  GPU:           Verify: not verified yet" in pending.splitlines()
    status = copy.deepcopy(READY_STATUS)
    status["attestation"]["gpu"] = {
        "driverVersion": "550.54.15",
        "vbiosVersion": "96.00.5E.00.01",
        "revocation": "not_checked",
    }
    done = render.describe(view(status=status, attestation=verify), [], NOW)
    line = "  GPU:           driver 550.54.15, VBIOS 96.00.5E.00.01, revocation not_checked"
    assert line in done.splitlines()


def test_describe_lists_the_last_ten_events_newest_first() -> None:
    text = render.describe(view(status=READY_STATUS), list(reversed(EVENTS)), NOW)
    lines = text.splitlines()
    start = lines.index("Events:")
    assert lines[start + 1].split() == ["LAST", "SEEN", "TYPE", "REASON", "FROM", "MESSAGE"]
    reasons = [line.split()[2] for line in lines[start + 2 :]]
    assert reasons == [f"Reason{i:02d}" for i in range(13, 3, -1)]
    assert lines[start + 2].split()[:4] == ["47m", "Normal", "Reason13", "cocoon-operator"]


def test_describe_with_no_status_says_none() -> None:
    text = render.describe(view(), [], NOW)
    lines = text.splitlines()
    for title in ("Conditions:", "Attestation:", "Chain:", "Wallet:", "Earnings:", "Events:"):
        assert lines[lines.index(title) + 1] == "  <none>"
    assert "Phase:        -" in lines
    assert "  Observed generation:  - (of 1)" in lines


def test_describe_shows_a_failure_and_what_pauses() -> None:
    status = copy.deepcopy(READY_STATUS)
    status["attestation"]["failure"] = "signature: quote signature invalid"
    status["attestation"]["failedAt"] = "2026-03-01T11:59:00Z"
    status["chain"]["modelHashListed"] = False
    del status["wallet"]["balance"]
    v = view(status=status, annotations={PAUSE_ANNOTATION: "true"}, paused=True)
    lines = render.describe(v, [], NOW).splitlines()
    assert (
        "  Last failure:  signature: quote signature invalid, at 2026-03-01T11:59:00Z (60s ago)"
        in lines
    )
    assert "  Model hash listed:  no" in lines
    assert "  Balance:  -" in lines
    assert f"Paused:       yes (annotation {PAUSE_ANNOTATION}=true and spec.paused)" in lines


def test_event_view_from_an_event_object() -> None:
    event = EventView.from_object(
        {
            "type": "Warning",
            "reason": "AttestationFailed",
            "message": "tcb: OutOfDate",
            "count": 3,
            "lastTimestamp": None,
            "eventTime": "2026-03-01T11:58:00.000000Z",
            "source": {"component": "cocoon-operator"},
            "metadata": {"creationTimestamp": "2026-03-01T11:00:00Z"},
        }
    )
    assert event == EventView(
        "Warning",
        "AttestationFailed",
        "tcb: OutOfDate",
        "2026-03-01T11:58:00.000000Z",
        count=3,
        source="cocoon-operator",
    )
    lines = render.describe(view(), [event], NOW).splitlines()
    assert lines[-1].split()[:4] == ["2m", "(x3)", "Warning", "AttestationFailed"]


def test_describe_json() -> None:
    events = [EventView("Normal", "Attested", "ok", "2026-03-01T11:57:00Z")]
    data = render.describe_json(view(status=READY_STATUS), events)
    assert data["metadata"]["name"] == "w0"
    assert data["status"]["wallet"]["balance"] == 12_345_678_901
    assert data["spec"]["model"]["name"] == "Qwen/Qwen3-8B"
    assert data["events"][0]["reason"] == "Attested"
    json.dumps(data)


# ---- attest ---------------------------------------------------------------------------


def test_attest_json_is_the_summary_and_the_condition() -> None:
    data = render.attest_json(view(status=READY_STATUS))
    assert data["attestation"]["tcbStatus"] == "UpToDate"
    assert data["attestation"]["mrtd"] == MRTD
    assert data["attestation"]["failure"] is None  # keys kept, for scripts
    assert data["condition"]["reason"] == "EvidenceVerified"
    assert data["condition"]["lastTransitionTime"] == "2026-03-01T11:55:00Z"
    assert render.attest_json(view()) == {
        "namespace": "team-a",
        "name": "w0",
        "attestation": None,
        "condition": None,
    }


# ---- pause / resume -------------------------------------------------------------------


def test_pause_sets_the_annotation_once() -> None:
    change = render.pause_change({}, pause=True)
    assert change.changed
    assert change.patch == {"metadata": {"annotations": {PAUSE_ANNOTATION: "true"}}}
    msg = render.pause_message(view(), change, pause=True)
    assert msg == (
        "cocoonworker.cocoon.network/w0 (namespace team-a) paused:"
        " annotation cocoon.network/paused: <unset> -> 'true'"
    )
    again = render.pause_change({PAUSE_ANNOTATION: "true"}, pause=True)
    assert not again.changed
    assert "already paused" in render.pause_message(view(), again, pause=True)
    # Any other value is not "paused": pause overwrites it.
    assert render.pause_change({PAUSE_ANNOTATION: "false"}, pause=True).changed


def test_resume_removes_the_annotation() -> None:
    change = render.pause_change({PAUSE_ANNOTATION: "true", "other": "x"}, pause=False)
    assert change.changed
    assert change.patch == {"metadata": {"annotations": {PAUSE_ANNOTATION: None}}}
    assert "'true' -> <unset>" in render.pause_message(view(), change, pause=False)
    idle = render.pause_change({"other": "x"}, pause=False)
    assert not idle.changed
    assert "already resumed" in render.pause_message(view(), idle, pause=False)
    note = render.pause_message(view(paused=True), idle, pause=False)
    assert "spec.paused is true" in note
    assert render.pause_json(view(), change)["before"] == "true"


# ---- arguments ------------------------------------------------------------------------


def test_options_before_or_after_the_subcommand() -> None:
    parser = plugin_cli.build_parser()
    a = parser.parse_args(["-n", "x", "describe", "w0"])
    b = parser.parse_args(["describe", "w0", "-n", "x", "-o", "json"])
    assert (a.namespace, a.name, a.output) == ("x", "w0", "text")
    assert (b.namespace, b.output) == ("x", "json")
    assert parser.parse_args(["status"]).namespace is None


@pytest.mark.parametrize(
    "argv", [[], ["bogus"], ["describe"], ["status", "-o", "yaml"], ["attest", "w0", "-o", "json"]]
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        plugin_cli.main(argv)
    assert exc.value.code == 2


def test_namespace_from_the_kubeconfig_context(tmp_path: Any) -> None:
    config = tmp_path / "config"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "b",
                "contexts": [
                    {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "na"}},
                    {"name": "b", "context": {"cluster": "c", "user": "u", "namespace": "nb"}},
                ],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
            }
        )
    )
    assert plugin_cli.default_namespace(str(config)) == "nb"
    plain = tmp_path / "plain"
    plain.write_text(config.read_text().replace(', "namespace": "nb"', ""))
    assert plugin_cli.default_namespace(str(plain)) == "default"


def test_an_unreachable_apiserver_exits_1(tmp_path: Any, capsys: Any) -> None:
    config = tmp_path / "config"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    assert plugin_cli.main(["--kubeconfig", str(config), "describe", "w0"]) == 1
    err = capsys.readouterr().err
    assert 'cocoonworker.cocoon.network "w0" in namespace "default"' in err
