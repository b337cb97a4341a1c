"""Engine: routes decoded batches to the per-model monitors and keeps the worker's counters.

Sources (Kafka, files) hand it batches of :class:`~streamwatch.decode.RawMessage`; it returns
alerts and dead letters for the shell to publish. It is the one place both runtimes share, so
they cannot disagree on what an event means.

State is kept per **input partition** and model: the Kafka runtime owns whole partitions, so a
model whose events are spread over several partitions (a hot model keyed ``model_id|shard``)
has one independent monitor per partition, each checkpointed to its own state partition and
moved on its own when a partition changes owner. Files carry no partition (``-1``), so a
replay has one monitor per model.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
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


@dataclass(slots=True)
class Snapshot:
    """One monitor's state at a checkpoint, with the counts it holds (for committed-state metrics)."""

    partition: int
    model_id: str
    data: bytes
    events_seen: int
    labels_seen: int


class Engine:
    """All monitors of one worker, plus the counters that are not per model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # partition -> model -> monitor: what this worker owns
        self.owned: dict[int, dict[str, ModelMonitor]] = {}
        # model -> monitor, one per model (the lowest owned partition's): what the exporter reads
        self.monitors: dict[str, ModelMonitor] = {}
        # partition -> models changed since the last checkpoint
        self.dirty: dict[int, set[str]] = {}
        self.dead_letters: Counter[str] = Counter()
        self.consumed_messages: Counter[str] = Counter()  # by topic (or file role)
        self.consumed_bytes: Counter[str] = Counter()
        self.alerts_by_kind: Counter[tuple[str, str, str]] = Counter()  # (model, kind, status)
        # the exporter reads state from another thread; batches and scrapes take turns
        self.lock = threading.Lock()

    def new_monitor(self, model_id: str) -> ModelMonitor:
        cfg = self.settings.models[model_id]
        return ModelMonitor(
            model_id,
            cfg.features,
            self.settings.drift_for(model_id),
            performance=self.settings.performance_for(model_id),
            profile=cfg.reference_profile(),
            quality=self.settings.quality,
            profiles_by_version=cfg.version_profiles(),
        )

    def monitor(self, model_id: str, partition: int = -1) -> ModelMonitor:
        part = self.owned.setdefault(partition, {})
        m = part.get(model_id)
        if m is None:
            m = part[model_id] = self.new_monitor(model_id)
            self._reindex((model_id,))
        return m

    def monitors_of(self, model_id: str) -> list[tuple[int, ModelMonitor]]:
        """Every owned monitor of a model, by partition (several when the model is sharded)."""
        return [(p, ms[model_id]) for p, ms in sorted(self.owned.items()) if model_id in ms]

    def process_predictions(self, messages: Sequence[RawMessage], source: str = "predictions") -> BatchResult:
        return self._process(messages, source, decode_predictions, ModelMonitor.process)

    def process_labels(self, messages: Sequence[RawMessage], source: str = "labels") -> BatchResult:
        return self._process(messages, source, decode_labels, ModelMonitor.process_labels)

    def _process(
        self,
        messages: Sequence[RawMessage],
        source: str,
        decode: Callable[[Sequence[RawMessage], Container[str]], tuple[dict[str, G], list[DeadLetter]]],
        step: Callable[[ModelMonitor, G], list[Alert]],
    ) -> BatchResult:
        decoded: list[tuple[int, dict[str, G]]] = []
        dead: list[DeadLetter] = []
        for p, msgs in _by_partition(messages).items():
            groups, d = decode(msgs, self.settings.models)
            decoded.append((p, groups))
            dead += d
        with self.lock:
            self._count(messages, source, dead)
            result = BatchResult(dead_letters=dead)
            for p, groups in decoded:
                for model_id, group in groups.items():
                    result.alerts += step(self.monitor(model_id, p), group)
                    result.events += len(group)
                if groups:
                    self.dirty.setdefault(p, set()).update(groups)
            self._count_alerts(result.alerts)
        return result

    # -- ownership and checkpoints (the Kafka runtime) ------------------------------------

    def take_dirty(self, partitions: Iterable[int] | None = None) -> list[Snapshot]:
        """Snapshots of the monitors changed since the last call (of ``partitions``, or all)."""
        with self.lock:
            wanted = list(self.dirty) if partitions is None else [p for p in partitions if p in self.dirty]
            out: list[Snapshot] = []
            for p in sorted(wanted):
                ms = self.owned.get(p, {})
                for model_id in sorted(self.dirty.pop(p)):
                    m = ms.get(model_id)
                    if m is not None:
                        out.append(Snapshot(p, model_id, m.snapshot(), m.events_seen, m.labels_seen))
            return out

    def install(self, partition: int, monitors: Mapping[str, ModelMonitor]) -> None:
        """Take ownership of ``partition`` with its restored monitors."""
        with self.lock:
            old = self.owned.pop(partition, {})
            self.owned[partition] = dict(monitors)
            self.dirty.pop(partition, None)
            self._reindex(set(old) | set(monitors))

    def drop(self, partition: int) -> list[str]:
        """Forget ``partition``'s monitors (revoked or lost); returns the models it held."""
        with self.lock:
            old = self.owned.pop(partition, {})
            self.dirty.pop(partition, None)
            self._reindex(old)
            return sorted(old)

    def _reindex(self, model_ids: Iterable[str]) -> None:
        for model_id in model_ids:
            found = self.monitors_of(model_id)
            if found:
                self.monitors[model_id] = found[0][1]
            else:
                self.monitors.pop(model_id, None)

    # -- counters ---------------------------------------------------------------------------

    def _count(self, messages: Sequence[RawMessage], source: str, dead: list[DeadLetter]) -> None:
        self.consumed_messages[source] += len(messages)
        self.consumed_bytes[source] += sum(len(m.value) for m in messages if m.value)
        for d in dead:
            self.dead_letters[d.reason] += 1

    def _count_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alerts_by_kind[(a.model_id, a.kind, a.status)] += 1


def _by_partition(messages: Sequence[RawMessage]) -> dict[int, Sequence[RawMessage]]:
    if not messages:
        return {}
    first = messages[0].partition
    if all(m.partition == first for m in messages):
        return {first: messages}
    out: dict[int, list[RawMessage]] = {}
    for m in messages:
        out.setdefault(m.partition, []).append(m)
    return dict(out)
