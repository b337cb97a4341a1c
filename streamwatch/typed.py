"""Typed decoding of conforming prediction events, straight into feature columns.

Most batches hold events that are exactly what the model's configuration says: every configured
feature present, numbers where numbers belong, strings (or null) for categories, nothing else.
For those, building a dict per event only to take it apart again is most of the decode cost.
The features object is decoded into a struct with one typed field per feature, and the batch's
numbers become a matrix in one call. An event with the contract's keys only is read in one
msgspec pass (:class:`Event`: identifiers and time typed as strictly as orjson reads them, the
prediction handed to orjson); any other is read with :class:`Envelope`, which finds the features
object, and the rest of the event is parsed by orjson with the features cut out
(:func:`without_features`), exactly as the dict path reads it.

Anything else (an absent or unknown feature, a type change, a malformed envelope) fails the typed
decode, and :mod:`streamwatch.decode` takes its dict path for that chunk of the batch, which
finds and counts what is wrong. Both paths give the same columns, counts and alerts
(``tests/unit/test_typed_decode.py``).

>>> dec = FeatureDecoder(["amount"], ["country"])
>>> rows = [dec.decode(b'{"amount": 3, "country": "fr"}'), dec.decode(b'{"country": null, "amount": 0.5}')]
>>> dec.numeric(rows).tolist(), dec.categorical(rows)
([[3.0], [0.5]], [['fr', None]])
>>> dec.as_dict(rows[1])
{'amount': 0.5, 'country': None}
>>> dec.decode(b'{"amount": "3", "country": "fr"}')
Traceback (most recent call last):
...
msgspec.ValidationError: Expected `float | null`, got `str` - at `$.amount`
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from streamwatch.events import MAX_EPOCH_MS

# msgspec reads integers of any size, orjson only those that fit a double (or 64 bits)
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]

# an absent ``features`` field: bytes no decoder accepts, so the chunk takes the dict path,
# which names the problem
_ABSENT = msgspec.Raw(b"")


class Envelope(msgspec.Struct, gc=False):
    """Where a prediction event's model and features are: only these two are read from it.

    The model picks the :class:`FeatureDecoder` of the features; everything else of the event
    is read by orjson from :func:`without_features`, as the dict path reads it.
    """

    model_id: Any = None
    features: msgspec.Raw = _ABSENT


decode_envelope = msgspec.json.Decoder(Envelope).decode


class Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A prediction event with the contract's keys and no others, read in one pass.

    Each key takes only what orjson would read the same way (a string; a time in epoch
    milliseconds in range), so an earlier copy of a repeated key is checked as strictly as the
    last; anything else fails the decode and the chunk is read with :class:`Envelope` instead.
    ``features`` goes to the model's :class:`FeatureDecoder`, ``prediction`` to orjson.
    """

    event_id: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    timestamp: EpochMs | str | None = None
    features: msgspec.Raw = _ABSENT
    prediction: msgspec.Raw = _ABSENT


decode_event = msgspec.json.Decoder(Event).decode


def once_each(values: Sequence[bytes]) -> bool:
    """Whether every value names ``features`` and ``prediction`` once and has no escape.

    msgspec skips the earlier copy of a repeated key it reads as raw bytes without checking it
    (where orjson would reject invalid UTF-8 or a number out of range in it). Without a
    backslash a key can only be spelled one way, so one literal per message (counted over the
    whole chunk at once) rules the repeats out; a false alarm (the word inside a value) only
    sends the chunk the slower way.

    >>> once_each([b'{"features":{},"prediction":{}}'])
    True
    >>> once_each([b'{"features":1,"features":{},"prediction":{}}'])
    False
    """
    joined = b"\n".join(values)
    n = len(values)
    return b"\\" not in joined and joined.count(b'"features"') == n and joined.count(b'"prediction"') == n


def without_features(value: bytes, features: msgspec.Raw) -> bytes:
    """``value`` with its ``features`` object (as :class:`Envelope` found it) replaced by ``0``.

    orjson parses the rest, so every byte outside the features is checked and read exactly as
    the dict path reads it (msgspec skips what the envelope ignores, such as unknown keys and the
    earlier copy of a repeated key, without checking its UTF-8 or number range). The last copy is
    replaced, as the last copy of a key is the one decoded; the caller checks that the parsed
    ``features`` is that 0, in case the same text also came later inside another value.

    >>> without_features(b'{"a":{"x":1},"features":{"x":1}}', msgspec.Raw(b'{"x":1}'))
    b'{"a":{"x":1},"features":0}'
    """
    i = value.rfind(features)
    if i < 0:
        raise ValueError("the features object is not in the message")
    return b"".join((value[:i], b"0", value[i + len(features) :]))


MODEL_ID = attrgetter("model_id")
FEATURES = attrgetter("features")
EVENT_FIELDS = attrgetter("event_id", "model_id", "model_version", "timestamp")
PREDICTION = attrgetter("prediction")


class FeatureDecoder:
    """One model's ``features`` object decoded into a struct of typed fields.

    Parameters
    ----------
    numeric, categorical
        The model's feature names, in :class:`~streamwatch.columns.FeatureSchema` order.

    The struct requires every configured feature and forbids others; a numeric feature takes a
    number or null (integers become floats, as numpy makes them), a categorical one a string or
    null. Struct fields are named ``f0, f1, ...`` and renamed to the feature names, so any name
    works.
    """

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str]) -> None:
        self.names = [*numeric, *categorical]
        self._k = len(numeric)
        attrs = [f"f{i}" for i in range(len(self.names))]
        fields: list[tuple[str, Any]] = [(a, float | None) for a in attrs[: self._k]]
        fields += [(a, str | None) for a in attrs[self._k :]]
        struct = msgspec.defstruct(
            "Features",
            fields,
            rename=dict(zip(attrs, self.names, strict=True)),
            forbid_unknown_fields=True,
            gc=False,
        )
        self.decode = msgspec.json.Decoder(struct).decode
        self._all = attrgetter(*attrs) if attrs else None
        self._numeric = attrgetter(*attrs[: self._k]) if self._k else None
        self._categorical = [attrgetter(a) for a in attrs[self._k :]]

    def numeric(self, rows: Sequence[Any]) -> npt.NDArray[np.float64]:
        """``(n, numeric features)`` values; null is NaN."""
        if self._numeric is None:
            return np.empty((len(rows), 0))
        n = len(rows)
        if self._k > 1:
            try:  # C-level passes straight into the array; a null stops it
                flat = np.fromiter(chain.from_iterable(map(self._numeric, rows)), np.float64, n * self._k)
                return flat.reshape(n, self._k)
            except TypeError:
                pass
        # None becomes NaN in numpy's conversion of the tuples
        return np.array(list(map(self._numeric, rows)), dtype=np.float64).reshape(n, self._k)

    def categorical(self, rows: Sequence[Any]) -> list[list[str | None]]:
        """One list of values per categorical feature."""
        return [list(map(get, rows)) for get in self._categorical]

    @classmethod
    def of(cls, numeric: Sequence[str], categorical: Sequence[str]) -> FeatureDecoder | None:
        """The decoder, or None when msgspec cannot name a field so (a quote, a backslash or a
        control character in a feature name): that model's events all take the dict path."""
        try:
            return cls(numeric, categorical)
        except ValueError:
            return None

    def as_dict(self, row: Any) -> dict[str, Any]:
        """The event's ``features`` object, for a group that also holds events of the dict path."""
        if self._all is None:
            return {}
        values = self._all(row)
        return dict(zip(self.names, values if len(self.names) > 1 else (values,), strict=True))


__all__ = [
    "Envelope",
    "Event",
    "FeatureDecoder",
    "decode_envelope",
    "decode_event",
    "once_each",
    "without_features",
]
