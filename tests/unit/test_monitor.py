"""The per-model monitor: finds a planted drift, stays quiet without one, restores exactly."""

from __future__ import annotations

import numpy as np
import pytest

from streamwatch.alerts import Alert
from streamwatch.config import DriftSettings, FeatureType
from streamwatch.decode import PredictionGroup
from streamwatch.monitor import ModelMonitor, SnapshotError
from streamwatch.simulate import Scenario, generate


def _groups(events: list[dict], sizes: list[int]) -> list[PredictionGroup]:
    out, i, k = [], 0, 0
    while i < len(events):
        size = sizes[k % len(sizes)]
        g = PredictionGroup(events[0]["model_id"])
        for ev in events[i : i + size]:
            g.event_ids.append(ev["event_id"])
            g.times_ms.append(int(np.datetime64(ev["timestamp"].rstrip("Z"), "ms").astype(np.int64)))
            g.versions.append(ev.get("model_version"))
            g.features.append(ev["features"])
            g.predictions.append(ev["prediction"])
        out.append(g)
        i += size
        k += 1
    return out


def _monitor(s: Scenario, drift: DriftSettings | None = None) -> ModelMonitor:
    feats = {k: FeatureType(v) for k, v in s.config()[s.model_id]["features"].items()}
    return ModelMonitor(s.model_id, feats, drift or DriftSettings())


def _run(m: ModelMonitor, groups: list[PredictionGroup]) -> list:
    alerts = []
    for g in groups:
        alerts += m.process(g)
    return alerts


def test_finds_mean_shift_on_the_right_feature_with_change_start() -> None:
    s = Scenario(events=12_000, change_at=6_000, shift_sigmas=1.0, seed=11)
    preds, _ = generate(s)
    alerts = _run(_monitor(s), _groups(preds, [777]))
    firing = [a for a in alerts if a.status == "firing"]
    assert [a.feature for a in firing] == ["income"]
    a = firing[0]
    # the CUSUM sees a one-sd shift within tens of events, long before a window of 1000 fills
    assert a.kind == "data_drift" and a.detector == "cusum" and a.statistic > a.threshold
    assert 6_000 < a.events_seen <= 6_100
    assert a.detected_at_ms == s.time_ms(a.events_seen - 1)
    assert a.change_started_at_ms is not None
    assert abs(a.change_started_at_ms - s.time_ms(6_000)) <= 50 * 1000 / s.rate_per_second


def test_window_test_alone_finds_the_shift_within_a_window() -> None:
    s = Scenario(events=12_000, change_at=6_000, shift_sigmas=1.0, seed=11)
    preds, _ = generate(s)
    alerts = _run(_monitor(s, DriftSettings(cusum=False)), _groups(preds, [777]))
    firing = [a for a in alerts if a.status == "firing"]
    assert [(a.feature, a.detector) for a in firing] == [("income", "psi")]
    assert 6_000 < firing[0].events_seen <= 7_000
    assert firing[0].threshold >= 0.1  # the effect floor
    began = firing[0].change_started_at_ms
    assert began is not None and abs(began - s.time_ms(6_000)) <= 2 * 100 * 1000 / s.rate_per_second


def test_quiet_without_change_within_the_false_alarm_budget() -> None:
    # 30 null streams of 9 000 monitored events against a budget of one false alert per
    # 100 000 events per model: 2.7 expected at most; 9 is beyond its 99.9 % Poisson quantile
    false_alerts = 0
    for seed in range(30):
        s = Scenario(name="none", events=10_000, seed=seed)
        preds, _ = generate(s)
        false_alerts += len(_run(_monitor(s), _groups(preds, [1000])))
    assert false_alerts <= 9


def test_alert_resolves_when_the_shift_goes_away() -> None:
    s = Scenario(events=6_000, change_at=2_000, seed=3)
    preds, _ = generate(s)
    back = generate(Scenario(name="none", events=4_000, seed=4))[0]
    for i, ev in enumerate(back):  # continue the stream after the drift, from the reference again
        ev["timestamp"] = preds[-1]["timestamp"]
        ev["event_id"] = f"back-{i}"
    alerts = _run(_monitor(s), _groups(preds + back, [500]))
    assert [(a.feature, a.status) for a in alerts if a.kind == "data_drift"] == [
        ("income", "firing"),
        ("income", "resolved"),
    ]
    # income moves the model's score, so the prediction monitor sees it too, and then not
    outputs = [(a.kind, a.feature, a.status) for a in alerts if a.kind != "data_drift"]
    assert {o[:2] for o in outputs} == {("prediction_drift", "score")}
    assert [o[2] for o in outputs] == ["firing", "resolved"] * (len(outputs) // 2)


def test_same_alerts_however_batched_and_across_snapshots() -> None:
    s = Scenario(events=8_000, change_at=4_000, seed=2)
    preds, _ = generate(s)
    whole = _run(_monitor(s), _groups(preds, [8_000]))
    m = _monitor(s)
    pieces = []
    for i, g in enumerate(_groups(preds, [1, 333, 50, 999])):
        if i % 3 == 0:  # restore from a snapshot between batches, during warm-up too
            m = ModelMonitor.restore(m.snapshot())
        pieces += m.process(g)

    # the same alerts; their order may differ where a drift alert held for the quality checks
    # (one root cause, one alert) is released in a later batch than an output alert after it
    def order(alerts: list[Alert]) -> list[Alert]:
        return sorted(alerts, key=lambda a: (a.events_seen, a.kind, a.feature or ""))

    assert whole and order(pieces) == order(whole)
    assert m.snapshot() == ModelMonitor.restore(m.snapshot()).snapshot()


def test_snapshot_rejects_other_formats() -> None:
    with pytest.raises(SnapshotError):
        ModelMonitor.restore(b'{"format": "streamwatch.model-monitor", "version": 99}')
    with pytest.raises(SnapshotError):
        ModelMonitor.restore(b"\x80\x04pickle")


def test_missing_and_invalid_values_are_counted_not_fatal() -> None:
    m = ModelMonitor(
        "m",
        {"a": FeatureType.NUMERIC, "c": FeatureType.CATEGORICAL},
        DriftSettings(reference_size=50),
    )
    g = PredictionGroup("m")
    rows = [
        {"a": 1.0, "c": "x"},
        {"a": None},
        {"a": "12", "c": 5},
        {"a": True, "c": None},
        {"a": 2.0},
    ]
    for i, r in enumerate(rows):
        g.event_ids.append(str(i))
        g.times_ms.append(i)
        g.versions.append(None)
        g.features.append(r)
        g.predictions.append({"label": "x"})
    assert m.process(g) == []
    assert m.missing.tolist() == [1, 3]  # a: None; c: absent twice and null once
    assert m.invalid.tolist() == [2, 1]  # a: "12" and True; c: 5


def _numeric_groups(x: np.ndarray, sizes: list[int], names: list[str]) -> list[PredictionGroup]:
    groups, i, k = [], 0, 0
    while i < len(x):
        size = sizes[k % len(sizes)]
        g = PredictionGroup("m")
        for r in range(i, min(i + size, len(x))):
            g.event_ids.append(str(r))
            g.times_ms.append(1000 * r)
            g.versions.append("1")
            g.features.append(
                {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, x[r], strict=True)}
            )
            g.predictions.append({"label": "x"})
        groups.append(g)
        i += size
        k += 1
    return groups


def test_alerts_do_not_depend_on_batching_when_cusum_and_window_interleave() -> None:
    # a variance change (the window test's to find) and later a mean shift (the CUSUM's), so
    # that in large batches a late CUSUM alarm could overtake an earlier window evaluation
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9000, 2))
    x[3000:, 0] *= 2.5
    x[4500:, 1] += 1.0
    names = ["a", "b"]
    feats = {n: FeatureType.NUMERIC for n in names}
    runs = []
    for sizes in ([1], [100], [3000], [9000], [17, 450, 2999]):
        m = ModelMonitor("m", feats, DriftSettings())
        runs.append(
            [
                (a.feature, a.detector, a.status, a.events_seen, a.change_started_at_ms)
                for a in _run(m, _numeric_groups(x, sizes, names))
            ]
        )
    assert runs[0] and all(r == runs[0] for r in runs), runs


def test_a_constant_feature_in_the_reference_is_watched_without_a_cusum() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4000, 2))
    x[:, 0] = 1.0  # constant during warm-up ...
    x[3000:, 0] = rng.standard_normal(1000) + 3  # ... then it moves
    m = ModelMonitor("m", {"a": FeatureType.NUMERIC, "b": FeatureType.NUMERIC}, DriftSettings())
    alerts = _run(m, _numeric_groups(x, [500], ["a", "b"]))
    assert m.cusums[0] is None and m.cusums[1] is not None
    assert [(a.feature, a.detector) for a in alerts if a.status == "firing"] == [("a", "psi")]
    assert ModelMonitor.restore(m.snapshot()).snapshot() == m.snapshot()


@pytest.mark.parametrize("kinds", [["numeric"], ["categorical"]])
def test_warm_up_snapshot_of_a_single_kind_model(kinds: list[str]) -> None:
    feats = {"f": FeatureType(kinds[0])}
    m = ModelMonitor("m", feats, DriftSettings())
    g = PredictionGroup("m")
    for i in range(10):
        g.event_ids.append(str(i))
        g.times_ms.append(i)
        g.versions.append(None)
        g.features.append({"f": float(i) if kinds[0] == "numeric" else str(i)})
        g.predictions.append({"label": "x"})
    m.process(g)
    assert ModelMonitor.restore(m.snapshot()).snapshot() == m.snapshot()


def test_missing_values_do_not_multiply_calibrations() -> None:
    # 10 % missing values make every window count different; thresholds are cached per count
    # rounded down to two digits, so only a handful are ever computed
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6000, 3))
    x[rng.random(x.shape) < 0.1] = np.nan
    m = ModelMonitor("m", {n: FeatureType.NUMERIC for n in "abc"}, DriftSettings())
    _run(m, _numeric_groups(x, [1000], list("abc")))
    assert m.tests is not None
    assert all(len(cache) <= 3 for cache in m.tests._cache), [sorted(c) for c in m.tests._cache]


def test_a_model_drift_block_overrides_only_its_own_fields() -> None:
    from streamwatch.config import load_config

    s = load_config(
        None,
        drift={"window_size": 500, "step": 50},
        models={"m": {"features": {"x": "numeric"}, "drift": {"reference_size": 300}}},
    )
    d = s.drift_for("m")
    assert (d.window_size, d.step, d.reference_size) == (500, 50, 300)
