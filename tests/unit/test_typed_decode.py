"""The typed decode (streamwatch.typed) against the dict path it short-cuts.

An engine with typed decoders and one without (``typed_decoders = None``) must agree exactly,
with the one-pass read of events with the contract's keys only (``whole_events``) and without:
the same events accepted, the same dead letters with the same reasons and details, the same
alerts, and the same state, for clean streams, every simulated discrepancy, and hostile
messages mixed into batches of good ones (so chunks of both paths meet in one model's group).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwatch.columns import FeatureSchema
from streamwatch.config import Settings
from streamwatch.decode import RawMessage, decode_predictions
from streamwatch.engine import Engine
from streamwatch.simulate import Scenario, generate
from streamwatch.typed import FeatureDecoder
from tests.unit.test_fuzz_decode import CASES, LIMITS, MODELS, T0, _good, _raw, _settings


def _pair(settings_: Settings, whole: bool = True) -> tuple[Engine, Engine]:
    typed, dicts = Engine(settings_), Engine(settings_)
    typed.whole_events = whole
    dicts.typed_decoders = None
    assert typed.typed_decoders
    return typed, dicts


def _state(e: Engine) -> dict[str, bytes]:
    return {m: mon.snapshot() for m, mon in e.monitors.items()}


def _same(typed: Engine, dicts: Engine, batch: list[RawMessage], labels: bool = False) -> int:
    """Process ``batch`` in both; assert they agree; return the events accepted."""
    a = (typed.process_labels if labels else typed.process_predictions)(batch)
    b = (dicts.process_labels if labels else dicts.process_predictions)(batch)
    assert a.events == b.events
    assert [(d.reason, d.detail, d.raw.offset) for d in a.dead_letters] == [
        (d.reason, d.detail, d.raw.offset) for d in b.dead_letters
    ]
    assert [x.to_event(0) for x in a.alerts] == [x.to_event(0) for x in b.alerts]
    return a.events


def _messages(events: list[dict[str, Any]], topic: str = "predictions") -> list[RawMessage]:
    return [RawMessage(orjson.dumps(ev), ev.get("timestamp"), topic, 0, i) for i, ev in enumerate(events)]


@pytest.mark.parametrize(
    "name",
    [
        "none",
        "mean_shift",
        "unit_change",
        "column_swap",
        "new_category",
        "missing_feature",
        "string_value",
        "unknown_field",
        "absent_feature",
        "duplicate_ids",
    ],
)
def test_same_alerts_and_state_on_every_discrepancy(name: str) -> None:
    s = Scenario(name=name, events=6_000, change_at=3_000, seed=5, label_delay_seconds=5)
    preds, labels = generate(s)
    cfg = Settings(
        models=s.config(),
        drift={"reference_size": 500, "window_size": 500, "step": 50},
        quality={"window_size": 500, "step": 50},
    )
    typed, dicts = _pair(cfg)
    p, lab = _messages(preds), _messages(labels, "labels")
    li = 0
    for lo in range(0, len(p), 700):  # batches that cut chunks and changes anywhere
        batch = p[lo : lo + 700]
        _same(typed, dicts, batch)
        t_end = preds[min(lo + 700, len(preds)) - 1]["timestamp"]
        due = [m for m in lab[li:] if labels[m.offset]["timestamp"] <= t_end]
        li += len(due)
        if due:
            _same(typed, dicts, due, labels=True)
    assert _state(typed) == _state(dicts)
    alerts = sum(typed.alerts_by_kind.values())
    if name != "none":
        assert alerts > 0, "the scenario should alert"


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "envelope"])
@pytest.mark.parametrize(("name", "value", "reason"), CASES, ids=[c[0] for c in CASES])
def test_hostile_message_among_good_ones(
    name: str, value: bytes | None, reason: str | None, whole: bool
) -> None:
    typed, dicts = _pair(_settings(), whole)
    good = [_raw(orjson.dumps(_good(i)), i) for i in range(300)]
    batch = [*good[:150], _raw(value, 150), *good[150:]]
    assert _same(typed, dicts, batch) == 300 + (reason is None)
    assert _state(typed) == _state(dicts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.integers(0, 10_000).map(lambda i: orjson.dumps(_good(i))),
            st.integers(0, 10_000).map(lambda i: orjson.dumps(_good(i, model="reg"))),
            st.sampled_from([c[1] for c in CASES]),
        ),
        min_size=1,
        max_size=400,
    )
)
def test_any_mix_agrees(values: list[bytes | None]) -> None:
    typed, dicts = _pair(_settings())
    _same(typed, dicts, [_raw(v, i) for i, v in enumerate(values)])
    assert _state(typed) == _state(dicts)


def test_conforming_groups_carry_columns() -> None:
    cfg = _settings()
    typed = Engine(cfg).typed_decoders
    assert typed is not None
    msgs = [_raw(orjson.dumps(_good(i)), i) for i in range(200)]
    groups, dead = decode_predictions(msgs, cfg.models, typed=typed)
    g = groups["clf"]
    assert not dead and g.features == [] and g.numeric is not None and g.numeric.shape == (200, 2)
    assert g.categorical is not None and g.categorical[0][:3] == ["a", "b", "c"]
    # one event with an extra key: its chunk takes the dict path, the group holds dicts
    odd = _good(7)
    odd["features"]["extra"] = 1
    groups, _ = decode_predictions([*msgs, _raw(orjson.dumps(odd), 200)], cfg.models, typed=typed)
    g = groups["clf"]
    assert g.numeric is None and len(g.features) == 201
    assert g.features[0] == {"x": _good(0)["features"]["x"], "y": _good(0)["features"]["y"], "c": "a"}


def test_feature_names_need_not_be_identifiers() -> None:
    dec = FeatureDecoder(["amount.usd", "class", "1st"], ["kind of thing"])
    row = dec.decode(b'{"class": 2, "amount.usd": 1.5, "1st": null, "kind of thing": "x"}')
    assert dec.numeric([row]).tolist()[0][:2] == [1.5, 2.0]
    assert dec.as_dict(row) == {"amount.usd": 1.5, "class": 2.0, "1st": None, "kind of thing": "x"}


def test_names_msgspec_cannot_take_leave_the_model_on_the_dict_path() -> None:
    assert FeatureDecoder.of(['a"b'], []) is None
    cfg = Settings(
        models={
            "m": {"features": {'a"b\\c': "numeric", "ok": "numeric"}},
            "n": {"features": {"x": "numeric"}},
        }
    )
    e = Engine(cfg)
    assert e.typed_decoders is not None and set(e.typed_decoders) == {"n"}
    ev = {"event_id": "e1", "model_id": "m", "timestamp": 1, "features": {'a"b\\c': 1.0, "ok": 2.0}}
    r = e.process_predictions([RawMessage(orjson.dumps({**ev, "prediction": {"value": 1.0}}), 1)])
    assert r.events == 1 and not r.dead_letters


# -- inputs the two JSON parsers (msgspec, orjson) might read differently ----------------------

GOOD = orjson.dumps(_good(1))  # {"event_id":"e1",...,"features":{"x":4.1,"y":0.2,"c":"b"},...}
FEATURES = b'{"x":4.1,"y":0.2,"c":"b"}'
assert FEATURES in GOOD


def _features(body: bytes) -> bytes:
    """The good event with the text of its ``features`` object replaced by ``body``."""
    return GOOD.replace(FEATURES, body)


def _extra(value: bytes, key: bytes = b'"z"') -> bytes:
    """The good event with one more top-level key, which both paths ignore."""
    return GOOD[:-1] + b"," + key + b":" + value + b"}"


def _first(key: bytes, value: bytes) -> bytes:
    """The good event preceded by a duplicate ``key`` (the event's own, later, value wins)."""
    return b"{" + key + b":" + value + b"," + GOOD[1:]


ODD_JSON = [
    # keys: escapes, duplicates, names of other levels
    pytest.param(_features(b'{"\\u0078":1.5,"y":2,"c":"a"}'), id="escaped_feature_key"),
    pytest.param(GOOD.replace(b'"event_id"', b'"event\\u005fid"'), id="escaped_top_key"),
    pytest.param(GOOD.replace(b'"features"', b'"\\u0066eatures"'), id="escaped_features_key"),
    pytest.param(_features(b'{"x":1.0,"x":3.0,"y":2.0,"c":"a"}'), id="duplicate_feature"),
    pytest.param(_features(b'{"x":"s","x":3.0,"y":2.0,"c":"a"}'), id="duplicate_feature_bad_first"),
    pytest.param(_features(b'{"x":3.0,"y":2.0,"c":"a","x":"s"}'), id="duplicate_feature_bad_last"),
    pytest.param(_features(b'{"x":3.0,"y":2.0,"c":"a","\\u0078":7}'), id="duplicate_feature_escaped"),
    pytest.param(_extra(b'{"x":5.0,"y":6.0,"c":"q"}', b'"features"'), id="duplicate_features_object"),
    pytest.param(_first(b'"features"', b'{"x":"bad"}'), id="duplicate_features_bad_first"),
    pytest.param(_extra(b'"reg"', b'"model_id"'), id="duplicate_model_id"),
    pytest.param(_extra(b'{"value":1.0}', b'"prediction"'), id="duplicate_prediction"),
    pytest.param(_extra(b'{"x":1.0,"y":2.0,"c":"a"}', b'"x"'), id="feature_names_at_top_level"),
    pytest.param(_features(b'{"x":1.0,"y":2.0,"c":"a","":1}'), id="empty_feature_key"),
    pytest.param(_features(b'{"x":1.0,"y":2.0,"c":"a","X":1}'), id="case_differs"),
    # numbers
    pytest.param(_features(b'{"x":-0,"y":-0.0,"c":"a"}'), id="minus_zero_int_and_float"),
    pytest.param(_features(b'{"x":-0e0,"y":0E-5,"c":"a"}'), id="zero_exponents"),
    pytest.param(_features(b'{"x":1e-400,"y":-1e-400,"c":"a"}'), id="underflow_to_zero"),
    pytest.param(_features(b'{"x":5e-324,"y":2.4703282292062328e-324,"c":"a"}'), id="subnormal"),
    pytest.param(_features(b'{"x":1.7976931348623157e308,"y":-1.7976931348623158e308,"c":"a"}'), id="max"),
    pytest.param(_features(b'{"x":1.7976931348623159e308,"y":1,"c":"a"}'), id="past_max"),
    pytest.param(_features(b'{"x":9007199254740993,"y":9007199254740995,"c":"a"}'), id="int_2_53_halfway"),
    pytest.param(_features(b'{"x":9223372036854775808,"y":-9223372036854775809,"c":"a"}'), id="int_2_63"),
    pytest.param(_features(b'{"x":18446744073709551616,"y":36893488147419107329,"c":"a"}'), id="int_2_64_up"),
    pytest.param(_features(b'{"x":' + b"9" * 308 + b',"y":1,"c":"a"}'), id="int_308_digits"),
    pytest.param(_features(b'{"x":' + b"9" * 309 + b',"y":1,"c":"a"}'), id="int_309_digits"),
    pytest.param(_features(b'{"x":0.' + b"0" * 400 + b'1e400,"y":1,"c":"a"}'), id="long_mantissa"),
    pytest.param(_features(b'{"x":01,"y":1,"c":"a"}'), id="leading_zero"),
    pytest.param(_features(b'{"x":1.,"y":1,"c":"a"}'), id="no_fraction_digits"),
    pytest.param(_features(b'{"x":true,"y":1,"c":"a"}'), id="bool_numeric"),
    pytest.param(_features(b'{"x":1,"y":1,"c":1}'), id="number_categorical"),
    pytest.param(_features(b'{"x":1,"y":1,"c":true}'), id="bool_categorical"),
    pytest.param(_features(b'{"x":"1","y":1,"c":"a"}'), id="string_numeric"),
    pytest.param(_features(b'{"x":null,"y":null,"c":null}'), id="all_null"),
    pytest.param(GOOD.replace(b'"no":0.3', b'"no":1e-400,"z":18446744073709551616'), id="odd_scores"),
    pytest.param(GOOD.replace(b'"no":0.3', b'"no":1e400'), id="score_overflow"),
    # strings
    pytest.param(_features(b'{"x":1,"y":1,"c":"a\\u0000b"}'), id="escaped_nul"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"a\x00b"}'), id="raw_nul"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"a\x1fb"}'), id="raw_control"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"\\ud83d\\ude00"}'), id="surrogate_pair"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"\xf0\x9f\x98\x80"}'), id="utf8_astral"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"\\ude00\\ud83d"}'), id="surrogates_reversed"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"\\ud800"}'), id="lone_surrogate_feature"),
    pytest.param(_extra(b'"\\udc00"'), id="lone_surrogate_ignored"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"e\\u0301"}'), id="decomposed_unicode"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"\xff"}'), id="invalid_utf8_feature"),
    pytest.param(GOOD.replace(b'"e1"', b'"\xc3\xa9\xff"'), id="invalid_utf8_event_id"),
    pytest.param(_features(b'{"x":1,"y":1,"c":"' + b"\\u00e9" * 30_000 + b'"}'), id="long_escaped"),
    pytest.param(_extra(b'"\\x"'), id="bad_escape_ignored"),
    pytest.param(_extra(b'"a\x01b"'), id="raw_control_ignored"),
    # envelope fields
    pytest.param(GOOD.replace(b'"e1"', b'""'), id="empty_event_id"),
    pytest.param(GOOD.replace(b'"e1"', b'"' + b"e" * 257 + b'"'), id="event_id_257"),
    pytest.param(GOOD.replace(b'"e1"', b'"' + b"\\u00e9" * 256 + b'"'), id="event_id_256_escaped"),
    pytest.param(_extra(b"3", b'"model_version"'), id="version_number"),
    pytest.param(_extra(b'""', b'"model_version"'), id="version_empty"),
    pytest.param(_extra(b"null", b'"model_version"'), id="version_null"),
    pytest.param(GOOD.replace(b"1795774503000", b"1795774503000.0"), id="timestamp_float"),
    pytest.param(GOOD.replace(b"1795774503000", b"1.795774503e12"), id="timestamp_exponent"),
    pytest.param(GOOD.replace(b"1795774503000", b'"1795774503000"'), id="timestamp_digits_string"),
    pytest.param(GOOD.replace(b"1795774503000", b'"2026-11-27T10:15:03+01:00"'), id="timestamp_offset"),
    pytest.param(GOOD.replace(b"1795774503000", b'"2026-11-27t10:15:03.123456789z"'), id="timestamp_nanos"),
    pytest.param(GOOD.replace(b"1795774503000", b'"2026-11-27 10:15:03Z"'), id="timestamp_space"),
    pytest.param(GOOD.replace(b"1795774503000", b"null"), id="timestamp_null"),
    pytest.param(GOOD.replace(b"1795774503000", b"18446744073709551616"), id="timestamp_2_64"),
    pytest.param(GOOD.replace(b"1795774503000", b"-9223372036854775809"), id="timestamp_below_i64"),
    pytest.param(GOOD.replace(b',"prediction":{"label":"yes",', b',"prediction":{'), id="scores_only"),
    pytest.param(GOOD.replace(b'"prediction":', b'"prediction":[],"_":'), id="prediction_array"),
    pytest.param(GOOD.replace(b'"features":', b'"features":null,"_":'), id="features_null"),
    # the document
    pytest.param(b" \t\r\n" + GOOD.replace(b",", b" ,\n\t") + b"\r\n ", id="whitespace"),
    pytest.param(GOOD.replace(b",", b"\x0c,"), id="form_feed"),
    pytest.param(_extra(b"[" * 990 + b"]" * 990), id="nested_990_ignored"),
    pytest.param(_extra(b"[" * 1030 + b"]" * 1030), id="nested_1030_ignored"),
    pytest.param(GOOD.replace(b'"yes",', b'"yes","d":' + b"[" * 900 + b"]" * 900 + b","), id="nested_pred"),
    pytest.param(_extra(b"NaN"), id="nan_ignored"),
    pytest.param(_extra(b"01"), id="leading_zero_ignored"),
    # msgspec skips these values (an ignored key, the earlier of two duplicates) without checking
    # their UTF-8 or number range, where orjson rejects the message: the typed path has orjson
    # read everything but the features (typed.without_features)
    pytest.param(_extra(b'"\xff"'), id="invalid_utf8_ignored"),
    pytest.param(_extra(b"1", b'"\xff"'), id="invalid_utf8_ignored_key"),
    pytest.param(_extra(b'"\xc0\xaf"'), id="overlong_utf8_ignored"),
    pytest.param(_extra(b'"\xed\xa0\x80"'), id="utf8_surrogate_ignored"),
    pytest.param(_first(b'"features"', b'"\xff"'), id="invalid_utf8_duplicate"),
    pytest.param(_extra(b"1e400"), id="overflow_ignored"),
    pytest.param(_extra(b"9" * 400), id="int_400_digits_ignored"),
    pytest.param(_first(b'"timestamp"', b"9" * 400), id="int_400_digits_duplicate"),
    pytest.param(_first(b'"prediction"', b"-1e999"), id="overflow_duplicate"),
    # the one-pass read (typed.Event): an earlier copy of each contract key, hostile or not
    pytest.param(_first(b'"event_id"', b'"\xff"'), id="event_id_invalid_utf8_duplicate"),
    pytest.param(_first(b'"event_id"', b"9" * 400), id="event_id_int_duplicate"),
    pytest.param(_first(b'"model_id"', b'"\xed\xa0\x80"'), id="model_id_surrogate_duplicate"),
    pytest.param(_first(b'"model_id"', b'"nope"'), id="model_id_unknown_duplicate"),
    pytest.param(_first(b'"model_version"', b"1e400"), id="version_overflow_duplicate"),
    pytest.param(_first(b'"timestamp"', b"1e400"), id="timestamp_overflow_duplicate"),
    pytest.param(_first(b'"timestamp"', b"18446744073709551616"), id="timestamp_2_64_duplicate"),
    pytest.param(_first(b'"timestamp"', b'"2026-11-27T10:15:03Z"'), id="timestamp_string_duplicate"),
    pytest.param(_first(b'"timestamp"', b"-1"), id="timestamp_negative_duplicate"),
    pytest.param(_first(b'"prediction"', b'"\xff"'), id="prediction_invalid_utf8_duplicate"),
    pytest.param(_first(b'"prediction"', b"9" * 400), id="prediction_int_duplicate"),
    pytest.param(_first(b'"features"', b"1e400"), id="features_overflow_duplicate"),
    pytest.param(_first(b'"features"', b'{"x":1,"x":1e400}'), id="features_nested_overflow_duplicate"),
    pytest.param(GOOD.replace(b'"yes"', b'"y\x01s"'), id="prediction_raw_control"),
    pytest.param(GOOD.replace(b'"yes"', b'"y\x7fs"'), id="prediction_del"),
    pytest.param(GOOD.replace(b'"yes"', b'"\xff"'), id="prediction_invalid_utf8"),
    pytest.param(GOOD.replace(b'"yes"', b'"features"'), id="features_word_in_prediction"),
    pytest.param(GOOD.replace(b'"e1"', b'"prediction"'), id="prediction_word_as_event_id"),
    pytest.param(GOOD.replace(b'"e1"', b'"e\\\\1"'), id="escaped_backslash_event_id"),
    pytest.param(GOOD.replace(b'"e1"', b'"e\\1"'), id="invalid_escape_event_id"),
    # numbers near the range of a double, in an ignored key
    pytest.param(_extra(b"9" * 19 + b"e99"), id="largest_unchecked_number"),
    pytest.param(_extra(b"9" * 19 + b".99999e+099"), id="largest_unchecked_number_padded"),
    pytest.param(_extra(b"[1e308, -1.7e308]"), id="max_double_ignored"),
    pytest.param(_extra(b"1" + b"0" * 320 + b"e-400"), id="long_mantissa_small_exponent"),
    pytest.param(_extra(b'"\\u00e9 caf\xc3\xa9"'), id="valid_non_ascii_ignored"),
]


def _counters(e: Engine) -> tuple[Any, ...]:
    return e.dead_letters, e.consumed_messages, e.consumed_bytes, e.alerts_by_kind, e.limit_hits


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "envelope"])
@pytest.mark.parametrize("value", ODD_JSON)
def test_odd_json_among_good_ones(value: bytes, whole: bool) -> None:
    typed, dicts = _pair(_settings(), whole)
    good = [_raw(orjson.dumps(_good(i)), i) for i in range(300)]
    _same(typed, dicts, [*good[:150], _raw(value, 150), *good[150:]])
    assert _state(typed) == _state(dicts)
    assert _counters(typed) == _counters(dicts)


def _decoded_alike(cfg: Settings, msgs: list[RawMessage], whole: bool = True) -> dict[str, Any]:
    """Decode ``msgs`` with and without typed decoders; assert the same groups, dead letters and
    columns (bitwise, so -0.0 and 0.0 differ); return the typed groups."""
    typed = Engine(cfg).typed_decoders
    a, dead_a = decode_predictions(msgs, cfg.models, typed=typed, whole=whole)
    b, dead_b = decode_predictions(msgs, cfg.models)
    assert [(d.reason, d.detail) for d in dead_a] == [(d.reason, d.detail) for d in dead_b]
    assert list(a) == list(b)
    for m, gb in b.items():
        ga = a[m]
        assert (ga.event_ids, ga.times_ms, ga.versions, ga.predictions) == (
            gb.event_ids,
            gb.times_ms,
            gb.versions,
            gb.predictions,
        )
        sa, sb = FeatureSchema(cfg.models[m].features), FeatureSchema(cfg.models[m].features)
        if ga.numeric is not None:
            assert ga.categorical is not None
            ca = sa.columns_of(ga.numeric, ga.categorical)
        else:
            ca = sa.columns(ga.features)
        cb = sb.columns(gb.features)
        assert ca.numeric.tobytes() == cb.numeric.tobytes()
        assert ca.categorical.tolist() == cb.categorical.tolist()
        assert sa.vocabularies == sb.vocabularies
        assert (ca.missing.tolist(), ca.invalid.tolist()) == (cb.missing.tolist(), cb.invalid.tolist())
    return a


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "envelope"])
@pytest.mark.parametrize("value", ODD_JSON)
def test_odd_json_decodes_to_the_same_columns(value: bytes, whole: bool) -> None:
    cfg = _settings()
    # alone (its chunk is typed if it conforms), then among good ones of both models
    _decoded_alike(cfg, [_raw(value, 0)], whole)
    good = [_raw(orjson.dumps(_good(i, "clf" if i % 3 else "reg")), i) for i in range(200)]
    _decoded_alike(cfg, [*good[:100], _raw(value, 100), *good[100:]], whole)


CONFORMING = [
    "duplicate_feature",
    "duplicate_feature_escaped",
    "duplicate_features_object",
    "escaped_feature_key",
    "escaped_top_key",
    "minus_zero_int_and_float",
    "underflow_to_zero",
    "int_2_64_up",
    "int_308_digits",
    "surrogate_pair",
    "escaped_nul",
    "long_escaped",
    "timestamp_nanos",
    "whitespace",
    "nested_pred",
]


def test_contract_events_are_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Good events never reach the envelope path (its decode is made to fail here); an event
    with an extra key sends its chunk there, and one with a repeated key too."""
    import streamwatch.typed as tp

    calls = {"event": 0, "envelope": 0}
    event, envelope = tp.decode_event, tp.decode_envelope

    def count(name: str, f: Any) -> Any:
        def wrapped(v: bytes) -> Any:
            calls[name] += 1
            return f(v)

        return wrapped

    monkeypatch.setattr(tp, "decode_event", count("event", event))
    monkeypatch.setattr(tp, "decode_envelope", count("envelope", envelope))
    good = [_raw(orjson.dumps(_good(i)), i) for i in range(300)]
    groups = _decoded_alike(_settings(), good)
    assert groups["clf"].numeric is not None and calls == {"event": 300, "envelope": 0}
    for odd in (_extra(b"1"), _first(b'"prediction"', b"{}")):
        calls.update(event=0, envelope=0)
        groups = _decoded_alike(_settings(), [*good[:200], _raw(odd, 200), *good[200:]])
        assert groups["clf"].numeric is not None  # typed either way
        assert calls["envelope"] == 128, calls  # one chunk by the envelope


@pytest.mark.parametrize("name", CONFORMING)
def test_odd_but_conforming_json_takes_the_typed_path(name: str) -> None:
    """The cases above that conform really exercise the typed path (not only its fallback)."""
    (value,) = next(p.values for p in ODD_JSON if p.id == name)
    assert isinstance(value, bytes)
    groups = _decoded_alike(_settings(), [_raw(value, 0)])
    assert groups["clf"].numeric is not None


# JSON number texts: integers of any size, decimals with long mantissas and exponents near the
# limits of a double
_JSON_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**80), 2**80).map(str),
    st.integers(0, 2**64).map(lambda i: str(2**64 + i)),
    st.from_regex(
        r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?(30[0-9]|32[0-9]|[0-9]{1,2}))?", fullmatch=True
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_JSON_NUMBER, _JSON_NUMBER), min_size=1, max_size=20))
def test_numbers_convert_alike(pairs: list[tuple[str, str]]) -> None:
    values = [_features(b'{"x":' + x.encode() + b',"y":' + y.encode() + b',"c":"a"}') for x, y in pairs]
    _decoded_alike(_settings(), [_raw(v, i) for i, v in enumerate(values)])


# -- model shapes, several models and both paths in one batch, labels, limits ------------------


def _shaped(features: dict[str, str], **limits: Any) -> Settings:
    # no CUSUMs (drift and concept): their thresholds are simulated per reference, minutes on a
    # cold cache, and the window tests and quality checks see every value the decode gives anyway
    return Settings(
        models={"m": {"features": features}, **MODELS},
        drift={"reference_size": 50, "window_size": 50, "step": 10, "cusum": False},
        quality={"window_size": 100, "step": 10},
        performance={
            "max_open_predictions": 500,
            "reference_labels": 50,
            "min_labels": 10,
            "concept_drift": False,
        },
        limits={**LIMITS, **limits},
    )


def _event(cfg: Settings, model: str, i: int) -> bytes:
    """Event ``i`` of ``model``: every configured feature, some null, ints and floats mixed,
    and every 37th with an unknown feature (its chunk takes the dict path)."""
    feats: dict[str, Any] = {}
    for j, (name, kind) in enumerate(cfg.models[model].features.items()):
        k = (i * 7919 + j * 104729) % 97
        if k == 0:
            feats[name] = None
        elif kind == "numeric":
            feats[name] = k + 3 * (i >= 400) if k % 2 else k / 7 - 5.0 * (i >= 400)
        else:
            feats[name] = "abcdefg"[k % (4 + 3 * (i >= 400))]
    if i % 37 == 36:
        feats["unknown"] = 1
    ev = {"event_id": f"{model}-{i}", "model_id": model, "timestamp": T0 + 1000 * i, "features": feats}
    return orjson.dumps({**ev, "prediction": {"value": float(i % 5)}})


def _label(model: str, i: int) -> bytes:
    return orjson.dumps(
        {"event_id": f"{model}-{i}", "model_id": model, "timestamp": T0 + 1000 * i + 1, "value": 2.0}
    )


def _run_both(cfg: Settings, models: list[str], n: int = 800, step: int = 300) -> None:
    """Predictions of ``models`` interleaved (with hostile messages), in batches over two
    partitions, labels after each batch."""
    typed, dicts = _pair(cfg)
    for lo in range(0, n, step):
        batch = [
            _raw(
                _event(cfg, models[i % len(models)], i) if i % 53 else CASES[i % len(CASES)][1],
                i,
                i // 200 % 2,
            )
            for i in range(lo, min(lo + step, n))
        ]
        _same(typed, dicts, batch)
        labels = [
            _raw(_label(models[i % len(models)], i), i, i // 200 % 2) for i in range(lo, min(lo + step, n), 3)
        ]
        _same(typed, dicts, labels, labels=True)
    assert _state(typed) == _state(dicts)
    assert _counters(typed) == _counters(dicts)


SHAPES = [
    pytest.param({"f1": "numeric", "f0": "categorical", "f2": "numeric"}, id="names_like_struct_fields"),
    pytest.param({"": "numeric", "é": "categorical", "\U0001f600": "numeric"}, id="unicode_and_empty"),
    pytest.param({"model_id": "numeric", "features": "categorical", "x": "numeric"}, id="top_level_names"),
    pytest.param({"__class__": "numeric", "a b/c": "categorical", "\u2028": "numeric"}, id="odd_names"),
    pytest.param({"only": "numeric"}, id="one_numeric"),
    pytest.param({f"n{i}": "numeric" for i in range(12)}, id="only_numeric"),
    pytest.param({f"f{i}": "numeric" if i % 3 else "categorical" for i in range(40)}, id="forty"),
    pytest.param({'a"b': "numeric", "c": "categorical"}, id="untyped_model"),  # no typed decoder
    # both paths crashed here once the quality window filled (quality/chunks.py _extremes)
    pytest.param({"c": "categorical"}, id="only_categorical"),
]


@pytest.mark.parametrize("features", SHAPES)
def test_model_shapes_alone_and_mixed(features: dict[str, str]) -> None:
    cfg = _shaped(features)
    _run_both(cfg, ["m"])
    _run_both(cfg, ["m", "clf", "m", "reg"], n=600)


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"max_features": 3}, id="max_features_equal"),
        pytest.param({"max_features": 2}, id="max_features_below_clf"),
        pytest.param({"max_message_bytes": 1024}, id="max_message_bytes"),
        pytest.param({"max_models": 2}, id="max_models"),
        pytest.param({"max_category_values": 10}, id="category_overflow"),
    ],
)
def test_limits(limits: dict[str, int]) -> None:
    cfg = _shaped({"x": "numeric", "c": "categorical", "k": "categorical"}, **limits)
    _run_both(cfg, ["clf", "reg", "m"], n=600)
    # messages of exactly the byte limit and one more, among conforming ones
    typed, dicts = _pair(cfg)
    sizes = [orjson.dumps(_good(i)) for i in range(260)]
    pad = [v[:-1] + b',"pad":"' + b"p" * (1014 - len(v) + i % 3) + b'"}' for i, v in enumerate(sizes)]
    assert {len(v) for v in pad} == {1023, 1024, 1025}
    _same(typed, dicts, [_raw(v, i) for i, v in enumerate(pad)])
    assert _state(typed) == _state(dicts) and _counters(typed) == _counters(dicts)
