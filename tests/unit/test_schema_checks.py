"""Schema checks (unknown fields, absent required fields, duplicate event ids), per-version
profiles and `streamwatch check` of the configured profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from streamwatch.alerts import Alert
from streamwatch.cli import main
from streamwatch.config import DriftSettings, FeatureType, ModelSettings, QualitySettings, load_config
from streamwatch.decode import PredictionGroup
from streamwatch.engine import Engine
from streamwatch.ids import event_hashes
from streamwatch.monitor import ModelMonitor
from streamwatch.profile import build_profile, save_profile
from streamwatch.quality.schema import OTHER, SchemaTracker, count_capped
from tests.unit.test_quality_watch import FEATURES, QUALITY_KINDS, T0, _rows, _stream, _values

CHANGE = 3_000
KINDS = QUALITY_KINDS | {"schema"}


def _group(
    rows: list[dict[str, Any]], first: int, ids: list[str] | None = None, version: str = "1"
) -> PredictionGroup:
    n = len(rows)
    return PredictionGroup(
        "m",
        ids if ids is not None else [f"e{first + i}" for i in range(n)],
        [T0 + (first + i) * 1000 for i in range(n)],
        [version] * n,
        rows,
        [{"label": "a"}] * n,
    )


def _run(
    m: ModelMonitor, rows: list[dict[str, Any]], ids: list[str] | None = None, batch: int = 500
) -> list[Alert]:
    out: list[Alert] = []
    for s in range(0, len(rows), batch):
        out += m.process(_group(rows[s : s + batch], s, None if ids is None else ids[s : s + batch]))
    return out


def _firing(alerts: list[Alert]) -> list[tuple[str, str | None, str]]:
    return [(a.kind, a.feature, a.detector) for a in alerts if a.status == "firing" and a.kind in KINDS]


# -- the tracker ------------------------------------------------------------------------------


def test_scan_tells_absent_from_null_and_names_unknown_keys() -> None:
    t = SchemaTracker(["a", "b", "c"], known=["p"])
    rows: list[dict[str, Any]] = [
        {"a": 1, "b": 2, "c": 3},  # complete
        {"a": 1, "b": None, "c": 3},  # null: present
        {"a": 1, "c": 3},  # b absent
        {"a": 1, "b": 2, "c": 3, "z": 0, "y": 1},  # two unknown keys
        {"a": 1, "b": 2, "c": 3, "p": 0},  # a profile feature: known
        {"b": 2, "x": 0},  # a and c absent, x unknown
    ]
    s = t.scan(rows, [f"e{i}" for i in range(len(rows))])
    assert s.absent is not None
    assert s.absent.tolist() == [
        [False, False, False],
        [False, False, False],
        [False, True, False],
        [False, False, False],
        [False, False, False],
        [True, False, True],
    ]
    assert s.unknown == [(3, ["y", "z"]), (5, ["x"])]
    assert not s.duplicate.any()
    clean = t.scan([{"a": 1, "b": 2, "c": 3}] * 3, ["f1", "f2", "f3"])
    assert clean.absent is None and clean.unknown == []


def test_duplicates_within_and_across_batches_and_the_bounded_ring() -> None:
    t = SchemaTracker(["a"], capacity=3)
    assert t.scan([{"a": 1}] * 4, ["x", "y", "x", "z"]).duplicate.tolist() == [False, False, True, False]
    assert t.scan([{"a": 1}] * 2, ["y", "w"]).duplicate.tolist() == [True, False]  # ring: y z w
    assert t.scan([{"a": 1}] * 2, ["x", "w"]).duplicate.tolist() == [False, True]  # x was evicted
    d = t.to_dict()
    assert SchemaTracker.from_dict(orjson.loads(orjson.dumps(d))).to_dict() == d
    assert len(SchemaTracker.from_dict(d)._ring) == 3
    off = SchemaTracker(["a"], capacity=0)
    assert not off.scan([{"a": 1}] * 2, ["x", "x"]).duplicate.any()


def test_count_capped_keeps_the_counter_bounded() -> None:
    c: Any = __import__("collections").Counter()
    count_capped(c, [f"f{i}" for i in range(10)] + ["f0"], cap=3)
    assert c == {"f0": 2, "f1": 1, "f2": 1, OTHER: 7}


# -- in the monitor ---------------------------------------------------------------------------


def _monitor(**kw: Any) -> ModelMonitor:
    return ModelMonitor("m", FEATURES, DriftSettings(), **kw)


def test_unknown_field_is_a_schema_alert_and_counted() -> None:
    rows = _stream(None)
    for r in rows[CHANGE:]:
        r["colour"] = "red"
    for r in rows[CHANGE::50]:
        r["rare"] = 1  # 2 % of events: above the 1 % share too
    for r in rows[CHANGE + 1 :: 500]:
        r["very_rare"] = 1  # 0.2 %: below it
    m = _monitor()
    alerts = _run(m, rows)
    assert _firing(alerts) == [("schema", "colour", "unknown_field"), ("schema", "rare", "unknown_field")]
    a = next(a for a in alerts if a.feature == "colour")
    assert CHANGE < a.events_seen <= CHANGE + 100
    assert a.details["field"] == "colour" and a.details["unknown_fields"]["colour"] == a.details["count"]
    assert "colour is not a feature of model 'm'" in a.message and "since" in a.message
    assert abs(a.change_started_at_ms - (T0 + CHANGE * 1000)) <= 100 * 1000  # type: ignore[operator]
    assert m.unknown_fields == {"colour": 1_500, "rare": 30, "very_rare": 3}


def test_absent_key_is_a_schema_alert_and_null_stays_data_quality() -> None:
    absent = _stream(None)
    for r in absent[CHANGE:]:
        del r["weight_kg"]
    m = _monitor()
    assert _firing(_run(m, absent)) == [("schema", "weight_kg", "missing_field")]
    assert m.absent_fields.tolist() == [0, 0, 0, 1_500, 0, 0, 0]
    assert m.missing[3] == 1_500  # the missing counter still counts both
    null = _monitor()
    assert _firing(_run(null, _stream("all_null"))) == [("data_quality", "weight_kg", "missing")]
    assert not null.absent_fields.any()


def test_duplicate_ids_alert_and_counter() -> None:
    rows = _stream(None)
    ids = [f"e{i}" for i in range(len(rows))]
    hit = np.random.default_rng(1).random(len(rows)) < 0.03
    for i in np.flatnonzero(hit[CHANGE:]).tolist():
        ids[CHANGE + i] = ids[CHANGE + i - 7]  # a replay of an event a few before
    m = _monitor()
    alerts = _run(m, rows, ids)
    assert _firing(alerts) == [("data_quality", None, "duplicate_ids")]
    a = next(a for a in alerts if a.detector == "duplicate_ids")
    assert CHANGE < a.events_seen <= CHANGE + 500
    assert a.details["duplicates"] > 0.01 * 500 and "repeat an event id" in a.message
    assert m.duplicate_events == int(hit[CHANGE:].sum()) - 0  # every replay is found
    # resolves once the replays stop
    more = _stream(None, n=1_500, seed=9)
    out = _run_from(m, more, len(rows))
    assert [(x.detector, x.status) for x in out if x.detector == "duplicate_ids"] == [
        ("duplicate_ids", "resolved")
    ]


def _run_from(m: ModelMonitor, rows: list[dict[str, Any]], first: int) -> list[Alert]:
    out: list[Alert] = []
    for s in range(0, len(rows), 500):
        out += m.process(_group(rows[s : s + 500], first + s))
    return out


def test_clean_streams_raise_no_schema_alerts() -> None:
    found = []
    for seed in range(5):
        m = _monitor()
        found += [
            a for a in _run(m, _stream(None, n=10_000, seed=300 + seed), batch=1_000) if a.kind in KINDS
        ]
        assert m.duplicate_events == 0 and not m.unknown_fields and not m.absent_fields.any()
    assert found == []


def test_schema_state_snapshots_bounded_and_restores_exactly() -> None:
    rows = _stream(None, n=4_000)
    for r in rows[2_000:]:
        r["colour"] = "red"
    ids = [f"e{i}" for i in range(4_000)]
    ids[3_900:] = ids[3_800:3_900]  # the last 100 events replay 100 earlier ones
    m = _monitor(quality=QualitySettings(duplicate_ids_tracked=1_000))
    _run(m, rows[:3_500], ids[:3_500])
    doc = m.snapshot()
    restored = ModelMonitor.restore(doc)
    assert restored.snapshot() == doc
    assert restored.unknown_fields == m.unknown_fields and restored.duplicate_events == m.duplicate_events
    tail = [_group(rows[3_500:], 3_500, ids[3_500:])]
    a, b = m.process(tail[0]), restored.process(_group(rows[3_500:], 3_500, ids[3_500:]))
    assert a == b and m.snapshot() == restored.snapshot()
    assert m.duplicate_events == 100  # found across the snapshot
    state = orjson.loads(m.snapshot())["schema"]
    assert len(state["tracker"]["recent_ids"]) <= 4 * 8 * 1_000 // 3 + 4  # 8 bytes an id, base64


def test_schema_alerts_do_not_depend_on_batch_boundaries() -> None:
    rows = _stream(None)
    for r in rows[CHANGE:]:
        r["colour"] = "red"
        del r["depth_cm"]
    ids = [f"e{i}" for i in range(len(rows))]
    ids[CHANGE::20] = ids[CHANGE - 1 :: 20][: len(ids[CHANGE::20])]
    a = [x for x in _run(_monitor(), rows, ids, 500) if x.kind in KINDS]
    b = [x for x in _run(_monitor(), rows, ids, 137) if x.kind in KINDS]
    assert a == b and {x.detector for x in a} >= {"unknown_field", "missing_field", "duplicate_ids"}


# -- per-version profiles -----------------------------------------------------------------


def _profile(shift: float = 0.0, seed: int = 3) -> dict[str, Any]:
    vals = _values(5_000, np.random.default_rng(seed))
    vals["height_cm"] = vals["height_cm"] + shift
    return build_profile([{k: v.tolist() for k, v in vals.items()}], "m")


def test_the_profile_of_the_first_events_version_is_the_reference() -> None:
    v1, v2 = _profile(), _profile(shift=40.0)
    rows = _stream(None, n=2_000)
    m = _monitor(profile=v1, profiles_by_version={"2": v2})
    out = m.process(_group(rows, 0, version="2"))
    assert m.quality is not None and m.quality.reference_version == "2"
    # v2's reference puts height 40 cm higher: current heights look out of place against it
    assert any(a.kind in KINDS and "height_cm" in (a.feature or "") for a in out)
    d = next(a for a in out if a.kind in KINDS).details
    assert d["reference"] == "profile" and d["reference_model_version"] == "2"
    restored = ModelMonitor.restore(m.snapshot())
    assert restored.quality is not None and restored.quality.reference_version == "2"
    # a version without its own profile: the model's profile
    other = _monitor(profile=v1, profiles_by_version={"2": v2})
    assert not [a for a in other.process(_group(rows, 0, version="1")) if a.kind in KINDS]
    assert other.quality is not None and other.quality.reference_version is None
    assert other.quality.source == "profile"
    # no profile for the version and none for the model: the warm-up
    warm = _monitor(profiles_by_version={"2": v2})
    warm.process(_group(rows, 0, version="7"))
    assert warm.quality is not None and warm.quality.source == "warm-up"


def _config(tmp: Path, model: dict[str, Any]) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": model}}))
    return path


def test_profiles_by_version_in_the_config_and_the_engine(tmp_path: Path) -> None:
    save_profile(_profile(), tmp_path / "v1.json")
    save_profile(_profile(shift=40.0), tmp_path / "v2.json")
    feats = {k: v.value for k, v in FEATURES.items()}
    cfg = _config(
        tmp_path,
        {
            "features": feats,
            "profile": str(tmp_path / "v1.json"),
            "profiles_by_version": {"2": str(tmp_path / "v2.json")},
        },
    )
    settings = load_config(cfg)
    ms: ModelSettings = settings.models["m"]
    assert ms.reference_profile("2") is not None and ms.reference_profile("2") != ms.reference_profile()
    assert ms.reference_profile("9") == ms.reference_profile()
    m = Engine(settings).new_monitor("m")
    m.process(_group(_rows(_values(200, np.random.default_rng(1))), 0, version="2"))
    assert m.quality is not None and m.quality.reference_version == "2"


# -- streamwatch check ------------------------------------------------------------------------


def test_check_validates_every_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_profile(_profile(), tmp_path / "good.json")
    feats = {k: v.value for k, v in FEATURES.items()}
    good = _config(tmp_path, {"features": feats, "profiles_by_version": {"1": str(tmp_path / "good.json")}})
    assert main(["check", "--config", str(good)]) == 0
    assert "matches the configured features" in capsys.readouterr().out
    # a feature the profile does not describe, one of another type, a tampered file, no file
    tampered = orjson.loads((tmp_path / "good.json").read_bytes())
    tampered["rows"] += 1
    (tmp_path / "tampered.json").write_bytes(orjson.dumps(tampered))
    bad = _config(
        tmp_path,
        {
            "features": {**feats, "extra": "numeric", "gender": "numeric"},
            "profile": str(tmp_path / "good.json"),
            "profiles_by_version": {"2": str(tmp_path / "tampered.json"), "3": str(tmp_path / "nope.json")},
        },
    )
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'extra' (numeric) is not in the profile" in err
    assert "'gender' is numeric in the config but categorical in the profile" in err
    assert "profiles_by_version['2']" in err and "hash" in err
    assert "profiles_by_version['3']" in err and "does not exist" in err
    assert FeatureType.NUMERIC.value == "numeric"


def test_duplicate_ring_keys_ids_by_the_join_hash_and_older_rings_start_afresh() -> None:
    """The ring holds the label join's id hashes (one hashing per batch serves both); a snapshot
    from before (CRC-32 fingerprints, no ``fingerprint`` key) cannot be compared, so it starts empty."""
    t = SchemaTracker(["a"], capacity=10)
    ids = ["x", "y"]
    assert not t.scan_conforming(ids, event_hashes(ids)).duplicate.any()
    assert t.scan_conforming(["y"]).duplicate.tolist() == [True]  # hashed here when not given
    doc = t.to_dict()
    assert doc["fingerprint"] == "blake2b-64"
    assert SchemaTracker.from_dict(doc).scan_conforming(["x"]).duplicate.tolist() == [True]
    older = {k: v for k, v in doc.items() if k != "fingerprint"}
    assert SchemaTracker.from_dict(older).scan_conforming(["x"]).duplicate.tolist() == [False]
