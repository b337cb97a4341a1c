"""The typed decode (streamwatch.typed) against the dict path it short-cuts.

An engine with typed decoders and one without (``typed_decoders = None``) must agree exactly:
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

from streamwatch.config import Settings
from streamwatch.decode import RawMessage, decode_predictions
from streamwatch.engine import Engine
from streamwatch.simulate import Scenario, generate
from streamwatch.typed import FeatureDecoder
from tests.unit.test_fuzz_decode import CASES, _good, _raw, _settings


def _pair(settings_: Settings) -> tuple[Engine, Engine]:
    typed, dicts = Engine(settings_), Engine(settings_)
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


@pytest.mark.parametrize(("name", "value", "reason"), CASES, ids=[c[0] for c in CASES])
def test_hostile_message_among_good_ones(name: str, value: bytes | None, reason: str | None) -> None:
    typed, dicts = _pair(_settings())
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
