"""Batch decode: raw message bytes to per-model event groups, or to dead letters with a reason.

This is the hot path's first step. It applies the rules of :mod:`streamwatch.events` (and of
``schemas/``) with plain checks instead of building pydantic objects, which costs about a third
as much per event; ``tests/unit/test_schemas.py`` holds the three in agreement.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamwatch.events import MAX_ID_LENGTH, parse_timestamp


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


def decode_predictions(
    messages: Sequence[RawMessage], models: Container[str], limits: DecodeLimits = _UNBOUNDED
) -> tuple[dict[str, PredictionGroup], list[DeadLetter]]:
    """Decode a batch of prediction messages, grouped by model in arrival order."""
    groups: dict[str, PredictionGroup] = {}
    dead: list[DeadLetter] = []
    for raw in messages:
        model_id = None
        try:
            ev = _load(raw, limits.max_message_bytes)
            event_id = _identifier(ev, "event_id")
            model_id = _identifier(ev, "model_id")
            version = _optional_identifier(ev, "model_version")
            t = _time(ev, raw.timestamp_ms)
            features = _check_features(ev.get("features"), limits.max_features)
            prediction = _check_prediction(ev.get("prediction"))
            _configured(model_id, models)
        except InvalidEventError as e:
            dead.append(_dead(raw, e, model_id, limits))
            continue
        g = groups.get(model_id)
        if g is None:
            g = groups[model_id] = PredictionGroup(model_id)
        g.event_ids.append(event_id)
        g.times_ms.append(t)
        g.versions.append(version)
        g.features.append(features)
        g.predictions.append(prediction)
        g.raws.append(raw)
    return groups, dead


def decode_labels(
    messages: Sequence[RawMessage], models: Container[str], limits: DecodeLimits = _UNBOUNDED
) -> tuple[dict[str, LabelGroup], list[DeadLetter]]:
    """Decode a batch of label messages, grouped by model in arrival order."""
    groups: dict[str, LabelGroup] = {}
    dead: list[DeadLetter] = []
    for raw in messages:
        model_id = None
        try:
            ev = _load(raw, limits.max_message_bytes)
            event_id = _identifier(ev, "event_id")
            model_id = _identifier(ev, "model_id")
            t = _time(ev, raw.timestamp_ms)
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
            dead.append(_dead(raw, e, model_id, limits))
            continue
        g = groups.get(model_id)
        if g is None:
            g = groups[model_id] = LabelGroup(model_id)
        g.event_ids.append(event_id)
        g.times_ms.append(t)
        g.labels.append(label if label is not None else value)
        g.raws.append(raw)
    return groups, dead
