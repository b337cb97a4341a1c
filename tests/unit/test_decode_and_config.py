"""Dead-letter reasons of the decoder, and configuration errors that name the field."""

from __future__ import annotations

import orjson
import pytest

from streamwatch.config import ConfigError, FeatureType, load_config
from streamwatch.decode import RawMessage, Reason, decode_labels, decode_predictions

GOOD = {
    "event_id": "e1",
    "model_id": "m",
    "timestamp": "2026-11-27T10:15:02.123Z",
    "features": {"a": 1.0},
    "prediction": {"label": "x"},
}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", Reason.INVALID_JSON),
        (b"\xff\xfe{}", Reason.INVALID_UTF8),
        (b"", Reason.EMPTY_MESSAGE),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (orjson.dumps({**GOOD, "event_id": None}), Reason.MISSING_FIELD),
        (orjson.dumps({**GOOD, "model_id": 7}), Reason.INVALID_FIELD),
        (orjson.dumps({**GOOD, "model_id": "other"}), Reason.UNKNOWN_MODEL),
        (orjson.dumps({**GOOD, "timestamp": "soon"}), Reason.INVALID_TIMESTAMP),
        (orjson.dumps({**GOOD, "timestamp": "9999-12-31T23:59:59-05:00"}), Reason.INVALID_TIMESTAMP),
        (orjson.dumps({**GOOD, "features": {"a": [1]}}), Reason.INVALID_FIELD),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "prediction"}), Reason.MISSING_FIELD),
    ],
)
def test_each_bad_message_gets_a_precise_reason(value: bytes, reason: str) -> None:
    good = RawMessage(orjson.dumps(GOOD), None, "t", 0, 1)
    bad = RawMessage(value, None, "t", 0, 2)
    groups, dead = decode_predictions([good, bad, good], {"m"})
    assert len(groups["m"]) == 2  # the good events around it are kept
    assert [(d.reason, d.raw.offset) for d in dead] == [(reason, 2)]
    body = orjson.loads(dead[0].body())
    assert body["reason"] == reason and body["detail"] and body["source"]["offset"] == 2


def test_message_timestamp_is_the_fallback_event_time() -> None:
    ev = {k: v for k, v in GOOD.items() if k != "timestamp"}
    groups, dead = decode_predictions([RawMessage(orjson.dumps(ev), 1234)], {"m"})
    assert groups["m"].times_ms == [1234] and not dead
    _, dead = decode_predictions([RawMessage(orjson.dumps(ev), None)], {"m"})
    assert dead[0].reason == Reason.INVALID_TIMESTAMP


def test_dead_letter_body_keeps_binary_payloads() -> None:
    _, dead = decode_predictions([RawMessage(b"\xff\x00")], {"m"})
    assert orjson.loads(dead[0].body())["payload_base64"] == "/wA="


def test_labels_need_exactly_one_target() -> None:
    ok = {"event_id": "e", "model_id": "m", "timestamp": 5, "label": "x"}
    groups, dead = decode_labels(
        [RawMessage(orjson.dumps(ok)), RawMessage(orjson.dumps({**ok, "value": 1.0}))], {"m"}
    )
    assert groups["m"].labels == ["x"] and dead[0].reason == Reason.INVALID_FIELD


def test_config_from_yaml_with_environment_override(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: a:1\nmodels:\n  m:\n    features: {x: numeric, c: Categorical}\n"
    )
    monkeypatch.setenv("STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS", "b:2")
    monkeypatch.setenv("STREAMWATCH_KAFKA__CLIENT__SASL_PASSWORD", "hunter2")
    s = load_config(p)
    assert s.kafka.bootstrap_servers == "b:2"
    assert s.kafka.client == {"sasl.password": "hunter2"}
    assert s.kafka.redacted_client() == {"sasl.password": "***"}
    assert s.models["m"].features == {"x": FeatureType.NUMERIC, "c": FeatureType.CATEGORICAL}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "models:\n  m:\n    features: {x: numbr}\n",
            "models.m.features.x: Input should be 'numeric' or 'categorical' (got 'numbr')",
        ),
        ("models: {}\n", "models: Dictionary should have at least 1 item"),
        (
            "drift: {window_size: 1050}\nmodels:\n  m: {features: {x: numeric}}\n",
            "window_size (1050) must be a multiple of step (100)",
        ),
        (
            "metrics: {prt: 1}\nmodels:\n  m: {features: {x: numeric}}\n",
            "metrics.prt: Extra inputs are not permitted",
        ),
        ("models: [\n", "is not valid YAML"),
    ],
)
def test_config_errors_name_the_field(tmp_path, text: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert fragment in str(err.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/streamwatch.yaml")
