"""PerformanceTracker and the monitor around it: concept drift found and quiet without change,
covariate shift told apart, estimates track realised accuracy, snapshots round-trip."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamwatch.config import PerformanceSettings, load_config
from streamwatch.engine import Engine
from streamwatch.jsonarrays import floats
from streamwatch.monitor import ModelMonitor
from streamwatch.performance.tracker import PerformanceTracker, Rows
from streamwatch.runtime.files import replay
from streamwatch.simulate import Scenario, generate

SEC = 1000


def _stream(seed: int, n: int, flip_at: int | None, delay_s: float = 600.0) -> list[tuple[int, str, Any]]:
    """(time, kind, payload) in time order: predictions at 1/s, labels after random delays."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    p = 1 / (1 + np.exp(-2 * x))
    y = rng.random(n) < p
    if flip_at is not None:  # P(y|x) changes where x > 0
        region = (np.arange(n) >= flip_at) & (x > 0)
        y[region] = ~y[region]
    out: list[tuple[int, str, Any]] = []
    for i in range(n):
        t = i * SEC
        pr = round(float(p[i]), 4)
        out.append(
            (t, "p", (f"e{i}", {"label": "b" if pr >= 0.5 else "a", "scores": {"a": 1 - pr, "b": pr}}))
        )
        out.append((t + int(rng.exponential(delay_s * SEC)), "l", (f"e{i}", "b" if y[i] else "a")))
    out.sort(key=lambda e: e[0])
    return out


def _run(tracker: PerformanceTracker, events: list[tuple[int, str, Any]], batch: int = 400) -> list:
    alerts = []
    for k in range(0, len(events), batch):
        chunk = events[k : k + batch]
        preds = [(t, e) for t, kind, e in chunk if kind == "p"]
        labels = [(t, e) for t, kind, e in chunk if kind == "l"]
        if preds:
            times = np.array([t for t, _ in preds], dtype=np.int64)
            predicted, scores = tracker.encode_predictions([e[1] for _, e in preds])
            alerts += tracker.observe_predictions([e[0] for _, e in preds], times, predicted, scores)
        if labels:
            times = np.array([t for t, _ in labels], dtype=np.int64)
            alerts += tracker.observe_labels([e[0] for _, e in labels], times, [e[1] for _, e in labels], [])
    return alerts


def _tracker(**kw: Any) -> PerformanceTracker:
    settings = PerformanceSettings(window_seconds=1800, reference_labels=1000, **kw)
    return PerformanceTracker("m", settings, false_alarm_events=100_000)


def test_quiet_without_change() -> None:
    """20 streams of 12 000 labelled events (220 000 after the reference) against a budget of one
    false concept alarm per 100 000: 2.2 expected (the fixed-reference calibration holds it on
    average over references); 9 is beyond the 99.9 % Poisson quantile. No performance alert at all."""
    alerts = []
    for seed in range(20):
        alerts += _run(_tracker(), _stream(seed, 12_000, None))
    assert [a for a in alerts if a.kind == "performance"] == []
    assert len([a for a in alerts if a.kind == "concept_drift" and a.status == "firing"]) <= 8


def test_a_change_of_p_y_given_x_is_found_soon() -> None:
    found = []
    for seed in range(5):
        events = _stream(seed, 12_000, flip_at=6_000)
        alerts = _run(_tracker(), events)
        concept = [a for a in alerts if a.kind == "concept_drift" and a.status == "firing"]
        assert concept, seed
        found.append(concept[0].detected_at_ms / SEC - 6_000)
        assert abs(concept[0].change_started_at_ms / SEC - 6_000) < 1_200
        assert {a.detector for a in alerts if a.kind == "performance"} >= {"accuracy_vs_baseline"}
    # labels come after a mean 10 min: the alarm follows within about that much event time
    assert max(found) < 1_500, found


def test_estimated_accuracy_tracks_realised_before_the_change() -> None:
    t = _tracker()
    _run(t, _stream(3, 12_000, None))
    gaps = []
    for i, w in t.windows.items():
        est = t.estimated(i).get("accuracy")
        if est is not None and len(w.rows) > 500:
            gaps.append(est - t.metrics_of(w.rows)["accuracy"])
    assert gaps and max(abs(g) for g in gaps) < 0.03, gaps


def test_snapshot_round_trip_continues_identically() -> None:
    events = _stream(4, 8_000, flip_at=5_000)
    a = _tracker()
    _run(a, events[:9_000])
    b = PerformanceTracker.from_dict(
        orjson.loads(orjson.dumps(a.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)), "m", a.settings, 100_000
    )
    rest_a, rest_b = _run(a, events[9_000:]), _run(b, events[9_000:])
    assert [x.alert_id for x in rest_a] == [x.alert_id for x in rest_b]
    assert a.readout().performance == b.readout().performance


def test_regression_errors() -> None:
    t = PerformanceTracker("r", PerformanceSettings(reference_labels=100, min_labels=50), 100_000)
    rng = np.random.default_rng(0)
    y = rng.normal(100, 10, 2000)
    pred = y + rng.normal(0, 5, 2000)
    times = np.arange(2000, dtype=np.int64) * SEC
    predicted, scores = t.encode_predictions([{"value": float(v)} for v in pred])
    t.observe_predictions([f"r{i}" for i in range(2000)], times, predicted, scores)
    t.observe_labels([f"r{i}" for i in range(2000)], times + SEC, [float(v) for v in y], [])
    m = t.metrics_of(t.recent)
    assert m["mae"] == pytest.approx(np.abs(pred - y)[-1000:].mean())
    assert t.task == "regression" and t.cusum is not None


def _replay(name: str, tmp: Path, seed: int = 7) -> tuple[list[dict[str, Any]], ModelMonitor]:
    s = Scenario(
        name=name,
        events=20_000,
        change_at=10_000,
        rate_per_second=2.0,
        label_share=0.8,
        label_delay_seconds=3600,
        seed=seed,
        shift_sigmas=1.5,
    )
    preds, labels = generate(s)
    (tmp / "p.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in preds))
    (tmp / "l.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in labels))
    engine = Engine(load_config(None, models=s.config(), performance={"window_seconds": 1800}))
    out = io.BytesIO()
    replay(engine, tmp / "p.jsonl", tmp / "l.jsonl", out)
    return [orjson.loads(line) for line in out.getvalue().splitlines()], engine.monitors[s.model_id]


def test_concept_drift_without_input_drift(tmp_path: Path) -> None:
    """Labels flip in one region, features unchanged, labels hours late: concept_drift, no data_drift."""
    alerts, _ = _replay("concept_drift", tmp_path)
    kinds = {a["kind"] for a in alerts if a["status"] == "firing"}
    assert "concept_drift" in kinds and "performance" in kinds
    assert "data_drift" not in kinds
    concept = next(a for a in alerts if a["kind"] == "concept_drift")
    assert concept["details"]["covariate_shift"] is False


def test_covariate_shift_that_does_not_hurt(tmp_path: Path) -> None:
    alerts, monitor = _replay("covariate_shift", tmp_path)
    kinds = {a["kind"] for a in alerts if a["status"] == "firing"}
    assert "data_drift" in kinds
    assert "performance" not in kinds and "concept_drift" not in kinds
    assert ModelMonitor.restore(monitor.snapshot()).snapshot() == monitor.snapshot()


def test_a_profile_with_development_metrics_sets_the_baseline() -> None:
    from streamwatch.config import DriftSettings, FeatureType
    from streamwatch.performance.tracker import baseline_from_profile

    metrics = {"task": "classification", "n": 5000, "accuracy": 0.91, "macro_f1": 0.88, "classes": {}}
    assert baseline_from_profile(metrics) == ({"accuracy": 0.91, "macro_f1": 0.88}, 5000)
    assert baseline_from_profile({"task": None, "n": 0}) == ({}, None)
    m = ModelMonitor("m", {"x": FeatureType.NUMERIC}, DriftSettings(), profile=None)
    assert m.performance is not None and m.performance.baseline == {}


def test_label_drift_alerts_do_not_depend_on_how_the_topics_interleave() -> None:
    """Labels consumed before their model's first prediction wait for it, so the label monitor
    sees every label in arrival order however predictions and labels interleave."""
    from streamwatch.decode import RawMessage

    s = Scenario(name="concept_drift", events=6000, change_at=3000, label_share=1.0,
                 label_delay_seconds=1.0, seed=5)  # fmt: skip
    preds, labels = generate(s)
    settings = load_config(None, models=s.config())
    p_msgs = [RawMessage(orjson.dumps(e)) for e in preds]
    l_msgs = [RawMessage(orjson.dumps(e)) for e in labels]

    def run(labels_first: int) -> set[tuple[str, str]]:
        engine, alerts = Engine(settings), []
        alerts += engine.process_labels(l_msgs[:labels_first]).alerts
        for k in range(0, len(p_msgs), 500):
            alerts += engine.process_predictions(p_msgs[k : k + 500]).alerts
            j = max(labels_first, k)
            alerts += engine.process_labels(l_msgs[j : j + 500]).alerts if j < k + 500 else []
        alerts += engine.process_labels(l_msgs[max(labels_first, len(p_msgs)) :]).alerts
        return {(a.kind, a.alert_id) for a in alerts if a.kind == "label_drift"}

    reference = run(0)
    assert reference, "flipped labels move the label distribution: label drift expected"
    assert run(1500) == reference


def _interleaved(events: list[tuple[int, str, Any]], seed: int, labels_ahead: bool) -> list[list]:
    """The two topics, each in its own order, read in random-sized batches by a consumer that
    takes whichever topic a coin picks (or, ``labels_ahead``, mostly the labels topic)."""
    rng = np.random.default_rng(seed)
    queues = {"p": [e for e in events if e[1] == "p"], "l": [e for e in events if e[1] == "l"]}
    pos = {"p": 0, "l": 0}
    batches = []
    while pos["p"] < len(queues["p"]) or pos["l"] < len(queues["l"]):
        kind = "l" if rng.random() < (0.8 if labels_ahead else 0.5) else "p"
        if pos[kind] >= len(queues[kind]):
            kind = "p" if kind == "l" else "l"
        n = int(rng.integers(1, 300))
        batches.append(queues[kind][pos[kind] : pos[kind] + n])
        pos[kind] += n
    return batches


def test_label_driven_alerts_do_not_depend_on_how_the_topics_interleave() -> None:
    """Joined events reach the baseline, the windows and the CUSUM in join-time order, and
    windows are judged at fixed points of that order, so the concept-drift and performance
    alerts (and their ids) are the same whether labels trail, interleave or run ahead."""
    events = _stream(8, 9_000, flip_at=4_500, delay_s=120.0)

    def run(batches: list[list]) -> tuple[list, PerformanceTracker]:
        t, alerts = _tracker(), []
        for b in batches:
            alerts += _run(t, b, batch=len(b))
        return [(a.alert_id, a.detected_at_ms, a.change_started_at_ms, a.statistic) for a in alerts], t

    reference, t0 = run([events[k : k + 400] for k in range(0, len(events), 400)])
    kinds = {(a.kind, a.status) for a in _run(_tracker(), events)}
    assert {("concept_drift", "firing"), ("performance", "firing")} <= kinds
    for seed, ahead in [(1, False), (2, True), (3, True)]:
        alerts, t = run(_interleaved(events, seed, ahead))
        assert alerts == reference, (seed, ahead)
        assert t.baseline == t0.baseline and t.joined_total == t0.joined_total
        assert t.cusum is not None and t0.cusum is not None
        assert t.cusum.to_dict() == t0.cusum.to_dict()


def test_a_version_4_snapshot_restores_with_an_empty_join_order() -> None:
    from streamwatch.decode import RawMessage

    s = Scenario(name="concept_drift", events=3000, change_at=2000, label_share=1.0,
                 label_delay_seconds=2.0, seed=5)  # fmt: skip
    preds, labels = generate(s)
    engine = Engine(load_config(None, models=s.config()))
    engine.process_predictions([RawMessage(orjson.dumps(e)) for e in preds])
    engine.process_labels([RawMessage(orjson.dumps(e)) for e in labels[:2500]])
    doc = orjson.loads(engine.take_dirty()[0].data)
    assert doc["version"] == 6
    for k in ("order", "label_watermark", "touched"):  # what version 5 added
        del doc["performance"][k]
    m = ModelMonitor.restore(orjson.dumps({**doc, "version": 4}))
    assert m.performance is not None and m.performance.joined_total == 2500 and len(m.performance.order) == 0


def _as_version_5(node: Any, key: str = "") -> Any:
    """A version 6 snapshot's document as version 5 wrote it: packed floats as lists of numbers
    (None for NaN), event hashes as decimal strings."""
    if isinstance(node, dict):
        if set(node) == {"f8", "shape"}:
            a = floats(node)
            return np.where(np.isnan(a), None, a).tolist()
        return {k: _as_version_5(v, k) for k, v in node.items()}
    if isinstance(node, list):
        if key == "h":
            return [str(h) for h in node]
        if key == "expired":
            return [[t, [str(h) for h in hs]] for t, hs in node]
        return [_as_version_5(v) for v in node]
    return node


def test_a_version_5_snapshot_restores_to_the_same_state() -> None:
    from streamwatch.decode import RawMessage

    s = Scenario(name="concept_drift", events=3000, change_at=2000, label_share=0.8,
                 label_delay_seconds=20.0, seed=6)  # fmt: skip
    preds, labels = generate(s)
    engine = Engine(load_config(None, models=s.config()))
    engine.process_predictions([RawMessage(orjson.dumps(e)) for e in preds])
    engine.process_labels([RawMessage(orjson.dumps(e)) for e in labels[:2000]])
    data = engine.take_dirty()[0].data
    doc = orjson.loads(data)
    packed_parts = str(doc).count("'f8'")
    assert packed_parts >= 3 and doc["performance"]["join"]["expired"] is not None
    old = orjson.dumps({**_as_version_5(doc), "version": 5})
    assert b'"f8"' not in old
    assert ModelMonitor.restore(old).snapshot() == ModelMonitor.restore(data).snapshot() == data


def test_joined_events_wait_only_while_an_earlier_join_can_still_come() -> None:
    t = PerformanceTracker("m", PerformanceSettings(reference_labels=50), false_alarm_events=100_000)
    ids = [f"e{i}" for i in range(100)]
    preds = [{"label": "a", "scores": {"a": 0.6, "b": 0.4}}] * 100
    times = np.arange(100, dtype=np.int64) * SEC

    def predict(sl: slice) -> None:
        predicted, scores = t.encode_predictions(preds[sl])
        t.observe_predictions(ids[sl], times[sl], predicted, scores)

    # labels 5 s behind their predictions, read before them: the first 50 predictions complete
    # labels up to 54 s, but the label of e50 (55 s) still waits for its prediction, which may
    # come at any time from 49 s on, so only joins up to 55 s are final
    t.observe_labels(ids, times + 5 * SEC, ["a"] * 100, [])
    predict(slice(0, 50))
    assert (t.joined_total, len(t.order)) == (50, 0)
    predict(slice(50, 100))
    assert (t.joined_total, len(t.order)) == (100, 0)
    # labels trailing their predictions (nothing waits) leave at once, even when no prediction
    # follows them any more
    ids2 = [f"f{i}" for i in range(100)]
    predicted, scores = t.encode_predictions(preds)
    t.observe_predictions(ids2, times + 200 * SEC, predicted, scores)
    t.observe_labels(ids2[:30], times[:30] + 900 * SEC, ["b"] * 30, [])
    assert (t.joined_total, len(t.order)) == (130, 0)


def test_rows_keeping_the_last_n_read_as_tailing_after_every_add() -> None:
    """The count-based window trims lazily (at twice its size), yet every read sees the last n."""
    rng = np.random.default_rng(11)
    lazy, eager = Rows(last=50), Rows()
    for _ in range(120):
        k = int(rng.integers(0, 30))
        cols = (
            rng.random(k),
            rng.random(k),
            rng.random((k, 3)),
            rng.integers(0, 9, k),
            rng.integers(0, 9, k).astype(np.uint64),
        )
        lazy.add(*cols)
        eager.add(*cols)
        eager.tail(50)
        if rng.random() < 0.3:
            assert len(lazy) == len(eager)
            assert orjson.dumps(lazy.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(
                eager.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY
            )
        assert sum(len(c[0]) for c in lazy.chunks) <= 2 * 50 + 30
