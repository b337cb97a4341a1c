"""Replay: the engine over JSON Lines files, with the same batching rules as the Kafka worker.

Each file keeps its own order (the order a Kafka partition would have); the predictions and
labels files are merged by event time, the order their events would interleave in production.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import IO, Any

import orjson

from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.events import parse_timestamp

PREDICTION, LABEL = 0, 1


@dataclass
class ReplaySummary:
    predictions: int = 0
    labels: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = (self.predictions + self.labels) / self.seconds if self.seconds else 0.0
        out = [
            f"events: {self.predictions} predictions, {self.labels} labels "
            f"in {self.seconds:.2f} s ({rate:,.0f} events/s)",
            "dead letters: "
            + (", ".join(f"{r}={n}" for r, n in sorted(self.dead_letters.items())) or "none"),
            "alerts: " + (", ".join(f"{k}/{s}={n}" for (k, s), n in sorted(self.alerts.items())) or "none"),
        ]
        return out


def _event_time(line: bytes, last: int) -> int:
    # only to interleave the two files; an unreadable time keeps the line where it is
    try:
        ts = orjson.loads(line).get("timestamp")
        return parse_timestamp(ts) if ts is not None else last
    except Exception:
        return last


def _lines(path: Path, kind: int, timed: bool) -> Iterator[tuple[int, int, RawMessage]]:
    last = 0
    with path.open("rb") as f:
        for no, text in enumerate(f, start=1):
            line = text.rstrip(b"\r\n")
            if not line.strip():
                continue
            if timed:
                last = _event_time(line, last)
            yield last, kind, RawMessage(line, None, str(path), 0, no)


def merged(predictions: Path, labels: Path | None) -> Iterator[tuple[int, RawMessage]]:
    """(kind, message) from both files, each in file order, interleaved by event time."""
    timed = labels is not None
    sources: list[Iterable[tuple[int, int, RawMessage]]] = [_lines(predictions, PREDICTION, timed)]
    if labels is not None:
        sources.append(_lines(labels, LABEL, timed))
    for _, kind, msg in heapq.merge(*sources, key=lambda r: (r[0], r[1])):
        yield kind, msg


def _batches(items: Iterator[tuple[int, RawMessage]], size: int) -> Iterator[tuple[int, list[RawMessage]]]:
    """Runs of one kind, cut at ``size`` messages."""
    for kind, run in groupby(items, key=lambda r: r[0]):
        batch: list[RawMessage] = []
        for _, msg in run:
            batch.append(msg)
            if len(batch) == size:
                yield kind, batch
                batch = []
        if batch:
            yield kind, batch


def replay(
    engine: Engine,
    predictions: Path,
    labels: Path | None,
    alerts_out: IO[bytes],
    dead_letters_out: IO[bytes] | None = None,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    batch_size: int = 2000,
) -> ReplaySummary:
    summary = ReplaySummary()
    t0 = time.perf_counter()
    for kind, batch in _batches(merged(predictions, labels), batch_size):
        if kind == PREDICTION:
            result = engine.process_predictions(batch, source="predictions")
            summary.predictions += result.events
        else:
            result = engine.process_labels(batch, source="labels")
            summary.labels += result.events
        now_ms = int(time.time() * 1000)
        for a in result.alerts:
            ev = a.to_event(now_ms)
            alerts_out.write(orjson.dumps(ev) + b"\n")
            summary.alerts[(a.kind, a.status)] += 1
            if on_alert:
                on_alert(ev)
        for d in result.dead_letters:
            summary.dead_letters[d.reason] += 1
            if dead_letters_out is not None:
                dead_letters_out.write(d.body() + b"\n")
    summary.seconds = time.perf_counter() - t0
    return summary
