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

import gc
import threading
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streamwatch.alerts import Alert
from streamwatch.columns import FeatureSchema
from streamwatch.config import Settings
from streamwatch.decode import (
    DeadLetter,
    DecodeLimits,
    LabelGroup,
    PredictionGroup,
    RawMessage,
    Reason,
    decode_labels,
    decode_predictions,
)
from streamwatch.ids import event_hashes
from streamwatch.monitor import ModelMonitor
from streamwatch.typed import FeatureDecoder

# the limits: name in metrics and alerts -> setting
LIMITS = {
    "message_bytes": "limits.max_message_bytes",
    "features": "limits.max_features",
    "models": "limits.max_models",
    "category_values": "limits.max_category_values",
    "open_predictions": "performance.max_open_predictions",
}
_FULL = 1 << 32  # the label store's sampling threshold while it keeps every id

G = TypeVar("G", PredictionGroup, LabelGroup)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic GC off while a batch is processed.

    A batch allocates tens of thousands of acyclic containers (the decoded events) that die
    together when it ends; with the collector on, young-generation passes traverse and promote
    them every 700 allocations, about a tenth of the engine's time. Freed by reference counting
    before the collector resumes, they never add to its count.
    """
    on = gc.isenabled()
    if on:
        gc.disable()
    try:
        yield
    finally:
        if on:
            gc.enable()


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


# dead letters by reason, alerts by (model, kind, status), limit hits by limit
OutputCounters = tuple[Counter[str], Counter[tuple[str, str, str]], Counter[str]]


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
        lim = settings.limits
        self.decode_limits = DecodeLimits(
            lim.max_message_bytes, lim.max_features, lim.max_dead_letter_payload_bytes
        )
        # events that hit a limit (rejected, or coded as an overflow category), by limit name
        self.limit_hits: Counter[str] = Counter({k: 0 for k in LIMITS})
        # (limit, model) pairs whose worker-level limit alert fired: configured models and "*"
        # only, so the set is bounded too
        self._limit_alerted: set[tuple[str, str]] = set()
        # the exporter reads state from another thread; batches and scrapes take turns
        self.lock = threading.Lock()
        # per model, the typed decoder of events that hold exactly its features (the fast path;
        # None: every event takes the dict path, as tests compare). A model with more features
        # than limits.max_features has none: its events are all dead letters, found by the dicts
        self.typed_decoders: dict[str, FeatureDecoder] | None = {}
        for m, cfg in settings.models.items():
            schema = FeatureSchema(cfg.features)
            decoder = FeatureDecoder.of(schema.numeric, schema.categorical)
            if decoder is not None and len(cfg.features) <= lim.max_features:
                self.typed_decoders[m] = decoder
        # typed events with only the contract's keys are read in one pass (False: tests)
        self.whole_events = True

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
            max_category_values=self.settings.limits.max_category_values,
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
        typed, whole = self.typed_decoders, self.whole_events

        def decode(
            msgs: Sequence[RawMessage], models: Container[str], limits: DecodeLimits
        ) -> tuple[dict[str, PredictionGroup], list[DeadLetter]]:
            return decode_predictions(msgs, models, limits, typed, whole)

        with _collector_paused():  # the batch's objects are gone when _process returns
            return self._process(messages, source, decode, ModelMonitor.process)

    def process_labels(self, messages: Sequence[RawMessage], source: str = "labels") -> BatchResult:
        with _collector_paused():
            return self._process(messages, source, decode_labels, ModelMonitor.process_labels)

    def _process(
        self,
        messages: Sequence[RawMessage],
        source: str,
        decode: Callable[
            [Sequence[RawMessage], Container[str], DecodeLimits], tuple[dict[str, G], list[DeadLetter]]
        ],
        step: Callable[[ModelMonitor, G], list[Alert]],
    ) -> BatchResult:
        decoded: list[tuple[int, dict[str, G]]] = []
        dead: list[DeadLetter] = []
        for p, msgs in _by_partition(messages).items():
            groups, d = decode(msgs, self.settings.models, self.decode_limits)
            decoded.append((p, groups))
            dead += d
        with self.lock:
            result = BatchResult(dead_letters=dead)
            for p, groups in decoded:
                for model_id, group in list(groups.items()):
                    if model_id not in self.owned.get(p, {}) and self.monitor_count() >= (
                        self.settings.limits.max_models
                    ):
                        dead += self._over_model_limit(model_id, group)
                        del groups[model_id]
                        continue
                    m = self.monitor(model_id, p)
                    watch = _LimitWatch(m) if isinstance(group, PredictionGroup) else None
                    result.alerts += step(m, group)
                    result.events += len(group)
                    if watch is not None:
                        result.alerts += self._after_step(watch, group)
                if groups:
                    self.dirty.setdefault(p, set()).update(groups)
            result.alerts += self._rejected(dead)
            self._count(messages, source, dead)
            self._count_alerts(result.alerts)
        return result

    # -- limits ------------------------------------------------------------------------------

    def monitor_count(self) -> int:
        """Monitors (partition, model) this worker holds: what ``limits.max_models`` bounds."""
        return sum(map(len, self.owned.values()))

    def _over_model_limit(self, model_id: str, group: PredictionGroup | LabelGroup) -> list[DeadLetter]:
        """Dead letters for a group whose model would be a monitor beyond ``limits.max_models``."""
        limit = self.settings.limits.max_models
        detail = (
            f"model {model_id[:64]!r} would be monitor {self.monitor_count() + 1} of this worker, "
            f"more than limits.max_models ({limit})"
        )
        payload = self.decode_limits.payload_limit
        return [DeadLetter(r, Reason.MODEL_LIMIT, detail, model_id, payload) for r in group.raws]

    def _rejected(self, dead: list[DeadLetter]) -> list[Alert]:
        """Count the dead letters that are a limit hit; the first per (limit, model) alerts."""
        alerts: list[Alert] = []
        lim = self.settings.limits
        for d in dead:
            limit = Reason.LIMITS.get(d.reason)
            if limit is None:
                continue
            self.limit_hits[limit] += 1
            model = d.model_id if d.model_id in self.settings.models else "*"
            if (limit, model) in self._limit_alerted:
                continue
            self._limit_alerted.add((limit, model))
            if limit == "message_bytes":
                value, bound = len(d.raw.value or b""), lim.max_message_bytes
            elif limit == "features":
                value, bound = _count_in(d.detail), lim.max_features
            else:
                value, bound = self.monitor_count() + 1, lim.max_models
            m = self.monitors.get(model)
            alerts.append(
                _limit_alert(
                    model,
                    limit,
                    None,
                    value,
                    bound,
                    d.raw.timestamp_ms or 0,
                    m.events_seen if m is not None else 0,
                    f"{d.detail}; the message went to the dead letters ({d.reason}).",
                    {"dead_letter_reason": d.reason, "scope": "worker", **_source(d.raw)},
                )
            )
        return alerts

    def _after_step(self, watch: _LimitWatch, group: PredictionGroup) -> list[Alert]:
        """Count the category overflow and label-store sampling of a monitor's batch; alert when
        a feature's vocabulary first overflows (an event of the state's history, so the alert
        comes once and at the same event however the stream is batched) and when the label store
        first fills."""
        m = watch.monitor
        lim = self.settings.limits
        alerts: list[Alert] = []
        self.limit_hits["category_values"] += _overflowed(m) - watch.overflowed
        for j, row in m.schema.overflow_began:
            name = m.schema.categorical[j]
            n = len(m.schema.vocabularies[j]) - 1
            alerts.append(
                _limit_alert(
                    m.model_id,
                    "category_values",
                    name,
                    n,
                    lim.max_category_values,
                    group.times_ms[row],
                    watch.events_seen + row + 1,
                    f"Feature '{name}' of model '{m.model_id}' has more than {lim.max_category_values} "
                    "distinct values (limits.max_category_values); further new values share one "
                    "overflow code (the drift sketches' 'other' bin).",
                    {"scope": "feature", "events_seen_before": watch.events_seen},
                    version=group.versions[row],
                )
            )
        join = m.performance.join if m.performance is not None else None
        if join is not None and join.threshold < _FULL:
            hashes = event_hashes(group.event_ids)
            self.limit_hits["open_predictions"] += int((~join.in_sample(hashes)).sum())
            if watch.threshold == _FULL:  # the store filled in this batch
                cap = join.cap
                # at the prediction that made it hold cap + 1 (the store itself halves at the
                # batch's end), so the alert does not move with batch boundaries
                nth = cap - watch.stored
                kept = join.last_kept
                row = int(kept[nth]) if 0 <= nth < len(kept) else len(group) - 1
                alerts.append(
                    _limit_alert(
                        m.model_id,
                        "open_predictions",
                        None,
                        cap + 1,
                        cap,
                        group.times_ms[row],
                        watch.events_seen + row + 1,
                        f"The label store of model '{m.model_id}' reached performance.max_open_predictions "
                        f"({cap}); it now keeps a hash sample of {join.sample_rate:.1%} of the event ids.",
                        {"scope": "model", "sample_rate": join.sample_rate},
                        version=group.versions[row],
                    )
                )
        return alerts

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
        """Take ownership of ``partition`` with its restored monitors (the configured category
        limit applies to them from now on; ``limits.max_models`` does not evict state)."""
        for m in monitors.values():
            for mm in (m, *m.outputs.values()):
                mm.schema.max_vocabulary = self.settings.limits.max_category_values
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

    def counters(self) -> OutputCounters:
        """Copies of the counters that follow outputs (dead letters, alerts, limit hits)."""
        with self.lock:
            return Counter(self.dead_letters), Counter(self.alerts_by_kind), Counter(self.limit_hits)

    def rewind_counters(self, saved: OutputCounters) -> None:
        """Back to :meth:`counters` taken at the last commit: the batches after it are aborted
        and will be processed again, so their outputs must not be counted twice."""
        with self.lock:
            self.dead_letters = Counter(saved[0])
            self.alerts_by_kind = Counter(saved[1])
            self.limit_hits = Counter(saved[2])

    def _count_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alerts_by_kind[(a.model_id, a.kind, a.status)] += 1


class _LimitWatch:
    """What a monitor's limit counters were before a batch."""

    __slots__ = ("events_seen", "monitor", "overflowed", "stored", "threshold")

    def __init__(self, m: ModelMonitor) -> None:
        self.monitor = m
        self.events_seen = m.events_seen
        self.overflowed = _overflowed(m)
        join = m.performance.join if m.performance is not None else None
        self.threshold = join.threshold if join is not None else _FULL
        self.stored = len(join) if join is not None else 0


def _overflowed(m: ModelMonitor) -> int:
    return m.schema.overflowed + sum(o.schema.overflowed for o in m.outputs.values())


def _limit_alert(
    model_id: str,
    limit: str,
    feature: str | None,
    value: int,
    bound: int,
    t_ms: int,
    events_seen: int,
    message: str,
    details: dict[str, Any],
    version: str | None = None,
) -> Alert:
    """A ``resource_limit`` alert: ``detector`` names the limit, ``statistic`` is the value that
    hit it and ``threshold`` the setting. It fires once and does not resolve; the counter
    ``streamwatch_limit_hits_total`` follows the hits after it."""
    return Alert(
        model_id=model_id,
        model_version=version,
        kind="resource_limit",
        feature=feature,
        detector=limit,
        status="firing",
        severity="warning",
        statistic=float(value),
        threshold=float(bound),
        detected_at_ms=max(0, int(t_ms)),
        change_started_at_ms=None,
        events_seen=max(0, int(events_seen)),
        message=message,
        details={"limit": limit, "setting": LIMITS[limit], "value": value, "bound": bound, **details},
    )


def _count_in(detail: str) -> int:
    """The first number in a dead letter's detail (the count that hit the limit)."""
    for word in detail.split():
        if word.isdigit():
            return int(word)
    return 0


def _source(raw: RawMessage) -> dict[str, Any]:
    return {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset}


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
