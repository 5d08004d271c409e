"""The example Grafana dashboard and Prometheus alert rules in contrib use only the
metric names the server exports, and are complete enough to import and to page on.

Only the rule-parsing test needs PyYAML, and only the promtool test needs promtool;
the metric-name check reads the rules file as text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "prserv-dashboard.json"
RULES = ROOT / "contrib" / "prometheus" / "prserv-alerts.yml"

METRICS = {
    "prserv_requests_total",
    "prserv_request_duration_seconds",
    "prserv_connections_active",
    "prserv_allocations_total",
    "prserv_upstream_requests_total",
    "prserv_commit_duration_seconds",
    "prserv_wal_bytes",
    "prserv_mirror_lag_rows",
    "prserv_mirror_lag_seconds",
    "prserv_mirror_diverged",
    "prserv_build_info",
}
HISTOGRAMS = {"prserv_request_duration_seconds", "prserv_commit_duration_seconds"}
METRIC = re.compile(r"prserv_[a-z_]+")
ALERTS = {"PRServerDown", "PRServerUpstreamFailing", "PRServerRequestErrors",
          "PRServerSlowRequests", "PRMirrorBehind", "PRMirrorDiverged", "PRServerWALLarge"}


def dashboard():
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(board):
    """Every panel, also those nested in collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())


def metric_names(text):
    """The prserv metric names in a PromQL text, histogram series as the histogram's name."""
    names = set()
    for name in METRIC.findall(text):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in HISTOGRAMS:
                name = name[:-len(suffix)]
        names.add(name)
    return names


def test_dashboard_has_instance_variable_from_build_info():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "instance" in variables
    instance = variables["instance"]
    assert instance["multi"] is True
    query = instance["query"]
    query = query["query"] if isinstance(query, dict) else query
    assert query == "label_values(prserv_build_info, instance)"
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]


def test_every_dashboard_panel_has_title_description_and_query():
    board = dashboard()
    found = [p for p in panels(board) if p.get("type") != "row"]
    assert found
    ids = [p["id"] for p in found]
    assert len(ids) == len(set(ids))
    for panel in found:
        assert panel.get("title"), panel
        assert panel.get("description"), panel["title"]
        exprs = [t.get("expr") for t in panel.get("targets", ())]
        assert exprs and all(exprs), panel["title"]
        assert all('instance=~"$instance"' in e for e in exprs), panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_uses_only_exported_metrics():
    used = set()
    for panel in panels(dashboard()):
        for target in panel.get("targets", ()):
            used |= metric_names(target.get("expr", ""))
    for variable in dashboard()["templating"]["list"]:
        used |= metric_names(json.dumps(variable.get("query", "")))
    assert used <= METRICS, used - METRICS
    assert used == METRICS                     # every exported metric has a panel


def test_alert_rules_use_only_exported_metrics():
    used = metric_names(RULES.read_text(encoding="utf-8"))
    assert used, "no prserv metric found in %s" % RULES.name
    assert used <= METRICS, used - METRICS


def test_metric_name_check_catches_a_typo():
    assert metric_names('rate(prserv_request_duration_seconds_bucket[5m])') <= METRICS
    assert not metric_names('rate(prserv_request_durations_seconds_bucket[5m])') <= METRICS
    assert not metric_names('prserv_wal_bytes_count') <= METRICS    # not a histogram


def test_alert_rules_parse_and_are_complete():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (the test extra installs it)")
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert ALERTS <= {rule["alert"] for rule in alerts}
    for rule in alerts:
        assert rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
    by_name = {rule["alert"]: rule for rule in alerts}
    assert by_name["PRMirrorDiverged"]["labels"]["severity"] == "critical"


def test_alert_rules_are_complete_as_text():
    """Without PyYAML: each rule block names a severity, a summary and a description."""
    text = RULES.read_text(encoding="utf-8")
    blocks = re.split(r"^\s*- alert:\s*", text, flags=re.M)[1:]
    names = {block.split()[0] for block in blocks}
    assert ALERTS <= names
    for block in blocks:
        name = block.split()[0]
        for key in ("expr:", "severity:", "summary:", "description:"):
            assert re.search(r"^\s+%s" % key, block, re.M), "%s has no %s" % (name, key)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not on PATH: it is Prometheus's own program (Debian: prometheus), "
                    "no Python package the test extra could install")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
