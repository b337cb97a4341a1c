"""Every simulated scenario, replayed through the core from files, raises what its ground truth says.

One run per scenario: ``generate`` writes the events, :func:`streamwatch.runtime.files.replay`
runs the engine over them (the path ``streamwatch replay`` takes, no broker), and the alerts are
judged against ``Scenario.truth()``: each expected alert fires on the right feature, after the
change began, and no input feature outside the change fires at all. ``none`` and
``label_delay`` stay quiet.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamwatch.config import load_config
from streamwatch.engine import Engine
from streamwatch.events import parse_timestamp
from streamwatch.performance.tracker import DELAY_BUCKETS
from streamwatch.runtime.files import replay
from streamwatch.simulate import SCENARIOS, Scenario, generate

# big enough for the calibrated detectors (1000 reference events, windows of 1000), small
# enough that the whole file runs in seconds
EVENTS, CHANGE = 4_500, 2_000
# alerts about the model's inputs; the output monitors (prediction_drift, label_drift) and the
# performance checks may follow any change that moves the predictions or the labels
INPUT_KINDS = {"data_drift", "unit_change", "column_swap", "new_category", "data_quality", "schema"}


def _replay(s: Scenario, tmp: Path) -> tuple[list[dict[str, Any]], Engine]:
    predictions, labels = generate(s)
    (tmp / "predictions.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in predictions))
    (tmp / "labels.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in labels))
    engine = Engine(load_config(None, models=s.config()))
    out = io.BytesIO()
    replay(engine, tmp / "predictions.jsonl", tmp / "labels.jsonl", out)
    return [orjson.loads(line) for line in out.getvalue().splitlines()], engine


def _scenario(name: str) -> Scenario:
    return Scenario(
        name=name,
        events=EVENTS,
        change_at=CHANGE,
        shift_feature="age" if name == "column_swap" else "income",
        # labels a few seconds behind, as in a live pipeline: delays longer than the stream itself
        # would make the first labelled events (the baseline) a sample of the whole stream
        label_delay_seconds=600.0 if name == "label_delay" else 5.0,
        seed=3,
    )


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_injected_change_is_found(name: str, tmp_path: Path) -> None:
    s = _scenario(name)
    truth = s.truth()
    alerts, _ = _replay(s, tmp_path)
    firing = [a for a in alerts if a["status"] == "firing"]
    first_change = min((parse_timestamp(c["start_time"]) for c in truth["changes"]), default=None)
    # nothing fires before anything changed
    assert all(
        first_change is not None and parse_timestamp(a["detected_at"]) >= first_change for a in firing
    ), [(a["kind"], a["feature"], a["detected_at"]) for a in firing]
    if not truth["expected_alerts"]:
        assert firing == [], f"{name} must stay quiet: {[(a['kind'], a['feature']) for a in firing]}"
        return
    for change in truth["changes"]:
        began = parse_timestamp(change["start_time"])
        for want in change["expected_alerts"]:
            hits = [
                a
                for a in firing
                if (a["kind"], a["feature"]) == (want["kind"], want["feature"])
                and parse_timestamp(a["detected_at"]) >= began
            ]
            seen = [(a["kind"], a["feature"]) for a in firing]
            assert hits, f"{name}: no {want} after {change['start_time']}: {seen}"
    affected = {f for c in truth["changes"] for f in c["features"]}
    strays = [(a["kind"], a["feature"]) for a in firing if a["kind"] in INPUT_KINDS and a["feature"]]
    assert all(set(f.split(",")) <= affected for _, f in strays), strays


def test_label_delay_shows_in_the_delay_histogram(tmp_path: Path) -> None:
    """The core raises no alert for slower labels; the delay histogram shows them."""
    s = _scenario("label_delay")
    alerts, engine = _replay(s, tmp_path)
    assert not [a for a in alerts if a["status"] == "firing"]
    tracker = engine.monitors[s.model_id].performance
    assert tracker is not None
    counts = tracker.readout().delay_counts
    beyond_an_hour = sum(counts[DELAY_BUCKETS.index(3600.0) + 1 :])
    # before the change ~0.25% of delays exceed an hour (mean 600 s), after it ~78% (mean 4 h)
    assert 0.3 < beyond_an_hour / sum(counts) < 0.5


def test_the_tour_finds_each_stage_in_order(tmp_path: Path) -> None:
    # labels 5 s behind: the baseline comes from before the flip
    s = Scenario(name="tour", events=8_000, label_share=0.8, label_delay_seconds=5.0, seed=5)
    truth = s.truth()
    assert [c["scenario"] for c in truth["changes"]] == [
        "concept_drift",
        "mean_shift",
        "new_category",
        "unit_change",
    ]
    alerts, _ = _replay(s, tmp_path)
    for change in truth["changes"]:
        want = change["expected_alerts"][0]
        hit = next(a for a in alerts if (a["kind"], a["feature"]) == (want["kind"], want["feature"]))
        assert parse_timestamp(hit["detected_at"]) >= parse_timestamp(change["start_time"])


def test_the_ground_truth_names_every_change() -> None:
    for name in SCENARIOS:
        t = _scenario(name).truth()
        assert t["scenario"] == name and t["description"]
        assert len(t["changes"]) == (0 if name == "none" else 4 if name == "tour" else 1)
        for c in t["changes"]:
            assert {"kind", "feature", "features", "start_index", "start_time", "expected_alerts"} <= set(c)


def test_scenarios_are_reproducible_and_validated() -> None:
    a = generate(Scenario(name="gradual_drift", events=500, change_at=100, seed=9))
    b = generate(Scenario(name="gradual_drift", events=500, change_at=100, seed=9))
    assert a == b
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        Scenario(name="nope")
    with pytest.raises(ValueError, match="change_at"):
        Scenario(name="mean_shift", events=100, change_at=100)
    with pytest.raises(ValueError, match="tour needs"):
        Scenario(name="tour", numeric_features=2)
