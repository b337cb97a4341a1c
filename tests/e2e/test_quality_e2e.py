"""End to end on the real broker: a column swap, a unit change (against a reference profile) and
a new category, planted in three models' streams, arrive as named alerts on the alerts topic."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from confluent_kafka import Consumer, Producer

from streamwatch.profile import build_profile, save_profile
from streamwatch.simulate import Scenario, generate
from tests.conftest import REPO, write_config

EVENTS, CHANGE = 4_000, 2_000
CASES = {
    "swap-model": (Scenario(name="column_swap", model_id="swap-model", shift_feature="age"), "column_swap",
                   "age,tenure_months"),
    "unit-model": (Scenario(name="unit_change", model_id="unit-model", shift_feature="income"), "unit_change",
                   "income"),
    "cat-model": (Scenario(name="new_category", model_id="cat-model"), "new_category", "country"),
}  # fmt: skip


def _scenario(s: Scenario) -> Scenario:
    s.events, s.change_at, s.seed = EVENTS, CHANGE, 31
    return s


def _profile(tmp: Path) -> Path:
    """A development profile of the unit model: the same generator, another seed, no change."""
    dev, _ = generate(Scenario(name="none", model_id="unit-model", events=5_000, seed=99))
    cols: dict[str, list[Any]] = {}
    for ev in dev:
        for k, v in ev["features"].items():
            cols.setdefault(k, []).append(v)
    path = tmp / "unit-model.profile.json"
    save_profile(build_profile([cols], "unit-model"), path)
    return path


def test_swap_unit_change_and_new_category_through_kafka(
    kafka: str, topics: dict[str, str], tmp_path: Path, start_worker: Any
) -> None:
    models: dict[str, Any] = {}
    streams = []
    for scenario, _, _ in CASES.values():
        s = _scenario(scenario)
        models.update(s.config())
        streams.append(generate(s)[0])
    models["unit-model"]["profile"] = str(_profile(tmp_path))
    config = write_config(tmp_path / "config.yaml", kafka, topics, models)
    start_worker(config)

    p = Producer({"bootstrap.servers": kafka, "linger.ms": 20, "enable.idempotence": True})
    for i in range(EVENTS):  # interleaved, each model in event order
        for events in streams:
            ev = events[i]
            p.produce(topics["predictions"], orjson.dumps(ev), ev["model_id"].encode())
        p.poll(0)
    assert p.flush(30) == 0

    schema = json.loads((REPO / "schemas/alert.schema.json").read_text())
    wanted = {(model, kind, feature) for model, (_, kind, feature) in CASES.items()}
    c = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([topics["alerts"]])
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + 45
    try:
        while time.monotonic() < deadline:
            alerts += [orjson.loads(m.value() or b"{}") for m in c.consume(500, 0.5) if m.error() is None]
            got = {(a["model_id"], a["kind"], a["feature"]) for a in alerts if a["status"] == "firing"}
            if wanted <= got:
                break
    finally:
        c.close()
    quality = [
        a for a in alerts if a["kind"] in ("column_swap", "unit_change", "new_category", "data_quality")
    ]
    assert {(a["model_id"], a["kind"], a["feature"]) for a in quality if a["status"] == "firing"} == wanted, [
        a["message"] for a in alerts
    ]
    for a in quality:
        jsonschema.validate(a, schema)
        assert CHANGE < a["events_seen"] <= CHANGE + 500, a
        assert a["change_started_at"] is not None and "since" in a["message"]
    by_model = {a["model_id"]: a for a in quality}
    assert "age looks like tenure_months and tenure_months like age" in by_model["swap-model"]["message"]
    assert by_model["unit-model"]["details"]["conversion"] == "in → cm"
    assert by_model["unit-model"]["details"]["reference"] == "profile"
    assert by_model["cat-model"]["details"]["new_values"].keys() == {"XX"}
    # one root cause, one alert: the swapped and unit-changed features raise no data_drift
    drift = {(a["model_id"], a["feature"]) for a in alerts if a["kind"] == "data_drift"}
    assert not drift & {("swap-model", "age"), ("swap-model", "tenure_months"), ("unit-model", "income")}


# the remaining planted cases of issue 5 and the schema checks, one model each, plus a clean model
N2, CHANGE2 = 3_000, 1_500
PLANTS: dict[str, tuple[Scenario, str, str | None, str]] = {
    # model: (scenario, kind, feature, detector)
    "ms-model": (Scenario(name="unit_change", shift_feature="age", unit_factor=1000.0), "unit_change",
                 "age", "quantile_fit"),
    "temp-model": (Scenario(name="unit_change", shift_feature="age", unit_factor=1.8, unit_offset=32.0),
                   "unit_change", "age", "quantile_fit"),
    "rot-model": (Scenario(name="column_rotation"), "column_swap", "age,debt_ratio,tenure_months",
                  "ks_assignment"),
    "null-model": (Scenario(name="missing_feature", shift_feature="debt_ratio"), "data_quality",
                   "debt_ratio", "missing"),
    "string-model": (Scenario(name="string_value", shift_feature="tenure_months"), "data_quality",
                     "tenure_months", "invalid"),
    "unknown-model": (Scenario(name="unknown_field"), "schema", "channel", "unknown_field"),
    "absent-model": (Scenario(name="absent_feature", shift_feature="income"), "schema", "income",
                     "missing_field"),
    "dup-model": (Scenario(name="duplicate_ids"), "data_quality", None, "duplicate_ids"),
}  # fmt: skip
QUALITY_KINDS = ("column_swap", "unit_change", "new_category", "data_quality", "schema")


def _read_alerts(kafka: str, topic: str, done: Any, timeout: float) -> list[dict[str, Any]]:
    c = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([topic])
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(alerts):
            alerts += [orjson.loads(m.value() or b"{}") for m in c.consume(500, 0.5) if m.error() is None]
    finally:
        c.close()
    return alerts


def test_remaining_plants_and_schema_checks_through_kafka(
    kafka: str, topics: dict[str, str], tmp_path: Path, start_worker: Any
) -> None:
    models: dict[str, Any] = {}
    streams = []
    for model, (s, _, _, _) in [*PLANTS.items(), ("clean-model", (Scenario(name="none"), "", None, ""))]:
        s.model_id, s.events, s.change_at, s.seed = model, N2, CHANGE2, 41
        models.update(s.config())
        streams.append(generate(s)[0])
    config = write_config(tmp_path / "config.yaml", kafka, topics, models)
    start_worker(config)
    p = Producer({"bootstrap.servers": kafka, "linger.ms": 20, "enable.idempotence": True})
    for i in range(N2):  # interleaved, each model in event order
        for events in streams:
            ev = events[i]
            p.produce(topics["predictions"], orjson.dumps(ev), ev["model_id"].encode())
        p.poll(0)
    assert p.flush(30) == 0

    wanted = {(m, kind, feature, det) for m, (_, kind, feature, det) in PLANTS.items()}

    def done(alerts: list[dict[str, Any]]) -> bool:
        got = {(a["model_id"], a["kind"], a["feature"], a["detector"]) for a in alerts}
        return wanted <= got

    alerts = _read_alerts(kafka, topics["alerts"], done, 50)
    alerts += _read_alerts(kafka, topics["alerts"], lambda a: False, 3)  # the clean model's tail
    alerts = list({orjson.dumps(a): a for a in alerts}.values())  # the second read starts over
    quality = [a for a in alerts if a["kind"] in QUALITY_KINDS]
    got = {
        (a["model_id"], a["kind"], a["feature"], a["detector"]) for a in quality if a["status"] == "firing"
    }
    assert got == wanted, [a["message"] for a in alerts]
    schema = json.loads((REPO / "schemas/alert.schema.json").read_text())
    for a in quality:
        jsonschema.validate(a, schema)
        assert CHANGE2 < a["events_seen"] <= CHANGE2 + 500, a  # found within 500 events
        assert a["change_started_at"] is not None and "since" in a["message"]
    first: dict[str, dict[str, Any]] = {}
    for a in quality:
        first.setdefault(a["model_id"], a)
    assert first["ms-model"]["details"]["conversion_factor"] == 1000.0
    assert "s → ms" in first["ms-model"]["details"]["conversion"]
    assert first["temp-model"]["details"]["conversion"] == "°C → °F"
    assert first["rot-model"]["details"]["mapping"] == {
        "age": "tenure_months",
        "tenure_months": "debt_ratio",
        "debt_ratio": "age",
    }
    assert "rotated columns" in first["rot-model"]["message"]
    assert first["null-model"]["details"]["rate"] >= 0.2 and "is missing" in first["null-model"]["message"]
    assert first["string-model"]["details"]["invalid"] > 0
    assert "not valid numeric values" in first["string-model"]["message"]
    assert first["unknown-model"]["details"]["field"] == "channel"
    assert first["absent-model"]["details"]["absent"] > 0 and first["absent-model"]["details"]["null"] == 0
    assert first["dup-model"]["details"]["duplicates"] > 0
    # no data_drift for the rotated or unit-changed features (one root cause, one alert)
    drift = {(a["model_id"], a["feature"]) for a in alerts if a["kind"] == "data_drift"}
    assert not drift & {("ms-model", "age"), ("temp-model", "age"), *(
        ("rot-model", f) for f in ("age", "debt_ratio", "tenure_months")
    )}  # fmt: skip
    assert "clean-model" not in {a["model_id"] for a in quality}
    # the events were kept (the string and the unknown field are not dead letters)
    print({m: (a["events_seen"] - CHANGE2, a["message"]) for m, a in first.items()})
