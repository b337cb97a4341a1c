"""The HTML report: built from replays of simulated streams with known changes, self-contained,
escaped; the bounded histories behind its "over time" charts; the command's exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from streamwatch.config import load_config
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.history import DriftHistory, PerformanceHistory
from streamwatch.monitor import ModelMonitor
from streamwatch.report import from_replay, render
from streamwatch.report.command import main
from streamwatch.report.words import after, found_after
from streamwatch.simulate import Scenario, generate

DRIFT = {"reference_size": 500, "window_size": 500, "step": 50}
PERFORMANCE = {"window_seconds": 10, "min_labels": 100}
EVIL_MODEL = "<script>alert('m')</script>&co"
EVIL_FEATURE = '"><img src=x onerror=alert(1)>'


def write_stream(d: Path, scenario: Scenario, rename: dict[str, str] | None = None) -> Path:
    """Events and a config for ``scenario`` in ``d``; ``rename`` renames features in both."""
    rename = rename or {}
    preds, labels = generate(scenario)
    for ev in preds:
        ev["features"] = {rename.get(k, k): v for k, v in ev["features"].items()}
    d.mkdir(parents=True, exist_ok=True)
    (d / "predictions.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in preds))
    (d / "labels.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in labels))
    models = scenario.config()
    for m in models.values():
        m["features"] = {rename.get(k, k): v for k, v in m["features"].items()}
    doc = {"drift": DRIFT, "performance": PERFORMANCE, "models": models}
    (d / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


def scenario(name: str, **kw: Any) -> Scenario:
    return Scenario(
        name=name, events=6000, change_at=3000, numeric_features=2, shift_sigmas=1.5, seed=3, **kw
    )


@pytest.fixture(scope="module")
def mean_shift(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = write_stream(tmp_path_factory.mktemp("mean_shift"), scenario("mean_shift"))
    inp = from_replay(load_config(d / "config.yaml"), d / "predictions.jsonl", d / "labels.jsonl")
    return d, render(inp)


@pytest.fixture(scope="module")
def concept(tmp_path_factory: pytest.TempPathFactory) -> str:
    # labels 5 s behind, so the baseline (the first labelled events) comes from before the flip
    d = write_stream(tmp_path_factory.mktemp("concept"), scenario("concept_drift", label_delay_seconds=5.0))
    inp = from_replay(load_config(d / "config.yaml"), d / "predictions.jsonl", d / "labels.jsonl")
    return render(inp)


def sections(page: str) -> list[str]:
    return re.findall(r'<section class="([a-z-]+)"', page)


def test_every_section_of_the_model_is_there(mean_shift: tuple[Path, str]) -> None:
    _, page = mean_shift
    assert page.startswith("<!DOCTYPE html>")
    assert sections(page) == ["model", "monitored", "distributions", "drift", "performance", "alerts"]
    # one distribution and one drift chart per feature and output
    for name in (
        "age",
        "income",
        "country",
        "prediction: score",
        "prediction: predicted_class",
        "label: label",
    ):
        assert f"<h4>{name}" in page
    assert page.count('class="chartbox dist"') == 6
    assert page.count('class="chartbox drift-chart"') == 6
    assert 'class="chartbox perf-chart"' in page and 'class="chartbox coverage-chart"' in page


def test_the_shift_is_in_the_status_and_the_alert_list_in_words(mean_shift: tuple[Path, str]) -> None:
    _, page = mean_shift
    assert "<b>Firing now:</b>" in page and "data_drift income" in page
    items = re.findall(r'<li class="alert firing" data-kind="data_drift">(.*?)</li>', page, re.S)
    income = [i for i in items if "data_drift · income" in i]
    assert income, items
    found = r"Detected at 2027-01-01 \S+ UTC; began about 2027-01-01 \S+ UTC: found [\d.]+ (s|min) after it"
    assert re.search(found, income[0])
    assert 'class="badge drifting"' in page  # the feature table shows it


def test_concept_drift_and_performance_over_time(concept: str) -> None:
    assert 'data-kind="concept_drift"' in concept
    assert "inputs did not drift" in concept  # the alert's own sentence, escaped and shown
    perf = concept[concept.index('<section class="performance">') : concept.index('<section class="alerts">')]
    assert perf.count("<circle") >= 10  # several windows, each a point
    assert "The newest" in perf and "<td" in perf


def test_self_contained_no_external_references(mean_shift: tuple[Path, str]) -> None:
    _, page = mean_shift
    assert not re.search(r"https?://", page)
    assert "<script" not in page and '<link rel="stylesheet"' not in page and "@import" not in page
    assert "default-src 'none'" in page  # the browser may load nothing either


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    d = write_stream(tmp_path, scenario("mean_shift", model_id=EVIL_MODEL), {"income": EVIL_FEATURE})
    inp = from_replay(load_config(d / "config.yaml"), d / "predictions.jsonl", d / "labels.jsonl")
    page = render(inp)
    assert any(a["feature"] == EVIL_FEATURE for a in inp.alerts)  # the drift was found, and shown
    assert EVIL_MODEL not in page and EVIL_FEATURE not in page
    assert "<img" not in page and "<script" not in page
    assert "&lt;script&gt;alert(&#x27;m&#x27;)&lt;/script&gt;&amp;co" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


# -- the command -----------------------------------------------------------------------------


def test_command_writes_the_report(mean_shift: tuple[Path, str], tmp_path: Path, capsys: Any) -> None:
    d, _ = mean_shift
    out = tmp_path / "sub" / "r.html"
    args = ["--config", str(d / "config.yaml"), "--predictions", str(d / "predictions.jsonl")]
    assert main([*args, "--model", "credit-risk", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert out.read_text().count('<section class="model"') == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "--predictions FILE"),
        (["--predictions", "P", "--from-state"], "choose one source"),
        (["--predictions", "/nonexistent.jsonl"], "does not exist"),
        (["--predictions", "P", "--model", "nope"], "not in the config"),
        (["--predictions", "P", "--bootstrap-servers", "x:1"], "only applies with --from-state"),
    ],
)
def test_usage_mistakes_exit_2_with_one_message(
    mean_shift: tuple[Path, str], tmp_path: Path, capsys: Any, extra: list[str], says: str
) -> None:
    d, _ = mean_shift
    extra = [str(d / "predictions.jsonl") if x == "P" else x for x in extra]
    assert main(["--config", str(d / "config.yaml"), *extra, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_bad_config_exits_2(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "c.yaml").write_text("models: {m: {features: {}}}\n")
    (tmp_path / "p.jsonl").write_text("")
    assert main(["--config", str(tmp_path / "c.yaml"), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "Traceback" not in capsys.readouterr().err


# -- histories -------------------------------------------------------------------------------


def test_drift_history_is_bounded_and_keeps_the_peaks() -> None:
    h = DriftHistory(features=2, capacity=8)
    scores = np.zeros(1000)
    scores[537] = 9.0  # one short alarm
    for i, s in enumerate(scores):
        h.record(i * 10, i + 1, [s, 1.0], [2.0, 2.0], [0.5], [4.0])
        assert len(h) <= 8 + 1
    ser = h.series()
    assert h.n <= 8 and h.stride >= 128
    assert ser["times_ms"][-1] == 9990 and list(ser["times_ms"]) == sorted(ser["times_ms"])
    assert ser["scores"][:, 0].max() == 9.0  # never averaged away
    assert np.isnan(ser["cusum"][:, 1]).all()  # the categorical feature has no CUSUM
    back = DriftHistory.from_dict(orjson.loads(orjson.dumps(h.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)))
    assert orjson.dumps(back.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(
        h.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY
    )
    for k, v in back.series().items():
        np.testing.assert_array_equal(v, ser[k])


def test_performance_history_keeps_the_newest_windows() -> None:
    h = PerformanceHistory(capacity=3)
    for i in range(10):
        h.record(i, i * 1000, {"accuracy": 0.9}, {"accuracy": 0.92}, 0.5, 10, 20)
    assert [r["window"] for r in h.rows()] == [7, 8, 9]
    assert PerformanceHistory.from_dict(orjson.loads(orjson.dumps(h.to_dict()))).rows() == h.rows()


def test_monitor_records_history_and_restores_snapshots_without_it() -> None:
    s = scenario("mean_shift")
    preds, labels = generate(s)
    settings = load_config(None, drift=DRIFT, performance=PERFORMANCE, models=s.config())

    engine = Engine(settings)
    engine.process_predictions([RawMessage(orjson.dumps(e)) for e in preds])
    engine.process_labels([RawMessage(orjson.dumps(e)) for e in labels])
    m = engine.monitors["credit-risk"]
    evaluations = (6000 - DRIFT["reference_size"] - DRIFT["window_size"]) // DRIFT["step"] + 1
    assert len(m.history) == evaluations  # once per window test, not per event
    assert m.performance is not None and len(m.performance.history) > 0
    assert ModelMonitor.restore(m.snapshot()).snapshot() == m.snapshot()
    # a snapshot of a build before the history: restores, with an empty one
    doc = orjson.loads(m.snapshot())
    del doc["history"], doc["performance"]["history"]
    for o in doc["outputs"].values():
        del o["history"]
    old = ModelMonitor.restore(orjson.dumps(doc))
    assert len(old.history) == 0 and old.performance is not None and len(old.performance.history) == 0
    assert old.events_seen == m.events_seen


def test_durations_in_words() -> None:
    assert after(250) == "0.25 s"
    assert after(4 * 60_000) == "4 min"
    assert after(2 * 3600_000 + 5 * 60_000) == "2 h 5 min"
    assert after(3 * 86400_000) == "3.0 days"
    assert found_after(10_000, 10_000) == "found as it began"
    assert found_after(10_000, None) == "start not estimated"
