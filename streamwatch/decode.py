"""Batch decode: raw message bytes to per-model event groups, or to dead letters with a reason.

This is the hot path's first step. It applies the rules of :mod:`streamwatch.events` (and of
``schemas/``) with plain checks instead of building pydantic objects, which costs about a third
as much per event; ``tests/unit/test_schemas.py`` holds the three in agreement.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter, call
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from streamwatch import typed as tp
from streamwatch.events import MAX_EPOCH_MS, MAX_ID_LENGTH, parse_timestamp


class Reason:
    """Dead-letter reasons: stable codes used in headers, bodies and metric labels."""

    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNKNOWN_MODEL = "unknown_model"
    EMPTY_MESSAGE = "empty_message"
    # resource limits (``limits.*``): the event may be well formed, but is more than allowed
    MESSAGE_TOO_LARGE = "message_too_large"
    TOO_MANY_FEATURES = "too_many_features"
    MODEL_LIMIT = "model_limit"

    ALL = (
        INVALID_JSON,
        INVALID_UTF8,
        NOT_AN_OBJECT,
        MISSING_FIELD,
        INVALID_FIELD,
        INVALID_TIMESTAMP,
        UNKNOWN_MODEL,
        EMPTY_MESSAGE,
        MESSAGE_TOO_LARGE,
        TOO_MANY_FEATURES,
        MODEL_LIMIT,
    )
    # the reasons that are a ``limits`` setting hit, by the limit's name
    LIMITS = {
        MESSAGE_TOO_LARGE: "message_bytes",
        TOO_MANY_FEATURES: "features",
        MODEL_LIMIT: "models",
    }


@dataclass(slots=True)
class RawMessage:
    """One message as a source hands it over; ``timestamp_ms`` is the broker's or file's time."""

    value: bytes | None
    timestamp_ms: int | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1


DEFAULT_PAYLOAD_BYTES = 65_536  # limits.max_dead_letter_payload_bytes


@dataclass(slots=True)
class DeadLetter:
    raw: RawMessage
    reason: str
    detail: str
    model_id: str | None = None
    # payload bytes copied into the body: a dead letter of a huge message must itself fit in
    # the dead-letter topic's max.message.bytes, or its delivery fails and blocks the commit
    payload_limit: int = DEFAULT_PAYLOAD_BYTES

    def body(self) -> bytes:
        """The dead-letter record: the reason, where the message came from, and the payload (its
        first ``payload_limit`` bytes; ``payload_bytes`` and ``payload_truncated`` say how much)."""
        payload: dict[str, Any]
        value = self.raw.value or b""
        cut = value[: self.payload_limit]
        truncated = len(cut) < len(value)
        text = _utf8(cut, truncated)
        payload = {"payload": text} if text is not None else {"payload_base64": _b64(cut)}
        return orjson.dumps(
            {
                "reason": self.reason,
                "detail": self.detail,
                "model_id": self.model_id,
                "source": {
                    "topic": self.raw.topic,
                    "partition": self.raw.partition,
                    "offset": self.raw.offset,
                    "timestamp_ms": self.raw.timestamp_ms,
                },
                "payload_bytes": len(value),
                "payload_truncated": truncated,
                **payload,
            }
        )


def _utf8(b: bytes, truncated: bool) -> str | None:
    """``b`` as text, or None when it is not UTF-8 (a cut may split the last character)."""
    for end in (len(b), len(b) - 1, len(b) - 2, len(b) - 3) if truncated else (len(b),):
        try:
            return b[: max(end, 0)].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode("ascii")


class InvalidEventError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class PredictionGroup:
    """The valid predictions of one model in a batch, in arrival order."""

    model_id: str
    event_ids: list[str] = field(default_factory=list)
    times_ms: list[int] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    raws: list[RawMessage] = field(default_factory=list)  # the messages (for limit dead letters)
    # when every event was decoded typed (see :mod:`streamwatch.typed`): the features as columns
    # instead of ``features`` (then empty), each event holding exactly the configured features
    numeric: npt.NDArray[np.float64] | None = None
    categorical: list[list[str | None]] | None = None

    def __len__(self) -> int:
        return len(self.event_ids)


@dataclass(slots=True)
class LabelGroup:
    model_id: str
    event_ids: list[str] = field(default_factory=list)
    times_ms: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    raws: list[RawMessage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)


_NUMBER = (int, float)
_LABEL = (str, int, float, bool)
_SCALAR = (int, float, str, bool, type(None))


def _identifier(ev: dict[str, Any], name: str) -> str:
    v = _optional_identifier(ev, name)
    if v is None:
        raise InvalidEventError(Reason.MISSING_FIELD, f"{name} is missing")
    return v


def _optional_identifier(ev: dict[str, Any], name: str) -> str | None:
    v = ev.get(name)
    if v is not None and (type(v) is not str or not v or len(v) > MAX_ID_LENGTH):
        raise InvalidEventError(
            Reason.INVALID_FIELD,
            f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters",
        )
    return v


def _configured(model_id: str, models: Container[str]) -> None:
    if model_id not in models:
        raise InvalidEventError(Reason.UNKNOWN_MODEL, f"model {model_id[:64]!r} is not configured")


def _time(ev: dict[str, Any], fallback_ms: int | None) -> int:
    ts = ev.get("timestamp")
    if ts is None:
        if fallback_ms is None or fallback_ms < 0:
            raise InvalidEventError(Reason.INVALID_TIMESTAMP, "no timestamp in the event nor on the message")
        return fallback_ms
    if type(ts) not in (str, int, float):
        raise InvalidEventError(Reason.INVALID_TIMESTAMP, "timestamp must be RFC 3339 or epoch milliseconds")
    try:
        ms = parse_timestamp(ts)
    except (ValueError, OverflowError):
        raise InvalidEventError(
            Reason.INVALID_TIMESTAMP,
            f"timestamp {str(ts)[:64]!r} is not RFC 3339 or epoch milliseconds in range",
        ) from None
    if ms < 0:
        raise InvalidEventError(Reason.INVALID_TIMESTAMP, "timestamp is before 1970")
    return ms


# the model of an oversized message, from its head only (it is never parsed): for the alert
_MODEL_ID = re.compile(rb'"model_id"\s*:\s*"([^"\\]{1,256})"')


def sniff_model_id(value: bytes, head: int = 4096) -> str | None:
    """The ``model_id`` of a message that is not parsed, if its first ``head`` bytes name one.

    >>> sniff_model_id(b'{"event_id": "e1", "model_id": "credit-risk", "features": {')
    'credit-risk'
    """
    m = _MODEL_ID.search(value, 0, head)
    if m is None:
        return None
    try:
        return m.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _load(raw: RawMessage, max_bytes: int | None = None) -> dict[str, Any]:
    if not raw.value:
        raise InvalidEventError(Reason.EMPTY_MESSAGE, "message has no value")
    if max_bytes is not None and len(raw.value) > max_bytes:
        raise InvalidEventError(
            Reason.MESSAGE_TOO_LARGE,
            f"message of {len(raw.value)} bytes is larger than limits.max_message_bytes ({max_bytes})",
        )
    try:
        ev = orjson.loads(raw.value)
    except orjson.JSONDecodeError as e:
        try:
            raw.value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEventError(Reason.INVALID_UTF8, "message is not valid UTF-8") from None
        raise InvalidEventError(Reason.INVALID_JSON, f"not valid JSON: {str(e)[:200]}") from None
    if type(ev) is not dict:
        raise InvalidEventError(Reason.NOT_AN_OBJECT, f"event must be a JSON object, got {type(ev).__name__}")
    return ev


def _check_prediction(p: Any) -> dict[str, Any]:
    if p is None:
        raise InvalidEventError(Reason.MISSING_FIELD, "prediction is missing")
    if type(p) is not dict:
        raise InvalidEventError(Reason.INVALID_FIELD, "prediction must be an object")
    label, scores, value = p.get("label"), p.get("scores"), p.get("value")
    if label is None and scores is None and value is None:
        raise InvalidEventError(Reason.INVALID_FIELD, "prediction needs a label, scores or a value")
    if label is not None and type(label) not in _LABEL:
        raise InvalidEventError(Reason.INVALID_FIELD, "prediction.label must be a string, number or boolean")
    if value is not None and type(value) not in _NUMBER:
        raise InvalidEventError(Reason.INVALID_FIELD, "prediction.value must be a number")
    if scores is not None and (
        type(scores) is not dict or any(type(s) not in _NUMBER for s in scores.values())
    ):
        raise InvalidEventError(Reason.INVALID_FIELD, "prediction.scores must map class names to numbers")
    return p


def _check_features(f: Any, max_features: int | None = None) -> dict[str, Any]:
    if f is None:
        raise InvalidEventError(Reason.MISSING_FIELD, "features is missing")
    if type(f) is not dict:
        raise InvalidEventError(Reason.INVALID_FIELD, "features must be an object")
    if max_features is not None and len(f) > max_features:
        raise InvalidEventError(
            Reason.TOO_MANY_FEATURES,
            f"features has {len(f)} keys, more than limits.max_features ({max_features})",
        )
    if not all(type(v) in _SCALAR for v in f.values()):
        bad = next(k for k, v in f.items() if type(v) not in _SCALAR)
        raise InvalidEventError(
            Reason.INVALID_FIELD, f"feature {bad[:64]!r} must be a number, string, boolean or null"
        )
    return f


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """The ``limits`` settings that decoding applies (None: unbounded)."""

    max_message_bytes: int | None = None
    max_features: int | None = None
    payload_limit: int = DEFAULT_PAYLOAD_BYTES


_UNBOUNDED = DecodeLimits()


def _dead(raw: RawMessage, e: InvalidEventError, model_id: str | None, limits: DecodeLimits) -> DeadLetter:
    if model_id is None and e.reason == Reason.MESSAGE_TOO_LARGE and raw.value:
        model_id = sniff_model_id(raw.value)
    return DeadLetter(raw, e.reason, e.detail, model_id, limits.payload_limit)


# -- the batch path -------------------------------------------------------------------------
#
# A batch is parsed with one orjson call per message, then checked field by field over whole
# columns (one C-level pass per check: ``set(map(type, column))`` and the like) instead of event
# by event. The column checks are conservative: a row that passes all of them is one the exact
# per-event checks above accept, with the same values. Rows that fail any column check (and
# every message that does not parse) go through the exact path, which gives the dead letter and
# its reason, or accepts the row after all. So the outcome of every message is that of the
# per-event rules, and the common batch of well-formed events never runs per-event Python.

_NONE = type(None)
_ID_LENGTHS = frozenset(range(1, MAX_ID_LENGTH + 1))
_STR_T = frozenset((str,))
_NONE_T = frozenset((_NONE,))
_ID_T = frozenset((str, _NONE))
_DICT_T = frozenset((dict,))
_INT_T = frozenset((int,))
_NUMBER_T = frozenset(_NUMBER)
_SCALAR_T = frozenset(_SCALAR)
_LABEL_OR_NONE_T = frozenset((*_LABEL, _NONE))
_NUMBER_OR_NONE_T = frozenset((*_NUMBER, _NONE))
_SCORES_T = frozenset((dict, _NONE))
_VALUE = attrgetter("value")
_FAILED: Any = object()  # a message that did not load: the exact path says why

# RFC 3339 event times already parsed (a bounded cache: producers often repeat a time)
_TIMES: dict[str, int] = {}
_TIMES_MAX = 65_536


def _event_time(ts: Any, fallback_ms: int | None) -> int:
    """``_time`` for one value (cached for strings)."""
    if type(ts) is str:
        ms = _TIMES.get(ts)
        if ms is not None:
            return ms
        ms = _time({"timestamp": ts}, fallback_ms)
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[ts] = ms
        return ms
    return _time({"timestamp": ts}, fallback_ms)


def _loaded(messages: Sequence[RawMessage], max_bytes: int | None) -> list[Any]:
    """Each message parsed, or ``_FAILED`` where it is empty, too large or not JSON."""
    values = list(map(_VALUE, messages))
    if all(values) and (max_bytes is None or max(map(len, values)) <= max_bytes):
        # the cyclic GC would otherwise run a young-generation pass every 700 new dicts (and
        # promote them for older passes) while the batch is being built: about half the cost of
        # parsing. Pausing it leaves one pass, over the whole batch, at the next allocation.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return list(map(orjson.loads, values))
        except orjson.JSONDecodeError:
            pass
        finally:
            if paused:
                gc.enable()
    out: list[Any] = []
    for v in values:
        if not v or (max_bytes is not None and len(v) > max_bytes):
            out.append(_FAILED)
            continue
        try:
            out.append(orjson.loads(v))
        except orjson.JSONDecodeError:
            out.append(_FAILED)
    return out


def _fields(events: list[Any], names: tuple[str, ...]) -> tuple[list[Any], ...]:
    """Columns of ``names`` over ``events`` (dicts; other rows give None)."""
    if _DICT_T.issuperset(map(type, events)):
        get = dict.get
        return tuple(list(map(get, events, repeat(name))) for name in names)
    return tuple([ev.get(name) if type(ev) is dict else None for ev in events] for name in names)


def _flag_identifiers(col: list[Any], suspect: set[int], optional: bool = False) -> None:
    """Rows of ``col`` that are not an identifier (nor None, when ``optional``)."""
    types = set(map(type, col))
    if types <= _STR_T:
        if _ID_LENGTHS.issuperset(map(len, col)):
            return
    elif optional and types <= _NONE_T:
        return
    for i, v in enumerate(col):
        if type(v) is str:
            if not 0 < len(v) <= MAX_ID_LENGTH:
                suspect.add(i)
        elif not (optional and v is None):
            suspect.add(i)


def _times(col: list[Any], messages: Sequence[RawMessage], suspect: set[int]) -> list[int]:
    """Event times of the rows (0 where a row is suspect)."""
    types = set(map(type, col))
    if types <= _INT_T and col and min(col) >= 0 and max(col) <= MAX_EPOCH_MS:
        return col
    if types <= _STR_T:
        cached = list(map(_TIMES.get, col))
        if None not in cached:
            return cached  # type: ignore[return-value]
    out: list[int] = []
    for i, ts in enumerate(col):
        try:
            out.append(_event_time(ts, messages[i].timestamp_ms))
        except InvalidEventError:
            suspect.add(i)
            out.append(0)
    return out


def _flag_features(col: list[Any], max_features: int | None, suspect: set[int]) -> None:
    """Rows whose features are not an object of at most ``max_features`` scalar values."""
    if (
        _DICT_T.issuperset(map(type, col))
        and (max_features is None or not col or max(map(len, col)) <= max_features)
        and _SCALAR_T.issuperset(map(type, chain.from_iterable(map(dict.values, col))))
    ):
        return
    for i, f in enumerate(col):
        if (
            type(f) is not dict
            or (max_features is not None and len(f) > max_features)
            or not _SCALAR_T.issuperset(map(type, f.values()))
        ):
            suspect.add(i)


def _flag_predictions(col: list[Any], suspect: set[int]) -> None:
    """Rows whose prediction is not an object with a valid label, scores or value."""
    if _DICT_T.issuperset(map(type, col)):
        labels, scores, values = _fields(col, ("label", "scores", "value"))
        if (
            _LABEL_OR_NONE_T.issuperset(map(type, labels))
            and _NUMBER_OR_NONE_T.issuperset(map(type, values))
            and _SCORES_T.issuperset(map(type, scores))
        ):
            given = [s for s in scores if s is not None]
            empty = None in labels and any(
                lb is None and s is None and v is None
                for lb, s, v in zip(labels, scores, values, strict=True)
            )
            if not empty and _NUMBER_T.issuperset(map(type, chain.from_iterable(map(dict.values, given)))):
                return
    for i, p in enumerate(col):
        try:
            _check_prediction(p)
        except InvalidEventError:
            suspect.add(i)


def _flag_models(col: list[Any], models: Container[str], suspect: set[int]) -> None:
    """Rows whose (valid) model id is not configured."""
    try:
        distinct = set(col)
    except TypeError:  # an id that is a list or an object: flagged already
        distinct = {m for m in col if type(m) is str}
    unknown = {m for m in distinct if type(m) is str and m not in models}
    if unknown:
        suspect.update(i for i, m in enumerate(col) if type(m) is str and m in unknown)


def _event_object(raw: RawMessage, ev: Any, limits: DecodeLimits) -> Any:
    """The message's object: parsed again when the batch parse failed (for the precise reason)."""
    if ev is _FAILED:
        return _load(raw, limits.max_message_bytes)
    if type(ev) is not dict:
        raise InvalidEventError(Reason.NOT_AN_OBJECT, f"event must be a JSON object, got {type(ev).__name__}")
    return ev


def _exact_prediction(
    raw: RawMessage, ev: Any, models: Container[str], limits: DecodeLimits
) -> tuple[Any, ...] | DeadLetter:
    """One message by the per-event rules: its fields, or its dead letter."""
    model_id = None
    try:
        ev = _event_object(raw, ev, limits)
        event_id = _identifier(ev, "event_id")
        model_id = _identifier(ev, "model_id")
        version = _optional_identifier(ev, "model_version")
        t = _event_time(ev.get("timestamp"), raw.timestamp_ms)
        features = _check_features(ev.get("features"), limits.max_features)
        prediction = _check_prediction(ev.get("prediction"))
        _configured(model_id, models)
    except InvalidEventError as e:
        return _dead(raw, e, model_id, limits)
    return event_id, model_id, version, t, features, prediction


def _exact_label(
    raw: RawMessage, ev: Any, models: Container[str], limits: DecodeLimits
) -> tuple[Any, ...] | DeadLetter:
    model_id = None
    try:
        ev = _event_object(raw, ev, limits)
        event_id = _identifier(ev, "event_id")
        model_id = _identifier(ev, "model_id")
        t = _event_time(ev.get("timestamp"), raw.timestamp_ms)
        label, value = ev.get("label"), ev.get("value")
        if (label is None) == (value is None):
            raise InvalidEventError(
                Reason.INVALID_FIELD, "a label event carries exactly one of label and value"
            )
        if label is not None and type(label) not in _LABEL:
            raise InvalidEventError(Reason.INVALID_FIELD, "label must be a string, number or boolean")
        if value is not None and type(value) not in _NUMBER:
            raise InvalidEventError(Reason.INVALID_FIELD, "value must be a number")
        _configured(model_id, models)
    except InvalidEventError as e:
        return _dead(raw, e, model_id, limits)
    return event_id, model_id, t, label if label is not None else value


def _settle(
    columns: tuple[list[Any], ...],
    suspect: set[int],
    exact: Callable[[int], tuple[Any, ...] | DeadLetter],
) -> tuple[list[DeadLetter], set[int]]:
    """Run the suspect rows through the exact path: dead letters in arrival order, and the rows
    dropped; accepted rows get the exact path's values in ``columns``."""
    dead: list[DeadLetter] = []
    dropped: set[int] = set()
    for i in sorted(suspect):
        r = exact(i)
        if isinstance(r, DeadLetter):
            dead.append(r)
            dropped.add(i)
        else:
            for col, v in zip(columns, r, strict=True):
                col[i] = v
    return dead, dropped


def _rows_by_model(model_ids: list[str], dropped: set[int]) -> dict[str, list[int]] | None:
    """Row indices per model in order of first appearance; None when every row is kept and
    belongs to one model (the batch is the group)."""
    if not dropped and len(set(model_ids)) == 1:
        return None
    rows: dict[str, list[int]] = {}
    for i, m in enumerate(model_ids):
        if i not in dropped:
            r = rows.get(m)
            if r is None:
                rows[m] = [i]
            else:
                r.append(i)
    return rows


def _take(col: list[Any], rows: list[int]) -> list[Any]:
    return list(map(col.__getitem__, rows))


def _prediction_columns(
    messages: Sequence[RawMessage],
    events: list[Any],
    models: Container[str],
    limits: DecodeLimits,
    features: list[Any] | None = None,
) -> tuple[tuple[list[Any], ...], set[int]]:
    """The fields of a chunk of predictions as columns, and the rows a column check flags.

    ``features``, when given, are the typed path's (checked as they were decoded): they stand
    for the events' own, which are then not looked at.
    """
    suspect = (
        set()
        if _DICT_T.issuperset(map(type, events))
        else {i for i, ev in enumerate(events) if ev is _FAILED or type(ev) is not dict}
    )
    fields = _fields(events, ("event_id", "model_id", "model_version", "timestamp", "features", "prediction"))
    return _checked_prediction_fields(messages, fields, suspect, models, limits, features)


def _checked_prediction_fields(
    messages: Sequence[RawMessage],
    fields: tuple[list[Any], ...],
    suspect: set[int],
    models: Container[str],
    limits: DecodeLimits,
    features: list[Any] | None = None,
) -> tuple[tuple[list[Any], ...], set[int]]:
    """:func:`_prediction_columns` from the fields as columns (the timestamps become times)."""
    ids, model_ids, versions, stamps, found, predictions = fields
    _flag_identifiers(ids, suspect)
    _flag_identifiers(model_ids, suspect)
    _flag_identifiers(versions, suspect, optional=True)
    times = _times(stamps, messages, suspect)
    if features is None:
        features = found
        _flag_features(features, limits.max_features, suspect)
    _flag_predictions(predictions, suspect)
    _flag_models(model_ids, models, suspect)
    return (ids, model_ids, versions, times, features, predictions), suspect


def _label_columns(
    messages: Sequence[RawMessage], events: list[Any], models: Container[str], limits: DecodeLimits
) -> tuple[tuple[list[Any], ...], set[int]]:
    """The fields of a chunk of labels as columns (the target: label or value), and the rows a
    column check flags."""
    suspect = (
        set()
        if _DICT_T.issuperset(map(type, events))
        else {i for i, ev in enumerate(events) if ev is _FAILED or type(ev) is not dict}
    )
    ids, model_ids, stamps, labels, values = _fields(
        events, ("event_id", "model_id", "timestamp", "label", "value")
    )
    _flag_identifiers(ids, suspect)
    _flag_identifiers(model_ids, suspect)
    times = _times(stamps, messages, suspect)
    label_types, value_types = set(map(type, labels)), set(map(type, values))
    if label_types <= _LABEL_OR_NONE_T - _NONE_T and value_types <= _NONE_T:
        targets = labels
    elif value_types <= _NUMBER_T and label_types <= _NONE_T:
        targets = values
    else:
        targets = []
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            if label is not None and value is None and type(label) in _LABEL:
                targets.append(label)
            elif label is None and value is not None and type(value) in _NUMBER:
                targets.append(value)
            else:
                suspect.add(i)
                targets.append(None)
    _flag_models(model_ids, models, suspect)
    return (ids, model_ids, times, targets), suspect


# events checked together: a chunk's parsed events stay in the CPU cache across its column
# passes (a whole batch of 2000 events, ~6 MB of objects, does not)
_CHUNK = 128


# a chunk's events, their columns and the rows a column check flags
Chunk = tuple[list[Any], tuple[list[Any], ...], set[int]]
# JSON errors are ValueErrors, nesting too deep a RecursionError, an unknown model a KeyError
_TYPED_ERRORS = (KeyError, TypeError, ValueError, RecursionError, msgspec.MsgspecError)


def _checked(
    check: Callable[
        [Sequence[RawMessage], list[Any], Container[str], DecodeLimits],
        tuple[tuple[list[Any], ...], set[int]],
    ],
) -> Callable[[Sequence[RawMessage], Container[str], DecodeLimits], Chunk]:
    """The dict path of a chunk: every message parsed into Python objects, then ``check``."""

    def chunk(part: Sequence[RawMessage], models: Container[str], limits: DecodeLimits) -> Chunk:
        events = _loaded(part, limits.max_message_bytes)
        return events, *check(part, events, models, limits)

    return chunk


def _typed_predictions(
    part: Sequence[RawMessage],
    models: Container[str],
    limits: DecodeLimits,
    typed: Mapping[str, tp.FeatureDecoder],
    whole: bool = True,
) -> Chunk | None:
    """The typed path of a chunk (:mod:`streamwatch.typed`), or None when any of its events does
    not conform: then the chunk takes the dict path, which finds out why.

    Events with the contract's keys only are read whole by msgspec (``whole``); others have
    their features cut out and the rest read by orjson.
    """
    values = list(map(_VALUE, part))
    if not all(values) or (
        limits.max_message_bytes is not None and max(map(len, values)) > limits.max_message_bytes
    ):
        return None
    if whole and tp.once_each(values):
        done = _whole_events(part, values, models, limits, typed)
        if done is not None:
            return done
    return _envelope_events(part, values, models, limits, typed)


def _envelope_events(
    part: Sequence[RawMessage],
    values: list[bytes],
    models: Container[str],
    limits: DecodeLimits,
    typed: Mapping[str, tp.FeatureDecoder],
) -> Chunk | None:
    """A chunk of events whose features are typed and the rest read by orjson
    (:class:`~streamwatch.typed.Envelope`)."""
    try:
        envelopes = list(map(tp.decode_envelope, values))
        found = list(map(tp.MODEL_ID, envelopes))
        decoders = [typed[m].decode for m in found]  # an unknown model: KeyError
        raw_features = list(map(tp.FEATURES, envelopes))
        features = list(map(call, decoders, raw_features))
        # the rest of each event exactly as the dict path reads it (orjson checks every byte)
        events = list(map(orjson.loads, map(tp.without_features, values, raw_features)))
    except _TYPED_ERRORS:
        return None
    if not _DICT_T.issuperset(map(type, events)):
        return None
    cut = list(map(dict.get, events, repeat("features")))
    if set(map(type, cut)) != _INT_T or any(cut):  # not the 0 put in place of the features
        return None
    columns, suspect = _prediction_columns(part, events, models, limits, features)
    if suspect or columns[1] != found:  # the exact path needs dicts
        return None
    return [None] * len(part), columns, suspect


def _whole_events(
    part: Sequence[RawMessage],
    values: list[bytes],
    models: Container[str],
    limits: DecodeLimits,
    typed: Mapping[str, tp.FeatureDecoder],
) -> Chunk | None:
    """A chunk of events holding the contract's keys only (:class:`~streamwatch.typed.Event`)."""
    try:
        events = list(map(tp.decode_event, values))
        ids, model_ids, versions, stamps = map(list, zip(*map(tp.EVENT_FIELDS, events), strict=True))
        decoders = [typed[m].decode for m in model_ids]  # an unknown model: KeyError
        features = list(map(call, decoders, map(tp.FEATURES, events)))
        # each Raw is one whole JSON value, so the array holds one prediction per event, each
        # read as orjson reads it alone (one call: ~0.5 us an event less than one call each)
        predictions = orjson.loads(b"".join((b"[", b",".join(map(tp.PREDICTION, events)), b"]")))
    except _TYPED_ERRORS:
        return None
    if len(predictions) != len(events):
        return None
    fields = (ids, model_ids, versions, stamps, features, predictions)
    columns, suspect = _checked_prediction_fields(part, fields, set(), models, limits, features)
    if suspect:
        return None
    return [None] * len(part), columns, suspect


def _prediction_chunks(
    typed: Mapping[str, tp.FeatureDecoder] | None, whole: bool = True
) -> Callable[[Sequence[RawMessage], Container[str], DecodeLimits], Chunk]:
    dicts = _checked(_prediction_columns)
    if not typed:
        return dicts

    def chunk(part: Sequence[RawMessage], models: Container[str], limits: DecodeLimits) -> Chunk:
        done = _typed_predictions(part, models, limits, typed, whole)
        return dicts(part, models, limits) if done is None else done

    return chunk


def _columns(
    messages: Sequence[RawMessage],
    models: Container[str],
    limits: DecodeLimits,
    chunks: Callable[[Sequence[RawMessage], Container[str], DecodeLimits], Chunk],
) -> Chunk:
    """Parse and check ``messages`` chunk by chunk: the events, their columns and the suspects."""
    if len(messages) <= _CHUNK:
        return chunks(messages, models, limits)
    events = []
    columns: tuple[list[Any], ...] = ()
    suspect: set[int] = set()
    for lo in range(0, len(messages), _CHUNK):
        part = messages[lo : lo + _CHUNK]
        chunk, cols, flagged = chunks(part, models, limits)
        events += chunk
        if columns:
            for col, more in zip(columns, cols, strict=True):
                col.extend(more)
        else:
            columns = cols
        suspect.update(i + lo for i in flagged)
    return events, columns, suspect


def decode_predictions(
    messages: Sequence[RawMessage],
    models: Container[str],
    limits: DecodeLimits = _UNBOUNDED,
    typed: Mapping[str, tp.FeatureDecoder] | None = None,
    whole: bool = True,
) -> tuple[dict[str, PredictionGroup], list[DeadLetter]]:
    """Decode a batch of prediction messages, grouped by model in arrival order.

    ``typed`` (model -> decoder) lets chunks of conforming events skip the dicts; groups of
    only such events then carry their features as columns (``numeric``, ``categorical``).
    ``whole=False`` turns off the one-pass read of events with the contract's keys only (for
    tests of the other typed path).
    """
    if not messages:
        return {}, []
    events, columns, suspect = _columns(messages, models, limits, _prediction_chunks(typed, whole))
    ids, model_ids, versions, times, features, predictions = columns
    dead, dropped = _settle(
        columns, suspect, lambda i: _exact_prediction(messages[i], events[i], models, limits)
    )
    by_model = _rows_by_model(model_ids, dropped)
    if by_model is None:
        m = model_ids[0]
        group = PredictionGroup(m, ids, times, versions, features, predictions, list(messages))
        return {m: _typed_features(group, typed)}, dead
    raws = list(messages)
    groups = {
        m: _typed_features(
            PredictionGroup(
                m,
                _take(ids, rows),
                _take(times, rows),
                _take(versions, rows),
                _take(features, rows),
                _take(predictions, rows),
                _take(raws, rows),
            ),
            typed,
        )
        for m, rows in by_model.items()
    }
    return groups, dead


def _typed_features(group: PredictionGroup, typed: Mapping[str, tp.FeatureDecoder] | None) -> PredictionGroup:
    """The group's typed features as columns, or, when it also holds dict-path events, as dicts."""
    if not typed:
        return group
    feats = group.features
    kinds = set(map(type, feats))
    if kinds <= _DICT_T:
        return group
    decoder = typed[group.model_id]
    if dict in kinds:
        group.features = [f if type(f) is dict else decoder.as_dict(f) for f in feats]
        return group
    group.numeric, group.categorical = decoder.numeric(feats), decoder.categorical(feats)
    group.features = []
    return group


def decode_labels(
    messages: Sequence[RawMessage], models: Container[str], limits: DecodeLimits = _UNBOUNDED
) -> tuple[dict[str, LabelGroup], list[DeadLetter]]:
    """Decode a batch of label messages, grouped by model in arrival order."""
    if not messages:
        return {}, []
    events, columns, suspect = _columns(messages, models, limits, _checked(_label_columns))
    ids, model_ids, times, targets = columns
    dead, dropped = _settle(columns, suspect, lambda i: _exact_label(messages[i], events[i], models, limits))
    by_model = _rows_by_model(model_ids, dropped)
    if by_model is None:
        m = model_ids[0]
        return {m: LabelGroup(m, ids, times, targets, list(messages))}, dead
    raws = list(messages)
    groups = {
        m: LabelGroup(m, _take(ids, rows), _take(times, rows), _take(targets, rows), _take(raws, rows))
        for m, rows in by_model.items()
    }
    return groups, dead
