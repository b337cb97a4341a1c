"""Event contracts (v1) as pydantic models, mirrored by the JSON Schemas in ``schemas/``.

The models are the readable contract and what tests hold the schemas against; the hot path
validates the same rules without building model objects (see :mod:`streamwatch.decode`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

MAX_ID_LENGTH = 256
# RFC 3339 date-time (the JSON Schema holds the same pattern)
RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
    r"(\.\d{1,9})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
# event times before 1970 or after 9999 are not event times; epoch ms bound for 9999-12-31
MAX_EPOCH_MS = 253_402_300_799_999

Identifier = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Number = StrictInt | StrictFloat
FeatureValue = StrictFloat | StrictInt | StrictStr | bool | None


def _event_time(v: str) -> str:
    if parse_timestamp(v) < 0:
        raise ValueError("timestamp is before 1970")
    return v


def _integral(v: float) -> float:
    # JSON does not tell 5 from 5.0, and JSON Schema's "integer" accepts both
    if not v.is_integer():
        raise ValueError("epoch milliseconds must be a whole number")
    return v


Timestamp = (
    Annotated[StrictStr, Field(pattern=RFC3339.pattern), AfterValidator(_event_time)]
    | Annotated[StrictInt, Field(ge=0, le=MAX_EPOCH_MS)]
    | Annotated[StrictFloat, Field(ge=0, le=MAX_EPOCH_MS), AfterValidator(_integral)]
)
# a class label: JSON Schema's "integer" admits 1.0, so any number is a valid label
ClassLabel = StrictStr | StrictInt | StrictFloat | bool


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIGITS = re.compile(r"\d+")
_MS = timedelta(milliseconds=1)


def parse_timestamp(value: str | float) -> int:
    """Event time in epoch milliseconds from an RFC 3339 string or epoch milliseconds.

    >>> parse_timestamp("2026-11-27T10:15:02.123Z")
    1795774502123
    >>> parse_timestamp(1795774502123)
    1795774502123
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise ValueError("epoch milliseconds out of range")
        return value
    if isinstance(value, str) and RFC3339.match(value):
        # fromisoformat keeps at most microseconds; the pattern allows nanoseconds
        head, dot, frac = value.partition(".")
        if dot:
            digits = _DIGITS.match(frac)
            assert digits is not None  # guaranteed by the pattern
            value = head + "." + digits.group()[:6].ljust(6, "0") + frac[digits.end() :]
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        ms: int = (dt - _EPOCH) // _MS
        if ms > MAX_EPOCH_MS:  # e.g. 9999-12-31T23:59:59-05:00: past what can be written back
            raise ValueError("timestamp after 9999-12-31T23:59:59.999Z")
        return ms
    raise ValueError("timestamp must be RFC 3339 with an offset, or epoch milliseconds")


def format_timestamp(epoch_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, the form streamwatch writes."""
    dt = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


class _Event(BaseModel):
    # unknown envelope fields are ignored, so producers may add fields without breaking v1
    model_config = ConfigDict(extra="ignore", strict=True)


class Prediction(_Event):
    label: ClassLabel | None = None
    scores: dict[str, Number] | None = None
    value: Number | None = None

    @model_validator(mode="after")
    def _something(self) -> Prediction:
        if self.label is None and self.scores is None and self.value is None:
            raise ValueError("prediction needs a label, scores or a value")
        return self


class PredictionEvent(_Event):
    event_id: Identifier
    model_id: Identifier
    model_version: Identifier | None = None
    timestamp: Timestamp | None = None
    features: dict[str, FeatureValue]
    prediction: Prediction


class LabelEvent(_Event):
    event_id: Identifier
    model_id: Identifier
    timestamp: Timestamp | None = None
    label: ClassLabel | None = None
    value: Number | None = None

    @model_validator(mode="after")
    def _one_target(self) -> LabelEvent:
        if (self.label is None) == (self.value is None):
            raise ValueError("a label event carries exactly one of label and value")
        return self


AlertKind = Literal[
    "data_drift",
    "prediction_drift",
    "label_drift",
    "concept_drift",
    "performance",
    "data_quality",
    "schema",
    "new_category",
    "unit_change",
    "column_swap",
    "label_delay",
    "resource_limit",
]


class AlertEvent(_Event):
    model_config = ConfigDict(extra="forbid", strict=False)

    alert_id: Identifier
    model_id: Identifier
    model_version: Identifier | None
    kind: AlertKind
    feature: StrictStr | None
    detector: Identifier
    status: Literal["firing", "resolved"]
    severity: Literal["info", "warning", "critical"]
    statistic: float
    threshold: float
    detected_at: Annotated[StrictStr, Field(pattern=RFC3339.pattern)]
    change_started_at: Annotated[StrictStr, Field(pattern=RFC3339.pattern)] | None
    events_seen: Annotated[int, Field(ge=0)]
    observed_at: Annotated[StrictStr, Field(pattern=RFC3339.pattern)]
    message: Annotated[StrictStr, Field(min_length=1)]
    details: dict[str, Any]

    @field_validator("statistic", "threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v
