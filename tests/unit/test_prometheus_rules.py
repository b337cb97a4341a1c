"""The Prometheus rules and Grafana dashboards in deploy/: promtool checks and unit tests, coverage of
every rule by those tests, only metrics the exporter really has, and well-formed dashboards.

(tests/e2e/test_observability.py runs the same rules and every dashboard query against a real
Prometheus scraping a real worker.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamwatch.config import load_config
from streamwatch.engine import Engine
from streamwatch.exporter import Exporter, RuntimeCollector
from streamwatch.runtime.state import RuntimeStats

REPO = Path(__file__).parents[2]
RULES_DIR = REPO / "deploy/prometheus/rules"
RULES = RULES_DIR / "streamwatch.rules.yml"
RULES_TEST = RULES_DIR / "streamwatch.rules.test.yml"
GRAFANA = REPO / "deploy/grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning/datasources/prometheus.yml"
PROVIDERS = GRAFANA / "provisioning/dashboards/streamwatch.yml"
# variables Grafana defines itself
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
# series Prometheus makes itself, which dashboards and rules may use besides the exporter's
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_samples_scraped", "scrape_duration_seconds"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "on", "without", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "rate", "increase", "irate", "histogram_quantile", "max_over_time", "absent",
    "vector", "topk", "bool", "offset", "le", "inf", "nan",
}  # fmt: skip


# ---------------------------------------------------------------------------- helpers (shared with e2e)
@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard, where it is and how Grafana runs it."""

    dashboard: str
    panel: str
    expr: str
    instant: bool


def rules_doc(path: Path = RULES) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def all_rules(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in doc["groups"]:
        yield from group["rules"]


def dashboard(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those inside collapsed rows."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_queries(path: Path) -> list[Query]:
    """Every PromQL expression Grafana would run: panel targets and annotation queries."""
    dash = dashboard(path)
    out = [
        Query(path.name, p["title"], t["expr"], bool(t.get("instant")) and not t.get("range"))
        for p in panels(dash)
        for t in p.get("targets", [])
    ]
    out += [
        Query(path.name, f"annotation {a['name']}", a["expr"], False)
        for a in dash["annotations"]["list"]
        if "expr" in a
    ]
    return out


def label_values_queries(path: Path) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of each `label_values(selector, label)` template variable."""
    out = []
    for v in dashboard(path)["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
        assert m, f"{path.name}: variable {v['name']} is not a label_values() query"
        out.append((v["name"], m.group(1), m.group(2)))
    return out


def exported_sample_names() -> set[str]:
    """Sample names the worker's /metrics can have (counters with _total, histograms' series)."""
    settings = load_config(REPO / "examples/streamwatch.yaml")
    exporter = Exporter(Engine(settings))
    exporter.registry.register(RuntimeCollector(RuntimeStats()))  # as `streamwatch run` does
    text = exporter.render().decode()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that name series (roughly: not functions, keywords, labels or strings)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    expr = re.sub(r"\boffset\s+-?\d+[smhdwy]\b", "", expr)  # offset modifiers
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", n)}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (make setup installs it)")
        pytest.skip("promtool not installed (make setup installs it)")
    return path


# ---------------------------------------------------------------------------- promtool
def test_rules_pass_promtool_check() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    out = subprocess.run(
        [_promtool(), "test", "rules", RULES_TEST.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# ---------------------------------------------------------------------------- rule content
def test_every_alert_is_tested_firing_and_not_firing_and_every_recording_rule_is_evaluated() -> None:
    rules = list(all_rules(rules_doc()))
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    exprs = " ".join(c["expr"] for t in tests for c in t.get("promql_expr_test", []))
    for r in rules:
        if "alert" in r:
            mine = [c for c in cases if c["alertname"] == r["alert"]]
            assert any(c["exp_alerts"] for c in mine), f"{r['alert']} is never tested firing"
            assert any(not c["exp_alerts"] for c in mine), f"{r['alert']} is never tested not firing"
        else:
            assert r["record"] in exprs, f"recording rule {r['record']} has no promql_expr_test"


def test_alerts_have_severity_summary_description_and_a_production_for_duration() -> None:
    alerts = [r for r in all_rules(rules_doc()) if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "StreamwatchFeatureDrift",
        "StreamwatchDeadLetterSpike",
        "StreamwatchWorkerDown",
        "StreamwatchNoEvents",
        "StreamwatchMissingValues",
    }
    for a in alerts:
        assert a["alert"].startswith("Streamwatch"), a["alert"]
        assert a["labels"]["severity"] in {"warning", "critical"}, a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        m = re.fullmatch(r"(\d+)m", a.get("for", ""))
        assert m and int(m.group(1)) >= 5, f"{a['alert']}: `for` {a.get('for')!r} is too short for production"


def test_rules_and_dashboards_use_only_metrics_that_exist() -> None:
    exported = exported_sample_names()
    assert "streamwatch_feature_drift_status" in exported and "streamwatch_events_total" in exported
    rules = list(all_rules(rules_doc()))
    recorded = {r["record"] for r in rules if "record" in r}
    known = exported | recorded | PROMETHEUS_SERIES
    used: list[tuple[str, str]] = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules]
    for path in DASHBOARDS:
        used += [(f"{q.dashboard}: {q.panel}", q.expr) for q in dashboard_queries(path)]
        used += [(f"{path.name}: variable {v}", sel) for v, sel, _ in label_values_queries(path)]
    unknown = {(where, n) for where, expr in used for n in metric_names(expr) if n not in known}
    assert not unknown, sorted(unknown)
    # each recording rule is used by an alert (expression or annotation) or a dashboard
    annotations = [v for r in rules for v in r.get("annotations", {}).values()]
    everything = " ".join([expr for _, expr in used] + annotations)
    unused = {name for name in recorded if re.search(re.escape(name) + r"\b", everything) is None}
    assert not unused, f"recording rules used nowhere: {sorted(unused)}"


def test_metric_names_parser() -> None:
    expr = (
        'sum by (model, le) (rate(streamwatch_events_total{model=~"$model", type="x:y"}[$__rate_interval]))'
        " / on () group_left () model:streamwatch_foo:rate5m > bool 0.5 or vector(0)"
    )
    assert metric_names(expr) == {"streamwatch_events_total", "model:streamwatch_foo:rate5m"}


# ---------------------------------------------------------------------------- grafana
def _datasource_uid() -> str:
    doc = yaml.safe_load(DATASOURCES.read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"]
    return str(ds["uid"])


def test_provisioning_files() -> None:
    assert _datasource_uid() == "prometheus"
    doc = yaml.safe_load(PROVIDERS.read_text())
    assert doc["apiVersion"] == 1
    (prov,) = doc["providers"]
    assert prov["type"] == "file" and prov["options"]["path"]


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    assert [p.name for p in DASHBOARDS] == ["fleet-overview.json", "model.json", "operations.json"]
    uids = [dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    text = path.read_text()
    dash = json.loads(text)  # parses
    uid = _datasource_uid()
    assert "${DS_" not in text and "__inputs" not in dash, "dashboards refer to the provisioned uid"
    assert dash["schemaVersion"] >= 36 and dash["title"] and dash["uid"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    for v in dash["templating"]["list"]:
        assert v["datasource"]["uid"] == uid, f"variable {v['name']}"
        assert v["type"] == "query" and v["query"]["query"].startswith("label_values(")
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"]["uid"] == uid, a["name"]
    ids = [p["id"] for p in panels(dash)]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    n_targets = 0
    for p in panels(dash):
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] == "row":
            assert not p.get("targets"), f"row {p['title']} has queries"
            continue
        where = f"{path.name}: panel {p['title']!r}"
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert p.get("targets"), f"{where} has no query"
        assert p.get("description"), f"{where} has no description"
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), where
        for t in p["targets"]:
            n_targets += 1
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), f"{where} target {t['refId']}"
            assert t.get("datasource", p["datasource"])["uid"] == uid, f"{where} target {t['refId']}"
            for name in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert name in variables | GRAFANA_BUILTINS, f"{where}: undefined variable ${name}"
    assert n_targets >= 8


def test_model_dashboard_is_templated_by_model_and_feature() -> None:
    vars_ = {v: (sel, label) for v, sel, label in label_values_queries(GRAFANA / "dashboards/model.json")}
    assert vars_["model"][1] == "model" and vars_["feature"][1] == "feature"
    assert "$model" in vars_["feature"][0]
    types = {p["type"] for p in panels(dashboard(GRAFANA / "dashboards/model.json"))}
    assert {"heatmap", "timeseries", "table", "stat"} <= types
    exprs = " ".join(q.expr for q in dashboard_queries(GRAFANA / "dashboards/model.json"))
    for needed in (
        "streamwatch_feature_drift_score",
        "streamwatch_feature_drift_threshold",
        "streamwatch_feature_missing_values_total",
        "streamwatch_feature_invalid_values_total",
        "streamwatch_alerts_firing",
    ):
        assert needed in exprs
    ops = " ".join(q.expr for q in dashboard_queries(GRAFANA / "dashboards/operations.json"))
    assert "histogram_quantile(0.99" in ops and "streamwatch_consumed_bytes_total" in ops
