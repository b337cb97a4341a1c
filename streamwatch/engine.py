"""Engine: routes decoded batches to the per-model monitors and keeps the worker's counters.

Sources (Kafka, files) hand it batches of :class:`~streamwatch.decode.RawMessage`; it returns
alerts and dead letters for the shell to publish. It is the one place both runtimes share, so
they cannot disagree on what an event means.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from streamwatch.alerts import Alert
from streamwatch.config import Settings
from streamwatch.decode import (
    DeadLetter,
    LabelGroup,
    PredictionGroup,
    RawMessage,
    decode_labels,
    decode_predictions,
)
from streamwatch.monitor import ModelMonitor

G = TypeVar("G", PredictionGroup, LabelGroup)


@dataclass(slots=True)
class BatchResult:
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: int = 0


class Engine:
    """All monitors of one worker, plus the counters that are not per model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.monitors: dict[str, ModelMonitor] = {}
        self.dead_letters: Counter[str] = Counter()
        self.consumed_messages: Counter[str] = Counter()  # by topic (or file role)
        self.consumed_bytes: Counter[str] = Counter()
        self.alerts_by_kind: Counter[tuple[str, str, str]] = Counter()  # (model, kind, status)
        # the exporter reads state from another thread; batches and scrapes take turns
        self.lock = threading.Lock()

    def monitor(self, model_id: str) -> ModelMonitor:
        m = self.monitors.get(model_id)
        if m is None:
            cfg = self.settings.models[model_id]
            m = self.monitors[model_id] = ModelMonitor(
                model_id, cfg.features, self.settings.drift_for(model_id)
            )
        return m

    def process_predictions(self, messages: Sequence[RawMessage], source: str = "predictions") -> BatchResult:
        groups, dead = decode_predictions(messages, self.settings.models)
        return self._apply(messages, source, dead, groups, ModelMonitor.process)

    def process_labels(self, messages: Sequence[RawMessage], source: str = "labels") -> BatchResult:
        groups, dead = decode_labels(messages, self.settings.models)
        return self._apply(messages, source, dead, groups, ModelMonitor.process_labels)

    def _apply(
        self,
        messages: Sequence[RawMessage],
        source: str,
        dead: list[DeadLetter],
        groups: Mapping[str, G],
        step: Callable[[ModelMonitor, G], list[Alert]],
    ) -> BatchResult:
        """Run ``step`` on each model's group under the lock, counting what came in and out."""
        with self.lock:
            self._count(messages, source, dead)
            result = BatchResult(dead_letters=dead)
            for model_id, group in groups.items():
                result.alerts += step(self.monitor(model_id), group)
                result.events += len(group)
            self._count_alerts(result.alerts)
        return result

    def _count(self, messages: Sequence[RawMessage], source: str, dead: list[DeadLetter]) -> None:
        self.consumed_messages[source] += len(messages)
        self.consumed_bytes[source] += sum(len(m.value) for m in messages if m.value)
        for d in dead:
            self.dead_letters[d.reason] += 1

    def _count_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alerts_by_kind[(a.model_id, a.kind, a.status)] += 1
