"""Hostile input: property and fuzz tests of the decode/validate path and the engine behind it.

Every message must end in exactly one of three ways: a processed event, a dead letter with a
reason from :class:`~streamwatch.decode.Reason`, or a counted rejection (a label outcome such as
``orphan``). Nothing may raise out of :meth:`~streamwatch.engine.Engine.process_predictions` or
:meth:`~streamwatch.engine.Engine.process_labels`; every alert must be a valid alert event; every
dead-letter body must be JSON within its size bound; and every state must survive a snapshot.

The named cases (``CASES``) pin the outcome of each hostile shape; the hypothesis properties
explore their combinations (``FUZZ_EXAMPLES`` examples each, see docs/operations.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwatch.config import Settings
from streamwatch.decode import RawMessage, Reason
from streamwatch.engine import Engine
from streamwatch.events import AlertEvent
from streamwatch.monitor import ModelMonitor

FUZZ_EXAMPLES = 300
T0 = 1_795_774_502_000  # 2026-11-27T10:15:02Z
MODELS = {
    "clf": {"features": {"x": "numeric", "y": "numeric", "c": "categorical"}},
    "reg": {"features": {"x": "numeric", "c": "categorical"}},
}
LIMITS = {"max_message_bytes": 200_000, "max_features": 50, "max_models": 8, "max_category_values": 40}


def _settings(**limits: Any) -> Settings:
    return Settings(
        models=MODELS,
        drift={"reference_size": 50, "window_size": 50, "step": 10},
        quality={"window_size": 100, "step": 10},
        performance={"max_open_predictions": 500, "reference_labels": 50, "min_labels": 10},
        limits={**LIMITS, **limits},
    )


def _good(i: int, model: str = "clf", t: int | None = None, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": f"e{i}",
        "model_id": model,
        "timestamp": T0 + 1000 * i if t is None else t,
        "features": {"x": (i * 7919) % 101 / 10.0, "y": (i * 104729) % 53 / 5.0, "c": "abc"[i % 3]},
        "prediction": {"label": "yes", "scores": {"yes": 0.7, "no": 0.3}}
        if model == "clf"
        else {"value": float(i % 17)},
    }
    ev.update(over)
    return ev


def _raw(value: bytes | None, offset: int = 0, partition: int = 0) -> RawMessage:
    return RawMessage(value, T0, "predictions", partition, offset)


def _warm_engine(**limits: Any) -> Engine:
    """An engine whose models are past warm-up, so hostile values reach the detectors too."""
    e = Engine(_settings(**limits))
    for model in ("clf", "reg"):
        good = [_raw(orjson.dumps(_good(i, model)), i) for i in range(120)]
        r = e.process_predictions(good)
        assert r.events == 120, r.dead_letters[:1]
        target = {"label": "no"} if model == "clf" else {"value": 3.0}
        labels = [
            _raw(
                orjson.dumps(
                    {"event_id": f"e{i}", "model_id": model, "timestamp": T0 + 1000 * i + 5, **target}
                ),
                i,
            )
            for i in range(0, 120, 2)
        ]
        e.process_labels(labels)
    return e


def _check(e: Engine, msgs: list[RawMessage], labels: bool = False) -> tuple[int, list[str]]:
    """Process ``msgs``; check the accounting invariants; return (events, dead-letter reasons)."""
    before = sum(e.dead_letters.values())
    r = (e.process_labels if labels else e.process_predictions)(msgs)
    reasons = [d.reason for d in r.dead_letters]
    assert r.events + len(reasons) == len(msgs)
    assert sum(e.dead_letters.values()) - before == len(reasons)
    assert set(reasons) <= set(Reason.ALL)
    bound = e.settings.limits.max_dead_letter_payload_bytes
    for d in r.dead_letters:
        body = d.body()
        assert len(body) <= 6 * bound + 4096, (d.reason, len(body))  # JSON escapes at most x6
        doc = orjson.loads(body)
        assert doc["reason"] == d.reason and doc["detail"]
    for a in r.alerts:
        AlertEvent.model_validate(a.to_event(T0))  # finite statistic, known kind, RFC 3339 times
        orjson.dumps(a.to_event(T0))
    return r.events, reasons


# -- the named cases -------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _dumps(ev: Any) -> bytes:
    return json.dumps(ev, allow_nan=True).encode()


BIG = "x" * 150_000
CASES: list[tuple[str, bytes | None, str | None]] = [
    # (name, message value, expected dead-letter reason or None when processed)
    ("none", None, Reason.EMPTY_MESSAGE),
    ("empty", b"", Reason.EMPTY_MESSAGE),
    ("truncated", orjson.dumps(_good(1))[:-7], Reason.INVALID_JSON),
    ("trailing_garbage", orjson.dumps(_good(1)) + b"}", Reason.INVALID_JSON),
    ("invalid_utf8", orjson.dumps(_good(1)).replace(b"abc"[1:2], b"\xff\xfe"), Reason.INVALID_UTF8),
    ("lone_surrogate_escape", orjson.dumps(_good(1)).replace(b'"e1"', b'"\\ud800"'), Reason.INVALID_JSON),
    ("bom", b"\xef\xbb\xbf" + orjson.dumps(_good(1)), Reason.INVALID_JSON),
    ("nested_1100", _nested(1100), Reason.INVALID_JSON),
    ("nested_feature", orjson.dumps(_good(1, features={"x": {"a": {"b": [1]}}})), Reason.INVALID_FIELD),
    ("array_top", b"[" + b"1," * 50_000 + b"1]", Reason.NOT_AN_OBJECT),
    ("string_top", b'"hello"', Reason.NOT_AN_OBJECT),
    ("huge_event_id", orjson.dumps(_good(1, event_id=BIG)), Reason.INVALID_FIELD),
    ("huge_feature_string", orjson.dumps(_good(1, features={"x": 1.0, "y": 2.0, "c": BIG})), None),
    ("huge_features_array", orjson.dumps(_good(1, features=list(range(30_000)))), Reason.INVALID_FIELD),
    (
        "too_many_features",
        orjson.dumps(_good(1, features={f"f{i}": i for i in range(51)})),
        "too_many_features",
    ),
    ("message_1mb", orjson.dumps(_good(1, pad="y" * 1_100_000)), "message_too_large"),
    ("nan_token", _dumps(_good(1, features={"x": float("nan"), "y": 1.0, "c": "a"})), Reason.INVALID_JSON),
    ("inf_token", _dumps(_good(1, features={"x": float("inf"), "y": 1.0, "c": "a"})), Reason.INVALID_JSON),
    ("overflow_1e400", orjson.dumps(_good(1)).replace(b'"x":', b'"x":1e400,"_":'), Reason.INVALID_JSON),
    ("big_int", orjson.dumps(_good(1)).replace(b'"x":', b'"x":123456789012345678901234567890,"_":'), None),
    ("minus_zero", orjson.dumps(_good(1, features={"x": -0.0, "y": 0.0, "c": "a"})), None),
    ("max_double", orjson.dumps(_good(1, features={"x": 1e308, "y": -1e308, "c": "a"})), None),
    ("bool_in_numeric", orjson.dumps(_good(1, features={"x": True, "y": False, "c": "a"})), None),
    ("null_in_numeric", orjson.dumps(_good(1, features={"x": None, "y": None, "c": None})), None),
    ("number_in_categorical", orjson.dumps(_good(1, features={"x": 1, "y": 2, "c": 3.5})), None),
    ("number_model_id", orjson.dumps(_good(1, model_id=7)), Reason.INVALID_FIELD),
    ("bool_event_id", orjson.dumps(_good(1, event_id=True)), Reason.INVALID_FIELD),
    ("null_prediction", orjson.dumps(_good(1, prediction=None)), Reason.MISSING_FIELD),
    ("string_score", orjson.dumps(_good(1, prediction={"scores": {"yes": "0.7"}})), Reason.INVALID_FIELD),
    ("score_1e308", orjson.dumps(_good(1, prediction={"scores": {"yes": 1e308, "no": -1e308}})), None),
    ("label_object", orjson.dumps(_good(1, prediction={"label": {"a": 1}})), Reason.INVALID_FIELD),
    (
        "duplicate_keys",
        orjson.dumps(_good(1)).replace(b'"model_id":"clf"', b'"model_id":7,"model_id":"clf"'),
        None,
    ),
    (
        "duplicate_keys_bad_last",
        orjson.dumps(_good(1)).replace(b'"model_id":"clf"', b'"model_id":"clf","model_id":7'),
        Reason.INVALID_FIELD,
    ),
    ("unknown_model", orjson.dumps(_good(1, model_id="nope")), Reason.UNKNOWN_MODEL),
    ("epoch_zero", orjson.dumps(_good(1, timestamp=0)), None),
    ("before_1970", orjson.dumps(_good(1, timestamp="1969-12-31T23:59:59Z")), Reason.INVALID_TIMESTAMP),
    ("negative_epoch", orjson.dumps(_good(1, timestamp=-1)), Reason.INVALID_TIMESTAMP),
    ("year_9999", orjson.dumps(_good(1, timestamp="9999-12-31T23:59:59.999Z")), None),
    ("past_9999", orjson.dumps(_good(1, timestamp=253_402_300_800_000)), Reason.INVALID_TIMESTAMP),
    ("timestamp_1e308", orjson.dumps(_good(1, timestamp=1e308)), Reason.INVALID_TIMESTAMP),
    ("timestamp_bool", orjson.dumps(_good(1, timestamp=True)), Reason.INVALID_TIMESTAMP),
    ("timestamp_garbage", orjson.dumps(_good(1, timestamp="2026-13-45T99:00:00Z")), Reason.INVALID_TIMESTAMP),
    ("timestamp_fraction", orjson.dumps(_good(1, timestamp=1.5)), Reason.INVALID_TIMESTAMP),
]


@pytest.fixture(scope="module")
def warm() -> Engine:
    return _warm_engine()


@pytest.mark.parametrize(("name", "value", "reason"), CASES, ids=[c[0] for c in CASES])
def test_named_hostile_prediction(warm: Engine, name: str, value: bytes | None, reason: str | None) -> None:
    events, reasons = _check(warm, [_raw(value, 10_000)])
    assert reasons == ([] if reason is None else [reason]), name
    assert events == (1 if reason is None else 0)


def test_numbers_counted_invalid_not_dropped(warm: Engine) -> None:
    m = warm.monitors["clf"]
    before = m.invalid.copy()
    _check(warm, [_raw(orjson.dumps(_good(5, features={"x": "1", "y": True, "c": 4})), 1)])
    assert (m.invalid - before).tolist() == [1, 1, 1]


LABEL_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("unknown_id", {"event_id": "never", "model_id": "clf", "label": "yes"}, None),
    ("unknown_model", {"event_id": "e1", "model_id": "nope", "label": "yes"}, Reason.UNKNOWN_MODEL),
    ("both", {"event_id": "e1", "model_id": "clf", "label": "yes", "value": 1}, Reason.INVALID_FIELD),
    ("neither", {"event_id": "e1", "model_id": "clf"}, Reason.INVALID_FIELD),
    ("object_label", {"event_id": "e1", "model_id": "clf", "label": [1]}, Reason.INVALID_FIELD),
    ("value_1e308", {"event_id": "e3", "model_id": "reg", "value": 1e308}, None),
    ("value_minus_1e308", {"event_id": "e5", "model_id": "reg", "value": -1e308}, None),
    ("value_minus_zero", {"event_id": "e7", "model_id": "reg", "value": -0.0}, None),
    ("label_for_regression", {"event_id": "e9", "model_id": "reg", "label": "cat"}, None),
    ("value_for_classifier", {"event_id": "e11", "model_id": "clf", "value": 1e308}, None),
    ("bool_label", {"event_id": "e13", "model_id": "clf", "label": False}, None),
    (
        "far_future",
        {"event_id": "e15", "model_id": "clf", "label": "no", "timestamp": "9999-01-01T00:00:00Z"},
        None,
    ),
    ("far_past", {"event_id": "e17", "model_id": "clf", "label": "no", "timestamp": 0}, None),
]


@pytest.mark.parametrize(("name", "event", "reason"), LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_named_hostile_label(warm: Engine, name: str, event: dict[str, Any], reason: str | None) -> None:
    m = warm.monitors[event.get("model_id", "clf")] if event.get("model_id") in MODELS else None
    outcomes = dict(m.performance.join.outcomes) if m and m.performance else {}
    _, reasons = _check(warm, [_raw(orjson.dumps({"timestamp": T0 + 500_000, **event}), 1)], labels=True)
    assert reasons == ([] if reason is None else [reason])
    if m is not None and m.performance is not None and reason is None:
        # a label that is not dead-lettered ends in exactly one counted outcome (or waits)
        after = m.performance.join.outcomes
        moved = sum(after.values()) - sum(outcomes.values())
        assert moved + len(m.performance.join.waiting) >= 1


# -- properties -------------------------------------------------------------------------------

_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 1e308, -1e308, 5e-324])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | _floats
    | st.text(max_size=20)
    | st.sampled_from(["", "a", "b", "c", "\x00", "\u2028", "é" * 40])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ids = st.text(min_size=0, max_size=300) | st.integers() | st.none() | st.sampled_from(["e1", "e2", "e3"])
_times = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | _floats
    | st.sampled_from(
        [
            0,
            T0,
            253_402_300_799_999,
            253_402_300_800_000,
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-27T10:15:02.123456789+14:00",
            "2026-02-30T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "now",
        ]
    )
    | st.text(max_size=40)
)
_feature_values = st.one_of(_scalars, _json)
_features = (
    st.dictionaries(
        st.sampled_from(["x", "y", "c", "z", "x "]) | st.text(max_size=6), _feature_values, max_size=8
    )
    | _json
)
_prediction = (
    st.fixed_dictionaries(
        {},
        optional={
            "label": _scalars | _json,
            "scores": st.dictionaries(st.text(max_size=4), _scalars, max_size=4) | _json,
            "value": _scalars,
        },
    )
    | _json
)


@st.composite
def _prediction_event(draw: st.DrawFn) -> Any:
    ev: dict[str, Any] = {}
    base = _good(draw(st.integers(0, 10**6)), draw(st.sampled_from(["clf", "reg"])))
    for key, strat in [
        ("event_id", _ids),
        ("model_id", st.sampled_from(["clf", "reg", "other", ""]) | _ids),
        ("model_version", _ids),
        ("timestamp", _times),
        ("features", _features),
        ("prediction", _prediction),
    ]:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            continue  # absent
        ev[key] = draw(strat) if choice == 1 else base.get(key)
    if draw(st.booleans()):
        ev["extra"] = draw(_json)
    return ev if draw(st.integers(0, 9)) else draw(_json)


@st.composite
def _label_event(draw: st.DrawFn) -> Any:
    ev: dict[str, Any] = {}
    for key, strat in [
        ("event_id", _ids | st.sampled_from([f"e{i}" for i in range(0, 200, 3)])),
        ("model_id", st.sampled_from(["clf", "reg", "other"]) | _ids),
        ("timestamp", _times),
        ("label", _scalars | _json),
        ("value", _scalars),
    ]:
        if draw(st.booleans()):
            ev[key] = draw(strat)
    return ev


def _encode(draw: Any, ev: Any) -> bytes:
    """JSON bytes of ``ev``, then perhaps damaged: truncated, a byte flipped, invalid UTF-8,
    NaN/Infinity tokens, duplicate keys, or padding."""
    try:
        b = orjson.dumps(ev)
    except (TypeError, orjson.JSONEncodeError):  # ints past 64 bits
        b = json.dumps(ev, allow_nan=True).encode()
    if any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(ev)):
        b = json.dumps(ev, allow_nan=True).encode()  # NaN/Infinity tokens, not JSON
    how = draw(st.integers(0, 9))
    if how == 1 and b:
        b = b[: draw(st.integers(0, len(b) - 1))]
    elif how == 2 and b:
        i = draw(st.integers(0, len(b) - 1))
        b = b[:i] + bytes([draw(st.integers(0, 255))]) + b[i + 1 :]
    elif how == 3:
        i = draw(st.integers(0, len(b)))
        b = (
            b[:i]
            + draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
            + b[i:]
        )
    elif how == 4 and b.startswith(b"{") and len(b) > 2:
        b = b'{"model_id":"clf","event_id":"dup",' + b[1:]  # the later keys win
    elif how == 5:
        b = b + b" " * draw(st.integers(0, 3)) + draw(st.sampled_from([b"", b"\n", b"x", b"{}"]))
    return b


def _bytes(ev: Any) -> bytes:
    try:
        return orjson.dumps(ev)
    except (TypeError, orjson.JSONEncodeError):  # ints past 64 bits
        return json.dumps(ev).encode()


def _leaves(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [x for y in v.values() for x in _leaves(y)]
    if isinstance(v, list):
        return [x for y in v for x in _leaves(y)]
    return [v]


_FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


@_FUZZ
@given(st.data())
def test_fuzz_predictions_never_raise(warm: Engine, data: st.DataObject) -> None:
    evs = data.draw(st.lists(_prediction_event(), min_size=1, max_size=12))
    msgs = [_raw(_encode(data.draw, ev), i, data.draw(st.integers(-1, 2))) for i, ev in enumerate(evs)]
    _check(warm, msgs)


@_FUZZ
@given(st.data())
def test_fuzz_labels_never_raise(warm: Engine, data: st.DataObject) -> None:
    evs = data.draw(st.lists(_label_event(), min_size=1, max_size=12))
    msgs = [_raw(_encode(data.draw, ev), i) for i, ev in enumerate(evs)]
    _check(warm, msgs, labels=True)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    e = _ENGINE
    _check(e, [_raw(data)])
    _check(e, [_raw(data)], labels=True)


_ENGINE = Engine(_settings())


def test_hostile_state_snapshots_and_restores(warm: Engine) -> None:
    # after everything above (module order) the monitors hold hostile values: they must
    # snapshot and restore to the same document
    for m in warm.monitors.values():
        doc = m.snapshot()
        assert ModelMonitor.restore(doc).snapshot() == doc


# well-formed envelopes with hostile values: these reach the monitors' detectors, sketches,
# label join and performance windows rather than the dead letters
_extreme = st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 2**53 + 1, -(2**63), 2**64 - 1]) | st.floats(
    allow_nan=False, allow_infinity=False
)
_valid_time = st.integers(0, 253_402_300_799_999) | st.sampled_from([0, T0, 253_402_300_799_999])
_value = _extreme | st.booleans() | st.none() | st.text(max_size=10) | st.integers()


@st.composite
def _valid_prediction(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(st.sampled_from(["clf", "reg"]))
    classes = draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=60, unique=True))
    if model == "clf":
        pred: dict[str, Any] = draw(
            st.sampled_from(
                [
                    {"label": draw(st.text(max_size=5) | _extreme | st.booleans())},
                    {"scores": {c: draw(_extreme) for c in classes}},
                    {"label": classes[0], "scores": {c: draw(_extreme) for c in classes}},
                ]
            )
        )
    else:
        pred = {"value": draw(_extreme)}
    return {
        "event_id": draw(st.sampled_from(["e1", "e2"]) | st.text(min_size=1, max_size=12)),
        "model_id": model,
        "model_version": draw(st.none() | st.text(min_size=1, max_size=4)),
        "timestamp": draw(_valid_time),
        "features": draw(
            st.fixed_dictionaries({}, optional={"x": _value, "y": _value, "c": _value, "z": _value})
            | st.dictionaries(st.text(max_size=4), _value, max_size=6)
        ),
        "prediction": pred,
    }


@st.composite
def _valid_label(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(st.sampled_from(["clf", "reg"]))
    ev: dict[str, Any] = {
        "event_id": draw(
            st.sampled_from([f"e{i}" for i in range(0, 200, 3)]) | st.text(min_size=1, max_size=8)
        ),
        "model_id": model,
        "timestamp": draw(_valid_time),
    }
    if draw(st.booleans()):
        ev["value"] = draw(_extreme)
    else:
        ev["label"] = draw(st.text(max_size=5) | _extreme | st.booleans())
    return ev


@_FUZZ
@given(st.data())
def test_fuzz_hostile_values_reach_the_core(warm: Engine, data: st.DataObject) -> None:
    preds = data.draw(st.lists(_valid_prediction(), min_size=1, max_size=20))
    labels = data.draw(st.lists(_valid_label(), min_size=0, max_size=10))
    events, reasons = _check(warm, [_raw(_bytes(ev), i) for i, ev in enumerate(preds)])
    assert events == len(preds), reasons  # well formed: every one is processed
    if labels:
        events, reasons = _check(warm, [_raw(_bytes(ev), i) for i, ev in enumerate(labels)], labels=True)
        assert events == len(labels), reasons
