"""The chart's Grafana dashboard and alert rules query only what the operator exports.

Both live in charts/cocoon-operator/files/ as data. Every metric name their
PromQL references must be one that :class:`cocoon_operator.metrics.Metrics`
registers (with the suffixes Prometheus adds: ``_total`` for counters,
``_bucket``/``_count``/``_sum`` for histograms), so renaming a metric in the
operator breaks this test instead of silently emptying a panel or an alert.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cocoon_operator.api.conditions import Phase
from cocoon_operator.api.v1alpha1 import FUNDING_FLOOR, FUNDING_MINIMUM_DEFAULT
from cocoon_operator.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cocoon-operator"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))

# --- PromQL: the metric names an expression selects ------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier not inside a number or a $variable, and not a function call.
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"and", "or", "unless", "bool", "offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, label matchers, ranges,
    grouping clauses, functions, keywords and numbers are not names)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (phase) (cocoon_workers{phase="Ready",job=~"$job"})', {"cocoon_workers"}),
        (
            "histogram_quantile(0.95, sum by (le) "
            "(rate(x_seconds_bucket{a='b'}[$__rate_interval]))) / ignoring (le) y",
            {"x_seconds_bucket", "y"},
        ),
        ("min(balance_nanoton) / 1e9 > bool 2.1", {"balance_nanoton"}),
        ('absent(up_thing{job="a,b", x="{}"})', {"up_thing"}),
        (
            "sum(rate(a_total[5m])) by (x) / on (y) group_left (z) b offset 5m unless c",
            {"a_total", "b", "c"},
        ),
    ],
)
def test_metric_names_are_parsed_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# --- what the operator exports ---------------------------------------------------

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def exported_names() -> set[str]:
    """Every series name the operator's registry can expose."""
    out: set[str] = set()
    for family in Metrics().registry.collect():
        out |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
    return out


def test_exported_names_follow_the_registry() -> None:
    names = exported_names()
    assert "cocoon_workers" in names  # gauge: as named
    assert "cocoon_reconcile_errors_total" in names  # counter: _total
    assert "cocoon_reconcile_errors" not in names
    assert "cocoon_chain_request_duration_seconds_bucket" in names  # histogram series


# --- the dashboard ---------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest theirs


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable of a dashboard."""
    board = json.loads(path.read_text())
    out = []
    for panel in _panels(board["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in board.get("templating", {}).get("list", []):
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # label_values(METRIC, label): the metric is the selector inside.
        found = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        out.append((f"variable {var['name']!r}", found.group(1) if found else query))
    return out


def test_the_chart_ships_a_dashboard() -> None:
    assert DASHBOARDS, "charts/cocoon-operator/files/dashboards/*.json"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_only_metrics_the_operator_exports(path: Path) -> None:
    exported = exported_names()
    queries = dashboard_queries(path)
    assert len(queries) >= 10
    used: set[str] = set()
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exported, f"{where}: not exported: {sorted(names - exported)}"
        used |= names
    # The dashboard covers every metric family, not a few of them.
    families = {f.name for f in Metrics().registry.collect()}
    covered = {f for f in families if any(n.startswith(f) for n in used)}
    assert covered == families


# --- the alert rules -------------------------------------------------------------


def _camel(snake: str) -> str:
    first, *rest = snake.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def rendered_rules() -> list[dict[str, Any]]:
    """The rules file with its placeholders filled from the chart's default values,
    as templates/prometheusrule.yaml fills them."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]
    text = RULES.read_text()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "SELECTOR":
            return 'job="cocoon-operator-metrics",namespace="cocoon-system"'
        if name == "RUNBOOKS":  # runbookBaseUrl (empty by default), then the file
            return str(values["runbookBaseUrl"]) + "docs/runbooks.md"
        key = _camel(name)
        assert key in values, f"placeholder {name}: no monitoring.prometheusRule.{key}"
        return str(values[key])

    text = re.sub(r"\$\{([A-Z_]+)\}", fill, text)
    groups = yaml.safe_load(text)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_query_only_metrics_the_operator_exports() -> None:
    exported = exported_names()
    rules = rendered_rules()
    assert {r["alert"] for r in rules} >= {
        "CocoonWorkersNotReady",
        "CocoonWorkersFailed",
        "CocoonAttestationRejected",
        "CocoonWalletBelowMinimum",
        "CocoonChainErrors",
        "CocoonReconcileErrors",
        "CocoonOperatorOverloaded",
        "CocoonOperatorMemoryHigh",
        "CocoonOperatorNoLeader",
    }
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= exported, f"{rule['alert']}: not exported: {sorted(names - exported)}"
        assert 'job="cocoon-operator-metrics"' in rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_phases_named_in_queries_are_phases_the_operator_sets() -> None:
    phases = {p.value for p in Phase}
    exprs = [r["expr"] for r in rendered_rules()]
    exprs += [expr for path in DASHBOARDS for _, expr in dashboard_queries(path)]
    named = set()
    for expr in exprs:
        for value in re.findall(r'phase=~?"([^"]*)"', expr):
            named |= set(value.split("|"))
    assert named, "no query names a phase"
    assert named <= phases, sorted(named - phases)


def test_wallet_alerts_use_the_funding_bounds_of_the_crd() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]
    # The default threshold is the default spec.funding.minimum ...
    assert values["walletMinimumNanoton"] == FUNDING_MINIMUM_DEFAULT
    rules = {r["alert"]: r for r in rendered_rules()}
    assert rules["CocoonWalletBelowMinimum"]["expr"].endswith(f"< {FUNDING_MINIMUM_DEFAULT}")
    # ... and the critical one is COCOON's start floor, the schema's lowest minimum.
    assert rules["CocoonWalletBelowStartFloor"]["expr"].endswith(f"< {FUNDING_FLOOR}")


# --- runbooks ----------------------------------------------------------------------

RUNBOOKS = REPO / "docs" / "runbooks.md"


def markdown_anchors(text: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them: lower case,
    punctuation dropped, spaces as hyphens (enough for the headings used here)."""
    anchors = set()
    for line in text.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(slug.replace(" ", "-"))
    return anchors


def test_every_alert_links_its_own_runbook_section_which_exists() -> None:
    rules = rendered_rules()
    anchors = markdown_anchors(RUNBOOKS.read_text())
    linked = set()
    for rule in rules:
        url = rule["annotations"].get("runbook_url")
        assert url, f"{rule['alert']}: no runbook_url annotation"
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md", (rule["alert"], url)
        assert (REPO / path).is_file()
        # Its own section: the alert's name is the heading.
        assert anchor == rule["alert"].lower(), (rule["alert"], url)
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {path}"
        linked.add(anchor)
    # And no runbook left for an alert that is gone.
    alerts_documented = {a for a in anchors if a.startswith("cocoon")}
    assert alerts_documented == linked


def test_markdown_anchors_follow_githubs_rule() -> None:
    text = "# Runbooks: the chart's alerts\n## CocoonWorkersNotReady\nbody # not a heading\n"
    assert markdown_anchors(text) == {"runbooks-the-charts-alerts", "cocoonworkersnotready"}
