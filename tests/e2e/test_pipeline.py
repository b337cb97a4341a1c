"""End to end on the real broker: drift alert, metrics, dead letters, replay equivalence, Prometheus.

One run of the worker over one simulated stream (with malformed events mixed in) feeds all tests
of this module.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.events import parse_timestamp
from streamwatch.simulate import Scenario, generate
from tests.conftest import REPO, Worker, http_get, wait_until, write_config

SCENARIO = Scenario(events=12_000, change_at=6_000, shift_feature="income", seed=21)
MODEL = SCENARIO.model_id
# one of each kind of bad input, repeated; key = model id keeps them in the model's partition
MALFORMED: list[tuple[bytes, str]] = [
    (b"{this is not json", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_utf8"),
    (b'["an", "array"]', "not_an_object"),
    (
        orjson.dumps({"model_id": MODEL, "timestamp": 1, "features": {}, "prediction": {"label": "x"}}),
        "missing_field",
    ),
    (
        orjson.dumps(
            {
                "event_id": "x",
                "model_id": "no-such-model",
                "timestamp": 1,
                "features": {},
                "prediction": {"label": "x"},
            }
        ),
        "unknown_model",
    ),
    (
        orjson.dumps(
            {
                "event_id": "x",
                "model_id": MODEL,
                "timestamp": "yesterday",
                "features": {},
                "prediction": {"label": "x"},
            }
        ),
        "invalid_timestamp",
    ),
    (
        orjson.dumps(
            {
                "event_id": "x",
                "model_id": MODEL,
                "timestamp": 1,
                "features": {"age": {"nested": 1}},
                "prediction": {"label": "x"},
            }
        ),
        "invalid_field",
    ),
]
BAD_EVERY = 97  # a malformed event after every 97 good ones


def _interleaved() -> tuple[list[bytes], list[bytes], dict[str, int]]:
    preds, labels = generate(SCENARIO)
    values: list[bytes] = []
    expected: dict[str, int] = {}
    k = 0
    for i, ev in enumerate(preds):
        values.append(orjson.dumps(ev))
        if i % BAD_EVERY == BAD_EVERY - 1:
            raw, reason = MALFORMED[k % len(MALFORMED)]
            values.append(raw)
            expected[reason] = expected.get(reason, 0) + 1
            k += 1
    return values, [orjson.dumps(e) for e in labels], expected


def _drain(bootstrap: str, topic: str, until: Any, timeout: float) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            got += [m for m in c.consume(500, 0.5) if m.error() is None]
    finally:
        c.close()
    return got


@dataclass
class Run:
    alerts: list[dict[str, Any]]
    dead: list[Any]
    expected_dead: dict[str, int]
    metrics: dict[str, list[Any]]
    config: Path
    predictions_file: Path
    labels_file: Path
    worker_exit: int
    prom_values: dict[str, float]


def _metrics(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:  # keyed by sample name: counters end in _total
            out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture(scope="module")
def run(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    from tests.conftest import PrometheusServer

    tmp = tmp_path_factory.mktemp("pipeline")
    tag = uuid.uuid4().hex[:8]
    topics = {
        "predictions": f"t{tag}.predictions",
        "labels": f"t{tag}.labels",
        "alerts": f"t{tag}.alerts",
        "dead_letters": f"t{tag}.dlq",
    }
    config = write_config(tmp / "config.yaml", kafka, topics, SCENARIO.config())
    values, labels, expected_dead = _interleaved()
    (tmp / "predictions.jsonl").write_bytes(b"\n".join(values) + b"\n")
    (tmp / "labels.jsonl").write_bytes(b"\n".join(labels) + b"\n")

    worker = Worker(config, tmp / "worker.log")
    prom = PrometheusServer([f"127.0.0.1:{worker.metrics_port}"], tmp)
    try:
        p = Producer({"bootstrap.servers": kafka, "linger.ms": 20, "enable.idempotence": True})
        for v in values:
            p.produce(topics["predictions"], v, MODEL.encode())
            p.poll(0)
        for v in labels:
            p.produce(topics["labels"], v, MODEL.encode())
            p.poll(0)
        assert p.flush(30) == 0

        n_dead = sum(expected_dead.values())
        dead = _drain(kafka, topics["dead_letters"], lambda got: len(got) >= n_dead, 90)
        alert_msgs = _drain(kafka, topics["alerts"], lambda got: any(b"firing" in m.value() for m in got), 90)
        good = SCENARIO.events

        def caught_up() -> dict[str, list[Any]] | None:
            m = _metrics(http_get(worker.url("/metrics"))[1].decode())
            seen = {
                s.labels["type"]: s.value
                for s in m.get("streamwatch_events_total", [])
                if s.labels.get("model") == MODEL
            }
            return m if seen.get("prediction") == good and seen.get("label") == len(labels) else None

        metrics = wait_until(caught_up, 60, "worker to process every event")
        queries = {
            "income_score": (
                f'streamwatch_feature_drift_score{{model="{MODEL}",feature="income",detector="psi"}}'
            ),
            "dead_letters": "sum(streamwatch_dead_letters_total)",
            "firing": f'streamwatch_alerts_firing{{model="{MODEL}",kind="data_drift"}}',
        }
        # scraped after the worker caught up: the total number of dead letters is final then
        wait_until(
            lambda: [float(r["value"][1]) for r in prom.query(queries["dead_letters"])] == [float(n_dead)],
            30,
            "Prometheus to scrape the final counts",
        )
        prom_values = {k: float(prom.query(q)[0]["value"][1]) for k, q in queries.items()}
    finally:
        prom.stop()
        code = worker.stop()
    return Run(
        alerts=[orjson.loads(m.value()) for m in alert_msgs],
        dead=dead,
        expected_dead=expected_dead,
        metrics=metrics,
        config=config,
        predictions_file=tmp / "predictions.jsonl",
        labels_file=tmp / "labels.jsonl",
        worker_exit=code,
        prom_values=prom_values,
    )


def test_drift_alert_arrives_on_the_alerts_topic(run: Run) -> None:
    firing = [a for a in run.alerts if a["status"] == "firing"]
    inputs = [(a["model_id"], a["feature"], a["kind"]) for a in firing if a["kind"] != "prediction_drift"]
    assert inputs == [(MODEL, "income", "data_drift")]
    # income moves the model's score, so its predictions drift too (after the input, not before)
    outputs = [a for a in firing if a["kind"] == "prediction_drift"]
    assert all(o["events_seen"] >= firing[0]["events_seen"] for o in outputs)
    a = firing[0]
    assert a["statistic"] > a["threshold"]
    assert SCENARIO.change_at < a["events_seen"] <= SCENARIO.change_at + 1000
    began = parse_timestamp(SCENARIO.truth()["changes"][0]["start_time"])
    assert a["change_started_at"] is not None
    assert abs(parse_timestamp(a["change_started_at"]) - began) <= 100 * 1000 / SCENARIO.rate_per_second


def test_metrics_show_the_drifting_feature_above_threshold_and_others_below(run: Run) -> None:
    scores = {
        s.labels["feature"]: s.value
        for s in run.metrics["streamwatch_feature_drift_score"]
        if s.labels["model"] == MODEL and s.labels["detector"] == "psi"
    }
    thresholds = {
        s.labels["feature"]: s.value
        for s in run.metrics["streamwatch_feature_drift_threshold"]
        if s.labels["model"] == MODEL and s.labels["detector"] == "psi"
    }
    assert set(scores) == {*SCENARIO.features, "country"}
    assert scores["income"] > thresholds["income"]
    assert all(scores[f] < thresholds[f] for f in scores if f != "income"), scores
    status = {s.labels["feature"]: s.value for s in run.metrics["streamwatch_feature_drift_status"]}
    assert status["income"] == 1.0 and sum(status.values()) == 1.0


def test_every_malformed_event_is_dead_lettered_with_its_reason(run: Run) -> None:
    got: dict[str, int] = {}
    for m in run.dead:
        headers = dict(m.headers() or [])
        body = orjson.loads(m.value())
        assert headers["sw_reason"].decode() == body["reason"]
        assert body["detail"] and body["source"]["topic"].endswith(".predictions")
        got[body["reason"]] = got.get(body["reason"], 0) + 1
    assert got == run.expected_dead
    counted = {s.labels["reason"]: s.value for s in run.metrics["streamwatch_dead_letters_total"]}
    assert {r: v for r, v in counted.items() if v} == run.expected_dead
    assert run.worker_exit == 0


def test_prometheus_scraped_the_worker(run: Run) -> None:
    assert run.prom_values["income_score"] > 0.1  # above the effect floor, the lowest threshold
    assert run.prom_values["dead_letters"] == sum(run.expected_dead.values())
    assert run.prom_values["firing"] == 1.0


def test_replay_of_the_same_events_gives_the_same_alerts(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    dl = tmp_path / "dead.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamwatch",
            "replay",
            "--config",
            str(run.config),
            "--predictions",
            str(run.predictions_file),
            "--labels",
            str(run.labels_file),
            "--alerts",
            str(out),
            "--dead-letters",
            str(dl),
            "--quiet",
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    replayed = [orjson.loads(line) for line in out.read_bytes().splitlines()]

    def comparable(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in a.items() if k != "observed_at"} for a in alerts]

    assert replayed and comparable(replayed) == comparable(run.alerts)
    reasons: dict[str, int] = {}
    for line in dl.read_bytes().splitlines():
        r = orjson.loads(line)["reason"]
        reasons[r] = reasons.get(r, 0) + 1
    assert reasons == run.expected_dead


def test_health_endpoints_and_unknown_paths(
    kafka: str, topics: dict[str, str], tmp_path: Path, start_worker: Any
) -> None:
    w = start_worker(write_config(tmp_path / "c.yaml", kafka, topics, SCENARIO.config()))
    assert http_get(w.url("/healthz"))[0] == 200
    assert http_get(w.url("/readyz"))[0] == 200
    assert http_get(w.url("/nope"))[0] == 404
    assert b"streamwatch_build_info" in http_get(w.url("/metrics"))[1]
