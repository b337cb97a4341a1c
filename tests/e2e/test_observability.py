"""End to end: the alerting rules and the Grafana dashboards against a real Prometheus that scrapes a
real worker reading drifting (and some malformed) events from the real broker.

One worker and one Prometheus feed all tests of this module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from streamwatch.simulate import Scenario, generate
from tests.conftest import PrometheusServer, Worker, wait_until, write_config
from tests.unit.test_prometheus_rules import (
    DASHBOARDS,
    RULES,
    Query,
    all_rules,
    dashboard_queries,
    label_values_queries,
)

# income shifts by one standard deviation half way; seed 21 drifts income only (as test_pipeline)
SCENARIO = Scenario(events=6_000, change_at=3_000, shift_feature="income", seed=21)
MODEL = SCENARIO.model_id
DRIFTING = SCENARIO.shift_feature
MALFORMED = [
    b"{this is not json",
    b'["an", "array"]',
    orjson.dumps({"event_id": "x", "model_id": "nope", "timestamp": 1, "features": {}, "prediction": {}}),
]
BAD_EVERY = 200
# rules with `for:` this short in the test copy of the rules (production: minutes)
TEST_FOR = "4s"


def rules_for_test(dest: Path) -> Path:
    """A copy of deploy/prometheus/rules/streamwatch.rules.yml with every `for:` shortened to
    TEST_FOR, so that pending -> firing happens within the test. Expressions, labels and
    annotations stay as they are in production."""
    doc = yaml.safe_load(RULES.read_text())
    for rule in all_rules(doc):
        if "for" in rule:
            rule["for"] = TEST_FOR
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


@dataclass
class Stack:
    worker: Worker
    prom: PrometheusServer
    # alert states in the order Prometheus reported them for the drifting feature
    drift_states: list[str] = field(default_factory=list)
    drift_alert: dict[str, Any] = field(default_factory=dict)


def _drift_alerts(prom: PrometheusServer) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.api("alerts")["alerts"]
        if a["labels"].get("alertname") == "StreamwatchFeatureDrift"
        and a["labels"].get("model") == MODEL
        and a["labels"].get("feature") == DRIFTING
    ]


@pytest.fixture(scope="module")
def stack(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import uuid

    tmp = tmp_path_factory.mktemp("observability")
    tag = uuid.uuid4().hex[:8]
    topics = {
        "predictions": f"o{tag}.predictions",
        "labels": f"o{tag}.labels",
        "alerts": f"o{tag}.alerts",
        "dead_letters": f"o{tag}.dlq",
    }
    worker = Worker(write_config(tmp / "config.yaml", kafka, topics, SCENARIO.config()), tmp / "worker.log")
    prom: PrometheusServer | None = None
    try:
        prom = PrometheusServer(
            [f"127.0.0.1:{worker.metrics_port}"],
            tmp,
            rule_files=[rules_for_test(tmp / "streamwatch.rules.yml")],
        )
        wait_until(
            lambda: (
                [r["value"][1] for r in prom.api("query", query='up{job="streamwatch"}')["result"]] == ["1"]
            ),
            30,
            "Prometheus to scrape the worker",
        )
        s = Stack(worker, prom)

        preds, labels = generate(SCENARIO)
        p = Producer({"bootstrap.servers": kafka, "linger.ms": 20, "enable.idempotence": True})
        # Warm-up: the worker exports streamwatch_messages_consumed_total{source} only from the first
        # message on (the dead-letter counters from 0), so a burst consumed before the first scrape
        # would overstate the dead-letter ratio for one rate window. In production `for: 5m` rides
        # that out (see the rules' unit tests); with the test's 4 s it would fire. So one prediction
        # and one label go first, and the burst follows once Prometheus has seen both series.
        p.produce(topics["predictions"], orjson.dumps(preds[0]), MODEL.encode())
        p.produce(topics["labels"], orjson.dumps(labels[0]), MODEL.encode())
        assert p.flush(30) == 0
        wait_until(
            lambda: len(prom.api("query", query="streamwatch_messages_consumed_total > 0")["result"]) == 2,
            30,
            "Prometheus to scrape the first consumed messages",
        )
        for i, ev in enumerate(preds[1:], start=1):
            p.produce(topics["predictions"], orjson.dumps(ev), MODEL.encode())
            if i % BAD_EVERY == BAD_EVERY - 1:
                p.produce(topics["predictions"], MALFORMED[(i // BAD_EVERY) % len(MALFORMED)], MODEL.encode())
            p.poll(0)
        for ev in labels[1:]:
            p.produce(topics["labels"], orjson.dumps(ev), MODEL.encode())
            p.poll(0)
        assert p.flush(30) == 0

        def firing() -> bool:
            for a in _drift_alerts(prom):
                if not s.drift_states or s.drift_states[-1] != a["state"]:
                    s.drift_states.append(a["state"])
                if a["state"] == "firing":
                    s.drift_alert = a
                    return True
            return False

        wait_until(firing, 60, f"StreamwatchFeatureDrift for {MODEL}/{DRIFTING} to fire", interval=0.1)
        yield s
    finally:
        if prom is not None:
            prom.stop()
        worker.stop()


# ---------------------------------------------------------------------------- (a) the drift alert
def test_feature_drift_alert_goes_pending_then_firing(stack: Stack) -> None:
    assert stack.drift_states == ["pending", "firing"]
    a = stack.drift_alert
    assert a["labels"]["severity"] == "warning" and a["labels"]["detector"] == "psi"
    # the alert's value is the score; its annotations name score and threshold
    score = float(a["value"])
    threshold = stack.prom.api(
        "query",
        query=f'streamwatch_feature_drift_threshold{{model="{MODEL}",feature="{DRIFTING}",detector="psi"}}',
    )["result"][0]["value"][1]
    assert score > float(threshold) >= 0.1  # calibrated, and never below the effect floor
    assert a["annotations"]["summary"] == f"Feature {DRIFTING} of model {MODEL} drifts (psi {score:.3f})"
    assert f"is {score:.3f} against a threshold of {float(threshold):.3f};" in a["annotations"]["description"]
    # only the drifting feature
    others = [
        x["labels"]["feature"]
        for x in stack.prom.api("alerts")["alerts"]
        if x["labels"]["alertname"] == "StreamwatchFeatureDrift" and x["labels"]["feature"] != DRIFTING
    ]
    assert others == []


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    groups = stack.prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == sum(1 for _ in all_rules(yaml.safe_load(RULES.read_text())))
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad
    # no other alert fires on this healthy (1.5% dead letters, steady events) stream, except that
    # the income shift moves the model's score: the worker rightly reports prediction drift too
    states = {(a["labels"]["alertname"], a["state"]) for a in stack.prom.api("alerts")["alerts"]}
    assert ("StreamwatchFeatureDrift", "firing") in states
    assert {name for name, _ in states} <= {"StreamwatchFeatureDrift", "StreamwatchPredictionDrift"}


# ---------------------------------------------------------------------------- (b) the dashboards
VARIABLES = {
    "model": MODEL,
    "feature": DRIFTING,
    "job": "streamwatch",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replaces $name and ${name} as Grafana would for single values; unknown variables stay."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), expr)


def test_substitute() -> None:
    assert substitute('x{a="$model"}[$__rate_interval] ${job} $nope', VARIABLES) == (
        'x{a="credit-risk"}[1m] streamwatch $nope'
    )


def _variables(stack: Stack) -> dict[str, str]:
    return {**VARIABLES, "instance": f"127.0.0.1:{stack.worker.metrics_port}"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_template_variables_find_their_values(stack: Stack, path: Path) -> None:
    variables = _variables(stack)
    for name, selector, label in label_values_queries(path):
        sel = substitute(selector, variables)
        values = stack.prom.api(f"label/{quote(label)}/values", **{"match[]": sel})
        assert variables[name] in values, f"{path.name}: ${name} from {sel} gave {values}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_runs_and_returns_series(stack: Stack, path: Path) -> None:
    variables = _variables(stack)
    queries: list[Query] = dashboard_queries(path)
    assert queries
    problems: list[str] = []
    now = time.time()
    for q in queries:
        expr = substitute(q.expr, variables)
        assert "$" not in expr, f"{q.panel}: unsubstituted variable in {expr}"
        try:
            if q.instant:
                result = stack.prom.api("query", query=expr, time=f"{now:.3f}")["result"]
            else:  # as a time-series panel asks: a range with a step
                result = stack.prom.api(
                    "query_range", query=expr, start=f"{now - 60:.3f}", end=f"{now:.3f}", step="5"
                )["result"]
        except AssertionError as e:
            problems.append(f"{q.panel}: {expr}: {e}")
            continue
        if not result:
            problems.append(f"{q.panel}: {expr}: no series")
    assert not problems, "\n".join(problems)
