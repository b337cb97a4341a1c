"""Feature dicts of one model's events to numpy columns, with per-feature quality counts.

Numeric features become one float matrix (missing, null and invalid values are NaN);
categorical features become integer codes into a per-feature vocabulary that grows as values
appear (capped, so a cardinality bomb cannot exhaust memory: values past the cap share one code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.config import FeatureType

MISSING = -1  # category code of a missing or null value
_NUMERIC_TYPES = frozenset((int, float, type(None)))
_CATEGORY_TYPES = frozenset((str, type(None)))


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


_is_number_v = np.frompyfunc(_is_number, 1, 1)


def _getter(names: Sequence[str]) -> Callable[[dict[str, Any]], Any] | None:
    """A row's values of ``names`` in one C call (a tuple, or the value itself for one name)."""
    return itemgetter(*names) if names else None


def _gather(
    rows: Sequence[dict[str, Any]], names: Sequence[str], get: Callable[[dict[str, Any]], Any] | None
) -> list[Any]:
    """Each row's values of ``names`` (a tuple per row, or the value for one name) in one C-level
    pass; None where a row lacks a name."""
    if get is None:
        return []
    try:
        return list(map(get, rows))
    except KeyError:  # some row lacks a feature: the same, key by key
        if len(names) == 1:
            return [r.get(names[0]) for r in rows]
        return [tuple(map(r.get, names)) for r in rows]


def _values(gathered: list[Any], width: int) -> Iterable[Any]:
    """The gathered values one by one."""
    return gathered if width == 1 else chain.from_iterable(gathered)


@dataclass(slots=True)
class Columns:
    numeric: npt.NDArray[np.float64]  # (n, n_numeric), NaN where missing or invalid
    categorical: npt.NDArray[np.int64]  # (n, n_categorical) codes, MISSING where absent
    missing: npt.NDArray[np.int64]  # per feature (numeric then categorical): absent or null
    invalid: npt.NDArray[np.int64]  # per feature: present with the wrong type, or non-finite


class FeatureSchema:
    """The features a model is configured with, and their category vocabularies."""

    def __init__(self, features: dict[str, FeatureType], max_vocabulary: int = 10_000) -> None:
        self.numeric = [n for n, t in features.items() if t is FeatureType.NUMERIC]
        self.categorical = [n for n, t in features.items() if t is FeatureType.CATEGORICAL]
        self.names = self.numeric + self.categorical
        self.max_vocabulary = max_vocabulary  # limits.max_category_values
        self.vocabularies: list[dict[Any, int]] = [{None: MISSING} for _ in self.categorical]
        # values coded as overflow since this object was made (a process-lifetime counter)
        self.overflowed = 0
        # (feature, row) of the last columns() call where a vocabulary first overflowed
        self.overflow_began: list[tuple[int, int]] = []
        self._numeric_get = _getter(self.numeric)
        self._categorical_get = _getter(self.categorical)

    OVERFLOW = "__overflow__"

    def columns(self, rows: Sequence[dict[str, Any]]) -> Columns:
        n = len(rows)
        names = self.numeric
        # C-level passes over the batch: values (a missing key costs a fallback), then their types
        raw = _gather(rows, names, self._numeric_get)
        if set(map(type, _values(raw, len(names)))) <= _NUMERIC_TYPES:
            x = np.array(raw, dtype=np.float64).reshape(n, len(names))  # None -> NaN
            invalid = np.zeros(len(names), dtype=np.int64)
        else:  # some value of the wrong type: find it without failing the whole batch
            obj = np.array(raw, dtype=object).reshape(n, len(names))
            ok = _is_number_v(obj).astype(bool)
            invalid = (~ok & (obj != None)).sum(axis=0).astype(np.int64)  # noqa: E711
            x = np.where(ok, obj, np.nan).astype(np.float64)
        nan = np.isnan(x)
        absent = nan.sum(axis=0) - invalid
        finite = np.isfinite(x)
        if finite.all():
            num_invalid = invalid
        else:
            nonfinite = (~finite & ~nan).sum(axis=0)
            x[~finite] = np.nan
            num_invalid = invalid + nonfinite

        self.overflow_began = []
        k = len(self.categorical)
        codes = np.empty((n, k), dtype=np.int64)
        cat_missing = np.zeros(k, dtype=np.int64)
        cat_invalid = np.zeros(k, dtype=np.int64)
        if k:
            gathered = _gather(rows, self.categorical, self._categorical_get)
            by_feature = [gathered] if k == 1 else [list(c) for c in zip(*gathered, strict=True)] or [[]] * k
            for j in range(k):
                values = by_feature[j]
                if not set(map(type, values)) <= _CATEGORY_TYPES:
                    # numbers and booleans are accepted as categories by their text, and counted
                    cat_invalid[j] = sum(1 for v in values if v is not None and type(v) is not str)
                    values = [
                        v if v is None or type(v) is str else str(v).lower() if type(v) is bool else str(v)
                        for v in values
                    ]
                codes[:, j] = self._encode(j, values)
                cat_missing[j] = int(np.count_nonzero(codes[:, j] == MISSING))
        return Columns(
            numeric=x,
            categorical=codes,
            missing=np.concatenate([absent, cat_missing]).astype(np.int64),
            invalid=np.concatenate([num_invalid, cat_invalid]).astype(np.int64),
        )

    def columns_of(
        self, numeric: npt.NDArray[np.float64], categorical: Sequence[list[str | None]]
    ) -> Columns:
        """:meth:`columns` of values already split by feature: ``numeric`` is ``(n, n_numeric)``
        (NaN counts as missing and ±inf as invalid, as null and non-finite values of an event
        do), ``categorical`` one list of strings or None per categorical feature.

        The output monitors' path: their values come from arrays, so building event dicts only
        to take them apart again is skipped.

        >>> s = FeatureSchema({"score": FeatureType.NUMERIC, "cls": FeatureType.CATEGORICAL})
        >>> c = s.columns_of(np.array([[0.5], [np.nan], [np.inf]]), [["a", None, "a"]])
        >>> c.categorical.ravel().tolist(), c.missing.tolist(), c.invalid.tolist()
        ([0, -1, 0], [1, 1], [1, 0])
        """
        n = len(numeric)
        finite = np.isfinite(numeric)
        nan = np.isnan(numeric)
        x = numeric if finite.all() else np.where(finite, numeric, np.nan)
        self.overflow_began = []
        codes = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, values in enumerate(categorical):
            codes[:, j] = self._encode(j, values)
        missing = np.concatenate([nan.sum(axis=0), (codes == MISSING).sum(axis=0)])
        invalid = np.concatenate([(~finite & ~nan).sum(axis=0), np.zeros(len(categorical))])
        return Columns(x, codes, missing.astype(np.int64), invalid.astype(np.int64))

    def _encode(self, j: int, values: list[Any]) -> npt.NDArray[np.int64]:
        vocab = self.vocabularies[j]  # holds None -> MISSING, so lookups need no branch
        if len(vocab) <= self.max_vocabulary or self.OVERFLOW not in vocab:
            # first-appearance order keeps codes identical however the events are batched
            for v in dict.fromkeys(values):
                if v not in vocab:
                    if len(vocab) <= self.max_vocabulary:
                        vocab[v] = len(vocab) - 1
                    else:
                        if self.OVERFLOW not in vocab:  # the state's one overflow event
                            vocab[self.OVERFLOW] = len(vocab) - 1
                            self.overflow_began.append((j, values.index(v)))
                        break
        if self.OVERFLOW in vocab:
            overflow, get = vocab[self.OVERFLOW], vocab.get
            codes = np.fromiter((get(v, overflow) for v in values), np.int64, len(values))
            # a value named like the overflow code is counted with it: it shares the code anyway
            self.overflowed += int(np.count_nonzero(codes == overflow))
            return codes
        return np.fromiter(map(vocab.__getitem__, values), np.int64, len(values))

    def vocabulary(self, j: int) -> list[str]:
        """Category values of feature ``j`` in code order."""
        return [v for v in self.vocabularies[j] if v is not None]
