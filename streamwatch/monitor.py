"""ModelMonitor: the per-model state machine, pure and deterministic.

``process(group)`` takes one model's decoded events and returns the alerts they caused;
``snapshot()``/``restore()`` move the whole state through a versioned JSON document. No I/O,
no wall clock: the same events in the same order give the same state and alerts, whether they
came from Kafka or a file and however they were batched.

Per feature, two detectors share one alert:

* a calibrated window test (:class:`~streamwatch.detectors.window.FeatureWindowTests`): the last
  ``window_size`` events against the reference every ``step`` events, alarming only above both
  the null quantile for the model's false-alarm budget and the effect floor;
* for numeric features, a CUSUM on normal scores (:class:`~streamwatch.detectors.cusum.CUSUM`),
  which finds a mean shift of ``cusum_min_shift`` standard deviations within tens of events.

The alert fires on the first of them and resolves when the window statistic is back below
``resolve_ratio`` of its threshold and the CUSUM has been quiet for a whole window.

Beside the features, the monitor owns the model's :class:`~streamwatch.performance.PerformanceTracker`
(label join, performance windows, concept drift, estimates) and two small monitors of the same
kind for the model's outputs: one over the predicted class and score (or value), raising
``prediction_drift``, and one over the labels in arrival order, raising ``label_drift``.

The model's own monitor also owns a :class:`~streamwatch.quality.watch.QualityWatch` (unit
change, column swap, new category, data quality) against the configured profile or, without one,
the warm-up events; a feature whose drift a firing unit change or swap explains raises no
``data_drift`` alert of its own (see :meth:`ModelMonitor._route_drift`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from streamwatch.alerts import Alert
from streamwatch.columns import Columns, FeatureSchema
from streamwatch.config import DriftSettings, FeatureType, PerformanceSettings, QualitySettings
from streamwatch.decode import LabelGroup, PredictionGroup
from streamwatch.detectors.base import Detection
from streamwatch.detectors.cusum import CUSUM, CUSUMBank
from streamwatch.detectors.window import FeatureWindowTests
from streamwatch.events import format_timestamp
from streamwatch.history import DriftHistory
from streamwatch.ids import UIntArray, event_hashes
from streamwatch.jsonarrays import floats as _floats
from streamwatch.performance import PerformanceTracker
from streamwatch.performance.tracker import baseline_from_profile, class_name
from streamwatch.quality.schema import SchemaScan, SchemaTracker, count_capped
from streamwatch.quality.watch import QualityWatch, invalid_rows
from streamwatch.sketches import BlockWindow, ReferenceBins
from streamwatch.sketches.window import Segments

SNAPSHOT_FORMAT = "streamwatch.model-monitor"
# 4: quality watch, withheld and held drift alerts; 5: joined rows in order; 6: the label rows'
# floats packed (jsonarrays.packed) and event hashes as integers (an older build cannot read them)
SNAPSHOT_VERSION = 6
READABLE_VERSIONS = (4, 5, 6)  # the versions this build restores (a newer one may read older ones)
# the kind of alert each monitor raises, and how its messages name what drifted
OUTPUT_UNITS = 4  # budget units of the prediction (2), label (1) and concept-drift (1) detectors
SUBJECTS = {"data_drift": "Feature", "prediction_drift": "Prediction", "label_drift": "Label"}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class SnapshotError(ValueError):
    """A snapshot that this version cannot restore."""


class _Evaluations(NamedTuple):
    """The window statistics at every evaluation of a batch (one row each), scored at once."""

    scores: FloatArray
    thresholds: FloatArray
    over: npt.NDArray[np.bool_]  # above the threshold: fires a feature not firing
    under: npt.NDArray[np.bool_]  # below resolve_ratio x threshold: resolves a firing one once quiet
    cusum: tuple[FloatArray, FloatArray]  # the CUSUMs' statistics and thresholds, fixed over a batch


class ModelMonitor:
    """Drift and data-quality state of one model.

    Until ``reference_size`` events have been seen, they are the reference (warm-up); from then
    on every feature is watched by its window test and, if numeric, its CUSUM.
    """

    def __init__(
        self,
        model_id: str,
        features: dict[str, FeatureType],
        drift: DriftSettings,
        performance: PerformanceSettings | None = None,
        kind: str = "data_drift",
        budget_units: int | None = None,
        profile: dict[str, Any] | None = None,
        quality: QualitySettings | None = None,
        profiles_by_version: Mapping[str, dict[str, Any]] | None = None,
        max_category_values: int = 10_000,
    ) -> None:
        self.model_id = model_id
        self.kind = kind
        own = len(features) + (OUTPUT_UNITS if kind == "data_drift" else 0)
        self.budget_units = budget_units or own
        # only the model's own monitor tracks performance; the output monitors inside it do not
        self.performance: PerformanceTracker | None = None
        if kind == "data_drift":
            perf = performance or PerformanceSettings()
            if not perf.baseline and profile is not None:  # development metrics of the profile
                base, n = baseline_from_profile(profile.get("metrics"))
                if base:
                    perf = perf.model_copy(update={"baseline": base, "baseline_events": n})
            self.performance = PerformanceTracker(
                model_id, perf, drift.false_alarm_events * self.budget_units
            )
        self.outputs: dict[str, ModelMonitor] = {}  # "prediction" and "label" monitors
        # labels that came before the model's first prediction: (ids, times, values)
        self._early_labels: tuple[list[str], list[int], list[Any]] = ([], [], [])
        self.features = dict(features)
        self.settings = drift
        self.schema = FeatureSchema(self.features, max_category_values)
        n = len(self.schema.names)
        self.events_seen = 0
        self.labels_seen = 0
        self.model_version: str | None = None
        self.missing = np.zeros(n, dtype=np.int64)
        self.invalid = np.zeros(n, dtype=np.int64)
        self.scores: FloatArray = np.full(n, np.nan)  # window statistic per feature
        self.thresholds: FloatArray = np.full(n, np.nan)
        self.history = DriftHistory(n)  # bounded record of the window evaluations, for reports
        self.firing = np.zeros(n, dtype=bool)
        self.last_cusum_alarm = np.full(n, -1, dtype=np.int64)  # events_seen at the last CUSUM alarm
        self._ref_numeric: list[FloatArray] = []
        self._ref_codes: list[IntArray] = []
        self._ref_rows = 0
        self.bins: ReferenceBins | None = None
        self.reference_counts: IntArray | None = None
        self.window: BlockWindow | None = None
        self.tests: FeatureWindowTests | None = None
        self.cusums: list[CUSUM | None] = []  # per numeric feature; None: constant reference
        self._bank: tuple[IntArray, CUSUMBank] | None = None  # the live CUSUMs, updated together
        # event times of the last window, to date a CUSUM's change start
        self._times = np.zeros(drift.window_size, dtype=np.int64)
        # dev-prod and data-quality checks (model monitor only): from the profile when one is
        # configured, else built from the warm-up reference in _fit_reference
        self.quality_settings = quality or QualitySettings()
        self.quality: QualityWatch | None = None
        watch = kind == "data_drift" and self.quality_settings.enabled
        # per-version profiles: the one of the first event's model_version, chosen in process()
        self._pending_profiles: tuple[dict[str, dict[str, Any]], dict[str, Any] | None] | None = None
        if watch and profiles_by_version:
            self._pending_profiles = (dict(profiles_by_version), profile)
        elif watch and profile is not None:
            self.quality = QualityWatch.from_profile(
                model_id, self.schema.numeric, self.schema.categorical, profile, self.quality_settings
            )
        # schema checks (unknown fields, absent features, duplicate ids) from the first event on;
        # the counters are what the exporter reads
        self.schema_tracker: SchemaTracker | None = None
        if watch:
            known = {f for p in [profile, *(profiles_by_version or {}).values()] if p for f in p["features"]}
            self.schema_tracker = SchemaTracker(
                self.schema.names, known, self.quality_settings.duplicate_ids_tracked
            )
        self.unknown_fields: Counter[str] = Counter()  # events carrying each undeclared field (capped)
        self.duplicate_events = 0  # events whose id was among the model's recent ids
        self.absent_fields = np.zeros(n, dtype=np.int64)  # per feature: the key was not in the event
        self.withheld = np.zeros(n, dtype=bool)  # drift firing whose alert a quality alert replaced
        self._held: list[Alert] = []  # drift alerts waiting for the quality checks to decide
        self._batch_rows = 0

    # -- budget ---------------------------------------------------------------------------

    @property
    def false_alarm_events(self) -> float:
        """This monitor's share of the model's budget, as expected events between its false alarms.

        The model's ``false_alarm_events`` is shared by ``budget_units``: one per feature, two for
        the prediction monitor, one for the label monitor and one for the concept-drift detector.
        """
        return self.settings.false_alarm_events * self.budget_units / len(self.schema.names)

    @property
    def window_alpha(self) -> float:
        """False-alarm probability of one window test: the model's budget over features and tests."""
        share = 0.5 if self.cusum_features else 1.0
        return min(0.05, share * self.settings.step / (self.false_alarm_events * len(self.schema.names)))

    @property
    def cusum_features(self) -> int:
        return len(self.schema.numeric) if self.settings.cusum else 0

    @property
    def cusum_arl0(self) -> float:
        return 2.0 * self.false_alarm_events * max(1, self.cusum_features)

    @property
    def reference_ready(self) -> bool:
        return self.bins is not None

    @property
    def feature_names(self) -> list[str]:
        return self.schema.names

    def cusum_statistics(self) -> tuple[FloatArray, FloatArray]:
        """Statistic and threshold of each numeric feature's CUSUM (NaN when off or warming up)."""
        stat = np.full(len(self.schema.numeric), np.nan)
        thr = np.full(len(self.schema.numeric), np.nan)
        for j, c in enumerate(self.cusums):
            if c is not None:
                stat[j], thr[j] = c.statistic, c.threshold
        return stat, thr

    # -- processing -----------------------------------------------------------------------

    def process_labels(self, group: LabelGroup) -> list[Alert]:
        """Join labels to their predictions, update performance, and watch the label distribution."""
        self.labels_seen += len(group)
        tracker = self.performance
        if tracker is None or len(group) == 0:
            return []
        times = np.asarray(group.times_ms, dtype=np.int64)
        drifting = [self.schema.names[j] for j in np.flatnonzero(self.firing).tolist()]
        alerts = tracker.observe_labels(group.event_ids, times, group.labels, drifting)
        if tracker.task is None:
            # the label monitor needs the task (classes or values), known from the first
            # prediction; until then labels wait here, so it sees every label in arrival order
            # however the two topics interleave
            room = tracker.settings.max_open_predictions - len(self._early_labels[0])
            self._early_labels[0].extend(group.event_ids[:room])
            self._early_labels[1].extend(group.times_ms[:room])
            self._early_labels[2].extend(group.labels[:room])
        else:
            alerts += self._watch_labels(group.event_ids, group.times_ms, group.labels)
        return [
            replace(a, model_version=self.model_version) if a.kind in ("performance", "concept_drift") else a
            for a in alerts
        ]

    def _watch_labels(self, ids: list[str], times: list[int], labels: list[Any]) -> list[Alert]:
        """Labels into the label monitor (the task is known)."""
        assert self.performance is not None
        if self.performance.task == "regression":
            rows: list[dict[str, Any]] = [{"label": v if type(v) in (int, float) else None} for v in labels]
        else:
            rows = [{"label": class_name(v)} for v in labels]
        versions: list[str | None] = [None] * len(ids)
        return self._output("label").process(PredictionGroup(self.model_id, ids, times, versions, rows, []))

    def _output(self, which: str) -> ModelMonitor:
        """The prediction or label monitor, made once the task (classes or values) is known."""
        m = self.outputs.get(which)
        if m is None:
            assert self.performance is not None
            regression = self.performance.task == "regression"
            if which == "label":
                feats = {"label": FeatureType.NUMERIC if regression else FeatureType.CATEGORICAL}
            elif regression:
                feats = {"prediction": FeatureType.NUMERIC}
            else:
                feats = {"predicted_class": FeatureType.CATEGORICAL, "score": FeatureType.NUMERIC}
            m = self.outputs[which] = ModelMonitor(
                self.model_id,
                feats,
                self.settings,
                kind=f"{which}_drift",
                budget_units=self.budget_units,
                max_category_values=self.schema.max_vocabulary,
            )
        return m

    def _observe_outputs(self, group: PredictionGroup, hashes: UIntArray | None = None) -> list[Alert]:
        """Performance bookkeeping and prediction drift for a batch of predictions."""
        tracker = self.performance
        if tracker is None:
            return []
        times = np.asarray(group.times_ms, dtype=np.int64)
        predicted, scores = tracker.encode_predictions(group.predictions)
        drifting = [self.schema.names[j] for j in np.flatnonzero(self.firing).tolist()]
        alerts = tracker.observe_predictions(group.event_ids, times, predicted, scores, drifting, hashes)
        if self._early_labels[0]:  # the task is known now: the labels that came first
            ids, label_times, labels = self._early_labels
            self._early_labels = ([], [], [])
            alerts += self._watch_labels(ids, label_times, labels)
        alerts = [replace(a, model_version=group.versions[-1]) for a in alerts]
        out = self._output("prediction")
        if tracker.task == "regression":
            cols = out.schema.columns_of(predicted.reshape(-1, 1), [])
        else:
            names = tracker.class_names
            pos = tracker.positive
            if scores is None:
                score = np.full(len(predicted), np.nan)
            elif pos is not None:
                score = scores[:, pos]
            else:  # several classes: the confidence, the score of the predicted class
                score = np.max(np.nan_to_num(scores, nan=-np.inf), axis=1)
            codes = np.nan_to_num(predicted, nan=-1).astype(np.int64)
            # class names (None where missing), looked up for the whole batch at once
            named = np.array([*names, None], dtype=object)[np.where(codes >= 0, codes, len(names))]
            # a missing or non-finite score is a missing value, as None was in the event rows
            score = np.where(np.isfinite(score), score, np.nan)
            cols = out.schema.columns_of(score.reshape(-1, 1), [named.tolist()])
        alerts += out.process(
            PredictionGroup(self.model_id, group.event_ids, group.times_ms, group.versions, [], []), cols
        )
        return alerts

    def process(self, group: PredictionGroup, columns: Columns | None = None) -> list[Alert]:
        """Monitor a batch of events; ``columns``, when given, are its values already in columns
        (the output monitors'), and ``group.features`` is not read."""
        n = len(group)
        if n == 0:
            return []
        if self._pending_profiles is not None:
            self._choose_profile(group.versions[0])
        if columns is not None:
            cols = columns
        elif group.numeric is not None:
            assert group.categorical is not None
            cols = self.schema.columns_of(group.numeric, group.categorical)
        else:
            cols = self.schema.columns(group.features)
        times = np.asarray(group.times_ms, dtype=np.int64)
        self.missing += cols.missing
        self.invalid += cols.invalid
        # the ids hashed once, for the duplicate check and the label join
        wanted = self.schema_tracker is not None or self.performance is not None
        hashes = event_hashes(group.event_ids) if wanted else None
        scan = self._scan_schema(group, hashes)
        had_quality, self._batch_rows = self.quality is not None, n
        start = 0
        if self.bins is None:
            start = min(n, self.settings.reference_size - self._ref_rows)
            self._ref_numeric.append(cols.numeric[:start])
            self._ref_codes.append(cols.categorical[:start])
            self._ref_rows += start
            if self._ref_rows >= self.settings.reference_size:
                self._fit_reference()
        alerts: list[Alert] = []
        if start < n and self.window is not None:
            assert self.bins is not None and self.tests is not None
            first = self.events_seen + start  # model event index of row `start`
            hits = self._cusum_hits(cols.numeric[start:], start)
            flat = self.bins.transform(cols.numeric[start:], cols.categorical[start:])
            # CUSUM alarms and window evaluations take effect in event order (a CUSUM alarm
            # first at the same event), so alerts do not depend on where batches are cut
            skip = max(0, self.window.blocks - self.window.blocks_closed - 1)  # closes before full
            segments = self.window.segments(flat)
            scored = self._score_windows(flat, segments, skip)
            k = 0
            for close, (row, _) in enumerate(self.window.add(flat, times[start:], segments)):
                i = start + row
                while k < len(hits) and hits[k][0] <= i:
                    alerts += self._cusum_alarm(*hits[k], times, start, first, group.versions)
                    k += 1
                if close >= skip:
                    alerts += self._evaluate(
                        scored, close - skip, self.events_seen + i + 1, int(times[i]), group.versions[i]
                    )
            for hit in hits[k:]:
                alerts += self._cusum_alarm(*hit, times, start, first, group.versions)
            self._remember_times(times[start:], first)
        if self.quality is not None:
            alerts = self._with_quality(group, cols, times, 0 if had_quality else start, alerts, scan)
        self.events_seen += n
        self.model_version = group.versions[-1]
        return alerts + self._observe_outputs(group, hashes)

    # -- quality checks and "one root cause, one alert" --------------------------------------

    def _choose_profile(self, version: str | None) -> None:
        """The reference of the quality checks: the profile of ``version`` (the model_version of
        the monitor's first event) when one is configured, else the model's profile."""
        assert self._pending_profiles is not None
        by_version, default = self._pending_profiles
        self._pending_profiles = None
        profile = by_version.get(version) if version is not None else None
        chosen = profile if profile is not None else default
        if chosen is not None:
            self.quality = QualityWatch.from_profile(
                self.model_id, self.schema.numeric, self.schema.categorical, chosen, self.quality_settings
            )
            self.quality.reference_version = version if profile is not None else None

    def _scan_schema(self, group: PredictionGroup, hashes: UIntArray | None) -> SchemaScan | None:
        """Duplicate ids, absent and unknown fields of a batch, counted on the monitor."""
        if self.schema_tracker is None:
            return None
        if group.numeric is not None:
            scan = self.schema_tracker.scan_conforming(group.event_ids, hashes)
        else:
            scan = self.schema_tracker.scan(group.features, group.event_ids, hashes)
        self.duplicate_events += int(scan.duplicate.sum())
        if scan.absent is not None:
            self.absent_fields += scan.absent_counts(len(self.schema.names))
        cap = self.quality_settings.unknown_fields_max_tracked
        for _, names in scan.unknown:
            count_capped(self.unknown_fields, names, cap)
        return scan

    def _with_quality(
        self,
        group: PredictionGroup,
        cols: Any,
        times: IntArray,
        q_start: int,
        alerts: list[Alert],
        scan: SchemaScan | None = None,
    ) -> list[Alert]:
        """Feed the quality watch in event order between this batch's drift alerts (so what it
        explains does not depend on batch boundaries) and route those alerts through it."""
        q = self.quality
        assert q is not None
        bad = invalid_rows(group.features, self.schema.numeric, self.schema.categorical, cols.invalid)
        out: list[Alert] = []
        pos = q_start
        wait = q.settings.window_size + q.settings.step
        # the features drifting before this batch's drift alerts, then as they are routed
        drifting = {self.schema.names[j] for j in np.flatnonzero(self.firing).tolist()}
        for a in reversed(alerts):
            if a.feature is not None:
                (drifting.discard if a.status == "firing" else drifting.add)(a.feature)
        q.drifting = drifting

        def feed(upto: int) -> None:
            nonlocal pos
            while pos < upto:
                stop = upto  # held alerts are decided exactly at their deadline
                if self._held:
                    due = min(h.events_seen for h in self._held) + wait - self.events_seen
                    stop = min(upto, max(pos + 1, due))
                out.extend(
                    q.update(
                        cols.numeric[pos:stop],
                        cols.categorical[pos:stop],
                        None if bad is None else bad[pos:stop],
                        times[pos:stop],
                        group.versions[pos:stop],
                        self.events_seen + pos,
                        self.schema.vocabulary,
                        None if scan is None else scan.part(pos, stop),
                    )
                )
                pos = stop
                out.extend(self._release_held())

        for a in sorted(alerts, key=lambda a: a.events_seen):
            feed(min(len(times), a.events_seen - self.events_seen))
            out.extend(self._route_drift(a))
            if a.feature is not None:
                (q.drifting.add if a.status == "firing" else q.drifting.discard)(a.feature)
        feed(len(times))
        out.extend(self._release_held())
        return sorted(out, key=lambda a: a.events_seen)  # stable: event order, whatever the batches

    def _route_drift(self, a: Alert) -> list[Alert]:
        """One root cause, one alert: a drift alert of a feature that a firing unit change or
        column swap explains is withheld (the feature stays marked firing, so the same cause does
        not fire it again, and its resolution is withheld too); one that such a change could
        explain is held until the quality checks have seen a window (``_release_held``)."""
        assert self.quality is not None
        j = self.schema.names.index(a.feature) if a.feature in self.schema.names else -1
        if j < 0:
            return [a]
        if a.status == "firing":
            if a.feature in self.quality.explained:
                self.withheld[j] = True
                return []
            if a.feature is not None and self.quality.suspect(a.feature, a.change_started_at_ms):
                self._held.append(a)
                return []
            return [a]
        if self.withheld[j]:
            self.withheld[j] = False
            return []
        held = [h for h in self._held if h.feature == a.feature]
        self._held = [h for h in self._held if h.feature != a.feature]
        return [*held, a]

    def _release_held(self) -> list[Alert]:
        if not self._held:
            return []
        q = self.quality
        assert q is not None
        wait = q.settings.window_size + q.settings.step
        out, keep = [], []
        for h in self._held:
            if h.feature in q.explained:
                self.withheld[self.schema.names.index(h.feature)] = True
            elif q.position >= h.events_seen + wait:
                out.append(h)
            else:
                keep.append(h)
        self._held = keep
        return out

    def _fit_reference(self) -> None:
        numeric = np.concatenate(self._ref_numeric)
        codes = np.concatenate(self._ref_codes)
        s = self.settings
        self.bins = ReferenceBins.fit(numeric, codes, s.bins, s.max_categories)
        flat = self.bins.transform(numeric, codes)
        self.reference_counts = np.bincount(flat[flat >= 0], minlength=self.bins.total).astype(np.int64)
        self.window = BlockWindow(s.window_size // s.step, s.step, self.bins.total)
        self._make_tests()
        if s.cusum:
            self.cusums, self._bank = [], None
            for j in range(numeric.shape[1]):
                ref = numeric[:, j][np.isfinite(numeric[:, j])]
                if np.unique(ref).size < 2:  # a constant reference has no scale to detect shifts in
                    self.cusums.append(None)
                    continue
                c = CUSUM(
                    min_shift=s.cusum_min_shift,
                    direction="both",
                    arl0=self.cusum_arl0,
                    warmup=len(ref),
                    reference=ref,
                    rebaseline=False,
                )
                self.cusums.append(c)
        if self.kind == "data_drift" and self.quality_settings.enabled and self.quality is None:
            # the warm-up's invalid rate, from the counts of the batches seen so far
            rows = max(1, self.events_seen + self._batch_rows)
            self.quality = QualityWatch.from_sample(
                self.model_id, self.schema.numeric, self.schema.categorical, numeric, codes,
                self.schema.vocabulary, np.minimum(self.invalid / rows, 1.0), self.quality_settings,
                start_index=self.settings.reference_size,
            )  # fmt: skip
        self._ref_numeric, self._ref_codes = [], []

    def _make_tests(self) -> None:
        assert self.bins is not None and self.reference_counts is not None
        s = self.settings
        stats = [s.statistic] * len(self.schema.numeric) + [s.categorical_statistic] * len(
            self.schema.categorical
        )
        floors: dict[str, float] | None = None
        if s.min_effect is not None:
            floors = {str(stat): s.min_effect for stat in set(stats)}
        self.tests = FeatureWindowTests(
            self.reference_counts, self.bins.sizes, stats, self.window_alpha, floors
        )

    def _remember_times(self, times: IntArray, first: int) -> None:
        k = len(self._times)
        idx = (first + np.arange(len(times))) % k
        self._times[idx[-k:]] = times[-k:]

    def _time_of(self, event_index: int, newest: int) -> int | None:
        """Event time of a model event index still within the last window (else None)."""
        if newest - event_index >= len(self._times) or event_index < 0:
            return None
        return int(self._times[event_index % len(self._times)])

    def _cusum_hits(self, numeric: FloatArray, start: int) -> list[tuple[int, int, Detection]]:
        """Every numeric feature's CUSUM over the batch: (row, feature, detection) in row order."""
        hits: list[tuple[int, int, Detection]] = []
        if self._bank is None:
            live = [j for j, c in enumerate(self.cusums) if c is not None]
            bank = CUSUMBank([c for c in self.cusums if c is not None])
            self._bank = (np.asarray(live, dtype=np.int64), bank)
        live_j, bank = self._bank
        if not len(live_j):
            return hits
        bases = [c.n_seen for c in bank.cusums]  # detector position of this batch's first row
        for i, found in enumerate(bank.update(numeric[:, live_j])):
            if found:
                j, base = int(live_j[i]), bases[i]
                hits.extend((start + d.at - base, j, d) for d in found)
        hits.sort(key=lambda h: (h[0], h[1]))
        return hits

    def _cusum_alarm(
        self,
        row: int,
        j: int,
        d: Detection,
        times: IntArray,
        start: int,
        first: int,
        versions: list[str | None],
    ) -> list[Alert]:
        """Apply one CUSUM alarm: it keeps a firing alert alive, or fires the feature's alert."""
        seen = first + (row - start) + 1
        self.last_cusum_alarm[j] = seen
        if self.firing[j]:
            return []
        detector = self.cusums[j]
        assert detector is not None
        began_index = first + (row - start) - (d.at - d.start)
        # the start is reported when it lies within a window of the alarm, whatever the batching
        began: int | None = None
        if (seen - 1) - began_index < self.settings.window_size:
            if began_index >= first:  # within this batch
                began = int(times[start + began_index - first])
            else:  # in an earlier batch: from the times of the last window
                began = self._time_of(began_index, first - 1)
        return [self._fire(j, "cusum", d.statistic, d.threshold, seen, int(times[row]), began, versions[row])]

    def _score_windows(self, flat: IntArray, segments: Segments, skip: int) -> _Evaluations:
        """The statistics of every full window that adding ``flat`` closes (all but the first
        ``skip`` closes), in one vectorised call, before the batch is added."""
        assert self.window is not None and self.tests is not None
        scores, thresholds = self.tests.evaluate(self.window.counts_at_closes(flat, segments)[skip:])
        with np.errstate(invalid="ignore"):
            over = scores > thresholds
            under = scores < self.settings.resolve_ratio * thresholds
        # CUSUM alarms do not change the CUSUMs: their statistics are the batch's
        return _Evaluations(scores, thresholds, over, under, self.cusum_statistics())

    def _evaluate(
        self, scored: _Evaluations, at: int, events_seen: int, t_ms: int, version: str | None
    ) -> list[Alert]:
        """Fire and resolve on evaluation ``at`` of the batch (the window as it is at
        ``events_seen``)."""
        assert self.window is not None and self.tests is not None
        scores, thresholds = scored.scores[at], scored.thresholds[at]
        self.scores, self.thresholds = scores, thresholds
        self.history.record(t_ms, events_seen, scores, thresholds, *scored.cusum)
        fire = scored.over[at] & ~self.firing
        resolve = scored.under[at] & self.firing
        if resolve.any():
            resolve &= events_seen - self.last_cusum_alarm >= self.settings.window_size  # quiet
        alerts: list[Alert] = []
        if fire.any():
            starts = self.window.ordered_starts()[self._change_blocks()]
            for j in np.flatnonzero(fire).tolist():
                stat = self.tests.statistics[j]
                alerts.append(
                    self._fire(
                        j,
                        stat,
                        float(scores[j]),
                        float(thresholds[j]),
                        events_seen,
                        t_ms,
                        int(starts[j]),
                        version,
                    )
                )
        for j in np.flatnonzero(resolve).tolist():
            alerts.append(
                self._resolve(j, float(scores[j]), float(thresholds[j]), events_seen, t_ms, version)
            )
        return alerts

    def _change_blocks(self) -> IntArray:
        """Per feature, the block where the change most likely began: the split that maximises
        events after it x the statistic of the pooled tail against the reference."""
        assert self.window is not None and self.tests is not None
        blocks = self.window.ordered_blocks()
        k = blocks.shape[0]
        tails = np.cumsum(blocks[::-1], axis=0)[::-1]
        scores = self.tests.values(tails)  # (k, features)
        weight = (k - np.arange(k))[:, None]
        return np.asarray(np.argmax(np.nan_to_num(scores, nan=-1.0) * weight, axis=0), dtype=np.int64)

    def _fire(
        self,
        j: int,
        detector: str,
        score: float,
        threshold: float,
        events_seen: int,
        t_ms: int,
        began: int | None,
        version: str | None,
    ) -> Alert:
        s = self.settings
        name = self.schema.names[j]
        self.firing[j] = True
        what = (
            f"{detector.upper()} {score:.3f} > {threshold:.3f} over the last {s.window_size} events"
            if detector != "cusum"
            else f"a mean shift of at least {s.cusum_min_shift} sd (CUSUM {score:.1f} > {threshold:.1f})"
        )
        return Alert(
            model_id=self.model_id,
            model_version=version,
            kind=self.kind,
            feature=name,
            detector=detector,
            status="firing",
            severity="critical" if score >= 2 * threshold else "warning",
            statistic=round(score, 6),
            threshold=round(threshold, 6),
            detected_at_ms=t_ms,
            change_started_at_ms=began,
            events_seen=events_seen,
            message=(
                f"{SUBJECTS[self.kind]} '{name}' of model '{self.model_id}' drifted from its reference: "
                + what
                + (f", likely since {format_timestamp(began)}" if began is not None else "")
                + "."
            ),
            details=self._details(j),
        )

    def _resolve(
        self, j: int, score: float, threshold: float, events_seen: int, t_ms: int, version: str | None
    ) -> Alert:
        s = self.settings
        name = self.schema.names[j]
        self.firing[j] = False
        stat = self.tests.statistics[j] if self.tests is not None else "window"
        return Alert(
            model_id=self.model_id,
            model_version=version,
            kind=self.kind,
            feature=name,
            detector=stat,
            status="resolved",
            severity="info",
            statistic=round(score, 6),
            threshold=round(s.resolve_ratio * threshold, 6),
            detected_at_ms=t_ms,
            change_started_at_ms=None,
            events_seen=events_seen,
            message=(
                f"{SUBJECTS[self.kind]} '{name}' of model '{self.model_id}' is back near its reference: "
                f"{stat.upper()} {score:.3f} < {s.resolve_ratio * threshold:.3f}."
            ),
            details=self._details(j),
        )

    def _details(self, j: int) -> dict[str, Any]:
        s = self.settings
        return {
            "feature_type": self.features[self.schema.names[j]].value,
            "window_events": s.window_size,
            "reference_events": s.reference_size,
            "step_events": s.step,
            "window_alpha": self.window_alpha,
            "false_alarm_events": s.false_alarm_events,
            "budget_units": self.budget_units,
            "bins": int(self.bins.sizes[j]) if self.bins is not None else None,
        }

    # -- snapshot / restore -------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as a versioned JSON document (never pickle: snapshots cross hosts)."""
        return orjson.dumps(self._to_doc(), option=orjson.OPT_SERIALIZE_NUMPY)

    def _to_doc(self) -> dict[str, Any]:
        perf = self.performance
        doc: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "model_id": self.model_id,
            "kind": self.kind,
            "performance_settings": None if perf is None else perf.settings.model_dump(),
            "performance": None if perf is None else perf.to_dict(),
            "budget_units": self.budget_units,
            "outputs": {k: m._to_doc() for k, m in self.outputs.items()},
            "early_labels": [list(x) for x in self._early_labels],
            "features": {k: v.value for k, v in self.features.items()},
            "settings": self.settings.model_dump(),
            "events_seen": self.events_seen,
            "labels_seen": self.labels_seen,
            "model_version": self.model_version,
            "vocabularies": [self.schema.vocabulary(j) for j in range(len(self.schema.categorical))],
            "max_category_values": self.schema.max_vocabulary,
            "missing": self.missing,
            "invalid": self.invalid,
            "scores": self.scores,
            "thresholds": self.thresholds,
            "firing": self.firing,
            "last_cusum_alarm": self.last_cusum_alarm,
            "history": self.history.to_dict(),
            "times": self._times,
            "reference_buffer": None,
            "bins": None,
            "reference_counts": None,
            "window": None,
            "cusums": [None if c is None else c.to_dict() for c in self.cusums],
            "quality_settings": self.quality_settings.model_dump(),
            "quality": None if self.quality is None else self.quality.to_dict(),
            "withheld": self.withheld,
            "held": [asdict(h) for h in self._held],
            "schema": None
            if self.schema_tracker is None
            else {
                "tracker": self.schema_tracker.to_dict(),
                "unknown_fields": dict(self.unknown_fields),
                "duplicate_events": self.duplicate_events,
                "absent_fields": self.absent_fields,
            },
        }
        if self.bins is None:
            doc["reference_buffer"] = {
                "numeric": np.concatenate(self._ref_numeric) if self._ref_numeric else [],
                "codes": np.concatenate(self._ref_codes) if self._ref_codes else [],
                "rows": self._ref_rows,
            }
        else:
            assert self.window is not None
            doc["bins"] = self.bins.to_dict()
            doc["reference_counts"] = self.reference_counts
            doc["window"] = self.window.to_dict()
        return doc

    @classmethod
    def restore(cls, data: bytes) -> ModelMonitor:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise SnapshotError(f"snapshot is not JSON: {e}") from None
        if (
            not isinstance(doc, dict)
            or doc.get("format") != SNAPSHOT_FORMAT
            or doc.get("version") not in READABLE_VERSIONS
        ):
            got = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else None
            raise SnapshotError(
                f"unsupported snapshot {got!r}; "
                f"this build reads {SNAPSHOT_FORMAT!r} versions {', '.join(map(str, READABLE_VERSIONS))}"
            )
        try:
            return cls._from_doc(doc)
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"corrupt snapshot: {type(e).__name__}: {e}") from None

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> ModelMonitor:
        drift = DriftSettings(**doc["settings"])
        perf = doc["performance_settings"]
        m = cls(
            doc["model_id"],
            {k: FeatureType(v) for k, v in doc["features"].items()},
            drift,
            performance=None if perf is None else PerformanceSettings(**perf),
            kind=doc["kind"],
            budget_units=int(doc["budget_units"]),
            quality=QualitySettings(**doc["quality_settings"]),
            max_category_values=int(doc.get("max_category_values", 10_000)),
        )
        if doc["quality"] is not None:
            m.quality = QualityWatch.from_dict(doc["quality"])
        m.withheld = np.asarray(doc["withheld"], dtype=bool)
        m._held = [Alert(**h) for h in doc["held"]]
        sch = doc.get("schema")  # absent from snapshots of builds before the schema checks
        if sch is not None:
            m.schema_tracker = SchemaTracker.from_dict(sch["tracker"])
            m.unknown_fields = Counter({str(k): int(v) for k, v in sch["unknown_fields"].items()})
            m.duplicate_events = int(sch["duplicate_events"])
            m.absent_fields = np.asarray(sch["absent_fields"], dtype=np.int64)
        if m.performance is not None and doc["performance"] is not None:
            m.performance = PerformanceTracker.from_dict(
                doc["performance"], m.model_id, m.performance.settings, m.performance.false_alarm_events
            )
        m.outputs = {k: cls._from_doc(d) for k, d in doc["outputs"].items()}
        early = doc.get("early_labels") or [[], [], []]
        m._early_labels = (list(early[0]), [int(t) for t in early[1]], list(early[2]))
        m.events_seen, m.labels_seen = int(doc["events_seen"]), int(doc["labels_seen"])
        m.model_version = doc["model_version"]
        for j, values in enumerate(doc["vocabularies"]):
            m.schema.vocabularies[j].update({v: i for i, v in enumerate(values)})
        m.missing = np.asarray(doc["missing"], dtype=np.int64)
        m.invalid = np.asarray(doc["invalid"], dtype=np.int64)
        m.scores = _floats(doc["scores"])
        m.thresholds = _floats(doc["thresholds"])
        m.firing = np.asarray(doc["firing"], dtype=bool)
        m.last_cusum_alarm = np.asarray(doc["last_cusum_alarm"], dtype=np.int64)
        if doc.get("history") is not None:  # absent from snapshots of builds before the report
            m.history = DriftHistory.from_dict(doc["history"])
        m._times = np.asarray(doc["times"], dtype=np.int64)
        n_num, n_cat = len(m.schema.numeric), len(m.schema.categorical)
        if doc["bins"] is None:
            buf = doc["reference_buffer"]
            m._ref_rows = int(buf["rows"])
            if m._ref_rows:
                m._ref_numeric = [_floats(buf["numeric"]).reshape(m._ref_rows, n_num)]
                m._ref_codes = [np.asarray(buf["codes"], dtype=np.int64).reshape(m._ref_rows, n_cat)]
        else:
            m.bins = ReferenceBins.from_dict(doc["bins"])
            m.reference_counts = np.asarray(doc["reference_counts"], dtype=np.int64)
            m.window = BlockWindow.from_dict(doc["window"])
            m._make_tests()
            m.cusums = [None if c is None else CUSUM.from_dict(c) for c in doc["cusums"]]
            m._bank = None
        return m


__all__ = ["ModelMonitor", "SnapshotError"]
