"""QualityWatch: the dev-prod and data-quality checks of one model, as a pure state machine.

:class:`~streamwatch.monitor.ModelMonitor` owns one. It is built from a reference - the model's
profile (:func:`QualityWatch.from_profile`) or its warm-up events (:func:`QualityWatch.from_sample`)
- and fed every batch's columns (:meth:`QualityWatch.update`). Every ``step`` events (counted on
the model's event index, so results do not depend on batch boundaries) it runs the checks of
:mod:`streamwatch.quality` on the last ``window_size`` events, all vectorised over features.

Each event is summarised once, into the chunk of ``step`` events it falls in
(:mod:`streamwatch.quality.chunks`: counts, extremes and reference cells of all features and
all chunks of a batch at once); a window is the sum of its chunks. From the window sums of a
whole batch, gates say where a check could find something (never closed where it would); only
there do the exact checks run, on the sums and, for what sums cannot give, on the window's raw
rows (kept in ring buffers): the KS tests and fits of swaps and unit changes, new categories by
name, the change start of a new finding. Alerts are those of checking every window in full.
The checks:

- ``column_swap``: :func:`~streamwatch.quality.column_swap.detect_column_swap` over the numeric
  features (one alert per cycle of the permutation);
- ``unit_change``: :func:`~streamwatch.quality.unit_change.detect_unit_change` per numeric
  feature not part of a swap;
- ``new_category``: a :class:`~streamwatch.quality.new_category.NewCategoryTracker` per
  categorical feature, filled from code counts (one ``bincount`` per feature);
- ``data_quality``: missing (null) rate, invalid rate (a value of the wrong type, e.g. a string
  in a numeric field, or not finite: the event is kept and the value counted invalid), out of
  range and turned constant (:mod:`streamwatch.quality.checks`).

Lifecycle: one ``firing`` alert per condition (kind + features + check) until a whole window
passes without it, then one ``resolved``. Out-of-range findings fire only once they have held
for a whole window and no unit change, swap or firing drift of the feature explains them (a
unit change puts values out of range long before its factor can be estimated).
:attr:`QualityWatch.explained` names the features of firing unit changes and swaps; the
monitor withholds their ``data_drift`` alerts (one root cause, one alert). The change start of
each alert is the split of the window that maximises ``S^2 / n`` of the tail's summed scores
(a CUSUM change point against the reference's known null: probability integral transforms for
swaps and unit changes, indicators minus their reference rate for the rest).

The state snapshots to plain JSON (:meth:`QualityWatch.to_dict`, :meth:`QualityWatch.from_dict`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.alerts import Alert
from streamwatch.config import QualitySettings
from streamwatch.events import format_timestamp
from streamwatch.jsonarrays import floats as _floats
from streamwatch.profile import canonical_value
from streamwatch.quality.checks import (
    QualityReference,
    binomial_tail_bound,
    constant_findings,
    missing_findings,
    missing_null_rate,
    range_findings,
    range_null_rate,
)
from streamwatch.quality.chunks import Chunks, Layout, Rows, SketchCells, Windows, summarise
from streamwatch.quality.column_swap import ColumnSwapResult, detect_column_swap
from streamwatch.quality.ks import ks_distance, ks_threshold
from streamwatch.quality.new_category import NewCategoryTracker
from streamwatch.quality.schema import OTHER, SchemaScan, count_capped
from streamwatch.quality.unit_change import CONVERSIONS, detect_unit_change

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SNAPSHOT_FORMAT = "streamwatch.quality-watch"
SNAPSHOT_VERSION = 2  # v2: doubletons of the categorical references; v1 restores (from_dict)
POINTS = 101  # quantile sketch points (the profile's default)
INVALID_TOLERANCE = 0.01  # invalid-rate slack over the reference's, like the missing check
EXPLAINING = ("unit_change", "column_swap")
# out-of-range share tolerated over what clean data gives: a few percent outside the reference
# range is what an ordinary drift does (a 1-sd mean shift puts ~3 % beyond a 1000-event range),
# and drift has its own alert; sentinels, broken sensors and unit changes put far more there
RANGE_TOLERANCE = 0.05
MIN_TAIL = 100  # events after the estimated change start a swap or unit fit needs
MIN_CONSTANT = 20  # finite values a window needs before it can be called constant
# the summaries' gates must never close where an exact check would find something: p-values
# and thresholds computed over all windows of a batch at once may differ from the exact ones
# in the last bits, so the gates are this much looser
SLACK = 1e-6


def invalid_rows(
    rows: Sequence[dict[str, Any]], numeric: Sequence[str], categorical: Sequence[str], invalid: IntArray
) -> BoolArray | None:
    """Per event and feature (numeric then categorical): the value is present but invalid.

    ``invalid`` is the batch's per-feature count from :meth:`FeatureSchema.columns`; only the
    features it flags are looked at (rare), so a clean batch costs nothing. Numeric: not a
    number (a string, a boolean) or not finite; categorical: not a string.
    """
    if not invalid.any():
        return None
    names = [*numeric, *categorical]
    out = np.zeros((len(rows), len(names)), dtype=bool)
    for f in np.flatnonzero(invalid).tolist():
        vals = [r.get(names[f]) for r in rows]
        if f < len(numeric):
            out[:, f] = [
                v is not None and (type(v) not in (int, float) or not math.isfinite(v)) for v in vals
            ]
        else:
            out[:, f] = [v is not None and type(v) is not str for v in vals]
    return out


def _profile_doubletons(p: dict[str, Any]) -> int:
    """Values a categorical profile saw exactly twice: its ``doubletons``, else counted from its
    top values when they hold every value seen more than once, else as many as it saw once
    (a long tail has about as many values seen twice as once, or fewer) within what the values
    outside the top can hold."""
    if "doubletons" in p:
        return int(p["doubletons"])
    top = [int(c) for _, c in p.get("top", [])]
    in_top = sum(1 for c in top if c == 2)
    singles_outside = int(p["singletons"]) - sum(1 for c in top if c == 1)
    rest = int(p.get("other", 0)) - singles_outside  # values outside the top seen twice or more
    if rest <= 0:
        return in_top
    if top and min(top) <= 2:  # the values outside the top were seen at most twice
        return in_top + rest // 2
    return in_top + min(int(p["singletons"]), rest // 2)


def _invalid_message(name: str, kind: str, rate: float, ref: float, since: str) -> str:
    return (
        f"{name} has values that are not valid {kind} values in {rate:.1%} of events since {since} "
        f"(reference {ref:.1%}); the events are kept, the values counted invalid"
    )


def _change_row(z: FloatArray) -> int:
    """Row where the change most likely began: argmax over splits of ``|tail sum|^2 / tail length``."""
    z2 = np.nan_to_num(z.reshape(len(z), -1))
    tails = np.cumsum(z2[::-1], axis=0)[::-1]
    stat = (tails**2).sum(axis=1) / (len(z2) - np.arange(len(z2)))
    return int(np.argmax(stat))


def _pit_scores(u: FloatArray) -> FloatArray:
    """Standardised probability integral transform scores (location and spread channels)."""
    u = np.where(np.isfinite(u), u, 0.5)
    return np.column_stack([(u - 0.5) * math.sqrt(12.0), (np.abs(u - 0.5) - 0.25) * math.sqrt(48.0)])


def batch_cdf(q: FloatArray, x: FloatArray) -> FloatArray:
    """:func:`~streamwatch.quality.ks.sketch_cdf` (right-continuous) of every feature at once:
    ``q`` (k, points) sketches, ``x`` (n, k) values; NaN stays NaN."""
    k, points = q.shape
    p = np.linspace(0.0, 1.0, points)
    idx = np.empty(x.shape, dtype=np.int64)
    for j in range(k):  # one binary search per feature, vectorised over the events
        idx[:, j] = np.searchsorted(q[j], x[:, j], side="right")  # quantiles <= x
    idx[np.isnan(x)] = 0
    lo, hi = np.clip(idx - 1, 0, points - 1), np.clip(idx, 0, points - 1)
    cols = np.arange(k)[None, :]
    qlo, qhi = q[cols, lo], q[cols, hi]
    width = qhi - qlo
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(width > 0, (x - qlo) / np.where(width > 0, width, 1.0), 0.0)
    f = p[lo] + (p[hi] - p[lo]) * np.clip(frac, 0.0, 1.0)
    f = np.where(idx <= 0, 0.0, np.where(idx >= points, 1.0, f))
    out: FloatArray = np.where(np.isnan(x), np.nan, f)
    return out


def batch_ks(u: FloatArray) -> FloatArray:
    """KS distance of each column's values (given as reference CDF values ``u``, NaN: absent)
    to the uniform law, i.e. to its reference; NaN for a column without values."""
    n = np.isfinite(u).sum(axis=0)
    s = np.sort(u, axis=0)  # NaN last
    i = np.arange(1, len(u) + 1)[:, None]
    ok = i <= n[None, :]
    nn = np.maximum(n, 1)[None, :]
    with np.errstate(invalid="ignore"):
        d = np.where(ok, np.maximum(i / nn - s, s - (i - 1) / nn), -np.inf).max(axis=0, initial=-np.inf)
    return np.where(n > 0, d, np.nan)


def _json(a: npt.ArrayLike) -> Any:
    """An array as nested lists with NaN as None."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        return np.where(np.isnan(arr), None, arr).tolist()  # type: ignore[call-overload]
    return arr.tolist()


def _safe(v: Any) -> Any:
    """JSON-safe evidence: numpy scalars to Python, NaN/inf floats to None."""
    if isinstance(v, dict):
        return {str(k): _safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


RowsOf = Callable[[], Rows]  # the raw rows of an evaluation window, read on demand
Scores = Callable[[], FloatArray]  # a finding's per-row scores, computed on demand


# per-row scores of each kind of finding (indicator minus its reference rate), read from the
# window's raw rows: bound with partial() and computed only when a finding opens a condition


def _scores(flags: npt.ArrayLike, offset: float = 0.0) -> FloatArray:
    out: FloatArray = np.asarray(flags, dtype=np.float64) - offset
    return out


def _null_scores(rows: RowsOf, j: int, offset: float) -> FloatArray:
    return _scores(rows().null()[:, j], offset)


def _absent_scores(rows: RowsOf, j: int, offset: float) -> FloatArray:
    return _scores(rows().absent[:, j], offset)


def _invalid_scores(rows: RowsOf, j: int, offset: float) -> FloatArray:
    return _scores(rows().bad[:, j], offset)


def _outside_scores(rows: RowsOf, j: int, lo: float, hi: float, offset: float) -> FloatArray:
    x = rows().x[:, j]
    with np.errstate(invalid="ignore"):
        return _scores((x < lo) | (x > hi), offset)


def _equal_scores(rows: RowsOf, j: int, value: float, offset: float) -> FloatArray:
    return _scores(rows().x[:, j] == value, offset)


def _unknown_scores(rows: RowsOf) -> FloatArray:
    return _scores(rows().unknown)


def _dup_scores(rows: RowsOf) -> FloatArray:
    return _scores(rows().dup)


def _given(z: FloatArray) -> FloatArray:
    """Scores already at hand (swaps, unit changes and new categories compute them anyway)."""
    return z


@dataclass(slots=True)
class _Finding:
    key: str
    kind: str
    features: list[str]
    detector: str
    statistic: float
    threshold: float
    severity: str
    message: Callable[[str], str]  # since (formatted time) -> sentence
    details: dict[str, Any]
    z: Scores  # per-row scores for the change start (only a new condition needs them)
    hold: bool = False  # fire only after a whole window, and only if nothing explains it
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Summary:
    """One evaluation window's counts: the sums of its chunks' (see :class:`~.chunks.Layout`)."""

    missing: IntArray  # (k + c,) null values
    bad: IntArray  # (k + c,) invalid values
    absent: IntArray  # (k + c,) absent keys
    finite: IntArray  # (k,)
    outside: IntArray  # (k,) finite values outside the reference range
    new: IntArray  # (c,) values the reference never saw
    dup: int  # events with a duplicate id
    unknown: int  # events with unknown fields
    lo: FloatArray  # (k,) smallest finite value (inf: none)
    hi: FloatArray  # (k,) largest finite value (-inf: none)

    @classmethod
    def of(cls, windows: Windows, t: int, layout: Layout) -> _Summary:
        c = windows.counts[t]
        return cls(
            c[layout.missing], c[layout.bad], c[layout.absent], c[layout.finite], c[layout.outside],
            c[layout.new], int(c[layout.dup]), int(c[layout.unknown]), windows.lo[t], windows.hi[t],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Gates:
    """Per window of a batch: may the check groups find anything? Computed from the summaries
    of all the batch's windows at once and never false where the exact check would find
    something, so the exact checks run only where a gate is open."""

    drift: BoolArray  # some numeric feature may be clearly unlike its reference (swap, unit)
    new: BoolArray  # enough values the reference never saw (new categories)
    quality: BoolArray  # missing, invalid, out of range or constant
    schema: BoolArray  # unknown fields or duplicate ids

    @property
    def open(self) -> BoolArray:
        out: BoolArray = self.drift | self.new | self.quality | self.schema
        return out


class QualityWatch:
    """Dev-prod and data-quality checks over a sliding window of one model's events.

    Parameters are the model's feature names (numeric, then categorical, as in
    :class:`~streamwatch.columns.FeatureSchema`), the settings, and per-feature reference
    arrays; use :meth:`from_profile` or :meth:`from_sample` rather than calling this directly.
    """

    def __init__(
        self,
        model_id: str,
        numeric: Sequence[str],
        categorical: Sequence[str],
        settings: QualitySettings,
        *,
        source: str,
        rows: int,
        quantiles: FloatArray,
        counts: IntArray,
        minimum: FloatArray,
        maximum: FloatArray,
        mode_share: FloatArray,
        missing_rate: FloatArray,
        invalid_rate: FloatArray,
        vocabularies: Sequence[Sequence[str] | None],
        category_counts: Sequence[int],
        singletons: Sequence[int],
        doubletons: Sequence[int] | None = None,
        start_index: int = 0,
    ) -> None:
        self.model_id = model_id
        self.numeric, self.categorical = list(numeric), list(categorical)
        self.names = self.numeric + self.categorical
        self.settings = settings
        self.source = source
        self.rows = int(rows)
        k, c, w = len(self.numeric), len(self.categorical), settings.window_size
        self.quantiles = np.asarray(quantiles, dtype=np.float64).reshape(k, POINTS)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.minimum, self.maximum = np.asarray(minimum, np.float64), np.asarray(maximum, np.float64)
        self.mode_share = np.asarray(mode_share, dtype=np.float64)
        self.missing_rate = np.asarray(missing_rate, dtype=np.float64)
        self.invalid_rate = np.asarray(invalid_rate, dtype=np.float64)
        self.vocabularies = [None if v is None else sorted(v) for v in vocabularies]
        self.category_counts = [int(n) for n in category_counts]
        self.singletons = [int(n) for n in singletons]
        # values seen twice (without them: as many as seen once, see _profile_doubletons)
        self.doubletons = [int(n) for n in (self.singletons if doubletons is None else doubletons)]
        # ring buffers of the last window, indexed by model event index modulo the window
        self.x = np.full((w, k), np.nan)
        self.codes = np.full((w, c), -1, dtype=np.int64)
        self.bad = np.zeros((w, k + c), dtype=bool)
        self.times = np.zeros(w, dtype=np.int64)
        # schema checks: per event a duplicate id, configured features absent (the key is not in
        # the event), any unknown key; unknown keys counted by name per step block of the window
        self.dup = np.zeros(w, dtype=bool)
        self.absent = np.zeros((w, k + c), dtype=bool)
        self.has_unknown = np.zeros(w, dtype=bool)
        blocks = w // settings.step
        self.unknown_blocks: list[Counter[str]] = [Counter() for _ in range(blocks)]
        # summaries of the chunks of step events, by chunk id (model event index // step) modulo
        # the window's blocks; derived from the rings (not part of the snapshot)
        self._layout = Layout.of(k, c)
        self._chunks = Chunks.empty(blocks, self._layout)
        self._chunks_stale = False  # a restored snapshot: rebuilt from the rings at the next update
        self.reference_version: str | None = None  # the model_version whose profile is the reference
        self.position = int(start_index)  # model event index of the next row
        self.filled = 0
        # key -> {kind, features, detector, status: pending|firing, first, last, since}
        self.conditions: dict[str, dict[str, Any]] = {}
        # features whose data_drift alert fires (set by the monitor before each update): an
        # out-of-range share is then a symptom of that drift, not a second alert
        self.drifting: set[str] = set()
        self._derive()

    def _derive(self) -> None:
        """Objects rebuilt from the reference (not part of the snapshot)."""
        s = self.settings
        usable = np.isfinite(self.quantiles).all(axis=1) & (self.counts > 0)
        self._usable = usable
        self._q_safe = np.where(usable[:, None], self.quantiles, 0.0)
        big = int(self.counts[usable].max()) if usable.any() else 1
        self._swap_counts = np.where(usable, np.maximum(self.counts, 1), big)
        self._qref = QualityReference(
            np.maximum(self.counts, 1), self.missing_rate[: len(self.numeric)], self.minimum, self.maximum,
            self.mode_share,
        )  # fmt: skip
        n_all = len(self.names)
        self._missing_ref = QualityReference(
            np.full(n_all, max(self.rows, 1), dtype=np.int64), self.missing_rate,
            np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
        )  # fmt: skip
        self._trackers: list[NewCategoryTracker | None] = [
            None
            if vocab is None
            else NewCategoryTracker(
                vocab,
                feature=j,
                max_tracked=s.new_category_max_tracked,
                min_count=s.new_category_min_count,
                min_share=s.new_category_min_share,
                reference_count=self.category_counts[j],
                reference_singletons=self.singletons[j],
                reference_doubletons=self.doubletons[j],
                alpha=s.alpha,
            )
            for j, vocab in enumerate(self.vocabularies)
        ]
        self._values: list[list[str]] = [[] for _ in self.categorical]  # value of each code
        self._is_new: list[BoolArray] = [np.zeros(0, dtype=bool) for _ in self.categorical]
        # what the gates of the summaries compare with (see _gates)
        self._cells = SketchCells(self._q_safe)  # the KS bound's cells of each numeric feature
        self._p0_missing = missing_null_rate(self._missing_ref)
        self._p0_invalid = (self.invalid_rate * self.rows + 1) / (self.rows + 2) + INVALID_TOLERANCE
        self._p0_range = range_null_rate(self._qref, RANGE_TOLERANCE)
        self._has_range = np.isfinite(self.minimum)
        with np.errstate(divide="ignore"):
            self._log_mode_share = np.log(np.clip(np.nan_to_num(self.mode_share, nan=1.0), 0.0, 1.0))
        never = np.iinfo(np.int64).max
        self._min_new = np.array([never if t is None else t.min_count for t in self._trackers], np.int64)
        self._floors: dict[tuple[int, int], float] = {}  # (feature, non-null values) -> tracker floor
        self._ks_t = math.sqrt(-math.log(s.alpha / 2.0) / 2.0)  # ks_threshold's, vectorised in _gates

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_profile(
        cls,
        model_id: str,
        numeric: Sequence[str],
        categorical: Sequence[str],
        profile: dict[str, Any],
        settings: QualitySettings,
    ) -> QualityWatch:
        """From a reference profile (:mod:`streamwatch.profile`); every feature must be in it
        with the configured type (ValueError naming the feature otherwise)."""
        feats = profile["features"]

        def col(name: str, kind: str) -> dict[str, Any]:
            p = feats.get(name)
            if p is None or p["type"] != kind:
                got = "no such feature" if p is None else f"type {p['type']}"
                raise ValueError(
                    f"profile of model {model_id!r} does not describe {kind} feature {name!r} ({got})"
                )
            return dict(p)

        num = [col(n, "numeric") for n in numeric]
        cat = [col(n, "categorical") for n in categorical]

        def qs(p: dict[str, Any]) -> list[float]:
            q = p.get("quantiles")
            if not q:
                return [math.nan] * POINTS
            return list(np.interp(np.linspace(0, 1, POINTS), np.linspace(0, 1, len(q)), q))

        def f(v: Any) -> float:
            return math.nan if v is None else float(v)

        return cls(
            model_id,
            numeric,
            categorical,
            settings,
            source="profile",
            rows=int(profile["rows"]),
            quantiles=np.array([qs(p) for p in num], dtype=np.float64).reshape(len(num), POINTS),
            counts=np.array([p["valid"] for p in num], dtype=np.int64),
            minimum=np.array([f(p["min"]) for p in num]),
            maximum=np.array([f(p["max"]) for p in num]),
            mode_share=np.array([f(p["mode_share"]) for p in num]),
            missing_rate=np.array([p["missing_rate"] for p in num + cat], dtype=np.float64),
            invalid_rate=np.array(
                [p.get("non_finite", 0) / max(p["count"], 1) for p in num] + [0.0] * len(cat)
            ),
            vocabularies=[p["vocabulary"] for p in cat],
            category_counts=[p["valid"] for p in cat],
            singletons=[p["singletons"] for p in cat],
            doubletons=[_profile_doubletons(p) for p in cat],
        )

    @classmethod
    def from_sample(
        cls,
        model_id: str,
        numeric: Sequence[str],
        categorical: Sequence[str],
        x: FloatArray,
        codes: IntArray,
        vocabulary: Callable[[int], list[str]],
        invalid_rate: FloatArray,
        settings: QualitySettings,
        start_index: int,
    ) -> QualityWatch:
        """From the warm-up reference: numeric matrix (NaN: missing or invalid), category codes
        (-1: missing) with their vocabularies, and each feature's invalid rate in the warm-up."""
        m, k = x.shape
        finite = np.isfinite(x)
        valid = finite.sum(axis=0)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(np.where(finite, x, np.nan), np.linspace(0, 1, POINTS), axis=0).T
        q = np.where(valid[:, None] > 0, q, np.nan).reshape(k, POINTS)
        lo = np.where(finite, x, np.inf).min(axis=0) if m else np.full(k, np.inf)
        hi = np.where(finite, x, -np.inf).max(axis=0) if m else np.full(k, -np.inf)
        share = np.full(k, np.nan)
        for j in range(k):  # per feature, not per event
            v = np.sort(x[finite[:, j], j])
            if len(v):
                _, runs = np.unique(v, return_counts=True)
                share[j] = runs.max() / len(v)
        inv = np.asarray(invalid_rate, dtype=np.float64)
        miss_num = np.clip((~finite).mean(axis=0) - inv[:k], 0.0, 1.0) if m else np.zeros(k)
        vocabs, cat_counts, singles, doubles, miss_cat = [], [], [], [], []
        for j in range(codes.shape[1]):
            cj = codes[:, j]
            present = cj[cj >= 0]
            values = vocabulary(j)
            bc = np.bincount(present, minlength=len(values)) if len(present) else np.zeros(0, np.int64)
            seen = [values[i] for i in np.flatnonzero(bc).tolist()]
            vocabs.append(sorted({cv for cv in map(canonical_value, seen) if cv is not None}))
            cat_counts.append(len(present))
            singles.append(int((bc == 1).sum()))
            doubles.append(int((bc == 2).sum()))
            miss_cat.append(float((cj < 0).mean()) if m else 0.0)
        return cls(
            model_id,
            numeric,
            categorical,
            settings,
            source="warm-up",
            rows=m,
            quantiles=q,
            counts=valid.astype(np.int64),
            minimum=np.where(np.isfinite(lo), lo, np.nan),
            maximum=np.where(np.isfinite(hi), hi, np.nan),
            mode_share=share,
            missing_rate=np.concatenate([miss_num, np.asarray(miss_cat, dtype=np.float64)]),
            invalid_rate=inv,
            vocabularies=vocabs,
            category_counts=cat_counts,
            singletons=singles,
            doubletons=doubles,
            start_index=start_index,
        )

    # -- processing -----------------------------------------------------------------------

    @property
    def explained(self) -> set[str]:
        """Features of firing unit changes and column swaps: their drift has a named cause."""
        return {
            f
            for c in self.conditions.values()
            if c["status"] == "firing" and c["kind"] in EXPLAINING
            for f in c["features"]
        }

    def update(
        self,
        x: FloatArray,
        codes: IntArray,
        bad: BoolArray | None,
        times: IntArray,
        versions: Sequence[str | None],
        first_index: int,
        vocabulary: Callable[[int], list[str]],
        schema: SchemaScan | None = None,
    ) -> list[Alert]:
        """Feed consecutive events (model event index ``first_index`` on); alerts they cause.

        ``schema`` is the events' :class:`~streamwatch.quality.schema.SchemaScan` (duplicate ids,
        absent and unknown fields); without it the events count as clean for the schema checks.
        The chunks the events complete are summarised at once; each ends a window, evaluated
        when full."""
        n = len(times)
        if n == 0:
            return []
        first = self.position = int(first_index)
        self._extend_codes(codes, vocabulary)
        if self._chunks_stale:
            self._chunks = self._summarise(self._ring(), len(self._chunks))
            self._chunks_stale = False
        batch = self._batch(x, codes, bad, times, schema, first)
        unknown = self._unknown_by_block(schema, first, n)
        step = self.settings.step
        done = (first % step + n) // step  # chunks the batch completes
        new: Chunks | None = None
        alerts: list[Alert] = []
        if done:
            start = first - first % step  # the first of them began before the batch
            new = self._summarise(batch if start == first else self._ring(start, first).then(batch), done)
            alerts = self._evaluate_chunks(new, batch, versions, unknown)
        self._store(batch, unknown, new)
        return alerts

    def _batch(
        self,
        x: FloatArray,
        codes: IntArray,
        bad: BoolArray | None,
        times: IntArray,
        schema: SchemaScan | None,
        first: int,
    ) -> Rows:
        """The batch's columns as :class:`Rows` (clean where ``bad`` or ``schema`` say nothing)."""
        n, f = len(times), len(self.names)
        unknown = np.zeros(n, dtype=bool)
        if schema is not None and schema.unknown:
            unknown[[row for row, _ in schema.unknown]] = True
        absent = None if schema is None else schema.absent
        return Rows(
            first,
            x,
            codes,
            np.zeros((n, f), dtype=bool) if bad is None else bad,
            np.zeros((n, f), dtype=bool) if absent is None else absent,
            np.zeros(n, dtype=bool) if schema is None else schema.duplicate,
            unknown,
            np.asarray(times, dtype=np.int64),
        )

    def _ring(self, first: int | None = None, stop: int | None = None) -> Rows:
        """The ring buffers' events of model event indices ``first`` to ``stop`` (exclusive; they
        must be among the last ``window_size``); without bounds, the rings in slot order."""
        if first is None or stop is None:
            return Rows(0, self.x, self.codes, self.bad, self.absent, self.dup, self.has_unknown, self.times)
        idx = np.arange(first, stop) % self.settings.window_size
        return Rows(
            first, self.x[idx], self.codes[idx], self.bad[idx], self.absent[idx], self.dup[idx],
            self.has_unknown[idx], self.times[idx],
        )  # fmt: skip

    def _summarise(self, rows: Rows, chunks: int) -> Chunks:
        return summarise(
            rows, chunks, self.settings.step, cells=self._cells, minimum=self.minimum,
            maximum=self.maximum, new_values=self._is_new,
        )  # fmt: skip

    def _unknown_by_block(self, schema: SchemaScan | None, first: int, n: int) -> dict[int, Counter[str]]:
        """Unknown field names counted per step block (id: model event index // step) for every
        block the batch's events fall in; a block begun before the batch continues its count."""
        step, cap = self.settings.step, self.settings.unknown_fields_max_tracked
        lo, hi = first // step, (first + n - 1) // step
        out: dict[int, Counter[str]] = {b: Counter() for b in range(lo, hi + 1)}
        if first % step:
            out[lo] = Counter(self.unknown_blocks[lo % len(self.unknown_blocks)])
        for row, names in [] if schema is None else schema.unknown:
            count_capped(out[(first + row) // step], names, cap)
        return out

    def _store(self, batch: Rows, unknown: dict[int, Counter[str]], new: Chunks | None) -> None:
        """Keep the batch's last ``window_size`` events, its blocks' unknown-field counts and its
        chunks' summaries in the rings."""
        w, step = self.settings.window_size, self.settings.step
        blocks = w // step
        stop = batch.start + len(batch)
        keep = min(len(batch), w)
        idx = (stop - keep + np.arange(keep)) % w
        tail = batch.span(stop - keep, stop)
        self.x[idx], self.codes[idx], self.bad[idx] = tail.x, tail.codes, tail.bad
        self.absent[idx], self.times[idx] = tail.absent, tail.times
        self.dup[idx], self.has_unknown[idx] = tail.dup, tail.unknown
        for b in sorted(unknown)[-blocks:]:
            self.unknown_blocks[b % blocks] = unknown[b]
        if new is not None:
            last = len(new) - min(len(new), blocks) + np.arange(min(len(new), blocks))
            self._chunks.put((batch.start // step + last) % blocks, new.take(last))
        self.position = stop
        self.filled = min(w, self.filled + len(batch))

    def _extend_codes(self, codes: IntArray, vocabulary: Callable[[int], list[str]]) -> None:
        """Cache each category code's value and whether the reference knows it."""
        for j in range(len(self.categorical)):
            top = max(int(codes[:, j].max(initial=-1)), int(self.codes[:, j].max(initial=-1)))
            if top < len(self._values[j]):
                continue
            values = vocabulary(j)
            tracker = self._trackers[j]
            known = tracker.vocabulary if tracker is not None else frozenset()
            new = [tracker is not None and canonical_value(v) not in known for v in values]
            # a value that canonicalises to null (e.g. "NA") is not new: it is a missing value
            new = [b and canonical_value(v) is not None for b, v in zip(new, values, strict=True)]
            self._values[j] = list(values)
            self._is_new[j] = np.array(new, dtype=bool)

    def _evaluate_chunks(
        self, new: Chunks, batch: Rows, versions: Sequence[str | None], unknown: dict[int, Counter[str]]
    ) -> list[Alert]:
        """Evaluate the window ending with each chunk of ``new`` (completed by ``batch``) once it
        is full: all windows' summaries and gates at once, the exact checks where a gate opens
        (and the lifecycle wherever a condition is open)."""
        w, step = self.settings.window_size, self.settings.step
        blocks, first = w // step, batch.start
        c0 = first // step  # id of the first chunk completed
        ends = (c0 + 1 + np.arange(len(new))) * step
        full = np.minimum(w, self.filled + ends - first) >= w
        if not full.any():
            return []
        prior = self._chunks.take(np.arange(c0 - blocks + 1, c0) % blocks)
        windows = prior.then(new).windows(blocks)
        gates = self._gates(windows)
        due = gates.open
        history = cache(lambda: self._ring(first - w, first).then(batch))

        def window(end: int) -> RowsOf:
            return cache(lambda: history().span(end - w, end))

        alerts: list[Alert] = []
        for t in np.flatnonzero(full).tolist():
            if not due[t] and not self.conditions:
                continue
            end = int(ends[t])
            self.position = end
            rows = window(end)
            counts = [
                unknown[b] if b in unknown else self.unknown_blocks[b % blocks]
                for b in range(end // step - blocks, end // step)
            ]
            summary = _Summary.of(windows, t, self._layout)
            findings = self._findings(summary, gates, t, rows, counts)
            row = end - first - 1
            alerts += self._lifecycle(findings, rows, int(batch.times[row]), versions[row])
        return alerts

    def _gates(self, windows: Windows) -> _Gates:
        """Which checks may find something in each window (see :class:`_Gates`), from the
        summaries alone: the p-values of the quality checks (a little loose: ``SLACK``), the
        KS bound of the drift screen, the counts of new values, unknown fields and duplicates."""
        s, lay, w = self.settings, self._layout, self.settings.window_size
        c = windows.counts
        finite = c[:, lay.finite]
        with np.errstate(invalid="ignore"):
            log_p = finite * self._log_mode_share
        constant = (finite >= MIN_CONSTANT) & (windows.lo == windows.hi) & (log_p < math.log(s.alpha) + SLACK)
        quality = (
            self._rare(c[:, lay.missing], w, self._p0_missing)
            | self._rare(c[:, lay.bad], w, self._p0_invalid)
            | self._rare(c[:, lay.outside], finite, self._p0_range, self._has_range)
            | constant.any(axis=1)
        )
        new = self._new_gate(c)
        unknown = c[:, lay.unknown] > s.unknown_field_min_share * w
        schema = unknown | (c[:, lay.dup] > s.duplicate_min_share * w)
        return _Gates(self._drift_gate(windows), new, quality, schema)

    def _rare(
        self, k: IntArray, n: IntArray | int, p0: FloatArray, tested: BoolArray | None = None
    ) -> BoolArray:
        """Windows where some feature's count ``k`` of ``n`` may be rare at rate ``p0`` (binomial
        tail bound below ``alpha``, a little loose: ``SLACK``). The bound is 1 up to ``n p0``,
        so clean windows (counts below) skip it."""
        over = k > n * p0 if tested is None else (k > n * p0) & tested
        if not over.any():
            return np.zeros(len(k), dtype=bool)
        rare = over & (binomial_tail_bound(k, n, p0) < self.settings.alpha * (1.0 + SLACK))
        return np.asarray(rare.any(axis=1))

    def _new_gate(self, counts: IntArray) -> BoolArray:
        """Windows where some categorical feature has as many values the reference never saw as
        one new value needs to matter (:meth:`NewCategoryTracker.floor`); with fewer, none can."""
        lay, k, w = self._layout, len(self.numeric), self.settings.window_size
        new = counts[:, lay.new]
        out = np.zeros(len(counts), dtype=bool)
        for e, j in zip(*np.nonzero(new >= self._min_new), strict=True):  # rare: past min_count
            total = w - int(counts[e, lay.missing][k + j])
            if (j, total) not in self._floors:
                tracker = self._trackers[j]
                assert tracker is not None
                self._floors[j, total] = tracker.floor(total)
            out[e] |= bool(new[e, j] >= self._floors[j, total])
        return out

    def _drift_gate(self, windows: Windows) -> BoolArray:
        """Windows where a candidate numeric feature may have drifted in the sense of
        :meth:`_swaps_and_units` (exact KS distance above its threshold): an upper bound on that
        distance from the window's cell counts is - the coarse bound for all features and
        windows, the fine one (:meth:`SketchCells.ks_bound`) where the coarse one is too loose."""
        n = windows.counts[:, self._layout.finite]
        m = self.counts
        with np.errstate(invalid="ignore", divide="ignore"):
            n_eff = n * m / (n + m)
        threshold = self._ks_t / np.sqrt(np.maximum(n_eff, 1.0)) + 0.5 / (POINTS - 1)
        candidate = self._usable & (n >= MIN_TAIL)
        e, j = np.nonzero(candidate & (self._cells.coarse_bound(windows.coarse) + SLACK > threshold))
        out = np.zeros(len(n), dtype=bool)
        if len(e):
            fine = self._cells.ks_bound(windows.fine(e, j), j)
            out[e[fine + SLACK > threshold[e, j]]] = True
        return out

    def _findings(
        self, summary: _Summary, gates: _Gates, t: int, rows: RowsOf, unknown: list[Counter[str]]
    ) -> list[_Finding]:
        """What the checks whose gates are open find in window ``t``."""
        out: list[_Finding] = []
        if gates.drift[t]:
            out += self._swaps_and_units(rows().x, summary.finite)
        if gates.new[t]:
            out += self._new_categories(rows().codes, summary.new)
        if gates.quality[t]:
            out += self._quality(summary, rows)
        if gates.schema[t]:
            out += self._schema(summary, unknown, rows)
        return out

    def _swaps_and_units(self, x: FloatArray, finite: IntArray) -> list[_Finding]:
        """Column swaps and unit changes among the numeric features that drifted in the window.

        Screen: a feature is a candidate when the whole window is clearly unlike its reference
        (KS above the ``alpha`` threshold; clean data stops here). The permutation and the
        conversion are then fitted on the window's tail since the estimated change start (at
        least ``MIN_TAIL`` events), so a window still holding pre-change events neither hides
        nor distorts them (a factor estimated over a mixed window is biased). ``x``: the
        window's values; ``finite``: each feature's count of finite values among them.
        """
        k, alpha, w = len(self.numeric), self.settings.alpha, len(x)
        cand = self._usable & (finite >= MIN_TAIL)
        if k == 0 or not cand.any():
            return []
        # screen all features at once (vectorised), confirm the few that pass exactly
        u = np.where(cand[None, :], batch_cdf(self._q_safe, x), np.nan)
        screen = batch_ks(u)
        drifted = np.zeros(k, dtype=bool)
        for i in np.flatnonzero(cand).tolist():
            n_i = int(np.isfinite(x[:, i]).sum())
            thr = ks_threshold(alpha, n_i, int(self.counts[i]), POINTS)
            if screen[i] > 0.8 * thr:
                drifted[i] = ks_distance(self.quantiles[i], x[:, i]) > thr
        if not drifted.any():
            return []
        pits = {i: _pit_scores(u[:, i]) for i in np.flatnonzero(drifted).tolist()}
        out: list[_Finding] = []
        mapping: dict[int, int] = {}
        if drifted.sum() >= 2:
            z = sum((pits[i] for i in np.flatnonzero(drifted).tolist()), np.zeros((w, 2)))
            row = min(_change_row(z), w - MIN_TAIL)
            q = np.where(self._usable[:, None], self.quantiles, np.nan)
            swap = detect_column_swap(
                q, x[row:], reference_counts=self._swap_counts, candidates=drifted, alpha_drift=alpha
            )
            mapping = swap.mapping
            for cyc in swap.cycles:
                names = [self.numeric[i] for i in cyc]
                sub = ColumnSwapResult(
                    True, {i: swap.mapping[i] for i in cyc}, [cyc], swap.distances,
                    swap.drift_threshold, swap.fit_threshold, swap.n, swap.evidence,
                )  # fmt: skip
                firing = [
                    key
                    for key, c in self.conditions.items()
                    if c["kind"] == "column_swap" and set(c["features"]) & set(names)
                ]
                own = max(float(swap.distances[i, i]) for i in cyc)
                out.append(
                    _Finding(
                        firing[0] if firing else "column_swap|" + ",".join(sorted(names)),
                        "column_swap",
                        sorted(names),
                        "ks_assignment",
                        own,
                        swap.drift_threshold,
                        "critical",
                        partial(sub.message, self.numeric),
                        sub.details(self.numeric),
                        partial(_given, sum((pits[i] for i in cyc), np.zeros((w, 2)))),
                    )
                )
        for i in np.flatnonzero(drifted).tolist():
            if i in mapping:
                continue
            row = min(_change_row(pits[i]), w - MIN_TAIL)
            r = detect_unit_change(
                self.quantiles[i],
                x[row:, i],
                reference_count=int(self.counts[i]),
                feature=i,
                alpha_drift=alpha,
            )
            if not r.detected or (r.conversion is None and self._like_another(i, x[row:, i])):
                continue
            out.append(
                _Finding(
                    f"unit_change|{self.numeric[i]}",
                    "unit_change",
                    [self.numeric[i]],
                    "quantile_fit",
                    r.distance,
                    r.drift_threshold,
                    "critical",
                    partial(r.message, self.numeric),
                    dict(r.evidence),
                    partial(_given, pits[i]),
                )
            )
        return out

    def _like_another(self, i: int, values: FloatArray) -> bool:
        """Do ``values`` of feature ``i`` look like another feature's reference (KS within the
        1e-4 fit threshold)? Then a raw scaling without a known conversion is more likely a
        column moved into ``i`` (a swap or rotation whose other members have not drifted
        enough yet): the unit change is not claimed, the swap check decides on later windows."""
        n = int(np.isfinite(values).sum())
        for j in np.flatnonzero(self._usable).tolist():
            if j != i and ks_distance(self.quantiles[j], values) <= ks_threshold(
                1e-4, n, int(self.counts[j]), POINTS
            ):
                return True
        return False

    def _new_categories(self, codes: IntArray, new_counts: IntArray) -> list[_Finding]:
        """New values of each categorical feature in the window (``codes``); ``new_counts``: the
        window's values the reference never saw, per feature (fewer than ``min_count``: none
        can matter)."""
        out: list[_Finding] = []
        for j, tracker in enumerate(self._trackers):
            if tracker is None or new_counts[j] < tracker.min_count:
                continue
            cj = codes[:, j]
            present = cj[cj >= 0]
            is_new = self._is_new[j]
            counts = np.bincount(present, minlength=len(is_new))[: len(is_new)]
            new_codes = np.flatnonzero(is_new & (counts > 0))
            tracker.reset()
            tracker.total = len(present)
            if len(new_codes):
                ordered = new_codes[np.argsort(-counts[new_codes], kind="stable")]
                keep = ordered[: tracker.max_tracked]
                tracker.counts = {self._values[j][c]: int(counts[c]) for c in keep.tolist()}
                tracker.overflow = int(counts[ordered[tracker.max_tracked :]].sum())
            r = tracker.result()
            if not r.detected:
                continue
            name = self.categorical[j]
            floor = tracker.floor()
            rows_new = np.zeros(len(cj), dtype=bool)
            rows_new[cj >= 0] = is_new[np.clip(cj[cj >= 0], 0, len(is_new) - 1)]
            out.append(
                _Finding(
                    f"new_category|{name}",
                    "new_category",
                    [name],
                    "cardinality" if r.exploded else "vocabulary",
                    r.share,
                    floor / r.total if r.total else 0.0,
                    "critical" if r.exploded else "warning",
                    partial(r.message, name),
                    dict(r.evidence),
                    partial(_given, rows_new.astype(np.float64)),
                )
            )
        return out

    def _quality(self, s: _Summary, rows: RowsOf) -> list[_Finding]:
        """Missing (null or absent), invalid, out-of-range and constant features of the window."""
        missing, gone = self._missing(s, rows)
        return missing + self._invalid(s, rows) + self._range_and_constant(s, rows, gone)

    def _missing(self, s: _Summary, rows: RowsOf) -> tuple[list[_Finding], set[int]]:
        """Features missing too often, and those missing from every event of the window."""
        out: list[_Finding] = []
        gone = set()
        w = self.settings.window_size
        for f in missing_findings(s.missing, w, self._missing_ref, alpha=self.settings.alpha):
            name = self.names[f.feature]
            if f.count == f.n:
                gone.add(f.feature)
            n_absent = int(s.absent[f.feature])
            if 2 * n_absent >= f.count:  # mostly absent keys, not nulls: a schema problem
                z = partial(_absent_scores, rows, f.feature, f.expected)
                out.append(self._missing_field(f, name, n_absent, z))
            else:
                out.append(self._dq(f, name, partial(_null_scores, rows, f.feature, f.expected)))
        return out, gone

    def _invalid(self, s: _Summary, rows: RowsOf) -> list[_Finding]:
        """Invalid values (wrong type, not finite): kept as events, counted per feature."""
        k, w = len(self.numeric), self.settings.window_size
        kb, p0 = s.bad, self._p0_invalid
        pv = binomial_tail_bound(kb, w, p0)
        out: list[_Finding] = []
        for g in np.flatnonzero(pv < self.settings.alpha).tolist():
            name, rate, ref = self.names[g], float(kb[g] / w), float(self.invalid_rate[g])
            kind = "numeric" if g < k else "categorical"
            out.append(
                _Finding(
                    f"data_quality|{name}|invalid",
                    "data_quality",
                    [name],
                    "invalid",
                    rate,
                    float(p0[g]),
                    "critical" if rate >= 0.5 else "warning",
                    partial(_invalid_message, name, kind, rate, ref),
                    {
                        "invalid": int(kb[g]),
                        "n": w,
                        "rate": rate,
                        "reference_rate": ref,
                        "p_value_bound": float(pv[g]),
                        "check": "invalid",
                    },
                    partial(_invalid_scores, rows, g, ref),
                )
            )
        return out

    def _range_and_constant(self, s: _Summary, rows: RowsOf, gone: set[int]) -> list[_Finding]:
        """Numeric features out of their reference range, or turned constant (not those ``gone``)."""
        if not self.numeric:
            return []
        alpha, out = self.settings.alpha, []
        for f in range_findings(s.outside, s.finite, self._qref, alpha=alpha, tolerance=RANGE_TOLERANCE):
            if f.feature not in gone:
                lo, hi = float(self.minimum[f.feature]), float(self.maximum[f.feature])
                z = partial(_outside_scores, rows, f.feature, lo, hi, f.expected)
                out.append(self._dq(f, self.numeric[f.feature], z, hold=True))
        for f in constant_findings(s.finite, s.lo, s.hi, self._qref, alpha=alpha, min_values=MIN_CONSTANT):
            if f.feature not in gone:
                z = partial(_equal_scores, rows, f.feature, f.observed, f.expected)
                out.append(self._dq(f, self.numeric[f.feature], z))
        return out

    def _missing_field(self, f: Any, name: str, n_absent: int, z: Scores) -> _Finding:
        w = self.settings.window_size
        rate, ref = n_absent / w, float(self.missing_rate[f.feature])

        def message(since: str) -> str:
            return (
                f"{name} is absent from {rate:.1%} of events since {since} (the key is not in the "
                f"event; reference missing rate {ref:.1%}) - a required field is not sent"
            )

        return _Finding(
            f"schema|{name}|missing_field",
            "schema",
            [name],
            "missing_field",
            rate,
            float(f.expected),
            "critical" if rate >= 0.5 else "warning",
            message,
            {
                "absent": n_absent,
                "null": int(f.count) - n_absent,
                "n": w,
                "rate": rate,
                "reference_rate": ref,
                "p_value_bound": float(f.p_value),
                "check": "missing_field",
            },
            z,
        )

    def _schema(self, summary: _Summary, blocks: list[Counter[str]], rows: RowsOf) -> list[_Finding]:
        """Unknown fields (per name, over the window's step ``blocks``) and duplicate event ids."""
        s, w = self.settings, self.settings.window_size
        out: list[_Finding] = []
        floor = s.unknown_field_min_share * w
        total: Counter[str] = Counter()
        for block in blocks:
            total.update(block)
        overflow = total.pop(OTHER, 0)
        top = dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
        evidence = {"unknown_fields": top, "distinct_unknown": len(total), "overflow": overflow, "n": w}
        named = sorted(name for name, n in total.items() if n > floor)
        for name in named:
            count, share = total[name], total[name] / w

            def message(since: str, name: str = name, count: int = count, share: float = share) -> str:
                return (
                    f"{name} is not a feature of model {self.model_id!r} but is in {share:.1%} of "
                    f"events since {since} ({count} of {w}); it is ignored - a schema change?"
                )

            out.append(
                _Finding(
                    f"schema|{name}|unknown_field",
                    "schema",
                    [name],
                    "unknown_field",
                    share,
                    s.unknown_field_min_share,
                    "warning",
                    message,
                    {"field": name, "count": count, "share": share, **evidence, "check": "unknown_field"},
                    partial(_unknown_scores, rows),
                )
            )
        events = summary.unknown
        if not named and events > floor:  # many rare unknown names (or past the cap): one alert
            share_rows = events / w

            def message_many(since: str) -> str:
                return (
                    f"{share_rows:.1%} of events of model {self.model_id!r} carry fields it does not "
                    f"declare since {since} ({len(total)} distinct names, e.g. {', '.join(top)})"
                )

            out.append(
                _Finding(
                    "schema||unknown_fields", "schema", [], "unknown_fields", share_rows,
                    s.unknown_field_min_share, "warning", message_many,
                    {"events": events, "share": share_rows, **evidence, "check": "unknown_fields"},
                    partial(_unknown_scores, rows),
                )
            )  # fmt: skip
        n_dup = summary.dup
        if n_dup > s.duplicate_min_share * w:
            share = n_dup / w

            def message_dup(since: str) -> str:
                return (
                    f"{n_dup} of the last {w} events of model {self.model_id!r} ({share:.1%}) repeat "
                    f"an event id seen before since {since} - duplicated or replayed events"
                )

            out.append(
                _Finding(
                    "data_quality||duplicate_ids", "data_quality", [], "duplicate_ids", share,
                    s.duplicate_min_share, "critical" if share >= 0.5 else "warning", message_dup,
                    {"duplicates": n_dup, "n": w, "share": share,
                     "recent_ids_tracked": s.duplicate_ids_tracked, "check": "duplicate_ids"},
                    partial(_dup_scores, rows),
                )
            )  # fmt: skip
        return out

    def _dq(self, f: Any, name: str, z: Scores, hold: bool = False) -> _Finding:
        return _Finding(
            f"data_quality|{name}|{f.check}",
            "data_quality",
            [name],
            f.check,
            float(f.observed),
            float(f.expected),
            "critical" if f.check != "out_of_range" and f.observed >= 0.5 else "warning",
            lambda since: str(f.message(name, since)),
            {**f.evidence, "check": f.check},
            z,
            hold=hold,
        )

    def _lifecycle(
        self, findings: list[_Finding], rows: RowsOf, t_ms: int, version: str | None
    ) -> list[Alert]:
        w = self.settings.window_size
        pos = self.position
        alerts: list[Alert] = []
        seen = set()
        for f in findings:
            if f.key in seen:  # two cycles over the same firing swap: one condition
                continue
            seen.add(f.key)
            c = self.conditions.get(f.key)
            if c is None:
                since = int(rows().times[_change_row(f.z())])
                c = self.conditions[f.key] = {
                    "kind": f.kind,
                    "features": f.features,
                    "detector": f.detector,
                    "status": "pending",
                    "first": pos,
                    "last": pos,
                    "since": since,
                }
            c["last"] = pos
            if c["status"] != "pending":
                continue
            if f.hold:
                if set(f.features) & (self.explained | self.drifting):
                    del self.conditions[f.key]  # explained by a unit change, swap or drift
                    continue
                if pos - c["first"] < w:
                    continue
            c["status"] = "firing"
            alerts.append(self._alert(f, c, t_ms, version))
        for key in [k for k, c in self.conditions.items() if k not in seen and pos - c["last"] >= w]:
            c = self.conditions.pop(key)
            if c["status"] == "firing":
                alerts.append(self._resolved(c, t_ms, version))
        return alerts

    def _base_details(self, features: list[str]) -> dict[str, Any]:
        d: dict[str, Any] = {
            "features": features,
            "window_events": self.settings.window_size,
            "step_events": self.settings.step,
            "reference": self.source,
            "reference_events": self.rows,
        }
        if self.reference_version is not None:
            d["reference_model_version"] = self.reference_version
        return d

    def _alert(self, f: _Finding, c: dict[str, Any], t_ms: int, version: str | None) -> Alert:
        since = int(c["since"])
        return Alert(
            model_id=self.model_id,
            model_version=version,
            kind=f.kind,
            feature=",".join(f.features) or None,
            detector=f.detector,
            status="firing",
            severity=f.severity,
            statistic=round(float(f.statistic), 6),
            threshold=round(float(f.threshold), 6),
            detected_at_ms=t_ms,
            change_started_at_ms=since,
            events_seen=self.position,
            message=f.message(format_timestamp(since)),
            details=_safe({**self._base_details(f.features), **f.details}),
        )

    def _resolved(self, c: dict[str, Any], t_ms: int, version: str | None) -> Alert:
        names = ", ".join(c["features"]) or f"The events of model {self.model_id!r}"
        what = {
            "unit_change": "no longer looks like a unit change",
            "column_swap": "no longer look swapped",
            "new_category": "has no new values that matter any more",
            "data_quality": f"passes its {c['detector'].replace('_', '-')} check again",
            "schema": f"passes its {c['detector'].replace('_', '-')} check again",
        }[c["kind"]]
        return Alert(
            model_id=self.model_id,
            model_version=version,
            kind=c["kind"],
            feature=",".join(c["features"]) or None,
            detector=c["detector"],
            status="resolved",
            severity="info",
            statistic=0.0,
            threshold=0.0,
            detected_at_ms=t_ms,
            change_started_at_ms=None,
            events_seen=self.position,
            message=f"{names} {what} over the last {self.settings.window_size} events.",
            details=_safe(self._base_details(c["features"])),
        )

    # -- the monitor's drift hook -----------------------------------------------------------

    def suspect(self, name: str, since_ms: int | None = None) -> bool:
        """Could a unit change or a swap explain a drift of numeric feature ``name`` just found?

        A loose screen: the median of the events since ``since_ms``, or of the last 10 (the
        change start is an estimate), is a known conversion of the reference median (10 %), a
        scaling by 9 or more, or inside another feature's reference interquartile range. The
        monitor holds such a feature's drift alert for a window until the checks decide.
        """
        if name not in self.numeric or not self.filled:
            return False
        i = self.numeric.index(name)
        if not self._usable[i]:
            return False
        w = self.settings.window_size
        order = (self.position - self.filled + np.arange(self.filled)) % w
        v, t = self.x[order, i], self.times[order]
        tails = [v[-10:]] + ([v[t >= since_ms]] if since_ms is not None else [])
        meds = np.array([np.median(r[np.isfinite(r)]) for r in tails if np.isfinite(r).sum() >= 3])
        if not len(meds):
            return False
        ref = float(self.quantiles[i, 50])
        if ref != 0:
            factors = np.array([[(med - c.offset) / ref / c.factor for c in CONVERSIONS] for med in meds])
            if (np.abs(factors - 1.0) <= 0.1).any():
                return True
            ratio = meds / ref
            with np.errstate(divide="ignore"):  # a zero median: log is -inf, masked by ratio > 0
                far = np.abs(np.log(np.abs(ratio))) >= math.log(9.0)
            if ((ratio > 0) & far).any():
                return True
        others = np.flatnonzero(self._usable & (np.arange(len(self.numeric)) != i))
        q25, q75 = self.quantiles[others, 25], self.quantiles[others, 75]
        return bool(((q25[None, :] <= meds[:, None]) & (meds[:, None] <= q75[None, :])).any())

    # -- snapshot -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (NaN as null)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "model_id": self.model_id,
            "numeric": self.numeric,
            "categorical": self.categorical,
            "settings": self.settings.model_dump(),
            "source": self.source,
            "rows": self.rows,
            "quantiles": _json(self.quantiles),
            "counts": _json(self.counts),
            "minimum": _json(self.minimum),
            "maximum": _json(self.maximum),
            "mode_share": _json(self.mode_share),
            "missing_rate": _json(self.missing_rate),
            "invalid_rate": _json(self.invalid_rate),
            "vocabularies": self.vocabularies,
            "category_counts": self.category_counts,
            "singletons": self.singletons,
            "doubletons": self.doubletons,
            "x": _json(self.x),
            "codes": _json(self.codes),
            "bad": _json(self.bad),
            "times": _json(self.times),
            "position": self.position,
            "filled": self.filled,
            "conditions": {k: dict(c) for k, c in self.conditions.items()},
            "dup": _json(self.dup),
            "absent": _json(self.absent),
            "has_unknown": _json(self.has_unknown),
            "unknown_blocks": [dict(b) for b in self.unknown_blocks],
            "reference_version": self.reference_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityWatch:
        """Restore :meth:`to_dict`'s state; a v1 snapshot (before the doubletons) takes as many
        doubletons as singletons."""
        if d.get("format") != SNAPSHOT_FORMAT or d.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError(
                f"not a {SNAPSHOT_FORMAT} v{SNAPSHOT_VERSION} snapshot: "
                f"format={d.get('format')!r} version={d.get('version')!r}"
            )
        k, c = len(d["numeric"]), len(d["categorical"])
        q = cls(
            d["model_id"],
            d["numeric"],
            d["categorical"],
            QualitySettings(**d["settings"]),
            source=d["source"],
            rows=int(d["rows"]),
            quantiles=_floats(d["quantiles"]).reshape(k, POINTS),
            counts=np.asarray(d["counts"], dtype=np.int64),
            minimum=_floats(d["minimum"]),
            maximum=_floats(d["maximum"]),
            mode_share=_floats(d["mode_share"]),
            missing_rate=_floats(d["missing_rate"]),
            invalid_rate=_floats(d["invalid_rate"]),
            vocabularies=d["vocabularies"],
            category_counts=d["category_counts"],
            singletons=d["singletons"],
            doubletons=d.get("doubletons"),
            start_index=int(d["position"]),
        )
        w = q.settings.window_size
        q.x = _floats(d["x"]).reshape(w, k)
        q.codes = np.asarray(d["codes"], dtype=np.int64).reshape(w, c)
        q.bad = np.asarray(d["bad"], dtype=bool).reshape(w, k + c)
        q.times = np.asarray(d["times"], dtype=np.int64)
        q.filled = int(d["filled"])
        q.conditions = {str(key): dict(v) for key, v in d["conditions"].items()}
        # schema state (absent from snapshots of builds before the schema checks: clean)
        if "dup" in d:
            q.dup = np.asarray(d["dup"], dtype=bool).reshape(w)
            q.absent = np.asarray(d["absent"], dtype=bool).reshape(w, k + c)
            q.has_unknown = np.asarray(d["has_unknown"], dtype=bool).reshape(w)
            q.unknown_blocks = [Counter({str(n): int(v) for n, v in b.items()}) for b in d["unknown_blocks"]]
        q.reference_version = d.get("reference_version")
        q._chunks_stale = True  # their new-category counts need the vocabulary: at the next update
        return q


__all__ = ["QualityWatch", "invalid_rows"]
