"""Where a report's monitors and alerts come from: a replay of files, or a running worker's state.

* :func:`from_replay` runs the core over prediction (and label) files in-process, exactly as
  ``streamwatch replay`` does (:func:`streamwatch.runtime.files.replay`), and keeps the
  monitors and the alerts they raised.
* :func:`from_state` reads what a worker has committed: the monitors from the compacted state
  topic as of the consumer group's committed offsets (the way a new owner restores them,
  :func:`streamwatch.runtime.state.read_state`), and the alert events from the alerts topic with
  ``isolation.level=read_committed``.

Both return a :class:`ReportInput`, all the renderer needs; nothing here draws.
"""

from __future__ import annotations

import io
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamwatch.config import Settings
from streamwatch.monitor import ModelMonitor, SnapshotError

ALERTS_PER_MODEL = 2000  # newest alert events kept per model from the alerts topic


class SourceError(RuntimeError):
    """The source could not be read (e.g. the broker cannot be reached)."""


@dataclass
class ModelState:
    """One monitor to report on; ``partition`` is -1 in a replay (files carry none)."""

    model_id: str
    monitor: ModelMonitor
    partition: int = -1


@dataclass
class ReportInput:
    """What a report shows: monitors, their alert events, and where they came from."""

    source: str  # one sentence, e.g. "a replay of preds.jsonl and labels.jsonl"
    models: list[ModelState]
    alerts: list[dict[str, Any]]  # alert events (schemas/alert.schema.json), any order
    settings: Settings | None = None
    generated_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    facts: list[tuple[str, str]] = field(default_factory=list)  # (what, value) about the source
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


def _selected(found: Sequence[str], wanted: Sequence[str] | None) -> set[str]:
    return set(found) if not wanted else set(found) & set(wanted)


def from_replay(
    settings: Settings,
    predictions: Path,
    labels: Path | None,
    models: Sequence[str] | None = None,
) -> ReportInput:
    """Replay the files through a fresh engine (the same batching as ``streamwatch replay``)."""
    from streamwatch.engine import Engine
    from streamwatch.runtime.files import replay

    engine = Engine(settings)
    events: list[dict[str, Any]] = []
    summary = replay(
        engine,
        predictions,
        labels,
        io.BytesIO(),
        on_alert=events.append,
        batch_size=settings.batch.max_events,
    )
    keep = _selected(list(engine.monitors), models)
    states = [
        ModelState(model_id, m, p)
        for p, ms in sorted(engine.owned.items())
        for model_id, m in sorted(ms.items())
        if model_id in keep
    ]
    dead = ", ".join(f"{r} {n}" for r, n in sorted(summary.dead_letters.items())) or "none"
    files = str(predictions) + (f" and {labels}" if labels is not None else "")
    return ReportInput(
        source=f"a replay of {files}",
        models=states,
        alerts=[a for a in events if a.get("model_id") in keep],
        settings=settings,
        facts=[
            ("predictions read", f"{summary.predictions:,}"),
            ("labels read", f"{summary.labels:,}"),
            ("dead letters", dead),
        ],
    )


def _client(settings: Settings, **required: Any) -> dict[str, Any]:
    # the user's kafka.client (SASL, TLS, ...) under what correctness needs
    return {"bootstrap.servers": settings.kafka.bootstrap_servers, **settings.kafka.librdkafka(), **required}


def from_state(
    settings: Settings,
    models: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> ReportInput:
    """The committed state of the worker group ``settings.kafka.group_id`` and its alerts."""
    from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

    from streamwatch.runtime.state import RestoreError, read_state

    t = settings.topics
    group = settings.kafka.group_id
    reader_group = f"{group}.report-{uuid.uuid4().hex[:8]}"  # never commits: a private name
    # the worker's group is only asked for its committed offsets; this consumer never joins it
    offsets = Consumer(_client(settings, **{"group.id": group, "enable.auto.commit": False}))
    reader = Consumer(
        _client(
            settings,
            **{
                "group.id": reader_group,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            },
        )
    )
    notes: list[str] = []
    try:
        try:
            md = offsets.list_topics(timeout=timeout)
        except KafkaException as e:
            raise SourceError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {e}") from None
        missing = [n for n in (t.predictions, t.labels, t.state) if n not in md.topics]
        if missing:
            raise SourceError(
                f"topic(s) {', '.join(missing)} do not exist on {settings.kafka.bootstrap_servers}: "
                "has a worker with this config run?"
            )
        parts = sorted(md.topics[t.predictions].partitions)
        tps = [TopicPartition(topic, p) for p in parts for topic in (t.predictions, t.labels)]
        committed: dict[int, dict[str, int]] = {p: {} for p in parts}
        try:
            for tp in offsets.committed(tps, timeout=timeout):
                if tp.error is None and tp.offset != OFFSET_INVALID and tp.offset >= 0:
                    committed[tp.partition][tp.topic] = tp.offset
        except KafkaException as e:
            raise SourceError(f"cannot read the committed offsets of group {group}: {e}") from None
        for p, c in committed.items():
            if set(c) != {t.predictions, t.labels}:
                committed[p] = {}  # not both committed: no state record of it is valid
        try:
            restored = read_state(reader, t.state, committed, timeout=timeout)
        except (RestoreError, KafkaException) as e:
            raise SourceError(f"cannot read the state topic {t.state}: {e}") from None
        states: list[ModelState] = []
        nbytes = 0
        for p, rp in sorted(restored.items()):
            for model_id, data in sorted(rp.records.items()):
                if models and model_id not in models:
                    continue
                try:
                    states.append(ModelState(model_id, ModelMonitor.restore(data), p))
                    nbytes += len(data)
                except SnapshotError as e:
                    notes.append(f"The state of model {model_id!r} (partition {p}) cannot be read: {e}")
            for q in rp.problems:  # e.g. a split record with a part missing: say so, don't guess
                if not models or q.key in models:
                    notes.append(
                        f"State record {q.topic}[{p}]@{q.offset} (key {q.key!r}) was skipped "
                        f"({q.reason}: {q.detail})."
                    )
        keep = {s.model_id for s in states}
        alerts = _read_alerts(reader, t.alerts, keep, timeout) if t.alerts in md.topics else []
        if t.alerts not in md.topics:
            notes.append(f"The alerts topic {t.alerts} does not exist: no alert has been published yet.")
    finally:
        offsets.close()
        reader.close()
    return ReportInput(
        source=f"the committed state of worker group {group} on {settings.kafka.bootstrap_servers}",
        models=states,
        alerts=alerts,
        settings=settings,
        facts=[
            ("state topic", t.state),
            ("alerts topic", f"{t.alerts} (read_committed)"),
            ("partitions with committed offsets", str(sum(1 for c in committed.values() if c))),
            ("state read", f"{len(states)} monitors, {nbytes:,} bytes"),
        ],
        notes=notes,
    )


def _read_alerts(consumer: Any, topic: str, models: set[str], timeout: float) -> list[dict[str, Any]]:
    """Committed alert events of ``models``, every partition read to its end (newest kept)."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    md = consumer.list_topics(topic, timeout=timeout)
    parts = sorted(md.topics[topic].partitions)
    kept: dict[str, deque[dict[str, Any]]] = {m: deque(maxlen=ALERTS_PER_MODEL) for m in models}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < len(parts):
            if time.monotonic() > deadline:
                raise SourceError(f"the alerts topic {topic} was not read to its end in {timeout} s")
            for m in consumer.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(m.partition())
                        continue
                    raise SourceError(f"reading {topic}: {KafkaException(err)}")
                ended.discard(m.partition())
                try:
                    ev = orjson.loads(m.value() or b"null")
                except orjson.JSONDecodeError:
                    continue  # not an alert event: nothing to show
                if isinstance(ev, dict) and ev.get("model_id") in kept:
                    kept[ev["model_id"]].append(ev)
    finally:
        consumer.unassign()
    return [ev for q in kept.values() for ev in q]


__all__ = ["ModelState", "ReportInput", "SourceError", "from_replay", "from_state"]
