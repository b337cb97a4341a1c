"""PerformanceTracker: one model's label join, performance windows, baseline checks, concept
drift and performance estimates. Pure and deterministic, like the monitor that owns it.

* **Windows.** A joined label counts in the window of its *prediction's* time (``window_seconds``
  wide), so a window's metrics describe the model's behaviour then, whenever the labels come;
  its label coverage is joined / predictions. A count-based window holds the last
  ``window_events`` joined events.
* **Baseline.** Development-set metrics from the config, or else the metrics of the first
  ``reference_labels`` joined events. A window is judged once its coverage and label count are
  high enough: a ``performance`` alert fires when the upper end of the metric's interval is
  still worse than the baseline minus ``tolerance``, and resolves when the point estimate is back
  within the tolerance.
* **Concept drift.** A one-sided CUSUM (:class:`~streamwatch.detectors.cusum.CUSUM`, calibrated
  to the model's false-alarm budget) on the per-event error (0/1 for classes, absolute error for
  values). The alert says whether the inputs drifted at the same time.
* **Order.** Joined events reach all of the above in join-time order (:mod:`.ordering`), so the
  same events give the same baseline, windows and CUSUM path however the predictions and labels
  topics interleave.
* **Estimation.** For classifiers with scores, CBPE (:mod:`.estimation`) calibrated on the
  reference gives expected metrics for every window before its labels arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from streamwatch.alerts import Alert
from streamwatch.config import PerformanceSettings
from streamwatch.detectors.cusum import CUSUM
from streamwatch.events import format_timestamp
from streamwatch.history import PerformanceHistory
from streamwatch.ids import UIntArray
from streamwatch.jsonarrays import floats as _floats
from streamwatch.jsonarrays import packed
from streamwatch.performance.estimation import BinnedCalibrator, ExpectedConfusion
from streamwatch.performance.join import Joined, LabelJoin
from streamwatch.performance.metrics import (
    HIGHER_IS_BETTER,
    auc_standard_error,
    classification_intervals,
    classification_metrics,
    confusion_matrix,
    mean_interval,
    regression_metrics,
)
from streamwatch.performance.ordering import (
    Chunk,
    JoinOrder,
    concat_columns,
    pad_scores,
    safe_time,
    take_rows,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# truth, prediction, scores, prediction time, id hash
RowArrays = tuple[FloatArray, FloatArray, FloatArray | None, IntArray, npt.NDArray[np.uint64]]

# upper bounds (seconds) of the label-delay histogram's buckets
DELAY_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)
OTHER_CLASS = "__other__"
_DICT_SET = {dict}
# windows are judged each time this many more joined events have been released: at fixed points
# of the join-time sequence, so verdicts do not depend on how labels were batched
JUDGE_EVERY = 100


_STR_T = frozenset((str,))


def class_name(v: Any) -> str:
    """Class labels as text, so 1, 1.0, "1" and True/"true" name the same class."""
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is float and v.is_integer():
        return str(int(v))
    return str(v)


def _tail(a: RowArrays, n: int) -> RowArrays:
    return a[0][-n:], a[1][-n:], None if a[2] is None else a[2][-n:], a[3][-n:], a[4][-n:]


@dataclass(slots=True)
class Rows:
    """Joined events: truth, prediction, scores, prediction time and id hash, in chunks."""

    chunks: list[RowArrays] = field(default_factory=list)
    # keep only the newest this many rows: trimmed when twice as many are held (not at every
    # add, which copied the whole window each time) and before any read, so reads see only them
    last: int | None = None

    def __len__(self) -> int:
        n = self._held()
        return n if self.last is None else min(n, self.last)

    def _held(self) -> int:
        """Rows in the chunks, before any trim to ``last``."""
        return sum(len(c[0]) for c in self.chunks) if len(self.chunks) > 1 else self._single()

    def _single(self) -> int:
        return len(self.chunks[0][0]) if self.chunks else 0

    def add(
        self,
        y_true: FloatArray,
        y_pred: FloatArray,
        scores: FloatArray | None,
        times: IntArray,
        hashes: npt.NDArray[np.uint64],
    ) -> None:
        if len(y_true):
            self.chunks.append((y_true, y_pred, scores, times, hashes))
            # merge now and then so counting stays cheap (and trim to ``last``)
            over = self.last is not None and self._held() > 2 * self.last
            if over or len(self.chunks) >= 64:
                self.arrays()

    def arrays(self) -> RowArrays:
        """All rows as one set of arrays (chunks merged once, then kept merged)."""
        if not self.chunks:
            e = np.zeros(0)
            return e, e, None, np.zeros(0, np.int64), np.zeros(0, np.uint64)
        if len(self.chunks) > 1:
            self.chunks = [cast(RowArrays, concat_columns(self.chunks, scores_at=2))]
        if self.last is not None and len(self.chunks[0][0]) > self.last:
            self.chunks = [_tail(self.chunks[0], self.last)]
        return self.chunks[0]

    def keep(self, mask: npt.NDArray[np.bool_]) -> None:
        a = self.arrays()
        if len(a[0]):
            self.chunks = [
                (a[0][mask], a[1][mask], None if a[2] is None else a[2][mask], a[3][mask], a[4][mask])
            ]

    def tail(self, n: int) -> None:
        a = self.arrays()
        if len(a[0]) > n:
            self.chunks = [_tail(a, n)]

    def to_dict(self) -> dict[str, Any]:
        y, p, s, t, h = self.arrays()
        # hashes as JSON integers (orjson reads any uint64 back); decimal strings, as older
        # snapshots hold them, cost a tenth of a whole snapshot's time to make and restore alike
        return {"y": packed(y), "p": packed(p), "s": packed(s), "t": t, "h": h}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rows:
        r = cls()
        y = _floats(d["y"])
        s = None if d["s"] is None else _floats(d["s"]).reshape(len(y), -1)
        r.add(
            y,
            _floats(d["p"]),
            s,
            np.asarray(d["t"], dtype=np.int64),
            np.asarray(d["h"], dtype=np.uint64),
        )
        return r


@dataclass(slots=True)
class Window:
    """One prediction-time window: predictions in the sample, joined rows, expected confusion."""

    predictions: int = 0
    rows: Rows = field(default_factory=Rows)
    expected: ExpectedConfusion | None = None
    estimated_predictions: int = 0
    judged_rows: int = 0  # joined rows when it was last judged


@dataclass(slots=True)
class Readout:
    """A tracker's numbers for the exporter, all plain values."""

    outcomes: dict[str, int]
    waiting: int
    open_predictions: int
    sample_rate: float
    delay_counts: list[int]
    delay_sum: float
    baseline: dict[str, float]
    firing: dict[str, bool]
    concept: tuple[float, float, bool] | None
    classes: list[str] = field(default_factory=list)
    performance: dict[str, dict[str, float]] = field(default_factory=dict)  # by window
    coverage: dict[str, float] = field(default_factory=dict)
    estimated: dict[str, dict[str, float]] = field(default_factory=dict)
    gap: dict[str, float] = field(default_factory=dict)


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in d.items() if np.isfinite(v)}


class PerformanceTracker:
    """Label join, performance metrics and their alerts for one model."""

    def __init__(self, model_id: str, settings: PerformanceSettings, false_alarm_events: float) -> None:
        s = self.settings = settings
        self.model_id = model_id
        self.false_alarm_events = false_alarm_events
        self.task: str | None = None if s.task == "auto" else s.task
        self.class_names: list[str] = []
        # (classes then, names, codes, getter) of the last batch whose events all named the same
        # classes: the next batch usually does too
        self._score_layout: tuple[int, list[str], list[int], Any] | None = None
        self.classes: dict[str, int] = {}
        self.join = LabelJoin(
            int(s.label_ttl_seconds * 1000), int(s.label_wait_seconds * 1000), s.max_open_predictions
        )
        self.window_ms = int(s.window_seconds * 1000)
        self.windows: dict[int, Window] = {}
        self.recent = Rows(last=s.window_events)  # the count-based window
        self.order = JoinOrder()  # joined rows waiting for their turn
        self.label_watermark = np.iinfo(np.int64).min  # newest label time seen
        self.reference = Rows()
        self.reference_ready = False
        self.baseline: dict[str, float] = dict(s.baseline)
        self.baseline_se: dict[str, float] = {}
        self.calibrator: BinnedCalibrator | None = None
        self.cusum: CUSUM | None = None
        self.firing: dict[str, bool] = {}
        self.concept_firing = False
        self.last_concept_alarm = -1  # joined count at the last CUSUM alarm
        self.joined_total = 0
        self.invalid_labels = 0
        self.delay_counts = np.zeros(len(DELAY_BUCKETS) + 1, dtype=np.int64)
        self.delay_sum_seconds = 0.0
        self.judged_window: int | None = None  # newest window judged against the baseline
        self.touched: set[int] = set()  # windows that got rows since the last judging point
        self.judged: dict[str, float] = {}
        self._readout: tuple[tuple[int, int, int], Readout] | None = None
        self.history = PerformanceHistory()  # the windows judged or expired, for reports

    # -- classes ------------------------------------------------------------------------------

    @property
    def positive(self) -> int | None:
        """Code of the class whose precision/recall/F1 are reported, when the model is binary."""
        if self.settings.positive_class is not None:
            return self.classes.get(self.settings.positive_class)
        real = [c for c in self.class_names if c != OTHER_CLASS]
        return self.classes[max(real)] if len(real) == 2 else None

    def _code(self, name: str) -> int:
        c = self.classes.get(name)
        if c is None:
            if len(self.class_names) >= self.settings.max_classes - 1 and name != OTHER_CLASS:
                return self._code(OTHER_CLASS)
            c = self.classes[name] = len(self.class_names)
            self.class_names.append(name)
        return c

    # -- predictions ----------------------------------------------------------------------------

    def encode_predictions(
        self, predictions: Sequence[dict[str, Any]]
    ) -> tuple[FloatArray, FloatArray | None]:
        """Predicted class codes (or values) and the ``(n, classes)`` scores, if any."""
        if self.task is None:
            self.task = "regression" if predictions[0].get("value") is not None else "classification"
        if self.task == "regression":
            return np.array([_number(p.get("value")) for p in predictions], dtype=np.float64), None
        return self._encode_classes(predictions)

    def observe_predictions(
        self,
        ids: list[str],
        times: IntArray,
        predicted: FloatArray,
        scores: FloatArray | None,
        input_drift: Sequence[str] = (),
        hashes: UIntArray | None = None,
    ) -> list[Alert]:
        """Store predictions for the join; count them in their windows; add their estimates.
        ``hashes``: the ids' :func:`~streamwatch.ids.event_hashes`, when the caller has them."""
        completed = self.join.add_predictions(ids, times, predicted, hashes, scores)
        kept = self.join.last_kept
        if len(kept):
            idx, counts = np.unique(times[kept] // self.window_ms, return_counts=True)
            for i, c in zip(idx.tolist(), counts.tolist(), strict=True):
                self._window(i).predictions += c
        if self.calibrator is not None and scores is not None:
            self._estimate(times, predicted, scores)
        self._expire_windows()
        if completed:
            slots = np.array([c[0] for c in completed], dtype=np.int64)
            labels = [c[1] for c in completed]
            ltimes = np.array([c[2] for c in completed], dtype=np.int64)
            self._hold(Joined(slots, labels, ltimes))
        return self._release(list(input_drift))

    def _layout_rows(self, score_dicts: list[Any]) -> tuple[list[int], list[Any]]:
        """Class codes of the classes the scores name (new ones coded) and each event's scores in
        that order (NaN where an event leaves one out); remembers the layout for the next batch."""
        keys: set[str] = set().union(*(d for d in score_dicts if d))
        for k in sorted(keys - self.classes.keys()):
            self._code(class_name(k))
        if not keys:
            return [], []
        names = [n for n in self.class_names if n in keys or n == OTHER_CLASS]
        codes = [self.classes[n] for n in names]
        get = itemgetter(*names) if len(names) > 1 else (lambda d: (d[names[0]],))
        try:  # fast when every event names every class
            rows = list(map(get, score_dicts))
            self._score_layout = (len(self.class_names), names, codes, get)
        except (KeyError, TypeError):
            rows = [tuple((d or {}).get(n, np.nan) for n in names) for d in score_dicts]
        return codes, rows

    def _last_layout_rows(self, score_dicts: list[Any]) -> tuple[list[int], list[Any]] | None:
        """Class codes and score rows when every event's scores name exactly the classes of the
        last batch's layout (their counts and one C-level lookup pass tell it); else None."""
        layout = self._score_layout
        if layout is None or layout[0] != len(self.class_names):
            return None
        _, names, codes, get = layout
        if set(map(type, score_dicts)) != _DICT_SET or set(map(len, score_dicts)) != {len(names)}:
            return None
        try:
            return codes, list(map(get, score_dicts))
        except KeyError:
            return None

    def _encode_classes(self, predictions: Sequence[dict[str, Any]]) -> tuple[FloatArray, FloatArray | None]:
        score_dicts = list(map(dict.get, predictions, repeat("scores")))
        scores = None
        known = self._last_layout_rows(score_dicts)
        if known is not None:
            codes, rows = known
        else:
            codes, rows = self._layout_rows(score_dicts)
        if codes:
            scores = np.full((len(predictions), len(self.class_names)), np.nan)
            scores[:, codes] = np.array(rows, dtype=np.float64).reshape(len(predictions), len(codes))
        labels = list(map(dict.get, predictions, repeat("label")))
        predicted = self._codes(labels)
        if scores is not None and scores.shape[1] < len(self.class_names):
            # a label no score names became a class after the scores were laid out (found by
            # tests/unit/test_fuzz_decode.py): its score is unknown
            scores = np.pad(
                scores, ((0, 0), (0, len(self.class_names) - scores.shape[1])), constant_values=np.nan
            )
        if scores is not None:  # events without a label: the class with the highest score
            unnamed = np.isnan(predicted) & np.isfinite(scores).any(axis=1)
            if unnamed.any():
                predicted[unnamed] = np.nanargmax(
                    np.where(np.isnan(scores[unnamed]), -np.inf, scores[unnamed]), axis=1
                )
        return predicted, scores

    def _codes(self, values: list[Any]) -> FloatArray:
        """Class codes of label values (NaN for None); text labels take a dict lookup each."""
        if _STR_T.issuperset(map(type, values)):
            try:  # every label a known class name: one C-level pass
                return np.fromiter(map(self.classes.__getitem__, values), np.float64, len(values))
            except KeyError:
                pass
        get = self.classes.get
        codes = [get(v) if type(v) is str else None for v in values]
        for i in [i for i, c in enumerate(codes) if c is None]:
            v = values[i]
            codes[i] = None if v is None else self._code(class_name(v))
        return np.array([np.nan if c is None else c for c in codes], dtype=np.float64)

    def _estimate(self, times: IntArray, predicted: FloatArray, scores: FloatArray) -> None:
        """Add predictions' calibrated probabilities to their windows' expected confusion."""
        assert self.calibrator is not None
        ok = np.isfinite(predicted)
        times, predicted, scores = times[ok], predicted[ok], scores[ok]
        calibrated = self.calibrator.transform(np.nan_to_num(scores, nan=0.0))
        pred_codes = predicted.astype(np.int64)
        widx = times // self.window_ms
        for i in np.unique(widx).tolist():
            w = self._window(i)
            if w.expected is None:
                w.expected = ExpectedConfusion(len(self.class_names))
            m = widx == i
            w.expected.add(calibrated[m], pred_codes[m])
            w.estimated_predictions += int(m.sum())

    def _window(self, i: int) -> Window:
        w = self.windows.get(i)
        if w is None:
            w = self.windows[i] = Window()
        return w

    def _expire_windows(self) -> None:
        oldest = (self.join.watermark - self.join.ttl_ms) // self.window_ms
        for i in [i for i in self.windows if i < oldest]:
            self._remember(i)
            del self.windows[i]

    def _remember(self, i: int, values: dict[str, float] | None = None, known: int | None = None) -> None:
        """Window ``i`` into the history: when judged, and with its final labels when it leaves."""
        w = self.windows[i]
        if values is None:
            values = self.metrics_of(w.rows) if self.task is not None else {}
        shown = {k: values[k] for k in tuple(self.baseline) or self.judged_metrics if k in values}
        self.history.record(
            i,
            i * self.window_ms,
            shown,
            self.baseline,
            self.coverage(i) if known is None else min(1.0, len(w.rows) / max(known, 1)),
            len(w.rows),
            w.predictions if known is None else known,
        )

    def _evicted(self, slots: IntArray) -> None:
        """The store's sample shrank: forget evicted predictions and joined rows outside it."""
        idx, counts = np.unique(self.join.times[slots] // self.window_ms, return_counts=True)
        for i, c in zip(idx.tolist(), counts.tolist(), strict=True):
            if i in self.windows:
                self.windows[i].predictions -= c
        for w in self.windows.values():
            w.rows.keep(self.join.in_sample(w.rows.arrays()[4]))
        self.order.keep(self.join.in_sample)

    # -- labels ---------------------------------------------------------------------------------

    def observe_labels(
        self, ids: list[str], times: IntArray, labels: list[Any], input_drift: list[str]
    ) -> list[Alert]:
        self.join.on_evict = self._evicted
        if len(times):
            self.label_watermark = max(self.label_watermark, int(times.max()))
        self._hold(self.join.match_labels(ids, times, labels))
        return self._release(input_drift)

    def _encode_labels(self, labels: list[Any]) -> FloatArray:
        if self.task == "regression":
            return np.array([_number(v) for v in labels], dtype=np.float64)
        return self._codes(labels)

    def _hold(self, joined: Joined) -> None:
        """Joined labels, encoded and checked, into the join-order buffer."""
        if len(joined.slots) == 0 or self.task is None:
            return
        j = self.join
        y_true = self._encode_labels(joined.labels)
        ok = np.isfinite(y_true) & np.isfinite(j.predicted[joined.slots])
        self.invalid_labels += int((~ok).sum())
        slots, y_true, label_times = joined.slots[ok], y_true[ok], joined.label_times[ok]
        if len(slots) == 0:
            return
        pred_times = j.times[slots]
        self._count_delays((label_times - pred_times) / 1000.0)
        scores = None if j.scores is None else j.scores[slots].copy()
        at = np.maximum(pred_times, label_times)
        self.order.add(at, y_true, j.predicted[slots].copy(), scores, pred_times, j.hashes[slots].copy())

    def _release(self, input_drift: list[str]) -> list[Alert]:
        """The joined rows no event still to come can precede, in join-time order."""
        if not self.order.chunks:
            return []
        safe = safe_time(self.label_watermark, self.join.watermark, self.join.earliest_waiting())
        rows = self.order.release(safe, keep_at_most=self.settings.max_open_predictions)
        if len(rows[0]) == 0:
            return []
        return self._joined(rows, input_drift)

    def _joined(self, rows: Chunk, input_drift: list[str]) -> list[Alert]:
        """Joined rows, in join-time order, cut at the judging points."""
        if self.task is None:
            return []
        alerts: list[Alert] = []
        n, start = len(rows[0]), 0
        while start < n:
            end = min(n, start + JUDGE_EVERY - self.joined_total % JUDGE_EVERY)
            alerts += self._segment(take_rows(rows, slice(start, end)), input_drift)
            start = end
        return alerts

    def _segment(self, rows: Chunk, input_drift: list[str]) -> list[Alert]:
        """Rows up to the next judging point into the windows, the baseline and the CUSUM."""
        join_times, y_true, y_pred, scores, pred_times, hashes = rows
        widx = pred_times // self.window_ms
        touched = np.unique(widx).tolist()
        self.touched.update(touched)
        for i in touched:
            if i in self.windows:
                m = widx == i
                self.windows[i].rows.add(
                    y_true[m], y_pred[m], None if scores is None else scores[m], pred_times[m], hashes[m]
                )
        self.recent.add(y_true, y_pred, scores, pred_times, hashes)
        first_new = 0
        if not self.reference_ready:
            first_new = min(len(join_times), self.settings.reference_labels - len(self.reference))
            self.reference.add(
                y_true[:first_new],
                y_pred[:first_new],
                None if scores is None else scores[:first_new],
                pred_times[:first_new],
                hashes[:first_new],
            )
            if len(self.reference) >= self.settings.reference_labels:
                self._fit_reference()
        alerts: list[Alert] = []
        n = len(join_times)
        alarms: list[tuple[int, float, float]] = []  # (row, statistic, threshold)
        if self.cusum is not None and first_new < n:
            base = self.cusum.n_seen
            errors = self._errors(y_true[first_new:], y_pred[first_new:])
            alarms = [(first_new + d.at - base, d.statistic, d.threshold) for d in self.cusum.update(errors)]
        # the alert resolves once window_events rows have passed without an alarm: at that row
        for at, stat, threshold in [*alarms, (n, 0.0, 0.0)]:
            if self.concept_firing:
                quiet_until = self.last_concept_alarm + self.settings.window_events - self.joined_total - 1
                if quiet_until < at:
                    alerts.append(self._concept_resolved(int(join_times[quiet_until])))
            if at < n:
                alerts += self._concept_alarm(stat, threshold, at, int(join_times[at]), input_drift)
        self.joined_total += n
        if self.joined_total % JUDGE_EVERY == 0:
            if self.reference_ready:
                alerts += self._judge(sorted(self.touched), int(join_times[-1]))
            self.touched.clear()
        return alerts

    def _errors(self, y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
        if self.task == "regression":
            return np.asarray(np.abs(y_pred - y_true), dtype=np.float64)
        return np.asarray(y_pred != y_true, dtype=np.float64)

    def _count_delays(self, delays: FloatArray) -> None:
        d = np.maximum(delays, 0.0)
        self.delay_counts += np.bincount(
            np.searchsorted(DELAY_BUCKETS, d, side="left"), minlength=len(DELAY_BUCKETS) + 1
        )
        self.delay_sum_seconds += float(d.sum())

    # -- reference and baseline -----------------------------------------------------------------

    def _fit_reference(self) -> None:
        s = self.settings
        y, p, scores, _, _ = self.reference.arrays()
        ref = self.metrics_of(self.reference)
        if not s.baseline:
            self.baseline = {k: v for k, v in ref.items() if k in self.judged_metrics and np.isfinite(v)}
        self.baseline_se = self._standard_errors(self.reference, ref)
        if s.baseline and s.baseline_events is None:
            self.baseline_se = {}
        if self.task == "classification" and scores is not None and s.estimate:
            self.calibrator = BinnedCalibrator.fit(np.nan_to_num(scores, nan=0.0), y.astype(np.int64))
            # the predictions still in the store get their estimates now: labels are often far
            # behind, and the windows they belong to are the ones nobody can judge yet
            j = self.join
            live = np.sort(np.fromiter(j.index.values(), np.int64, len(j.index)))
            if len(live) and j.scores is not None:
                self._estimate(j.times[live], j.predicted[live], j.scores[live])
        if s.concept_drift:
            errors = self._errors(y, p)
            if np.unique(errors).size >= 2:
                self.cusum = CUSUM(
                    min_shift=s.concept_min_shift,
                    direction="up",
                    arl0=self.false_alarm_events,
                    reference=errors,
                    rebaseline=False,
                )
        self.reference_ready = True

    @property
    def judged_metrics(self) -> tuple[str, ...]:
        """The metrics compared with the baseline (those configured, else a sensible few)."""
        if self.settings.baseline:
            return tuple(self.settings.baseline)
        if self.task == "regression":
            return ("mae", "rmse")
        binary = self.positive is not None
        return ("accuracy", "f1" if binary else "macro_f1", "roc_auc")

    def metrics_of(self, rows: Rows) -> dict[str, float]:
        y, p, scores, _, _ = rows.arrays()
        if len(y) == 0:
            return {}
        if self.task == "regression":
            return regression_metrics(y, p)
        k = len(self.class_names)
        s = None if scores is None else _normalised(scores, k)
        return classification_metrics(y.astype(np.int64), p.astype(np.int64), k, self.positive, s)

    def _standard_errors(self, rows: Rows, values: dict[str, float]) -> dict[str, float]:
        """Standard errors of the judged metrics (from the same intervals the windows use)."""
        lo_hi = self._intervals(rows, values, confidence=0.6826894921370859, seed=0)
        return {k: (hi - lo) / 2 for k, (lo, hi) in lo_hi.items()}

    def _intervals(
        self, rows: Rows, values: dict[str, float], confidence: float, seed: int
    ) -> dict[str, tuple[float, float]]:
        y, p, _, _, _ = rows.arrays()
        out: dict[str, tuple[float, float]] = {}
        if self.task == "regression":
            err = p - y
            out["mae"] = mean_interval(np.abs(err), confidence)
            lo, hi = mean_interval(err * err, confidence)
            out["rmse"] = (float(np.sqrt(max(lo, 0.0))), float(np.sqrt(max(hi, 0.0))))
            out["bias"] = mean_interval(err, confidence)
            return out
        k = len(self.class_names)
        cm = confusion_matrix(y.astype(np.int64), p.astype(np.int64), k)
        out.update(classification_intervals(cm, self.positive, confidence, seed))
        auc = values.get("roc_auc", float("nan"))
        if np.isfinite(auc):
            pos = self.positive
            n_pos = int((y == pos).sum()) if pos is not None else len(y) // max(k, 1)
            se = auc_standard_error(auc, n_pos, len(y) - n_pos)
            z = _z(confidence)
            out["roc_auc"] = (auc - z * se, auc + z * se)
        return out

    # -- judging windows ------------------------------------------------------------------------

    def coverage(self, i: int) -> float:
        w = self.windows.get(i)
        if w is None or w.predictions <= 0:
            return float("nan")
        return min(1.0, len(w.rows) / w.predictions)

    def known_predictions(self, i: int, t_ms: int) -> int:
        """Predictions of window ``i`` made at or before ``t_ms``: all of them once the window has
        ended, else those in the label store (which holds every kept prediction until the TTL)."""
        w = self.windows.get(i)
        if w is None:
            return 0
        if t_ms >= (i + 1) * self.window_ms - 1:
            return w.predictions
        j = self.join
        return int(np.count_nonzero((j.batch_of > 0) & (j.times >= i * self.window_ms) & (j.times <= t_ms)))

    def _judge(self, touched: list[int], t_ms: int) -> list[Alert]:
        """Judge the newest ready window at join time ``t_ms`` (a judging point): its coverage
        counts the predictions known by then, so the verdict depends on the events only."""
        s = self.settings
        candidates = [
            i
            for i in touched
            if i in self.windows
            and len(self.windows[i].rows) >= s.min_labels
            and (self.judged_window is None or i >= self.judged_window)
        ]
        for i in sorted(candidates, reverse=True):  # the newest with enough coverage
            w = self.windows[i]
            # judged again only when its labels grew by a tenth: the verdict cannot move faster
            # (the judged window is the oldest candidate: nothing newer was ready)
            if i == self.judged_window and len(w.rows) < 1.1 * w.judged_rows:
                return []
            known = self.known_predictions(i, t_ms)
            if known > 0 and len(w.rows) / known >= s.min_coverage:
                break
        else:
            return []
        self.judged_window, w.judged_rows = i, len(w.rows)
        rows = w.rows
        values = self.metrics_of(rows)
        self.judged = values
        coverage = min(1.0, len(rows) / known)
        self._remember(i, values, known)
        intervals = self._intervals(rows, values, s.confidence, seed=i & 0x7FFFFFFF)
        alerts = []
        for metric, base in self.baseline.items():
            v = values.get(metric)
            if v is None or not np.isfinite(v) or metric not in intervals:
                continue
            lo, hi = intervals[metric]
            higher = metric in HIGHER_IS_BETTER
            # the baseline's own uncertainty widens the margin when it came from a sample
            margin = s.tolerance + _z(s.confidence) * self.baseline_se.get(metric, 0.0)
            worse = (hi < base - margin) if higher else (lo > base + margin)
            recovered = (v >= base - s.tolerance) if higher else (v <= base + s.tolerance)
            if worse and not self.firing.get(metric):
                self.firing[metric] = True
                alerts.append(self._performance_alert(metric, v, base, (lo, hi), i, t_ms, coverage, "firing"))
            elif recovered and self.firing.get(metric):
                self.firing[metric] = False
                alerts.append(
                    self._performance_alert(metric, v, base, (lo, hi), i, t_ms, coverage, "resolved")
                )
        return alerts

    def _performance_alert(
        self,
        metric: str,
        value: float,
        base: float,
        interval: tuple[float, float],
        window: int,
        t_ms: int,
        cov: float,
        status: str,
    ) -> Alert:
        start = window * self.window_ms
        firing = status == "firing"
        verb = "fell to" if metric in HIGHER_IS_BETTER else "rose to"
        msg = (
            f"{metric} of model '{self.model_id}' {verb} {value:.3f} (interval {interval[0]:.3f}-"
            f"{interval[1]:.3f}) against a baseline of {base:.3f} for predictions made from "
            f"{format_timestamp(start)} ({cov:.0%} labelled)."
            if firing
            else f"{metric} of model '{self.model_id}' is back at {value:.3f}, within "
            f"{self.settings.tolerance} of its baseline {base:.3f}."
        )
        return Alert(
            model_id=self.model_id,
            model_version=None,
            kind="performance",
            feature=None,
            detector=f"{metric}_vs_baseline",
            status="firing" if firing else "resolved",
            severity=("critical" if abs(value - base) > 3 * self.settings.tolerance else "warning")
            if firing
            else "info",
            statistic=round(value, 6),
            threshold=round(base, 6),
            detected_at_ms=t_ms,
            change_started_at_ms=start if firing else None,
            events_seen=self.joined_total,
            message=msg,
            details={
                "metric": metric,
                "value": value,
                "baseline": base,
                "interval": list(interval),
                "confidence": self.settings.confidence,
                "tolerance": self.settings.tolerance,
                "window_start": format_timestamp(start),
                "window_seconds": self.settings.window_seconds,
                "labels": len(self.windows[window].rows),
                "label_coverage": cov,
                "baseline_source": "config" if self.settings.baseline else "first labelled events",
            },
        )

    # -- concept drift --------------------------------------------------------------------------

    def _concept_alarm(
        self, stat: float, threshold: float, at: int, t_ms: int, input_drift: list[str]
    ) -> list[Alert]:
        self.last_concept_alarm = self.joined_total + at + 1
        if self.concept_firing:
            return []
        self.concept_firing = True
        y, p, _, _, _ = self.reference.arrays()
        ref_err = float(self._errors(y, p).mean())
        recent_y, recent_p, _, recent_t, _ = self.recent.arrays()
        recent_e = self._errors(recent_y, recent_p)
        now_err = float(recent_e.mean()) if len(recent_y) else float("nan")
        began = _change_start(recent_t, recent_e, ref_err)
        what = "error rate" if self.task == "classification" else "mean absolute error"
        cause = (
            f"inputs drifted at the same time ({', '.join(input_drift[:5])}): likely covariate shift"
            if input_drift
            else "inputs did not drift: likely a change in P(y|x)"
        )
        return [
            Alert(
                model_id=self.model_id,
                model_version=None,
                kind="concept_drift",
                feature=None,
                detector="cusum",
                status="firing",
                severity="critical",
                statistic=round(stat, 6),
                threshold=round(threshold, 6),
                detected_at_ms=t_ms,
                change_started_at_ms=began,
                events_seen=self.last_concept_alarm,
                message=(
                    f"The {what} of model '{self.model_id}' rose from {ref_err:.3g} to {now_err:.3g}"
                    + (f" since about {format_timestamp(began)}" if began is not None else "")
                    + f"; {cause}."
                ),
                details={
                    "error": what,
                    "reference_error": ref_err,
                    "recent_error": now_err,
                    "recent_events": len(recent_y),
                    "input_drift": input_drift,
                    "covariate_shift": bool(input_drift),
                    "min_shift_sd": self.settings.concept_min_shift,
                    "false_alarm_events": self.false_alarm_events,
                },
            )
        ]

    def _concept_resolved(self, t_ms: int) -> Alert:
        self.concept_firing = False
        quiet_since = self.last_concept_alarm
        return Alert(
            model_id=self.model_id,
            model_version=None,
            kind="concept_drift",
            feature=None,
            detector="cusum",
            status="resolved",
            severity="info",
            statistic=0.0,
            threshold=0.0 if self.cusum is None else round(self.cusum.threshold, 6),
            detected_at_ms=t_ms,
            change_started_at_ms=None,
            events_seen=quiet_since + self.settings.window_events,
            message=(
                f"The errors of model '{self.model_id}' have been back at their reference level for "
                f"{self.settings.window_events} labelled events."
            ),
            details={},
        )

    # -- read-outs for the exporter -------------------------------------------------------------

    def current_window(self) -> int | None:
        return None if not self.windows else max(self.windows)

    def estimated(self, i: int) -> dict[str, float]:
        w = self.windows.get(i)
        if w is None or w.expected is None:
            return {}
        return w.expected.metrics(self.positive)

    def readout(self) -> Readout:
        """What the exporter shows, computed once per change of state (scrapes reuse it)."""
        key = (self.joined_total, self.join.watermark, len(self.join))
        if self._readout is not None and self._readout[0] == key:
            return self._readout[1]
        r = Readout(
            outcomes={**self.join.outcomes, "invalid": self.invalid_labels},
            waiting=len(self.join.waiting),
            open_predictions=len(self.join),
            sample_rate=self.join.sample_rate,
            delay_counts=self.delay_counts.tolist(),
            delay_sum=self.delay_sum_seconds,
            baseline=dict(self.baseline),
            firing={k: v for k, v in self.firing.items() if k in self.baseline},
            concept=(
                (self.cusum.statistic, self.cusum.threshold, self.concept_firing)
                if self.cusum is not None
                else None
            ),
            classes=list(self.class_names),
        )
        r.performance["recent"] = _finite(self.metrics_of(self.recent))
        if self.judged_window is not None and self.judged_window in self.windows:
            r.performance["judged"] = _finite(self.judged)
            r.coverage["judged"] = self.coverage(self.judged_window)
            est = self.estimated(self.judged_window)
            r.gap = {k: est[k] - v for k, v in self.judged.items() if k in est and np.isfinite(v)}
        newest = self.current_window()
        if newest is not None:
            for name, i in (("current", newest), ("previous", newest - 1)):
                if i in self.windows:
                    r.coverage[name] = self.coverage(i)
                    r.estimated[name] = self.estimated(i)
        self._readout = (key, r)
        return r

    # -- snapshot -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "class_names": self.class_names,
            "join": self.join.to_dict(),
            "windows": [
                [
                    i,
                    w.predictions,
                    w.rows.to_dict(),
                    None if w.expected is None else w.expected.to_dict(),
                    w.estimated_predictions,
                ]
                for i, w in sorted(self.windows.items())
            ],
            "recent": self.recent.to_dict(),
            "order": self.order.to_dict(),
            "label_watermark": self.label_watermark,
            "reference": self.reference.to_dict(),
            "reference_ready": self.reference_ready,
            "baseline": self.baseline,
            "baseline_se": self.baseline_se,
            "calibrator": None if self.calibrator is None else self.calibrator.to_dict(),
            "cusum": None if self.cusum is None else self.cusum.to_dict(),
            "firing": self.firing,
            "concept_firing": self.concept_firing,
            "last_concept_alarm": self.last_concept_alarm,
            "joined_total": self.joined_total,
            "invalid_labels": self.invalid_labels,
            "delay_counts": self.delay_counts,
            "delay_sum_seconds": self.delay_sum_seconds,
            "judged_window": self.judged_window,
            "touched": sorted(self.touched),
            "judged": self.judged,
            "history": self.history.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], model_id: str, settings: PerformanceSettings, false_alarm_events: float
    ) -> PerformanceTracker:
        t = cls(model_id, settings, false_alarm_events)
        t.task = d["task"]
        t.class_names = list(d["class_names"])
        t.classes = {n: i for i, n in enumerate(t.class_names)}
        t.join = LabelJoin.from_dict(d["join"])
        for i, preds, rows, expected, est_n in d["windows"]:
            w = t._window(int(i))
            w.predictions, w.rows, w.estimated_predictions = int(preds), Rows.from_dict(rows), int(est_n)
            w.expected = None if expected is None else ExpectedConfusion.from_dict(expected)
        t.recent = Rows.from_dict(d["recent"])
        t.recent.last = t.settings.window_events
        if "order" in d:  # snapshot v5 on; before it rows were never held
            t.order = JoinOrder.from_dict(d["order"])
            t.label_watermark = int(d["label_watermark"])
        t.reference = Rows.from_dict(d["reference"])
        t.reference_ready = bool(d["reference_ready"])
        t.baseline, t.baseline_se = dict(d["baseline"]), dict(d["baseline_se"])
        t.calibrator = None if d["calibrator"] is None else BinnedCalibrator.from_dict(d["calibrator"])
        t.cusum = None if d["cusum"] is None else CUSUM.from_dict(d["cusum"])
        t.firing = dict(d["firing"])
        t.concept_firing = bool(d["concept_firing"])
        t.last_concept_alarm = int(d["last_concept_alarm"])
        t.joined_total = int(d["joined_total"])
        t.invalid_labels = int(d["invalid_labels"])
        t.delay_counts = np.asarray(d["delay_counts"], dtype=np.int64)
        t.delay_sum_seconds = float(d["delay_sum_seconds"])
        t.judged_window = d["judged_window"]
        t.touched = set(d.get("touched", ()))
        t.judged = dict(d["judged"])
        if d.get("history") is not None:  # absent from snapshots of builds before the report
            t.history = PerformanceHistory.from_dict(d["history"])
        return t


def baseline_from_profile(metrics: dict[str, Any] | None) -> tuple[dict[str, float], int | None]:
    """The development metrics of a reference profile (``streamwatch profile``) as a baseline,
    with the number of rows behind them."""
    if not metrics or not metrics.get("n"):
        return {}, None
    names = {
        "classification": ("accuracy", "macro_f1"),
        "binary_scores": ("accuracy", "brier"),
        "regression": ("mae", "rmse"),
    }.get(str(metrics.get("task")), ())
    base = {k: float(metrics[k]) for k in names if isinstance(metrics.get(k), int | float)}
    if metrics.get("task") == "binary_scores" and isinstance(metrics.get("auc"), int | float):
        base["roc_auc"] = float(metrics["auc"])
    return base, int(metrics["n"])


def _change_start(times: IntArray, errors: FloatArray, reference: float) -> int | None:
    """When the errors of the recent labelled events, in prediction-time order, most likely
    started to exceed the reference: the split that maximises the excess after it.

    Labels arrive in any order, so the detector's own start (a position in arrival order) is a
    poor date; re-sorting the recent events by prediction time recovers it.
    """
    if len(times) < 2:
        return None
    order = np.argsort(times, kind="stable")
    e = errors[order]
    level = (reference + float(e.mean())) / 2  # halfway between before and now
    gain = np.cumsum((e - level)[::-1])[::-1]  # excess from each split to the end
    return int(times[order][int(np.argmax(gain))])


def _number(v: Any) -> float:
    return float(v) if type(v) in (int, float) else float("nan")


def _normalised(scores: FloatArray, k: int) -> FloatArray:
    s = np.nan_to_num(pad_scores(scores, len(scores), k), nan=0.0)
    total = s.sum(axis=1, keepdims=True)
    out: FloatArray = np.where(total > 0, s / np.where(total > 0, total, 1.0), 1.0 / k)
    return out


def _z(confidence: float) -> float:
    from scipy.special import ndtri

    return float(ndtri((1 + confidence) / 2))


__all__ = ["DELAY_BUCKETS", "PerformanceTracker", "class_name"]
