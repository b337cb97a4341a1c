"""The dev-prod and data-quality checks inside ModelMonitor: each planted case is found and
named within 500 events of the change, with one alert per root cause; clean streams stay quiet;
the state restores exactly and does not depend on batch boundaries."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from streamwatch.alerts import Alert
from streamwatch.config import DriftSettings, FeatureType, QualitySettings
from streamwatch.decode import PredictionGroup
from streamwatch.monitor import ModelMonitor
from streamwatch.profile import build_profile
from streamwatch.quality.schema import SchemaScan
from streamwatch.quality.watch import QualityWatch
from streamwatch.simulate import Scenario, generate

T0 = 1_800_000_000_000
CHANGE = 3_000
QUALITY_KINDS = {"unit_change", "column_swap", "new_category", "data_quality"}
NUMERIC = ["height_cm", "width_cm", "depth_cm", "weight_kg", "temp_c", "duration_s"]
FEATURES = {n: FeatureType.NUMERIC for n in NUMERIC} | {"gender": FeatureType.CATEGORICAL}


def _values(n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Features of a product-like stream: overlapping sizes, a weight, a temperature, a duration."""
    return {
        "height_cm": rng.normal(170.0, 10.0, n),
        "width_cm": rng.normal(165.0, 12.0, n),  # overlaps height: half a sd apart
        "depth_cm": rng.normal(160.0, 9.0, n),
        "weight_kg": rng.gamma(9.0, 8.0, n),
        "temp_c": rng.normal(20.0, 5.0, n),
        "duration_s": rng.gamma(3.0, 3.0, n),
        "gender": rng.choice(np.array(["F", "M", "X"], dtype=object), size=n, p=[0.5, 0.45, 0.05]),
    }


def _rows(cols: dict[str, Any]) -> list[dict[str, Any]]:
    lists = {k: (np.round(v, 4).tolist() if v.dtype.kind == "f" else v.tolist()) for k, v in cols.items()}
    return [dict(zip(lists, vals, strict=True)) for vals in zip(*lists.values(), strict=True)]


def _stream(case: str | None, n: int = 4_500, seed: int = 0, change: int = CHANGE) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    c = _values(n, rng)
    after = slice(change, n)
    if case == "x2.54":  # inches -> centimetres
        c["height_cm"][after] *= 2.54
    elif case == "x1000":  # seconds -> milliseconds
        c["duration_s"][after] *= 1000.0
    elif case == "c_to_f":
        c["temp_c"][after] = c["temp_c"][after] * 1.8 + 32.0
    elif case == "swap":
        c["height_cm"][after], c["width_cm"][after] = (
            c["width_cm"][after].copy(),
            c["height_cm"][after].copy(),
        )
    elif case == "rotate":
        h, w, d = (c[k][after].copy() for k in ("height_cm", "width_cm", "depth_cm"))
        c["height_cm"][after], c["width_cm"][after], c["depth_cm"][after] = w, d, h
    rows = _rows(c)
    hit = np.random.default_rng([seed, 9]).random(n) < 0.02
    for i in range(change, n):
        if case == "new_category" and hit[i]:
            rows[i]["gender"] = "diverse"
        elif case == "all_null":
            rows[i]["weight_kg"] = None
        elif case == "string":
            rows[i]["temp_c"] = "n/a"  # the documented rule: the event is kept, the value is invalid
    return rows


def _group(rows: list[dict[str, Any]], first: int) -> PredictionGroup:
    n = len(rows)
    return PredictionGroup(
        "m",
        [f"e{first + i}" for i in range(n)],
        [T0 + (first + i) * 1000 for i in range(n)],
        ["1"] * n,
        rows,
        [{"label": "a"}] * n,
    )


def _run(m: ModelMonitor, rows: list[dict[str, Any]], batch: int = 500) -> list[Alert]:
    out: list[Alert] = []
    for s in range(0, len(rows), batch):
        out += m.process(_group(rows[s : s + batch], s))
    return out


def _monitor(**kw: Any) -> ModelMonitor:
    return ModelMonitor("m", FEATURES, DriftSettings(), **kw)


def _firing(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.status == "firing"]


CASES = [
    # case, kind, feature, detector, words the message must hold
    ("x2.54", "unit_change", "height_cm", "quantile_fit", "in → cm"),
    ("x1000", "unit_change", "duration_s", "quantile_fit", "s → ms"),
    ("c_to_f", "unit_change", "temp_c", "quantile_fit", "°C → °F"),
    ("swap", "column_swap", "height_cm,width_cm", "ks_assignment", "swapped columns"),
    ("rotate", "column_swap", "depth_cm,height_cm,width_cm", "ks_assignment", "rotated columns"),
    ("new_category", "new_category", "gender", "vocabulary", "'diverse'"),
    ("all_null", "data_quality", "weight_kg", "missing", "is missing"),
    ("string", "data_quality", "temp_c", "invalid", "not valid numeric values"),
]


@pytest.mark.parametrize(("case", "kind", "feature", "detector", "words"), CASES)
def test_planted_case_is_found_and_named_within_500_events(
    case: str, kind: str, feature: str, detector: str, words: str
) -> None:
    alerts = _run(_monitor(), _stream(case))
    firing = [a for a in _firing(alerts) if a.kind in QUALITY_KINDS]
    assert [(a.kind, a.feature, a.detector) for a in firing] == [(kind, feature, detector)], [
        a.message for a in firing
    ]
    a = firing[0]
    assert CHANGE < a.events_seen <= CHANGE + 500
    assert words in a.message and "since" in a.message
    assert a.detected_at_ms == T0 + (a.events_seen - 1) * 1000
    assert a.change_started_at_ms is not None
    assert abs(a.change_started_at_ms - (T0 + CHANGE * 1000)) <= 100 * 1000
    assert a.details["features"] == feature.split(",")
    # one root cause, one alert: a unit change or a swap raises no data_drift for its features
    if kind in ("unit_change", "column_swap"):
        drift = [x for x in alerts if x.kind == "data_drift" and x.feature in feature.split(",")]
        assert drift == []


def test_evidence_of_each_kind() -> None:
    unit = _firing(_run(_monitor(), _stream("c_to_f")))[0]
    assert unit.details["conversion"] == "°C → °F"
    assert unit.details["conversion_factor"] == pytest.approx(1.8)
    assert unit.details["conversion_offset"] == pytest.approx(32.0)
    swap = _firing(_run(_monitor(), _stream("rotate")))[0]
    assert swap.details["mapping"] == {
        "height_cm": "width_cm",
        "width_cm": "depth_cm",
        "depth_cm": "height_cm",
    }
    new = _firing(_run(_monitor(), _stream("new_category")))[0]
    assert list(new.details["new_values"]) == ["diverse"] and new.details["total"] > 0


def test_resolves_once_the_cause_is_gone_and_fires_once_while_it_lasts() -> None:
    rows = _stream("x2.54", n=6_000) + _stream(None, n=2_000, seed=5)
    alerts = [a for a in _run(_monitor(), rows) if a.kind == "unit_change"]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert 6_000 < alerts[1].events_seen <= 6_000 + 1_000


def test_clean_streams_raise_no_quality_alerts() -> None:
    """20 seeds x 20 000 events (400 000 events, 18 000 evaluations of 7 features)."""
    found = []
    for seed in range(20):
        m = _monitor()
        found += [
            a for a in _run(m, _stream(None, n=20_000, seed=100 + seed), 2_000) if a.kind in QUALITY_KINDS
        ]
    assert found == []


def test_profile_reference_and_snapshot_round_trip() -> None:
    rng = np.random.default_rng(3)
    dev = {k: (v.tolist()) for k, v in _values(5_000, rng).items()}
    profile = build_profile([dev], "m")
    rows = _stream("swap", seed=4)
    m = _monitor(profile=profile)
    first = _run(m, rows[:3_200])
    doc = m.snapshot()
    restored = ModelMonitor.restore(doc)
    assert restored.snapshot() == doc
    assert restored.quality is not None and restored.quality.source == "profile"
    rest = [m.process(_group(rows[3_200:], 3_200)), restored.process(_group(rows[3_200:], 3_200))]
    assert rest[0] == rest[1]
    swaps = [a for a in first + rest[0] if a.kind == "column_swap"]
    assert [(a.status, a.feature) for a in swaps] == [("firing", "height_cm,width_cm")]
    assert swaps[0].details["reference"] == "profile"


def test_alerts_do_not_depend_on_batch_boundaries() -> None:
    rows = _stream("x1000", seed=8)
    a = _run(_monitor(), rows, 500)
    b = _run(_monitor(), rows, 137)
    assert [x for x in a if x.kind in QUALITY_KINDS] == [x for x in b if x.kind in QUALITY_KINDS]
    assert a and sorted(a, key=lambda x: x.events_seen) == sorted(b, key=lambda x: x.events_seen)


def test_quality_can_be_switched_off() -> None:
    m = _monitor(quality=QualitySettings(enabled=False))
    assert m.quality is None
    assert not [a for a in _run(m, _stream("x2.54")) if a.kind in QUALITY_KINDS]


@pytest.mark.parametrize(
    ("scenario", "kind", "feature"),
    [
        ("unit_change", "unit_change", "income"),
        ("column_swap", "column_swap", "age,tenure_months"),
        ("new_category", "new_category", "country"),
        ("missing_feature", "data_quality", "income"),
    ],
)
def test_simulated_scenarios(scenario: str, kind: str, feature: str) -> None:
    s = Scenario(
        name=scenario,
        events=5_000,
        change_at=3_000,
        shift_feature="age" if kind == "column_swap" else "income",
    )
    preds, _ = generate(s)
    assert s.truth()["changes"][0]["kind"] == kind and s.truth()["changes"][0]["feature"] == feature
    feats = {k: FeatureType(v) for k, v in s.config()[s.model_id]["features"].items()}
    m = ModelMonitor(s.model_id, feats, DriftSettings())
    g = PredictionGroup(s.model_id)
    for ev in preds:
        g.event_ids.append(ev["event_id"])
        g.times_ms.append(s.start_ms)
        g.versions.append("1")
        g.features.append(ev["features"])
        g.predictions.append(ev["prediction"])
    firing = [a for a in _firing(m.process(g)) if a.kind in QUALITY_KINDS]
    assert [(a.kind, a.feature) for a in firing] == [(kind, feature)]
    assert 3_000 < firing[0].events_seen <= 3_500


# -- QualityWatch alone: batch boundaries and snapshots -----------------------------------------

VALUES = ["F", "M", "X"] + [f"new{i}" for i in range(40)]
WATCH_NUMERIC = ["a", "b", "c", "d"]


def _problem_stream(n: int = 6_000, seed: int = 1) -> tuple[Any, ...]:
    """Events with a unit change, nulls, a constant spell, sentinels, new values, invalid values,
    duplicate ids, absent keys and unknown fields, each in its own stretch."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [rng.normal(10, 2, n), rng.normal(0, 1, n), rng.gamma(3, 2, n), rng.normal(50, 5, n)]
    ).round(3)
    i = np.arange(n)
    x[(i >= 2_000) & (i < 3_500), 0] *= 1000.0
    x[(i >= 1_500) & (i < 2_500) & (rng.random(n) < 0.3), 1] = np.nan
    x[(i >= 3_000) & (i < 3_800), 2] = 4.0
    x[(i >= 4_000) & (i < 5_000) & (rng.random(n) < 0.2), 3] = -999.0
    codes = rng.choice(3, size=(n, 1), p=[0.5, 0.45, 0.05]).astype(np.int64)
    fresh = (i >= 2_500) & (i < 3_500) & (rng.random(n) < 0.05)
    codes[fresh, 0] = 3 + rng.integers(0, 2, fresh.sum())
    bad = np.zeros((n, 5), dtype=bool)
    bad[(i >= 4_500) & (i < 5_000) & (rng.random(n) < 0.1), 1] = True
    x[bad[:, 1], 1] = np.nan
    absent = np.zeros((n, 5), dtype=bool)
    absent[(i >= 5_400) & (i < 5_800), 3] = True
    x[absent[:, 3], 3] = np.nan
    unknown = [(r, ["extra"]) for r in np.flatnonzero((i >= 1_000) & (i < 2_000) & (rng.random(n) < 0.03))]
    scan = SchemaScan((i >= 5_000) & (i < 5_400) & (rng.random(n) < 0.05), absent, unknown)
    return x, codes, bad, scan


def _watch(start: int = 1_000) -> QualityWatch:
    rng = np.random.default_rng(99)
    ref = np.column_stack(
        [rng.normal(10, 2, 1_000), rng.normal(0, 1, 1_000), rng.gamma(3, 2, 1_000), rng.normal(50, 5, 1_000)]
    ).round(3)
    codes = rng.choice(3, size=(1_000, 1), p=[0.5, 0.45, 0.05]).astype(np.int64)
    return QualityWatch.from_sample(
        "m", WATCH_NUMERIC, ["g"], ref, codes, lambda j: VALUES, np.zeros(5), QualitySettings(), start
    )


def _feed(
    q: QualityWatch, stream: tuple[Any, ...], batch: int, lo: int = 0, hi: int | None = None
) -> list[Alert]:
    x, codes, bad, scan = stream
    hi = len(x) if hi is None else hi
    out: list[Alert] = []
    for a in range(lo, hi, batch):
        b = min(hi, a + batch)
        times = T0 + np.arange(a, b, dtype=np.int64) * 1000
        out += q.update(
            x[a:b], codes[a:b], bad[a:b], times, ["1"] * (b - a), 1_000 + a, lambda j: VALUES, scan.part(a, b)
        )
    return out


def test_watch_alerts_and_state_do_not_depend_on_batch_sizes() -> None:
    stream = _problem_stream()
    runs = {}
    for batch in (1, 37, 100, 1_000):
        q = _watch()
        runs[batch] = (_feed(q, stream, batch), q.to_dict())
    alerts, state = runs[100]
    planted = {
        ("unit_change", "quantile_fit"),
        ("data_quality", "missing"),
        ("data_quality", "constant"),
        ("data_quality", "out_of_range"),
        ("data_quality", "invalid"),
        ("data_quality", "duplicate_ids"),
        ("new_category", "vocabulary"),
        ("schema", "missing_field"),
        ("schema", "unknown_field"),
    }
    assert planted <= {(a.kind, a.detector) for a in alerts if a.status == "firing"}
    for batch, (other, other_state) in runs.items():
        assert other == alerts, batch
        assert other_state == state, batch


def test_watch_restored_mid_stream_continues_exactly() -> None:
    stream = _problem_stream(seed=2)
    whole = _watch()
    expected = _feed(whole, stream, 250)
    for cut in (2_345, 3_000):
        q = _watch()
        before = _feed(q, stream, 250, 0, cut)
        restored = QualityWatch.from_dict(orjson.loads(orjson.dumps(q.to_dict())))
        assert restored.to_dict() == q.to_dict()
        assert before + _feed(restored, stream, 333, cut) == expected
        assert restored.to_dict() == whole.to_dict()


def _tail_stream(seed: int, n: int, new_share: float = 0.0, change: int = 0) -> tuple[Any, ...]:
    """One numeric feature and two categoricals: a closed one (3 values) and bench/throughput.py's
    long-tailed ``c1`` (geometric(0.12) capped at 40: a 1000-event reference misses part of its
    tail); from ``change`` on, ``new_share`` of the closed feature's values are 'new'."""
    rng = np.random.default_rng([seed, 31])
    x = rng.normal(0.0, 1.0, (n, 1)).round(4)
    closed = rng.choice(3, n, p=[0.5, 0.45, 0.05])
    closed[change:][rng.random(n - change) < new_share] = 3  # code 3: 'new'
    tail = np.minimum(rng.geometric(0.12, n), 40) - 1
    return x, np.column_stack([closed, tail]).astype(np.int64)


TAIL_VALUES = [["F", "M", "X", "new"], [f"v{i + 1}" for i in range(40)]]


def _tail_watch(x: Any, codes: Any) -> QualityWatch:
    return QualityWatch.from_sample(
        "m", ["x"], ["g", "c1"], x[:1_000], codes[:1_000], lambda j: TAIL_VALUES[j], np.zeros(3),
        QualitySettings(), 1_000,
    )  # fmt: skip


def _tail_feed(q: QualityWatch, x: Any, codes: Any, batch: int = 2_000) -> list[Alert]:
    out: list[Alert] = []
    for a in range(1_000, len(x), batch):
        b = min(len(x), a + batch)
        times = T0 + np.arange(a, b, dtype=np.int64) * 1000
        out += q.update(x[a:b], codes[a:b], None, times, ["1"] * (b - a), a, lambda j: TAIL_VALUES[j])
    return out


def test_a_long_tailed_categorical_stays_quiet_over_many_references() -> None:
    """Null: 60 references of 1000 events, each followed by 5000 clean events (3000 windows).
    Values of the tail the reference never saw come at its missing mass: no alert (the old
    per-value rule raised 'v28 (3 of 500 events)' when a reference had no singletons)."""
    found = []
    for seed in range(60):
        x, codes = _tail_stream(seed, 6_000)
        q = _tail_watch(x, codes)
        found += [(seed, a.message) for a in _tail_feed(q, x, codes) if a.kind == "new_category"]
    assert found == []


def test_a_new_category_next_to_a_long_tailed_one_is_found_within_500_events() -> None:
    delays = []
    for seed in range(10):
        x, codes = _tail_stream(seed, 4_000, new_share=0.02, change=2_000)
        fired = [a for a in _tail_feed(_tail_watch(x, codes), x, codes, 250) if a.status == "firing"]
        assert [(a.kind, a.feature) for a in fired] == [("new_category", "g")], [a.message for a in fired]
        assert "'new'" in fired[0].message
        delays.append(fired[0].events_seen - 2_000)
    assert max(delays) <= 500, delays


def test_a_v1_snapshot_restores() -> None:
    """Snapshots from before the doubletons (v1) restore, taking as many doubletons as singletons."""
    x, codes = _tail_stream(1, 3_000)
    q = _tail_watch(x, codes)
    _tail_feed(q, x[:2_000], codes[:2_000])
    d = orjson.loads(orjson.dumps(q.to_dict()))
    del d["doubletons"]
    restored = QualityWatch.from_dict({**d, "version": 1})
    assert restored.doubletons == restored.singletons
    assert restored.to_dict()["version"] == 2


def test_a_profile_reference_counts_its_tail_the_same_way() -> None:
    """A profile's singletons, and its values seen twice counted from its top values (exact when
    the top holds them all), bound the missing mass like a warm-up reference's counts."""
    x, codes = _tail_stream(3, 6_000)
    dev = {
        "x": x[:1_000, 0].tolist(),
        "g": [TAIL_VALUES[0][c] for c in codes[:1_000, 0].tolist()],
        "c1": [TAIL_VALUES[1][c] for c in codes[:1_000, 1].tolist()],
    }
    counts = np.bincount(codes[:1_000, 1])
    for top_k in (50, 5):
        profile = build_profile([dev], "m", top_k=top_k)
        q = QualityWatch.from_profile("m", ["x"], ["g", "c1"], profile, QualitySettings())
        assert q.singletons == [0, int((counts == 1).sum())]
        if top_k == 50:  # the top holds every value: exact
            assert q.doubletons == [0, int((counts == 2).sum())]
        alerts = _tail_feed(q, x, codes)
        assert [a.message for a in alerts if a.kind == "new_category"] == []
