"""The exporter's cardinality guard: a model exports at most ``metrics.max_series_per_model``
series, keeps its firing and most drifted features and its largest classes, and says what it
withheld."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.config import ConfigError, load_config
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.events import format_timestamp
from streamwatch.exporter import Exporter

T0 = 1_700_000_000_000
WIDE = "wide"
FEATURES = [f"f{j:03d}" for j in range(500)]
SHIFTED = {"f007": 4.0, "f250": 3.0, "f499": 5.0}  # planted mean shifts, in sd
CAP = 300
CLASSES = [f"c{k:02d}" for k in range(12)]

Sample = tuple[str, dict[str, str], float]


def _messages(events: list[dict[str, Any]]) -> list[RawMessage]:
    return [RawMessage(orjson.dumps(ev), None) for ev in events]


def _wide_events(start: int, n: int, shifted: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    x = rng.normal(size=(n, len(FEATURES))).round(3)
    if shifted:
        for name, sd in SHIFTED.items():
            x[:, FEATURES.index(name)] += sd
    return [
        {
            "event_id": f"w{start + i}",
            "model_id": WIDE,
            "timestamp": format_timestamp(T0 + 1000 * (start + i)),
            "features": dict(zip(FEATURES, x[i].tolist(), strict=True)),
            "prediction": {"label": "yes", "scores": {"no": 0.3, "yes": 0.7}},
        }
        for i in range(n)
    ]


def _samples(text: str) -> list[Sample]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _of(samples: list[Sample], model: str) -> list[Sample]:
    return [s for s in samples if s[1].get("model") == model]


def _value(samples: list[Sample], name: str, model: str) -> float:
    (v,) = [s[2] for s in samples if s[0] == name and s[1].get("model") == model]
    return v


def _features(samples: list[Sample]) -> set[str]:
    return {s[1]["feature"] for s in samples if "feature" in s[1]}


@pytest.fixture(scope="module")
def wide() -> Engine:
    """A model of 500 numeric features: reference, a quiet stretch, then three shifted features."""
    settings = load_config(
        None,
        models={WIDE: {"features": dict.fromkeys(FEATURES, "numeric")}},
        metrics={"max_series_per_model": CAP},
        drift={"reference_size": 500, "window_size": 500, "step": 100},
    )
    engine = Engine(settings)
    rng = np.random.default_rng(7)
    for start in range(0, 2000, 500):
        engine.process_predictions(_messages(_wide_events(start, 500, False, rng)))
    for start in range(2000, 3000, 500):
        engine.process_predictions(_messages(_wide_events(start, 500, True, rng)))
    return engine


def _uncapped(engine: Engine) -> list[Sample]:
    exporter = Exporter(engine)
    exporter.collector.max_series = 10**9
    return _samples(exporter.render().decode())


def test_the_limit_is_configured_with_a_floor() -> None:
    models = {"m": {"features": {"a": "numeric"}}}
    assert load_config(None, models=models).metrics.max_series_per_model == 2000
    with pytest.raises(ConfigError, match="max_series_per_model"):
        load_config(None, models=models, metrics={"max_series_per_model": 5})


def test_a_wide_model_exports_at_most_its_cap_and_says_how_many_it_withheld(wide: Engine) -> None:
    full = _of(_uncapped(wide), WIDE)
    assert len(full) > 3000  # 500 features x (psi and cusum score and threshold, status, 2 quality)
    exporter = Exporter(wide)
    capped = _samples(exporter.render().decode())
    mine = _of(capped, WIDE)
    assert len(mine) <= CAP
    assert len(mine) > CAP - 7  # whole features are kept or withheld: at most one feature unused

    # model-level families are all there, with the same values
    detail = {"feature", "class"}
    level = sorted((n, sorted(lb.items()), v) for n, lb, v in full if not detail & lb.keys())
    kept_level = sorted(
        (n, sorted(lb.items()), v)
        for n, lb, v in mine
        if not detail & lb.keys() and not n.startswith("streamwatch_series_")
    )
    assert kept_level == [s for s in level if not s[0].startswith("streamwatch_series_")]
    assert ("streamwatch_events_total", {"model": WIDE, "type": "prediction"}, 3000) in mine

    # the gauge counts this scrape's withheld series; the counter the distinct ones so far
    withheld = len(full) - len(mine)
    assert _value(capped, "streamwatch_series_withheld", WIDE) == withheld
    assert _value(capped, "streamwatch_series_dropped_total", WIDE) == withheld
    again = _samples(exporter.render().decode())
    assert _value(again, "streamwatch_series_withheld", WIDE) == withheld
    assert _value(again, "streamwatch_series_dropped_total", WIDE) == withheld  # the same series

    # a feature is exported whole or not at all
    per_feature = Counter(lb["feature"] for _, lb, _ in full if "feature" in lb)
    kept = Counter(lb["feature"] for _, lb, _ in mine if "feature" in lb)
    assert all(kept[f] == per_feature[f] for f in kept)


def test_the_firing_and_most_drifted_features_are_kept(wide: Engine) -> None:
    full = _of(_uncapped(wide), WIDE)
    firing = {lb["feature"] for n, lb, v in full if n == "streamwatch_feature_drift_status" and v == 1}
    assert firing == set(SHIFTED)

    def ratios(detector: str) -> dict[str, float]:
        score = {
            lb["feature"]: v
            for n, lb, v in full
            if n == "streamwatch_feature_drift_score" and lb["detector"] == detector
        }
        thr = {
            lb["feature"]: v
            for n, lb, v in full
            if n == "streamwatch_feature_drift_threshold" and lb["detector"] == detector
        }
        return {f: score[f] / thr[f] for f in score if f in thr}

    psi, cusum = ratios("psi"), ratios("cusum")
    ratio = {f: max(psi.get(f, -math.inf), cusum.get(f, -math.inf)) for f in FEATURES}
    ranked = sorted(FEATURES, key=lambda f: (f not in firing, -ratio[f], FEATURES.index(f)))

    kept = _features(_of(_samples(Exporter(wide).render().decode()), WIDE))
    assert firing <= kept
    assert kept == set(ranked[: len(kept)])  # the top of the ranking, nothing else
    level = sum(1 for _, lb, _ in full if "feature" not in lb)
    assert len(kept) == (CAP - level) // 7  # 7 series a feature, after the model-level ones


def test_the_counter_counts_distinct_series_and_never_falls(wide: Engine) -> None:
    exporter = Exporter(wide)
    samples = _samples(exporter.render().decode())
    before = _value(samples, "streamwatch_series_dropped_total", WIDE)
    kept_before = _features(_of(samples, WIDE))
    # a lower cap for a while withholds more; back at the old cap, the gauge drops back and the
    # counter keeps what was withheld once
    exporter.collector.max_series = 100
    low = _samples(exporter.render().decode())
    kept_low = _features(_of(low, WIDE))
    assert kept_low < kept_before and len(_of(low, WIDE)) <= 100
    newly = sum(7 for _ in kept_before - kept_low)
    assert _value(low, "streamwatch_series_dropped_total", WIDE) == before + newly
    exporter.collector.max_series = CAP
    back = _samples(exporter.render().decode())
    assert _value(back, "streamwatch_series_withheld", WIDE) == before
    assert _value(back, "streamwatch_series_dropped_total", WIDE) == before + newly


def test_before_the_reference_features_rank_by_missing_and_invalid_values() -> None:
    names = [f"f{j:02d}" for j in range(60)]
    settings = load_config(
        None,
        models={"m": {"features": dict.fromkeys(names, "numeric")}},
        drift={"reference_size": 500, "window_size": 500, "step": 100},
    )
    engine = Engine(settings)
    events = []
    for i in range(100):
        feats: dict[str, Any] = {n: float(i) for n in names}
        feats["f42"] = None  # missing in every event
        feats["f13"] = "x" if i % 2 else 1.0  # invalid in half
        del feats["f30"]  # absent in every event
        events.append(
            {
                "event_id": str(i),
                "model_id": "m",
                "timestamp": format_timestamp(T0 + i),
                "features": feats,
                "prediction": {"label": "a"},
            }
        )
    engine.process_predictions(_messages(events))
    full = _of(_uncapped(engine), "m")
    level = sum(1 for _, lb, _ in full if "feature" not in lb)
    assert len(full) == level + 2 * len(names)  # no reference yet: the two quality counters
    exporter = Exporter(engine)
    exporter.collector.max_series = level + 7  # room for three features
    samples = _of(_samples(exporter.render().decode()), "m")
    assert _features(samples) == {"f30", "f42", "f13"}
    assert _value(samples, "streamwatch_series_withheld", "m") == 2 * (len(names) - 3)


def _multiclass(cap: int) -> tuple[Engine, Counter[str]]:
    settings = load_config(
        None,
        models={"mc": {"features": {"a": "numeric"}}},
        metrics={"max_series_per_model": cap},
        drift={"reference_size": 100, "window_size": 100, "step": 100, "cusum": False},
        performance={"window_events": 1000, "estimate": False, "concept_drift": False},
    )
    engine = Engine(settings)
    # class k is labelled 12 - k times in every 78 events: supports all differ
    cycle = [c for k, c in enumerate(CLASSES) for _ in range(len(CLASSES) - k)]
    truth = [cycle[i % len(cycle)] for i in range(780)]
    preds = [
        {
            "event_id": f"e{i}",
            "model_id": "mc",
            "timestamp": format_timestamp(T0 + 1000 * i),
            "features": {"a": float(i % 13)},
            "prediction": {"label": truth[(i * 7) % len(truth)] if i % 3 == 0 else truth[i]},
        }
        for i in range(len(truth))
    ]
    labels = [
        {"event_id": p["event_id"], "model_id": "mc", "timestamp": p["timestamp"], "label": t}
        for p, t in zip(preds, truth, strict=True)
    ]
    engine.process_predictions(_messages(preds))
    engine.process_labels(_messages(labels))
    return engine, Counter(truth)


def test_per_class_performance_keeps_the_classes_with_most_labels() -> None:
    engine, support = _multiclass(10)
    full = _of(_uncapped(engine), "mc")
    per_class = Counter(lb["class"] for n, lb, _ in full if n == "streamwatch_performance" and lb["class"])
    assert set(per_class) == set(CLASSES)
    level = sum(1 for _, lb, _ in full if "feature" not in lb and not lb.get("class"))
    features = sum(1 for _, lb, _ in full if "feature" in lb)
    # room for the one feature and three classes (each kind may take half of the budget, and
    # what the other does not need)
    size = per_class[CLASSES[0]]
    assert 3 * size >= features
    cap = level + features + 3 * size
    engine.settings.metrics.max_series_per_model = cap
    mine = _of(_samples(Exporter(engine).render().decode()), "mc")
    kept = {lb["class"] for n, lb, _ in mine if n == "streamwatch_performance" and lb["class"]}
    assert kept == {c for c, _ in support.most_common(3)} == {"c00", "c01", "c02"}
    assert len(mine) <= cap
    assert _features(mine) == {"a"}
    withheld = _value(mine, "streamwatch_series_withheld", "mc")
    assert withheld == sum(per_class.values()) - 3 * size
    # the model-level performance (accuracy, macro averages) is never withheld
    model_level = {lb["metric"] for n, lb, _ in mine if n == "streamwatch_performance" and not lb["class"]}
    assert {"accuracy", "macro_f1"} <= model_level


def test_label_values_are_escaped() -> None:
    name = 'a"b\\c\nd'
    settings = load_config(None, models={"m": {"features": {name: "numeric", "plain": "numeric"}}})
    engine = Engine(settings)
    ev = {"event_id": "1", "model_id": "m", "timestamp": format_timestamp(T0), "features": {"plain": 1.0}}
    engine.process_predictions(_messages([{**ev, "prediction": {"label": "a"}}]))
    samples = _samples(Exporter(engine).render().decode())
    assert ("streamwatch_feature_missing_values_total", {"model": "m", "feature": name}, 1) in samples
