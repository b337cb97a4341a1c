"""ModelMonitor: the per-model state machine, pure and deterministic.

``process(group)`` takes one model's decoded events and returns the alerts they caused;
``snapshot()``/``restore()`` move the whole state through a versioned JSON document. No I/O,
no wall clock: the same events in the same order give the same state and alerts, whether they
came from Kafka or a file and however they were batched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from streamwatch.alerts import Alert
from streamwatch.columns import FeatureSchema
from streamwatch.config import DriftSettings, FeatureType
from streamwatch.decode import LabelGroup, PredictionGroup
from streamwatch.detectors.psi import PSI
from streamwatch.events import format_timestamp
from streamwatch.sketches import BlockWindow, ReferenceBins

SNAPSHOT_FORMAT = "streamwatch.model-monitor"
SNAPSHOT_VERSION = 1

FloatArray = npt.NDArray[np.float64]


class SnapshotError(ValueError):
    """A snapshot that this version cannot restore."""


class ModelMonitor:
    """Drift and data-quality state of one model.

    Until ``reference_size`` events have been seen, they are the reference (warm-up); then
    each feature's sliding window of ``window_size`` events is compared with it every ``step``
    events by PSI, and an alert fires above ``psi_threshold`` and resolves below
    ``psi_resolve``.
    """

    def __init__(self, model_id: str, features: dict[str, FeatureType], drift: DriftSettings) -> None:
        self.model_id = model_id
        self.features = dict(features)
        self.settings = drift
        self.schema = FeatureSchema(self.features)
        n = len(self.schema.names)
        self.events_seen = 0
        self.labels_seen = 0
        self.model_version: str | None = None
        self.missing = np.zeros(n, dtype=np.int64)
        self.invalid = np.zeros(n, dtype=np.int64)
        self.scores: FloatArray = np.full(n, np.nan)
        self.firing = np.zeros(n, dtype=bool)
        self.alerts_fired = 0
        self.alerts_resolved = 0
        self._ref_numeric: list[FloatArray] = []
        self._ref_codes: list[npt.NDArray[np.int64]] = []
        self._ref_rows = 0
        self.bins: ReferenceBins | None = None
        self.reference_counts: npt.NDArray[np.int64] | None = None
        self.window: BlockWindow | None = None
        self.detector: PSI | None = None

    @property
    def reference_ready(self) -> bool:
        return self.bins is not None

    @property
    def feature_names(self) -> list[str]:
        return self.schema.names

    def process_labels(self, group: LabelGroup) -> list[Alert]:
        """Labels are counted here; the join and performance metrics come with delayed labels."""
        self.labels_seen += len(group)
        return []

    def process(self, group: PredictionGroup) -> list[Alert]:
        n = len(group)
        if n == 0:
            return []
        cols = self.schema.columns(group.features)
        times = np.asarray(group.times_ms, dtype=np.int64)
        self.missing += cols.missing
        self.invalid += cols.invalid
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
            assert self.bins is not None and self.detector is not None
            flat = self.bins.transform(cols.numeric[start:], cols.categorical[start:])
            for row, _ in self.window.add(flat, times[start:]):
                if self.window.full:
                    i = start + row
                    alerts += self._evaluate(self.events_seen + i + 1, int(times[i]), group.versions[i])
        self.events_seen += n
        self.model_version = group.versions[-1]
        return alerts

    def _fit_reference(self) -> None:
        numeric = np.concatenate(self._ref_numeric)
        codes = np.concatenate(self._ref_codes)
        s = self.settings
        self.bins = ReferenceBins.fit(numeric, codes, s.bins, s.max_categories)
        flat = self.bins.transform(numeric, codes)
        self.reference_counts = np.bincount(flat[flat >= 0], minlength=self.bins.total).astype(np.int64)
        self.window = BlockWindow(s.window_size // s.step, s.step, self.bins.total)
        self.detector = PSI(self.bins, self.reference_counts)
        self._ref_numeric, self._ref_codes = [], []

    def _evaluate(self, events_seen: int, t_ms: int, version: str | None) -> list[Alert]:
        assert self.window is not None and self.detector is not None
        s = self.settings
        scores = self.detector.score(self.window.counts(), s.window_size)
        self.scores = scores
        with np.errstate(invalid="ignore"):
            fire = ~self.firing & (scores > s.psi_threshold)
            resolve = self.firing & (scores < s.psi_resolve)
        if not (fire.any() or resolve.any()):
            return []
        alerts = []
        if fire.any():
            starts = self.window.ordered_starts()[self.detector.change_start(self.window.ordered_blocks())]
        for j in np.flatnonzero(fire | resolve).tolist():
            name, score = self.schema.names[j], float(scores[j])
            firing = bool(fire[j])
            began = int(starts[j]) if firing else None
            if firing:
                message = (
                    f"Feature '{name}' of model '{self.model_id}' drifted from its reference: "
                    f"PSI {score:.3f} > {s.psi_threshold} over the last {s.window_size} events"
                    + (f", likely since {format_timestamp(began)}" if began is not None else "")
                    + "."
                )
            else:
                message = (
                    f"Feature '{name}' of model '{self.model_id}' is back near its reference: "
                    f"PSI {score:.3f} < {s.psi_resolve}."
                )
            alerts.append(
                Alert(
                    model_id=self.model_id,
                    model_version=version,
                    kind="data_drift",
                    feature=name,
                    detector=PSI.name,
                    status="firing" if firing else "resolved",
                    severity=("critical" if score >= 2 * s.psi_threshold else "warning")
                    if firing
                    else "info",
                    statistic=round(score, 6),
                    threshold=s.psi_threshold if firing else s.psi_resolve,
                    detected_at_ms=t_ms,
                    change_started_at_ms=began,
                    events_seen=events_seen,
                    message=message,
                    details={
                        "feature_type": self.features[name].value,
                        "window_events": s.window_size,
                        "reference_events": s.reference_size,
                        "step_events": s.step,
                        "bins": int(self.bins.sizes[j]) if self.bins is not None else None,
                    },
                )
            )
        self.firing = (self.firing | fire) & ~resolve
        self.alerts_fired += int(fire.sum())
        self.alerts_resolved += int(resolve.sum())
        return alerts

    # -- snapshot / restore -------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as a versioned JSON document (never pickle: snapshots cross hosts)."""
        doc: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "model_id": self.model_id,
            "features": {k: v.value for k, v in self.features.items()},
            "settings": self.settings.model_dump(),
            "events_seen": self.events_seen,
            "labels_seen": self.labels_seen,
            "model_version": self.model_version,
            "vocabularies": [self.schema.vocabulary(j) for j in range(len(self.schema.categorical))],
            "missing": self.missing,
            "invalid": self.invalid,
            "scores": self.scores,
            "firing": self.firing,
            "alerts_fired": self.alerts_fired,
            "alerts_resolved": self.alerts_resolved,
            "reference_buffer": None,
            "bins": None,
            "reference_counts": None,
            "window": None,
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
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def restore(cls, data: bytes) -> ModelMonitor:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise SnapshotError(f"snapshot is not JSON: {e}") from None
        if doc.get("format") != SNAPSHOT_FORMAT or doc.get("version") != SNAPSHOT_VERSION:
            raise SnapshotError(
                f"unsupported snapshot {doc.get('format')!r} version {doc.get('version')!r}; "
                f"this build reads {SNAPSHOT_FORMAT!r} version {SNAPSHOT_VERSION}"
            )
        m = cls(
            doc["model_id"],
            {k: FeatureType(v) for k, v in doc["features"].items()},
            DriftSettings(**doc["settings"]),
        )
        m.events_seen, m.labels_seen = int(doc["events_seen"]), int(doc["labels_seen"])
        m.model_version = doc["model_version"]
        for j, values in enumerate(doc["vocabularies"]):
            m.schema.vocabularies[j].update({v: i for i, v in enumerate(values)})
        m.missing = np.asarray(doc["missing"], dtype=np.int64)
        m.invalid = np.asarray(doc["invalid"], dtype=np.int64)
        m.scores = np.asarray([np.nan if v is None else v for v in doc["scores"]], dtype=np.float64)
        m.firing = np.asarray(doc["firing"], dtype=bool)
        m.alerts_fired, m.alerts_resolved = int(doc["alerts_fired"]), int(doc["alerts_resolved"])
        n_num, n_cat = len(m.schema.numeric), len(m.schema.categorical)
        if doc["bins"] is None:
            buf = doc["reference_buffer"]
            m._ref_rows = int(buf["rows"])
            if m._ref_rows:
                nums = [[np.nan if v is None else v for v in row] for row in buf["numeric"]]
                m._ref_numeric = [np.asarray(nums, dtype=np.float64).reshape(-1, n_num)]
                m._ref_codes = [np.asarray(buf["codes"], dtype=np.int64).reshape(-1, n_cat)]
        else:
            m.bins = ReferenceBins.from_dict(doc["bins"])
            m.reference_counts = np.asarray(doc["reference_counts"], dtype=np.int64)
            m.window = BlockWindow.from_dict(doc["window"])
            m.detector = PSI(m.bins, m.reference_counts)
        return m
