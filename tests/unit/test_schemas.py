"""The JSON Schemas, the pydantic models and the hot-path decoder must agree on every example."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from streamwatch.decode import RawMessage, decode_labels, decode_predictions
from streamwatch.events import AlertEvent, LabelEvent, PredictionEvent

SCHEMAS = Path(__file__).parents[2] / "schemas"
MODELS: dict[str, type[BaseModel]] = {
    "prediction": PredictionEvent,
    "label": LabelEvent,
    "alert": AlertEvent,
}
DECODERS = {"prediction": decode_predictions, "label": decode_labels}


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _examples() -> list[tuple[str, bool, Path]]:
    out = []
    for kind in MODELS:
        for validity in ("valid", "invalid"):
            for p in sorted((SCHEMAS / "examples" / kind / validity).glob("*.json")):
                out.append((kind, validity == "valid", p))
    return out


def _pydantic_accepts(kind: str, doc: object) -> bool:
    try:
        MODELS[kind].model_validate_json(json.dumps(doc))
        return True
    except ValidationError:
        return False


class _AnyModel:
    """Every model is configured: the schema knows nothing of configuration."""

    def __contains__(self, _: object) -> bool:
        return True


def _decoder_accepts(kind: str, doc: object, message_time: int | None = 1_795_774_502_000) -> bool:
    groups, dead = DECODERS[kind]([RawMessage(orjson.dumps(doc), message_time)], _AnyModel())
    return bool(groups) and not dead


@pytest.mark.parametrize(("kind", "valid", "path"), _examples(), ids=lambda v: getattr(v, "stem", str(v)))
def test_example_agrees_everywhere(kind: str, valid: bool, path: Path) -> None:
    doc = json.loads(path.read_text())
    assert _validator(kind).is_valid(doc) is valid, f"JSON Schema disagrees on {path.name}"
    assert _pydantic_accepts(kind, doc) is valid, f"pydantic model disagrees on {path.name}"
    if kind in DECODERS:
        assert _decoder_accepts(kind, doc) is valid, f"hot-path decoder disagrees on {path.name}"


def test_every_kind_has_valid_and_invalid_examples() -> None:
    seen = {(k, v) for k, v, _ in _examples()}
    assert seen == {(k, v) for k in MODELS for v in (True, False)}


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
_value = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=2),
    st.dictionaries(st.text(max_size=3), _scalar, max_size=2),
)
_timestamp = st.one_of(
    st.none(),
    st.integers(-10, 2**42),
    st.floats(-10, 2**42),
    st.just(1.7e12),
    st.sampled_from(
        [
            "2026-11-27T10:15:02Z",
            "2026-11-27T10:15:02.5+01:00",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "",
        ]
    ),
)
_prediction_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=4), _scalar),
        "model_id": st.just("credit-risk") | _scalar,
        "model_version": st.one_of(st.none(), st.text(max_size=3), st.integers(-(2**53), 2**53)),
        "timestamp": _timestamp,
        "features": st.one_of(st.dictionaries(st.text(max_size=4), _value, max_size=4), _scalar),
        "prediction": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "label": _value,
                    "scores": st.one_of(st.dictionaries(st.text(max_size=3), _scalar, max_size=3), _scalar),
                    "value": _scalar,
                },
            ),
            _scalar,
        ),
    },
)
_label_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=4), _scalar),
        "model_id": st.just("credit-risk") | _scalar,
        "timestamp": _timestamp,
        "label": _value,
        "value": _scalar,
    },
)


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(_prediction_like)
def test_generated_predictions_agree(doc: dict[str, object]) -> None:
    expected = _validator("prediction").is_valid(doc)
    assert _pydantic_accepts("prediction", doc) is expected
    assert _decoder_accepts("prediction", doc) is expected


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(_label_like)
def test_generated_labels_agree(doc: dict[str, object]) -> None:
    expected = _validator("label").is_valid(doc)
    assert _pydantic_accepts("label", doc) is expected
    assert _decoder_accepts("label", doc) is expected
