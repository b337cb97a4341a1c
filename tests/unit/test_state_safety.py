"""The state topic's records are decoded strictly: corrupt or foreign records are skipped and
reported (a deterministic ``state_corrupt`` alert, a counter), never executed or crashed on."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.config import Settings, load_config
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.exporter import RuntimeCollector
from streamwatch.monitor import SNAPSHOT_VERSION, ModelMonitor
from streamwatch.runtime.state import (
    CORRUPT_REASONS,
    RestoredPartition,
    RuntimeStats,
    StateProblem,
    StateRecordError,
    decode_snapshot,
    headers,
    read_state,
    restore_monitors,
)
from streamwatch.simulate import Scenario, generate

REPO = Path(__file__).parents[2]
TOPIC = "sw.state"
DRIFT = {"reference_size": 200, "window_size": 200, "step": 50}  # calibrated and cached by other tests


@pytest.fixture(scope="module")
def setup() -> tuple[Settings, Engine, dict[str, bytes]]:
    models: dict[str, Any] = {}
    msgs: list[RawMessage] = []
    for i in range(2):
        sc = Scenario(model_id=f"m{i}", events=300, change_at=150, numeric_features=2, seed=i)
        preds, _ = generate(sc)
        models.update(sc.config())
        msgs += [RawMessage(orjson.dumps(e)) for e in preds]
    settings = load_config(None, models=models, drift=DRIFT)
    engine = Engine(settings)
    engine.process_predictions(msgs)
    snaps = {s.model_id: s.data for s in engine.take_dirty()}
    return settings, engine, snaps


def _doc(data: bytes) -> dict[str, Any]:
    d = orjson.loads(data)
    assert isinstance(d, dict)
    return d


def _reason(key: str, data: bytes, engine: Engine) -> str:
    with pytest.raises(StateRecordError) as info:
        decode_snapshot(key, data, engine.new_monitor(key))
    return info.value.reason


def test_valid_snapshot_restores(setup: tuple[Settings, Engine, dict[str, bytes]]) -> None:
    _, engine, snaps = setup
    m = decode_snapshot("m0", snaps["m0"], engine.new_monitor("m0"))
    assert isinstance(m, ModelMonitor) and m.events_seen == 300 and m.snapshot() == snaps["m0"]


def test_corrupt_and_foreign_records_are_rejected_with_a_reason(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    _, engine, snaps = setup
    good = snaps["m0"]
    doc = _doc(good)
    cases = {
        "garbage": (b"\x00\xff\x13garbage\x80", "not_json"),
        "empty": (b"", "not_json"),
        "truncated": (good[: len(good) // 2], "not_json"),
        "deeply nested": (b"[" * 5000 + b"]" * 5000, "not_json"),
        "a list": (b"[1, 2, 3]", "foreign_format"),
        "other JSON": (b'{"model_id": "m0", "events": 3}', "foreign_format"),
        "other format": (orjson.dumps({**doc, "format": "someone.else"}), "foreign_format"),
        "newer version": (orjson.dumps({**doc, "version": SNAPSHOT_VERSION + 1}), "unsupported_version"),
        "version as text": (orjson.dumps({**doc, "version": str(SNAPSHOT_VERSION)}), "unsupported_version"),
        "version as bool": (orjson.dumps({**doc, "version": True}), "unsupported_version"),
        "another model": (snaps["m1"], "wrong_model"),
        "unknown field": (orjson.dumps({**doc, "__reduce__": "os.system"}), "invalid_snapshot"),
        "missing field": (orjson.dumps({k: v for k, v in doc.items() if k != "window"}), "invalid_snapshot"),
        "wrong shape": (orjson.dumps({**doc, "outputs": [1, 2]}), "invalid_snapshot"),
        "wrong type": (orjson.dumps({**doc, "missing": "lots"}), "invalid_snapshot"),
        "wrong size": (orjson.dumps({**doc, "reference_counts": {"a": 1}}), "invalid_snapshot"),
    }
    packed = doc["performance"]["join"]["predicted"]
    assert set(packed) == {"f8", "shape"}  # large float arrays are base64 (jsonarrays.packed)
    for name, bad in {
        "packed cut short": {**packed, "f8": packed["f8"][:-8]},
        "packed not base64": {**packed, "f8": "#" * len(packed["f8"])},
        "packed wrong shape": {**packed, "shape": [packed["shape"][0] + 1]},
        "packed no data": {"shape": packed["shape"], "x": 1},
    }.items():
        join = {**doc["performance"]["join"], "predicted": bad}
        cases[name] = (
            orjson.dumps({**doc, "performance": {**doc["performance"], "join": join}}),
            "invalid_snapshot",
        )
    got = {name: _reason("m0", data, engine) for name, (data, _) in cases.items()}
    assert got == {name: reason for name, (_, reason) in cases.items()}
    assert set(got.values()) <= set(CORRUPT_REASONS)


def test_a_pickle_is_never_unpickled(
    tmp_path: Path, setup: tuple[Settings, Engine, dict[str, bytes]]
) -> None:
    _, engine, _ = setup
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    assert _reason("m0", pickle.dumps(Exploit()), engine) == "not_json"
    assert not marker.exists()


def test_config_changes_are_not_corruption(setup: tuple[Settings, Engine, dict[str, bytes]]) -> None:
    _, engine, snaps = setup
    doc = _doc(snaps["m0"])
    for changed in (
        {**doc, "features": {"only": "numeric"}},
        {**doc, "settings": {**doc["settings"], "window_size": 10**12}},  # never allocated
    ):
        with pytest.raises(StateRecordError) as info:
            decode_snapshot("m0", orjson.dumps(changed), engine.new_monitor("m0"))
        assert info.value.reason == "config_changed" and not info.value.corrupt


def test_restore_monitors_keeps_the_good_and_reports_the_bad(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    settings, engine, snaps = setup
    foreign = StateProblem(TOPIC, 3, 1, 1000, "junk", "bad_headers", "no headers", 4)
    rp = RestoredPartition(
        3,
        {"p": 1, "l": 1},
        records={"m0": snaps["m0"], "m1": b"\x00\x01", "gone": snaps["m0"]},
        positions={"m0": (10, 5000), "m1": (7, 4000), "gone": (12, 6000)},
        problems=[foreign],
    )
    out = restore_monitors(rp, TOPIC, settings.models, engine.new_monitor)
    assert list(out.monitors) == ["m0"] and out.monitors["m0"].events_seen == 300
    assert out.dropped == [("gone", "the model is no longer configured")]
    assert [(q.key, q.reason, q.offset) for q in out.problems] == [
        ("junk", "bad_headers", 1),
        ("m1", "not_json", 7),
    ]
    m1 = out.problems[1]
    assert (m1.partition, m1.timestamp_ms, m1.size, m1.topic) == (3, 4000, 2, TOPIC)


def test_state_corrupt_alert_is_valid_and_deterministic() -> None:
    schema = json.loads((REPO / "schemas" / "alert.schema.json").read_text())
    q = StateProblem(TOPIC, 2, 41, 1_795_774_502_000, "m0", "unsupported_version", "version 9", 123)
    ev = q.event(1_795_774_600_000)
    jsonschema.validate(ev, schema)
    assert ev["kind"] == "state_corrupt" and ev["status"] == "firing" and ev["model_id"] == "m0"
    assert ev["detected_at"] == "2026-11-27T10:15:02.000Z"
    assert ev["details"] == {
        "reason": "unsupported_version",
        "detail": "version 9",
        "topic": TOPIC,
        "partition": 2,
        "offset": 41,
        "bytes": 123,
    }
    # the same record gives the same id whenever it is found; another record, another id
    again = StateProblem(TOPIC, 2, 41, 1_795_774_502_000, "m0", "unsupported_version", "version 9", 123)
    assert again.event(1_900_000_000_000)["alert_id"] == ev["alert_id"]
    other = StateProblem(TOPIC, 2, 42, 1_795_774_502_000, "m0", "unsupported_version", "version 9", 123)
    assert other.alert_id != ev["alert_id"]
    # a record without a key still makes a valid alert
    jsonschema.validate(StateProblem(TOPIC, 0, 0, 0, "", "bad_headers", "x", 1).event(0), schema)


# -- read_state with a fake consumer ------------------------------------------------------------


class _Msg:
    def __init__(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        hdrs: Any,
        error: Any = None,
    ) -> None:
        self._p, self._o, self._k, self._v, self._h, self._e = partition, offset, key, value, hdrs, error

    def error(self) -> Any:
        return self._e

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> Any:
        return self._h

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000 + self._o)


class _Eof:
    def code(self) -> int:
        from confluent_kafka import KafkaError

        return int(KafkaError._PARTITION_EOF)


class _Consumer:
    def __init__(self, msgs: list[_Msg]) -> None:
        self.batches = [msgs, [_Msg(0, len(msgs), None, None, None, _Eof())]]

    def assign(self, _: Any) -> None:
        pass

    def unassign(self) -> None:
        pass

    def consume(self, _n: int, _t: float) -> list[_Msg]:
        return self.batches.pop(0) if self.batches else []


def test_read_state_reports_records_without_streamwatch_headers(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    _, _, snaps = setup
    tag = {"p": 5, "l": 3}
    msgs = [
        _Msg(0, 0, b"m0", snaps["m0"], headers(tag, b"model")),
        _Msg(0, 1, b"m1", b"junk without headers", None),
        _Msg(0, 2, b"m1", b"junk with a bad tag", [("sw_src", b"not json"), ("sw_kind", b"model")]),
        _Msg(0, 3, b"m1", b"junk of an unknown kind", [("sw_src", orjson.dumps(tag)), ("sw_kind", b"evil")]),
        _Msg(0, 4, b"m1", None, None),  # a tombstone without headers: an operator's clean-up
        _Msg(0, 5, b"m0", b"\x00corrupt, newest", headers(tag, b"model")),
        _Msg(0, 6, b"m1", b"beyond the committed offsets", headers({"p": 9, "l": 9}, b"model")),
    ]
    rp = read_state(_Consumer(msgs), TOPIC, {0: tag}, timeout=5)[0]  # type: ignore[arg-type]
    assert [(q.offset, q.reason) for q in rp.problems] == [
        (1, "bad_headers"),
        (2, "bad_headers"),
        (3, "bad_headers"),
    ]
    # the newest valid-tagged record is kept (it is decoded, and reported, later)
    assert rp.records == {"m0": b"\x00corrupt, newest"} and rp.positions == {"m0": (5, 1005)}


def test_runtime_collector_counts_corrupt_records_by_reason() -> None:
    stats = RuntimeStats()
    stats.state_corrupt["not_json"] = 2
    fams = {f.name: f for f in text_string_to_metric_families(_render(RuntimeCollector(stats)))}
    samples = {s.labels["reason"]: s.value for s in fams["streamwatch_state_corrupt_records"].samples}
    assert samples == {r: (2.0 if r == "not_json" else 0.0) for r in CORRUPT_REASONS}


def _render(collector: RuntimeCollector) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    reg.register(collector)
    return generate_latest(reg).decode()
