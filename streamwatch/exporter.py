"""Prometheus exporter: the engine's metric families rendered from its state at scrape time (no
per-event ``labels()`` calls on the hot path), with a cap on the series of each model, and a
small HTTP server with ``/metrics``, ``/healthz`` and ``/readyz``.

The engine's families are written in the text exposition format directly rather than through
prometheus_client's metric families: that is about ten times faster for many series (see
docs/metrics.md#cardinality). Runtime metrics (the batch histogram) stay in a prometheus_client
registry, appended to each scrape.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from streamwatch import __version__
from streamwatch.config import MetricsSettings
from streamwatch.decode import Reason
from streamwatch.engine import Engine
from streamwatch.monitor import FloatArray, ModelMonitor
from streamwatch.performance.tracker import DELAY_BUCKETS, Readout
from streamwatch.runtime.state import CORRUPT_REASONS, Timing

_TIMING_BOUNDS = Timing.BOUNDS


class RuntimeStatsLike(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


_INF = math.inf


def _esc(value: str) -> str:
    """A label value escaped for the text format."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value


def _num(v: float) -> str:
    """A sample value in the text format (``repr`` of the float; NaN and infinities spelled out)."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if v in (_INF, -_INF):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class _Family:
    """One metric family in the text exposition format: its header and its sample lines.

    ``add`` takes the label pairs already formatted (``model="m",window="current"``): the
    exporter knows its label names, so it skips prometheus_client's per-sample validation and
    sorting, which cost most of a scrape with thousands of series.
    """

    __slots__ = ("counter", "head", "lines", "name", "samples")

    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name = f"{name}_total" if kind == "counter" else name  # the sample name
        self.counter = kind == "counter"
        self.head = f"# HELP {self.name} {help_}\n# TYPE {self.name} {kind}\n"
        self.samples: list[tuple[str, float]] = []  # (labels, value)
        self.lines: list[str] = []  # samples already formatted (the per-feature fast path)

    def add(self, labels: str, value: float) -> None:
        self.samples.append((labels, value))


@dataclass(slots=True)
class _ModelState:
    """What the exporter copies of one model under the engine lock."""

    model: str
    seen: int
    labels_seen: int
    ready: bool
    names: list[str]
    stats: list[str]  # the window test's statistic per feature
    scores: FloatArray
    thresholds: FloatArray
    firing: npt.NDArray[np.bool_]
    missing: npt.NDArray[np.int64]
    invalid: npt.NDArray[np.int64]
    cusum: FloatArray  # per numeric feature (they come first in ``names``)
    cusum_threshold: FloatArray
    readout: Readout | None
    support: list[int]  # joined labels per class code among the recent ones
    outputs: list[tuple[str, DriftState]]
    duplicates: int = 0  # events whose id the model had seen recently
    unknown: dict[str, int] = field(default_factory=dict)  # events per undeclared field (capped)


# consumed messages and bytes by source, dead letters by reason, alert events by (model, kind,
# status), the models with a monitor, the configured models without one
_Snapshot = tuple[
    dict[str, int],
    dict[str, int],
    dict[str, int],
    dict[tuple[str, str, str], int],
    list[_ModelState],
    list[str],
]

# the series a feature can have: status, score and threshold of the window test, score and
# threshold of the CUSUM, missing and invalid values (the columns of ``has`` in ``_model``)
_FEATURE_KINDS = 7


class EngineCollector:
    """Reads the engine under its lock, copies what it needs, then renders the families outside
    it, holding each model to ``metrics.max_series_per_model`` series (see docs/metrics.md)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_series = engine.settings.metrics.max_series_per_model
        # model -> keys of the series withheld at least once since the start (the counter)
        self._withheld_keys: dict[str, set[object]] = {}
        self._high: dict[tuple[str, str], float] = {}  # highest value shown per counter series
        self._lock = threading.Lock()  # concurrent scrapes update the keys

    def _snapshot(self) -> _Snapshot:
        e = self.engine
        with e.lock:
            # inputs and configured models appear at 0 from the start, so rate() and ratios
            # see the first increase and a model that never sends an event is visible
            consumed = {"predictions": 0, "labels": 0, **e.consumed_messages}
            consumed_bytes = dict(e.consumed_bytes)
            dead = dict(e.dead_letters)
            alerts = dict(e.alerts_by_kind)
            models = [_model_state(m) for m in e.monitors.values()]
            silent = [m for m in e.settings.models if m not in e.monitors]
        return consumed, consumed_bytes, dead, alerts, models, silent

    def render(self) -> str:
        consumed, consumed_bytes, dead, alerts, models, silent = self._snapshot()
        out: list[str] = []

        info = _Family("streamwatch_build_info", "gauge", "streamwatch build")
        info.add(f'version="{_esc(__version__)}"', 1)
        msgs = _Family("streamwatch_messages_consumed", "counter", "Messages read from the input")
        nbytes = _Family("streamwatch_consumed_bytes", "counter", "Bytes of message values read")
        for src, v in sorted(consumed.items()):
            msgs.add(f'source="{_esc(src)}"', v)
            nbytes.add(f'source="{_esc(src)}"', consumed_bytes.get(src, 0))
        dl = _Family(
            "streamwatch_dead_letters", "counter", "Events sent to the dead-letter output, by reason"
        )
        for reason in sorted(set(Reason.ALL) | set(dead)):
            dl.add(f'reason="{_esc(reason)}"', dead.get(reason, 0))
        _emit(out, info, msgs, nbytes, dl, high=self._high)
        _emit(out, *_limit_families(self.engine), high=self._high)

        f = _Families()
        alert_series: dict[str, int] = {}
        for model, _kind, _st in alerts:
            alert_series[model] = alert_series.get(model, 0) + 1
        for model, _kind in {(m, k) for m, k, _ in alerts}:
            alert_series[model] += 1  # its alerts_firing series
        with self._lock:
            for ms in models:
                self._model(f, ms, alert_series.get(ms.model, 0))
            for model in silent:
                m = f'model="{_esc(model)}"'
                f.events.add(f'{m},type="prediction"', 0)
                f.events.add(f'{m},type="label"', 0)
                f.ready.add(m, 0)
                f.withheld.add(m, 0)
                f.dropped.add(m, len(self._withheld_keys.get(model, ())))
        _emit(out, f.events, f.ready, f.score, f.threshold, f.status, f.missing, f.invalid, high=self._high)
        _emit(out, f.duplicates, f.unknown, high=self._high)
        _emit(out, f.out_score, f.out_threshold, f.out_status, high=self._high)
        _emit(out, f.labels_total, f.waiting, f.open_, f.sample, f.delay, f.coverage, f.perf, high=self._high)
        _emit(
            out,
            f.base,
            f.perf_status,
            f.est,
            f.gap,
            f.concept,
            f.concept_thr,
            f.concept_status,
            high=self._high,
        )

        total = _Family("streamwatch_alerts", "counter", "Alert events emitted")
        firing_now: dict[tuple[str, str], int] = {}
        for (model, kind, st), v in sorted(alerts.items()):
            total.add(f'model="{_esc(model)}",kind="{_esc(kind)}",status="{_esc(st)}"', v)
            firing_now[(model, kind)] = firing_now.get((model, kind), 0) + (v if st == "firing" else -v)
        af = _Family("streamwatch_alerts_firing", "gauge", "Alerts firing now")
        for (model, kind), v in sorted(firing_now.items()):
            af.add(f'model="{_esc(model)}",kind="{_esc(kind)}"', v)
        _emit(out, total, af, f.withheld, f.dropped, high=self._high)
        return "".join(out)

    def _model(self, f: _Families, ms: _ModelState, alert_series: int) -> None:
        """Add one model's series, the per-feature and per-class ones within the cap."""
        model = ms.model
        mq = f'model="{_esc(model)}"'
        n = len(ms.names)
        nc = len(ms.cusum)
        # which series each feature has: status, score, threshold, cusum score and threshold,
        # missing, invalid (the columns of the dropped-series keys)
        has = np.zeros((n, _FEATURE_KINDS), dtype=bool)
        has[:, 5:] = True
        if ms.ready:
            has[:, 0] = True
            has[:, 1] = ~np.isnan(ms.scores)
            has[:, 2] = ~np.isnan(ms.thresholds)
            has[:nc, 3] = has[:nc, 4] = ~np.isnan(ms.cusum)
        per_feature = has.sum(axis=1)

        r = ms.readout
        class_series: dict[int, int] = {}
        if r is not None:
            for values in r.performance.values():
                for key in values:
                    _, _, code = key.partition("/")
                    if code:
                        class_series[int(code)] = class_series.get(int(code), 0) + 1

        budget = max(0, self.max_series - _fixed_series(ms, alert_series))
        need_f, need_c = int(per_feature.sum()), sum(class_series.values())
        keep: npt.NDArray[np.bool_] | None = None  # None: every feature
        kept_classes: set[int] | None = None
        withheld = 0
        if need_f + need_c > budget:
            # each kind gets half of the budget, and what one does not need goes to the other
            budget_c = min(need_c, max(budget // 2, budget - need_f))
            keep = _top_features(ms, per_feature, budget - budget_c)
            kept_classes = _top_classes(ms.support, class_series, budget_c)
            dropped = ~keep
            withheld = int(per_feature[dropped].sum())
            keys = self._withheld_keys.setdefault(model, set())
            if withheld:
                keys.update(np.flatnonzero((has & dropped[:, None]).ravel()).tolist())
            if r is not None:
                for window, values in r.performance.items():
                    for key in values:
                        metric, _, code = key.partition("/")
                        if code and int(code) not in kept_classes:
                            withheld += 1
                            keys.add((metric, int(code), window))
        f.withheld.add(mq, withheld)
        f.dropped.add(mq, len(self._withheld_keys.get(model, ())))

        f.events.add(f'{mq},type="prediction"', ms.seen)
        f.events.add(f'{mq},type="label"', ms.labels_seen)
        f.ready.add(mq, 1 if ms.ready else 0)
        f.duplicates.add(mq, ms.duplicates)
        for name, v in sorted(ms.unknown.items()):
            f.unknown.add(f'{mq},field="{_esc(name)}"', v)
        _feature_lines(f, ms, mq, range(n) if keep is None else np.flatnonzero(keep).tolist())
        for which, (names, stats, scores, thr, firing) in ms.outputs:
            for j, name in enumerate(names[: len(stats)]):
                key = f'{mq},output="{which}",name="{_esc(name)}",detector="{stats[j]}"'
                if not math.isnan(scores[j]):
                    f.out_score.add(key, scores[j])
                    f.out_threshold.add(key, thr[j])
                f.out_status.add(key, 1 if firing[j] else 0)
        if r is not None:
            _performance_lines(f, r, mq, kept_classes)


class _Families:
    """The per-model families of one scrape."""

    def __init__(self) -> None:
        self.events = _Family("streamwatch_events", "counter", "Valid events processed")
        self.ready = _Family("streamwatch_reference_ready", "gauge", "1 once the model's reference is fixed")
        self.duplicates = _Family(
            "streamwatch_duplicate_events", "counter", "Events whose event_id the model had seen recently"
        )
        self.unknown = _Family(
            "streamwatch_unknown_field_events",
            "counter",
            "Events carrying a field the model does not declare (names capped, rest as __other__)",
        )
        self.score = _Family(
            "streamwatch_feature_drift_score", "gauge", "Drift statistic of the feature's window"
        )
        self.threshold = _Family(
            "streamwatch_feature_drift_threshold", "gauge", "Score above which the feature drifts"
        )
        self.status = _Family("streamwatch_feature_drift_status", "gauge", "1 while a drift alert fires")
        self.missing = _Family("streamwatch_feature_missing_values", "counter", "Values absent or null")
        self.invalid = _Family(
            "streamwatch_feature_invalid_values", "counter", "Values of the wrong type or not finite"
        )
        self.out_score = _Family(
            "streamwatch_output_drift_score", "gauge", "Drift statistic of the model's predictions or labels"
        )
        self.out_threshold = _Family(
            "streamwatch_output_drift_threshold", "gauge", "Score above which the output drifts"
        )
        self.out_status = _Family(
            "streamwatch_output_drift_status", "gauge", "1 while an output drift alert fires"
        )
        self.labels_total = _Family("streamwatch_labels", "counter", "Label events by what became of them")
        self.waiting = _Family(
            "streamwatch_labels_waiting", "gauge", "Labels that came before their prediction, still waiting"
        )
        self.open_ = _Family(
            "streamwatch_predictions_open", "gauge", "Predictions in the label store awaiting labels"
        )
        self.sample = _Family(
            "streamwatch_label_store_sample_ratio",
            "gauge",
            "Share of event ids the label store keeps (1 until its cap is reached)",
        )
        self.delay = _Family(
            "streamwatch_label_delay_seconds", "histogram", "Event time from prediction to its label"
        )
        self.coverage = _Family(
            "streamwatch_label_coverage_ratio",
            "gauge",
            "Joined labels over predictions in a prediction-time window",
        )
        self.perf = _Family(
            "streamwatch_performance",
            "gauge",
            "Model performance from joined labels (window: judged = newest judged prediction-time "
            "window, recent = last joined events)",
        )
        self.base = _Family(
            "streamwatch_performance_baseline", "gauge", "Baseline the performance is judged against"
        )
        self.perf_status = _Family(
            "streamwatch_performance_status", "gauge", "1 while a performance alert fires"
        )
        self.est = _Family(
            "streamwatch_estimated_performance",
            "gauge",
            "Performance estimated from calibrated scores before labels arrive (CBPE)",
        )
        self.gap = _Family(
            "streamwatch_estimated_performance_gap",
            "gauge",
            "Estimate minus realised value in the judged window",
        )
        self.concept = _Family(
            "streamwatch_concept_drift_score", "gauge", "CUSUM statistic on the error stream"
        )
        self.concept_thr = _Family(
            "streamwatch_concept_drift_threshold", "gauge", "CUSUM threshold on the error stream"
        )
        self.concept_status = _Family(
            "streamwatch_concept_drift_status", "gauge", "1 while a concept-drift alert fires"
        )
        self.withheld = _Family(
            "streamwatch_series_withheld",
            "gauge",
            "Per-feature and per-class series of the model left out of this scrape by "
            "metrics.max_series_per_model",
        )
        self.dropped = _Family(
            "streamwatch_series_dropped",
            "counter",
            "Distinct series of the model withheld at least once since the worker started",
        )


def _emit(out: list[str], *families: _Family, high: dict[tuple[str, str], float] | None = None) -> None:
    """Format ``families``; with ``high``, a counter never shows less than it showed before.

    Counters come from live state, which goes back when the runtime aborts a transaction and
    rewinds to the last checkpoint; it then counts the same events again, so holding the
    highest value shown makes the counter pause instead of going backwards.
    """
    for fam in families:
        out.append(fam.head)
        out.extend(fam.lines)
        name = fam.name
        if fam.counter and high is not None:
            for labels, value in fam.samples:
                key = (name, labels)
                shown = high.get(key)
                if shown is None or value > shown:
                    high[key] = shown = value
                out.append(f"{name}{{{labels}}} {_num(shown)}\n")
        else:
            out.extend(f"{name}{{{labels}}} {_num(value)}\n" for labels, value in fam.samples)


def _limit_families(e: Engine) -> tuple[_Family, _Family, _Family]:
    """The ``limits`` families: hits per limit, each limit's setting, and usage where cheap."""
    from streamwatch.engine import LIMITS  # kept beside the engine's limit bookkeeping

    hits = _Family(
        "streamwatch_limit_hits",
        "counter",
        "Events that hit a resource limit (dead-lettered, or coded as an overflow category), by limit",
    )
    bound = _Family("streamwatch_limit", "gauge", "The configured value of each resource limit")
    usage = _Family(
        "streamwatch_limit_usage",
        "gauge",
        "Current use of a resource limit: monitors held, the largest category vocabulary, "
        "the fullest label store",
    )
    lim, perf = e.settings.limits, e.settings.performance
    values = {
        "message_bytes": lim.max_message_bytes,
        "features": lim.max_features,
        "models": lim.max_models,
        "category_values": lim.max_category_values,
        "open_predictions": perf.max_open_predictions,
    }
    with e.lock:
        counts = dict(e.limit_hits)
        monitors = [m for ms in e.owned.values() for m in ms.values()]
        used = {
            "models": len(monitors),
            "category_values": max((len(v) - 1 for m in monitors for v in m.schema.vocabularies), default=0),
            "open_predictions": max(
                (len(m.performance.join) for m in monitors if m.performance is not None), default=0
            ),
        }
    for name in LIMITS:
        q = f'limit="{name}"'
        hits.add(q, counts.get(name, 0))
        bound.add(q, values[name])
        if name in used:
            usage.add(q, used[name])
    return hits, bound, usage


def _model_state(m: ModelMonitor) -> _ModelState:
    """Copy one monitor's exported state (called under the engine lock)."""
    c_stat, c_thr = m.cusum_statistics()
    tracker = m.performance
    support: list[int] = []
    readout = None
    if tracker is not None:
        readout = tracker.readout()
        if readout.classes and tracker.task != "regression":
            y = tracker.recent.arrays()[0]
            y = y[np.isfinite(y)].astype(np.int64)
            support = np.bincount(y, minlength=len(readout.classes)).tolist()
    return _ModelState(
        model=m.model_id,
        seen=m.events_seen,
        labels_seen=m.labels_seen,
        ready=m.reference_ready,
        names=list(m.feature_names),
        stats=list(m.tests.statistics) if m.tests is not None else [],
        scores=m.scores.copy(),
        thresholds=m.thresholds.copy(),
        firing=m.firing.copy(),
        missing=m.missing.copy(),
        invalid=m.invalid.copy(),
        cusum=c_stat,
        cusum_threshold=c_thr,
        readout=readout,
        support=support,
        outputs=[(which, _drift_state(o)) for which, o in m.outputs.items()],
        duplicates=m.duplicate_events,
        unknown=dict(m.unknown_fields),
    )


def _fixed_series(ms: _ModelState, alert_series: int) -> int:
    """Series of the model that the cap never withholds: the model-level ones."""
    # events (2), readiness, withheld, dropped, duplicates; alerts total and firing; unknown fields
    n = 6 + alert_series + len(ms.unknown)
    for _, (names, stats, scores, _thr, _firing) in ms.outputs:
        k = min(len(names), len(stats))
        n += k + 2 * sum(1 for s in scores[:k] if not math.isnan(s))
    r = ms.readout
    if r is not None:
        n += len(r.outcomes) + 3 + len(DELAY_BUCKETS) + 3  # outcomes; 3 gauges; histogram
        n += sum(1 for v in r.coverage.values() if not math.isnan(v))
        n += sum(1 for values in r.performance.values() for key in values if "/" not in key)
        n += 2 * len(r.baseline) + sum(len(v) for v in r.estimated.values()) + len(r.gap)
        n += 3 if r.concept is not None else 0
    return n


def _top_features(ms: _ModelState, per_feature: npt.NDArray[np.int64], budget: int) -> npt.NDArray[np.bool_]:
    """The features to export within ``budget`` series: firing ones first, then by how close the
    score is to its threshold (the larger of the window test's and the CUSUM's ratio), then by
    missing and invalid values, then in the configured order."""
    n = len(ms.names)
    ratio = np.full(n, -_INF)
    if ms.ready:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = ms.scores / ms.thresholds
            nc = len(ms.cusum)
            if nc:
                r[:nc] = np.fmax(r[:nc], ms.cusum / ms.cusum_threshold)
        ratio = np.where(np.isnan(r), -_INF, r)
    quality = ms.missing + ms.invalid
    order = np.lexsort((np.arange(n), -quality, -ratio, ~ms.firing))
    k = int(np.searchsorted(np.cumsum(per_feature[order]), budget, side="right"))
    keep = np.zeros(n, dtype=bool)
    keep[order[:k]] = True
    return keep


def _top_classes(support: list[int], class_series: dict[int, int], budget: int) -> set[int]:
    """The classes whose per-class series fit ``budget``, by support among the recent labels."""
    kept: set[int] = set()
    used = 0
    for code in sorted(class_series, key=lambda c: (-(support[c] if c < len(support) else 0), c)):
        used += class_series[code]
        if used > budget:
            break
        kept.add(code)
    return kept


def _feature_lines(f: _Families, ms: _ModelState, mq: str, features: Iterable[int]) -> None:
    """The per-feature samples, written directly: with thousands of features this is the scrape."""
    names, stats, isnan = ms.names, ms.stats, math.isnan
    miss, inval = ms.missing.tolist(), ms.invalid.tolist()
    sc, th, fi = f.score.lines, f.threshold.lines, f.status.lines
    mi, iv = f.missing.samples, f.invalid.samples  # counters: formatted by _emit (monotonic)
    if ms.ready:
        scores, thr, firing = ms.scores.tolist(), ms.thresholds.tolist(), ms.firing.tolist()
        c_stat, c_thr = ms.cusum.tolist(), ms.cusum_threshold.tolist()
        nc = len(c_stat)
    for j in features:
        fl = f'{mq},feature="{_esc(names[j])}"'
        if ms.ready:
            # the window test carries the feature's alert status; a CUSUM only its evidence
            key = f'{fl},detector="{stats[j]}"}} '
            s, t = scores[j], thr[j]
            if not isnan(s):
                sc.append(f"streamwatch_feature_drift_score{{{key}{s!r}\n")
            if not isnan(t):
                th.append(f"streamwatch_feature_drift_threshold{{{key}{t!r}\n")
            fi.append(f"streamwatch_feature_drift_status{{{key}{'1.0' if firing[j] else '0.0'}\n")
            if j < nc and not isnan(c_stat[j]):
                key = f'{fl},detector="cusum"}} '
                sc.append(f"streamwatch_feature_drift_score{{{key}{c_stat[j]!r}\n")
                th.append(f"streamwatch_feature_drift_threshold{{{key}{c_thr[j]!r}\n")
        mi.append((fl, miss[j]))
        iv.append((fl, inval[j]))


_DELAY_BOUNDS = [str(b) for b in DELAY_BUCKETS] + ["+Inf"]


def _performance_lines(f: _Families, r: Readout, mq: str, kept_classes: set[int] | None) -> None:
    """The label and performance samples of one model; per-class ones only of ``kept_classes``
    (None: all)."""
    for outcome, n in sorted(r.outcomes.items()):
        # a joined label without a usable value is counted once, as invalid
        f.labels_total.add(
            f'{mq},outcome="{_esc(outcome)}"', n - (r.outcomes["invalid"] if outcome == "joined" else 0)
        )
    f.waiting.add(mq, r.waiting)
    f.open_.add(mq, r.open_predictions)
    f.sample.add(mq, r.sample_rate)
    cumulative = list(itertools.accumulate(r.delay_counts))
    for le, c in zip(_DELAY_BOUNDS, cumulative, strict=True):
        f.delay.lines.append(f'streamwatch_label_delay_seconds_bucket{{{mq},le="{le}"}} {c}\n')
    f.delay.lines.append(f"streamwatch_label_delay_seconds_count{{{mq}}} {cumulative[-1]}\n")
    f.delay.lines.append(f"streamwatch_label_delay_seconds_sum{{{mq}}} {_num(r.delay_sum)}\n")
    for window, v in sorted(r.coverage.items()):
        if not math.isnan(v):
            f.coverage.add(f'{mq},window="{window}"', v)
    for window, values in sorted(r.performance.items()):
        for key, v in sorted(values.items()):
            metric, _, code = key.partition("/")
            if code and kept_classes is not None and int(code) not in kept_classes:
                continue
            cls = _esc(r.classes[int(code)]) if code else ""
            f.perf.add(f'{mq},metric="{metric}",class="{cls}",window="{window}"', v)
    for metric, v in sorted(r.baseline.items()):
        f.base.add(f'{mq},metric="{metric}"', v)
        f.perf_status.add(f'{mq},metric="{metric}"', 1 if r.firing.get(metric) else 0)
    for window, values in sorted(r.estimated.items()):
        for metric, v in sorted(values.items()):
            f.est.add(f'{mq},metric="{metric}",window="{window}"', v)
    for metric, v in sorted(r.gap.items()):
        f.gap.add(f'{mq},metric="{metric}"', v)
    if r.concept is not None:
        f.concept.add(mq, r.concept[0])
        f.concept_thr.add(mq, r.concept[1])
        f.concept_status.add(mq, 1 if r.concept[2] else 0)


DriftState = tuple[list[str], list[str], list[float], list[float], list[bool]]


def _drift_state(m: ModelMonitor) -> DriftState:
    stats = list(m.tests.statistics) if m.tests is not None else []
    return list(m.feature_names), stats, m.scores.tolist(), m.thresholds.tolist(), m.firing.tolist()


class Health:
    """Liveness from the main loop's heartbeat; readiness from the runtime's state.

    Ready (``/readyz`` 200) when the worker has its partition assignment (``ready``, set by the
    runtime), is not rebuilding state from the state topic (:meth:`restoring`) and reaches a
    broker (``connected``). Alive (``/healthz`` 200) while the main loop comes round within
    ``stall_seconds``; a restore holds the loop, so it gets ``restore_seconds`` more.
    """

    def __init__(self, stall_seconds: float = 60.0, restore_seconds: float = 120.0) -> None:
        self.stall_seconds = stall_seconds
        self.restore_seconds = restore_seconds
        self.ready = False
        self.connected = True
        self._restoring = 0
        self.last_beat = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Not ready while the block rebuilds state."""
        self._restoring += 1
        try:
            yield
        finally:
            self._restoring -= 1
            self.beat()

    @property
    def alive(self) -> bool:
        grace = self.restore_seconds if self._restoring else 0.0
        return time.monotonic() - self.last_beat < self.stall_seconds + grace

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker is ready, and why not."""
        if not self.ready:
            return False, "not ready: no partition assignment (starting or stopping)"
        if self._restoring:
            return False, "not ready: restoring state"
        if not self.connected:
            return False, "not ready: no broker reachable"
        return True, "ready"


class RuntimeCollector(Collector):
    """The Kafka runtime's own numbers (:class:`~streamwatch.runtime.state.RuntimeStats`):
    checkpoints, commits and restores with their durations, aborts, rebalances, and consumer lag
    of the partitions this worker holds (a revoked partition's series disappear with it)."""

    def __init__(self, stats: RuntimeStatsLike) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        d = self.stats.as_dict()
        for name, key, help_ in (
            ("streamwatch_checkpoint_duration_seconds", "checkpoint_seconds", "Snapshot, produce and commit"),
            ("streamwatch_commit_duration_seconds", "commit_seconds", "Sending offsets and committing"),
            ("streamwatch_restore_duration_seconds", "restore_seconds", "Rebuilding state on assignment"),
        ):
            t = d[key]
            h = HistogramMetricFamily(name, help_)
            bounds = [str(b) for b in _TIMING_BOUNDS] + ["+Inf"]
            h.add_metric(
                [],
                list(zip(bounds, map(float, itertools.accumulate(t["buckets"].values())), strict=True)),
                t["sum"],
            )
            yield h
        sizes = d.get("snapshot_bytes")
        if sizes is not None:  # bucket bounds in bytes, as the stats define them
            h = HistogramMetricFamily(
                "streamwatch_state_snapshot_bytes",
                "Snapshot size (JSON, before compression) per model record checkpointed",
            )
            counts = map(float, itertools.accumulate(sizes["buckets"].values()))
            h.add_metric([], list(zip(sizes["buckets"], counts, strict=True)), sizes["sum"])
            yield h
        for name, key, help_ in (
            ("streamwatch_checkpoints", "checkpoints", "Committed checkpoints"),
            ("streamwatch_state_records", "state_records", "Model snapshots written to the state topic"),
            ("streamwatch_state_bytes", "state_bytes", "Bytes of model snapshots written"),
            (
                "streamwatch_state_stored_bytes",
                "state_stored_bytes",
                "Bytes model records took on the state topic (compressed, parts included)",
            ),
            ("streamwatch_state_part_records", "state_parts", "Extra part records of split snapshots"),
            ("streamwatch_transaction_aborts", "aborts", "Transactions aborted (state rewound)"),
            ("streamwatch_offset_resets", "offset_resets", "Committed offsets found older than retention"),
            ("streamwatch_rebalances", "rebalances", "Partition assignments and revocations"),
        ):
            c = CounterMetricFamily(name, help_)
            c.add_metric([], d.get(key, 0))
            yield c
        lag = GaugeMetricFamily(
            "streamwatch_consumer_lag",
            "Messages behind the partition's high watermark",
            labels=["topic", "partition"],
        )
        for (topic, partition), v in sorted(d["lag"].items()):
            lag.add_metric([topic, str(partition)], v)
        yield lag
        call = GaugeMetricFamily(
            "streamwatch_transaction_call_seconds",
            "How long the transactional call now running has waited (absent between calls)",
            labels=["call"],
        )
        if d.get("txn_call") is not None:
            call.add_metric([d["txn_call"][0]], round(d["txn_call"][1], 3))
        yield call
        owned = GaugeMetricFamily("streamwatch_partitions_owned", "Partitions whose state this worker owns")
        owned.add_metric([], len(d["owned"]))
        yield owned
        corrupt = CounterMetricFamily(
            "streamwatch_state_corrupt_records",
            "State records skipped on restore as corrupt or foreign (each also raises a state_corrupt alert)",
            labels=["reason"],
        )
        seen = d.get("state_corrupt", {})
        for reason in CORRUPT_REASONS:
            corrupt.add_metric([reason], seen.get(reason, 0))
        yield corrupt


_REQUEST_TIMEOUT = 30.0
_http_log = logging.getLogger("streamwatch.exporter")


def tls_context(m: MetricsSettings) -> ssl.SSLContext | None:
    """The server's TLS context when ``metrics.tls_cert_file`` is set, else None.

    Built as prometheus_client's ``start_http_server(certfile=, keyfile=, client_cafile=,
    client_auth_required=)`` builds it (its helper, ``exposition._get_ssl_ctx``, is private and
    has changed signature between releases, so it is not reused); our own handler stays.
    """
    if m.tls_cert_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if m.tls_min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    try:
        # an empty password: an encrypted key fails here instead of prompting on the terminal
        ctx.load_cert_chain(m.tls_cert_file, m.tls_key_file, password="")
        if m.tls_client_ca_file is not None:
            ctx.load_verify_locations(cafile=m.tls_client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: only scrapers with a certificate it signed
    except (OSError, ssl.SSLError) as e:
        raise OSError(
            e.errno or 0,
            f"cannot load the metrics TLS files (tls_cert_file {m.tls_cert_file!r}, tls_key_file "
            f"{m.tls_key_file!r}, tls_client_ca_file {m.tls_client_ca_file!r}): {e}",
        ) from None
    return ctx


class BasicAuth:
    """HTTP basic auth against one user; only the SHA-256 digest of the password is kept."""

    def __init__(self, username: str, password_sha256: bytes) -> None:
        self.username = username
        self._user_digest = hashlib.sha256(username.encode()).digest()
        self._digest = password_sha256

    @classmethod
    def from_settings(cls, m: MetricsSettings) -> BasicAuth | None:
        if m.basic_auth_username is None:
            return None
        if m.basic_auth_password is not None:
            digest = hashlib.sha256(m.basic_auth_password.get_secret_value().encode()).digest()
        else:
            assert m.basic_auth_password_hash is not None  # the config validator ensures one
            digest = bytes.fromhex(m.basic_auth_password_hash.get_secret_value().partition(":")[2])
        return cls(m.basic_auth_username, digest)

    def check(self, header: str | None) -> bool:
        """True for an ``Authorization: Basic ...`` header with this user and password."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # compare digests in constant time, user and password both, so timing tells nothing
        ok_user = hmac.compare_digest(hashlib.sha256(user.encode()).digest(), self._user_digest)
        ok_password = hmac.compare_digest(hashlib.sha256(password.encode()).digest(), self._digest)
        return bool(sep) and ok_user and ok_password


class _Server(ThreadingHTTPServer):
    """The threading HTTP server, with the TLS handshake done in each request's own thread (a
    slow or plain-HTTP client cannot hold up the accept loop) and no tracebacks for clients that
    hang up or fail the handshake."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None
    ) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_REQUEST_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:  # not TLS, no or an untrusted client certificate, ...
            _http_log.debug("TLS handshake with %s failed: %s", client_address, e)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _http_log.debug("metrics request from %s failed", client_address, exc_info=True)


class Exporter:
    """Registry, runtime metrics and the HTTP endpoints of one worker process."""

    def __init__(self, engine: Engine) -> None:
        self.collector = EngineCollector(engine)
        self.registry = CollectorRegistry()  # runtime metrics, rendered after the engine's
        self.batch_seconds = Histogram(
            "streamwatch_batch_duration_seconds",
            "Time to decode and process one micro-batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.health = Health()
        self._server: ThreadingHTTPServer | None = None

    def render(self) -> bytes:
        return self.collector.render().encode() + generate_latest(self.registry)

    def serve(self, host: str, port: int, security: MetricsSettings | None = None) -> int:
        """Start serving in a daemon thread; returns the bound port (``port`` 0 picks one).

        ``security`` (default: the engine's ``metrics`` settings) adds TLS and basic auth on
        /metrics. Raises OSError when the address is taken or the TLS files cannot be loaded.
        """
        exporter = self
        sec = security if security is not None else self.collector.engine.settings.metrics
        tls = tls_context(sec)
        auth = BasicAuth.from_settings(sec)

        class Handler(BaseHTTPRequestHandler):
            timeout = _REQUEST_TIMEOUT  # a client that stalls mid-request must not hold a thread

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    if auth is not None and not auth.check(self.headers.get("Authorization")):
                        self._send(401, b"unauthorized\n", www_authenticate='Basic realm="streamwatch"')
                    else:
                        self._send(200, exporter.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = exporter.health.alive
                    self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
                elif path == "/readyz":
                    ok, why = exporter.health.readiness()
                    self._send(200 if ok else 503, why.encode() + b"\n")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(
                self,
                code: int,
                body: bytes,
                ctype: str = "text/plain; charset=utf-8",
                www_authenticate: str | None = None,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if www_authenticate is not None:
                    self.send_header("WWW-Authenticate", www_authenticate)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the worker's log

        self._server = _Server((host, port), Handler, tls)
        threading.Thread(target=self._server.serve_forever, name="exporter", daemon=True).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
