"""The batch decode and column builder against the per-event rules they replace.

``decode_predictions`` / ``decode_labels`` check whole columns at once and send only the rows a
column check flags through the exact per-event path; ``FeatureSchema.columns`` gathers values
with one C-level pass per batch. These properties hold them to the per-event reference (the
decoder's own exact path applied to every message, and the former row-by-row column builder):
the same groups, values, dead letters (reason, detail, model, message), counts and vocabularies,
for batches that mix well-formed and hostile events.
"""

from __future__ import annotations

import json
import math
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwatch import decode
from streamwatch.columns import MISSING, FeatureSchema
from streamwatch.config import FeatureType
from streamwatch.decode import (
    _FAILED,
    DeadLetter,
    DecodeLimits,
    LabelGroup,
    PredictionGroup,
    RawMessage,
    _exact_label,
    _exact_prediction,
    decode_labels,
    decode_predictions,
)
from streamwatch.events import MAX_EPOCH_MS

MODELS = {"a", "b", "c"}
LIMITS = DecodeLimits(max_message_bytes=600, max_features=6, payload_limit=100)
T0 = 1_795_774_502_000


# -- the per-event reference -------------------------------------------------------------------


def _reference_predictions(
    messages: list[RawMessage], limits: DecodeLimits
) -> tuple[dict[str, PredictionGroup], list[DeadLetter]]:
    groups: dict[str, PredictionGroup] = {}
    dead: list[DeadLetter] = []
    for raw in messages:
        r = _exact_prediction(raw, _FAILED, MODELS, limits)
        if isinstance(r, DeadLetter):
            dead.append(r)
            continue
        event_id, model_id, version, t, features, prediction = r
        g = groups.setdefault(model_id, PredictionGroup(model_id))
        g.event_ids.append(event_id)
        g.times_ms.append(t)
        g.versions.append(version)
        g.features.append(features)
        g.predictions.append(prediction)
        g.raws.append(raw)
    return groups, dead


def _reference_labels(
    messages: list[RawMessage], limits: DecodeLimits
) -> tuple[dict[str, LabelGroup], list[DeadLetter]]:
    groups: dict[str, LabelGroup] = {}
    dead: list[DeadLetter] = []
    for raw in messages:
        r = _exact_label(raw, _FAILED, MODELS, limits)
        if isinstance(r, DeadLetter):
            dead.append(r)
            continue
        event_id, model_id, t, target = r
        g = groups.setdefault(model_id, LabelGroup(model_id))
        g.event_ids.append(event_id)
        g.times_ms.append(t)
        g.labels.append(target)
        g.raws.append(raw)
    return groups, dead


def _same_values(a: list[Any], b: list[Any]) -> bool:
    """Equal, type for type (1 and 1.0 and True are different values here), NaN equal to NaN."""
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _same(x: Any, y: Any) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    if isinstance(x, dict):
        return list(x) == list(y) and _same_values(list(x.values()), list(y.values()))
    return bool(x == y)


def _assert_same_dead(got: list[DeadLetter], want: list[DeadLetter]) -> None:
    assert [(d.raw.offset, d.reason, d.detail, d.model_id, d.payload_limit) for d in got] == [
        (d.raw.offset, d.reason, d.detail, d.model_id, d.payload_limit) for d in want
    ]
    assert all(g.raw is w.raw for g, w in zip(got, want, strict=True))


def _assert_same_predictions(messages: list[RawMessage], limits: DecodeLimits = LIMITS) -> None:
    groups, dead = decode_predictions(messages, MODELS, limits)
    want_groups, want_dead = _reference_predictions(messages, limits)
    _assert_same_dead(dead, want_dead)
    assert list(groups) == list(want_groups)
    for m, g in groups.items():
        w = want_groups[m]
        assert g.model_id == m
        assert g.event_ids == w.event_ids
        assert _same_values(g.times_ms, w.times_ms)
        assert _same_values(g.versions, w.versions)
        assert _same_values(g.features, w.features)
        assert _same_values(g.predictions, w.predictions)
        assert all(a is b for a, b in zip(g.raws, w.raws, strict=True)) and len(g.raws) == len(w.raws)


def _assert_same_labels(messages: list[RawMessage], limits: DecodeLimits = LIMITS) -> None:
    groups, dead = decode_labels(messages, MODELS, limits)
    want_groups, want_dead = _reference_labels(messages, limits)
    _assert_same_dead(dead, want_dead)
    assert list(groups) == list(want_groups)
    for m, g in groups.items():
        w = want_groups[m]
        assert g.event_ids == w.event_ids
        assert _same_values(g.times_ms, w.times_ms)
        assert _same_values(g.labels, w.labels)
        assert all(a is b for a, b in zip(g.raws, w.raws, strict=True)) and len(g.raws) == len(w.raws)


# -- hostile events ----------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)
_identifiers = st.one_of(
    st.sampled_from(["e1", "e2", "a", "b", "c", "x" * 256]),
    st.text(min_size=1, max_size=3),
    st.sampled_from(["", "y" * 257]),
    _scalars,
    st.lists(st.integers(), max_size=2),
)
_times = st.one_of(
    st.integers(T0, T0 + 10_000),
    st.sampled_from([0, MAX_EPOCH_MS, MAX_EPOCH_MS + 1, -1, 5.0, 5.5, 1e300, True, None]),
    st.sampled_from(
        [
            "2026-11-27T10:15:02.123Z",
            "2026-11-27T10:15:02.123456789+02:00",
            "2026-11-27t10:15:02z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59-05:00",
            "soon",
            "",
        ]
    ),
    st.lists(st.integers(), max_size=1),
)
_features = st.one_of(
    st.dictionaries(st.sampled_from(["x", "y", "c", "d", "u", "v", "w"]), _scalars, max_size=7),
    st.dictionaries(st.sampled_from(["x", "c"]), st.lists(st.integers(), max_size=1), max_size=2),
    _scalars,
)
_predictions = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "label": st.one_of(_scalars, st.lists(st.integers(), max_size=1)),
            "scores": st.one_of(
                st.dictionaries(st.sampled_from(["p", "q"]), _scalars, max_size=2),
                st.none(),
                st.integers(),
            ),
            "value": _scalars,
        },
    ),
    _scalars,
)


def _good(i: int, model: str = "a") -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "model_id": model,
        "model_version": "v1",
        "timestamp": T0 + i,
        "features": {"x": i / 3, "y": i, "c": "abc"[i % 3]},
        "prediction": {"label": "p", "scores": {"p": 0.25, "q": 0.75}},
    }


@st.composite
def _prediction_messages(draw: st.DrawFn) -> list[RawMessage]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(["good", "good", "field", "field", "raw"]))
        ev: Any = _good(i, draw(st.sampled_from(["a", "b", "c"])))
        if kind == "field":
            for name, values in (
                ("event_id", _identifiers),
                ("model_id", _identifiers),
                ("model_version", _identifiers),
                ("timestamp", _times),
                ("features", _features),
                ("prediction", _predictions),
            ):
                change = draw(st.sampled_from(["keep", "keep", "keep", "set", "drop"]))
                if change == "set":
                    ev[name] = draw(values)
                elif change == "drop":
                    del ev[name]
        if kind == "raw":
            value = draw(
                st.sampled_from(
                    [None, b"", b"{", b"[1]", b'"x"', b"\xff", b"null", b"1e400", b"x" * 700, b"{}"]
                )
            )
        else:
            value = json.dumps(ev).encode()  # integers beyond 64 bits too
        stamp = draw(st.sampled_from([None, -5, T0]))
        out.append(RawMessage(value, stamp, "predictions", i % 2, i))
    return out


@st.composite
def _label_messages(draw: st.DrawFn) -> list[RawMessage]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        ev: dict[str, Any] = {
            "event_id": f"e{i}",
            "model_id": draw(st.sampled_from(["a", "b", "c"])),
            "timestamp": T0 + i,
        }
        ev[draw(st.sampled_from(["label", "value"]))] = draw(st.sampled_from(["p", 1, 0.5]))
        if draw(st.booleans()):
            for name, values in (
                ("event_id", _identifiers),
                ("model_id", _identifiers),
                ("timestamp", _times),
                ("label", _scalars),
                ("value", _scalars),
            ):
                change = draw(st.sampled_from(["keep", "keep", "set", "drop"]))
                if change == "set":
                    ev[name] = draw(values)
                elif change == "drop":
                    ev.pop(name, None)
        value = (
            json.dumps(ev).encode() if draw(st.integers(0, 9)) else draw(st.sampled_from([b"", b"[", b"7"]))
        )
        out.append(RawMessage(value, draw(st.sampled_from([None, T0])), "labels", 0, i))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_prediction_messages())
def test_batch_decode_of_predictions_is_the_per_event_decode(messages: list[RawMessage]) -> None:
    _assert_same_predictions(messages)
    with patch.object(decode, "_CHUNK", 3):  # batches of several chunks
        _assert_same_predictions(messages, DecodeLimits())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_label_messages())
def test_batch_decode_of_labels_is_the_per_event_decode(messages: list[RawMessage]) -> None:
    _assert_same_labels(messages)
    with patch.object(decode, "_CHUNK", 3):
        _assert_same_labels(messages, DecodeLimits())


def test_well_formed_batches_take_the_column_path() -> None:
    one = [RawMessage(orjson.dumps(_good(i)), T0, "p", 0, i) for i in range(300)]
    mixed = [RawMessage(orjson.dumps(_good(i, "abc"[i % 3])), T0, "p", 0, i) for i in range(300)]
    for messages in (one, mixed):
        _assert_same_predictions(messages)
    groups, dead = decode_predictions(mixed, MODELS)
    assert not dead and [len(groups[m]) for m in "abc"] == [100, 100, 100]
    assert groups["b"].event_ids[:2] == ["e1", "e4"] and groups["b"].raws[0] is mixed[1]


def test_timestamps_in_every_form_and_the_cache() -> None:
    stamps: list[Any] = ["2026-11-27T10:15:02.123Z"] * 3 + ["2026-11-27T10:15:02.5+01:00", None, 7.0]
    messages = [
        RawMessage(orjson.dumps({**_good(i), "timestamp": ts}), 99, "p", 0, i) for i, ts in enumerate(stamps)
    ]
    for _ in range(2):  # the second time from the cache
        groups, dead = decode_predictions(messages, MODELS)
        assert not dead
        assert groups["a"].times_ms == [1795774502123] * 3 + [1795770902500, 99, 7]
        assert type(groups["a"].times_ms[-1]) is int


# -- columns -----------------------------------------------------------------------------------


class _ReferenceSchema(FeatureSchema):
    """The row-by-row column builder the batch one replaced."""

    def columns(self, rows: Any) -> Any:
        from itertools import chain

        from streamwatch.columns import _CATEGORY_TYPES, _NUMERIC_TYPES, Columns, _is_number_v

        n = len(rows)
        names = self.numeric
        raw = [tuple(map(r.get, names)) for r in rows]
        if set(map(type, chain.from_iterable(raw))) <= _NUMERIC_TYPES:
            x = np.array(raw, dtype=np.float64).reshape(n, len(names))
            invalid = np.zeros(len(names), dtype=np.int64)
        else:
            obj = np.array(raw, dtype=object).reshape(n, len(names))
            ok = _is_number_v(obj).astype(bool)
            invalid = (~ok & (obj != None)).sum(axis=0).astype(np.int64)  # noqa: E711
            x = np.where(ok, obj, np.nan).astype(np.float64)
        absent = np.isnan(x).sum(axis=0) - invalid
        finite = np.isfinite(x)
        nonfinite = (~finite & ~np.isnan(x)).sum(axis=0)
        if nonfinite.any():
            x[~finite] = np.nan
        num_invalid = invalid + nonfinite
        self.overflow_began = []
        codes = np.empty((n, len(self.categorical)), dtype=np.int64)
        cat_missing = np.zeros(len(self.categorical), dtype=np.int64)
        cat_invalid = np.zeros(len(self.categorical), dtype=np.int64)
        for j, name in enumerate(self.categorical):
            values = [r.get(name) for r in rows]
            if not set(map(type, values)) <= _CATEGORY_TYPES:
                cat_invalid[j] = sum(1 for v in values if v is not None and type(v) is not str)
                values = [
                    v if v is None or type(v) is str else str(v).lower() if type(v) is bool else str(v)
                    for v in values
                ]
            codes[:, j] = self._encode(j, values)
            cat_missing[j] = int((codes[:, j] == MISSING).sum())
        return Columns(
            numeric=x,
            categorical=codes,
            missing=np.concatenate([absent, cat_missing]).astype(np.int64),
            invalid=np.concatenate([num_invalid, cat_invalid]).astype(np.int64),
        )


_cell = st.one_of(
    st.floats(),  # NaN and infinities too
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.booleans(),
    st.sampled_from(["k0", "k1", "k2", "__overflow__", "1.5", ""]),
    st.text(max_size=2),
)
_layouts = st.sampled_from(
    [
        {"x": "n", "y": "n", "c": "c", "d": "c"},
        {"x": "n"},
        {"c": "c"},
        {"x": "n", "c": "c"},
        {"x": "n", "y": "n", "z": "n"},
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _layouts, st.lists(st.lists(st.dictionaries(st.sampled_from("xyzcdu"), _cell), max_size=8), max_size=4)
)
def test_columns_are_the_row_by_row_columns(
    layout: dict[str, str], batches: list[list[dict[str, Any]]]
) -> None:
    features = {k: FeatureType.NUMERIC if t == "n" else FeatureType.CATEGORICAL for k, t in layout.items()}
    new, ref = FeatureSchema(features, max_vocabulary=4), _ReferenceSchema(features, max_vocabulary=4)
    full = [{k: (1.5 if t == "n" else "k0") for k, t in layout.items()}]
    for rows in [full, *batches, full * 3]:
        got, want = new.columns(rows), ref.columns(rows)
        for name in ("numeric", "categorical", "missing", "invalid"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert new.vocabularies == ref.vocabularies
        assert new.overflowed == ref.overflowed and new.overflow_began == ref.overflow_began
