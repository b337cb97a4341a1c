"""Typed decoding of conforming prediction events, straight into feature columns.

Most batches hold events that are exactly what the model's configuration says: every configured
feature present, numbers where numbers belong, strings (or null) for categories, nothing else.
For those, building a dict per event only to take it apart again is most of the decode cost.
msgspec finds the features object (:class:`Envelope`) and decodes it into a struct with one
typed field per feature, and the batch's numbers become a matrix in one call. The rest of the
event (identifiers, time, prediction, any other key) is small and is read by orjson with the
features object cut out (:func:`without_features`), exactly as the dict path reads it.

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
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

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
        # one C-level pass for the tuples, one numpy conversion (None becomes NaN)
        return np.array(list(map(self._numeric, rows)), dtype=np.float64).reshape(len(rows), self._k)

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


__all__ = ["Envelope", "FeatureDecoder", "decode_envelope", "without_features"]
