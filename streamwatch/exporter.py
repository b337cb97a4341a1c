"""Prometheus exporter: a collector that renders metric families from engine state at scrape
time (no per-event ``labels()`` calls on the hot path), and a small HTTP server with
``/metrics``, ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from streamwatch import __version__
from streamwatch.decode import Reason
from streamwatch.engine import Engine
from streamwatch.monitor import ModelMonitor
from streamwatch.performance.tracker import DELAY_BUCKETS, Readout


class EngineCollector(Collector):
    """Reads the engine under its lock, copies what it needs, then builds families outside it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        e = self.engine
        with e.lock:
            # inputs and configured models appear at 0 from the start, so rate() and ratios
            # see the first increase and a model that never sends an event is visible
            consumed = {"predictions": 0, "labels": 0, **e.consumed_messages}
            consumed_bytes = dict(e.consumed_bytes)
            dead = dict(e.dead_letters)
            alerts = dict(e.alerts_by_kind)
            models = [
                (
                    m.model_id,
                    m.events_seen,
                    m.labels_seen,
                    m.reference_ready,
                    list(m.feature_names),
                    m.scores.copy(),
                    m.firing.copy(),
                    m.missing.copy(),
                    m.invalid.copy(),
                    m.thresholds.copy(),
                    list(m.tests.statistics) if m.tests is not None else [],
                    *m.cusum_statistics(),
                )
                for m in e.monitors.values()
            ]
            silent = [m for m in e.settings.models if m not in e.monitors]
            readouts = [
                (m.model_id, m.performance.readout())
                for m in e.monitors.values()
                if m.performance is not None
            ]
            outputs = [
                (m.model_id, which, _drift_state(o))
                for m in e.monitors.values()
                for which, o in m.outputs.items()
            ]

        info = GaugeMetricFamily("streamwatch_build_info", "streamwatch build", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        msgs = CounterMetricFamily(
            "streamwatch_messages_consumed", "Messages read from the input", labels=["source"]
        )
        nbytes = CounterMetricFamily(
            "streamwatch_consumed_bytes", "Bytes of message values read", labels=["source"]
        )
        for src, v in sorted(consumed.items()):
            msgs.add_metric([src], v)
            nbytes.add_metric([src], consumed_bytes.get(src, 0))
        yield msgs
        yield nbytes

        dl = CounterMetricFamily(
            "streamwatch_dead_letters",
            "Events sent to the dead-letter output, by reason",
            labels=["reason"],
        )
        for reason in sorted(set(Reason.ALL) | set(dead)):
            dl.add_metric([reason], dead.get(reason, 0))
        yield dl

        events = CounterMetricFamily("streamwatch_events", "Valid events processed", labels=["model", "type"])
        ready = GaugeMetricFamily(
            "streamwatch_reference_ready", "1 once the model's reference is fixed", labels=["model"]
        )
        fl = ["model", "feature", "detector"]
        score = GaugeMetricFamily(
            "streamwatch_feature_drift_score", "Drift statistic of the feature's window", labels=fl
        )
        threshold = GaugeMetricFamily(
            "streamwatch_feature_drift_threshold", "Score above which the feature drifts", labels=fl
        )
        status = GaugeMetricFamily(
            "streamwatch_feature_drift_status", "1 while a drift alert fires", labels=fl
        )
        missing = CounterMetricFamily(
            "streamwatch_feature_missing_values",
            "Values absent or null",
            labels=["model", "feature"],
        )
        invalid = CounterMetricFamily(
            "streamwatch_feature_invalid_values",
            "Values of the wrong type or not finite",
            labels=["model", "feature"],
        )
        for (
            model,
            seen,
            labels_seen,
            is_ready,
            names,
            scores,
            firing,
            miss,
            inval,
            thr,
            stats,
            c_stat,
            c_thr,
        ) in models:
            events.add_metric([model, "prediction"], seen)
            events.add_metric([model, "label"], labels_seen)
            ready.add_metric([model], 1.0 if is_ready else 0.0)
            for j, name in enumerate(names):
                if is_ready:
                    # the window test carries the feature's alert status; a CUSUM only its evidence
                    s, t = float(scores[j]), float(thr[j])
                    if not math.isnan(s):
                        score.add_metric([model, name, stats[j]], s)
                    if not math.isnan(t):
                        threshold.add_metric([model, name, stats[j]], t)
                    status.add_metric([model, name, stats[j]], 1.0 if firing[j] else 0.0)
                    if j < len(c_stat) and not math.isnan(c_stat[j]):
                        score.add_metric([model, name, "cusum"], float(c_stat[j]))
                        threshold.add_metric([model, name, "cusum"], float(c_thr[j]))
                missing.add_metric([model, name], int(miss[j]))
                invalid.add_metric([model, name], int(inval[j]))
        for model in silent:
            events.add_metric([model, "prediction"], 0)
            events.add_metric([model, "label"], 0)
            ready.add_metric([model], 0.0)
        yield from (events, ready, score, threshold, status, missing, invalid)
        yield from _output_families(outputs)
        yield from _performance_families(readouts)

        total = CounterMetricFamily(
            "streamwatch_alerts", "Alert events emitted", labels=["model", "kind", "status"]
        )
        firing_now: dict[tuple[str, str], int] = {}
        for (model, kind, st), v in sorted(alerts.items()):
            total.add_metric([model, kind, st], v)
            firing_now[(model, kind)] = firing_now.get((model, kind), 0) + (v if st == "firing" else -v)
        yield total
        af = GaugeMetricFamily("streamwatch_alerts_firing", "Alerts firing now", labels=["model", "kind"])
        for (model, kind), v in sorted(firing_now.items()):
            af.add_metric([model, kind], v)
        yield af


DriftState = tuple[list[str], list[str], list[float], list[float], list[bool]]


def _drift_state(m: ModelMonitor) -> DriftState:
    stats = list(m.tests.statistics) if m.tests is not None else []
    return list(m.feature_names), stats, m.scores.tolist(), m.thresholds.tolist(), m.firing.tolist()


def _output_families(outputs: list[tuple[str, str, DriftState]]) -> Iterator[Metric]:
    labels = ["model", "output", "name", "detector"]
    score = GaugeMetricFamily(
        "streamwatch_output_drift_score",
        "Drift statistic of the model's predictions or labels",
        labels=labels,
    )
    threshold = GaugeMetricFamily(
        "streamwatch_output_drift_threshold", "Score above which the output drifts", labels=labels
    )
    status = GaugeMetricFamily(
        "streamwatch_output_drift_status", "1 while an output drift alert fires", labels=labels
    )
    for model, which, (names, stats, scores, thr, firing) in outputs:
        for j, name in enumerate(names[: len(stats)]):
            key = [model, which, name, stats[j]]
            if not math.isnan(scores[j]):
                score.add_metric(key, scores[j])
                threshold.add_metric(key, thr[j])
            status.add_metric(key, 1.0 if firing[j] else 0.0)
    yield from (score, threshold, status)


def _performance_families(readouts: list[tuple[str, Readout]]) -> Iterator[Metric]:
    labels_total = CounterMetricFamily(
        "streamwatch_labels", "Label events by what became of them", labels=["model", "outcome"]
    )
    waiting = GaugeMetricFamily(
        "streamwatch_labels_waiting",
        "Labels that came before their prediction, still waiting",
        labels=["model"],
    )
    open_ = GaugeMetricFamily(
        "streamwatch_predictions_open", "Predictions in the label store awaiting labels", labels=["model"]
    )
    sample = GaugeMetricFamily(
        "streamwatch_label_store_sample_ratio",
        "Share of event ids the label store keeps (1 until its cap is reached)",
        labels=["model"],
    )
    delay = HistogramMetricFamily(
        "streamwatch_label_delay_seconds", "Event time from prediction to its label", labels=["model"]
    )
    coverage = GaugeMetricFamily(
        "streamwatch_label_coverage_ratio",
        "Joined labels over predictions in a prediction-time window",
        labels=["model", "window"],
    )
    perf = GaugeMetricFamily(
        "streamwatch_performance",
        "Model performance from joined labels (window: judged = newest judged prediction-time "
        "window, recent = last joined events)",
        labels=["model", "metric", "class", "window"],
    )
    base = GaugeMetricFamily(
        "streamwatch_performance_baseline",
        "Baseline the performance is judged against",
        labels=["model", "metric"],
    )
    status = GaugeMetricFamily(
        "streamwatch_performance_status", "1 while a performance alert fires", labels=["model", "metric"]
    )
    est = GaugeMetricFamily(
        "streamwatch_estimated_performance",
        "Performance estimated from calibrated scores before labels arrive (CBPE)",
        labels=["model", "metric", "window"],
    )
    gap = GaugeMetricFamily(
        "streamwatch_estimated_performance_gap",
        "Estimate minus realised value in the judged window",
        labels=["model", "metric"],
    )
    concept = GaugeMetricFamily(
        "streamwatch_concept_drift_score", "CUSUM statistic on the error stream", labels=["model"]
    )
    concept_thr = GaugeMetricFamily(
        "streamwatch_concept_drift_threshold", "CUSUM threshold on the error stream", labels=["model"]
    )
    concept_status = GaugeMetricFamily(
        "streamwatch_concept_drift_status", "1 while a concept-drift alert fires", labels=["model"]
    )
    bounds = [str(b) for b in DELAY_BUCKETS] + ["+Inf"]
    for model, r in readouts:
        for outcome, n in sorted(r.outcomes.items()):
            # a joined label without a usable value is counted once, as invalid
            labels_total.add_metric(
                [model, outcome], n - (r.outcomes["invalid"] if outcome == "joined" else 0)
            )
        waiting.add_metric([model], r.waiting)
        open_.add_metric([model], r.open_predictions)
        sample.add_metric([model], r.sample_rate)
        cumulative = [float(c) for c in itertools.accumulate(r.delay_counts)]
        delay.add_metric([model], list(zip(bounds, cumulative, strict=True)), sum_value=r.delay_sum)
        for window, v in sorted(r.coverage.items()):
            if not math.isnan(v):
                coverage.add_metric([model, window], v)
        for window, values in sorted(r.performance.items()):
            for key, v in sorted(values.items()):
                metric, _, code = key.partition("/")
                cls = r.classes[int(code)] if code else ""
                perf.add_metric([model, metric, cls, window], v)
        for metric, v in sorted(r.baseline.items()):
            base.add_metric([model, metric], v)
            status.add_metric([model, metric], 1.0 if r.firing.get(metric) else 0.0)
        for window, values in sorted(r.estimated.items()):
            for metric, v in sorted(values.items()):
                est.add_metric([model, metric, window], v)
        for metric, v in sorted(r.gap.items()):
            gap.add_metric([model, metric], v)
        if r.concept is not None:
            concept.add_metric([model], r.concept[0])
            concept_thr.add_metric([model], r.concept[1])
            concept_status.add_metric([model], 1.0 if r.concept[2] else 0.0)
    yield from (labels_total, waiting, open_, sample, delay, coverage, perf, base, status, est, gap)
    yield from (concept, concept_thr, concept_status)


class Health:
    """Liveness from the main loop's heartbeat; readiness set by the runtime."""

    def __init__(self, stall_seconds: float = 60.0) -> None:
        self.stall_seconds = stall_seconds
        self.ready = False
        self.last_beat = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_beat < self.stall_seconds


class Exporter:
    """Registry, runtime metrics and the HTTP endpoints of one worker process."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(engine))
        self.batch_seconds = Histogram(
            "streamwatch_batch_duration_seconds",
            "Time to decode and process one micro-batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.health = Health()
        self._server: ThreadingHTTPServer | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Start serving in a daemon thread; returns the bound port (``port`` 0 picks one)."""
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, exporter.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = exporter.health.alive
                    self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
                elif path == "/readyz":
                    ok = exporter.health.ready
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the worker's log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="exporter", daemon=True).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
