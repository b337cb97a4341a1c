"""Producing events to the input topics (the simulator, the demo and the tests use it)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

from streamwatch.config import Settings
from streamwatch.runtime.kafka import client_config, ensure_topics


def produce_events(
    settings: Settings,
    predictions: Sequence[dict[str, Any]],
    labels: Sequence[dict[str, Any]] = (),
    realtime_rate: float | None = None,
) -> int:
    """Produce prediction and label events keyed by ``model_id``; returns how many were sent."""
    if settings.topics.create:
        ensure_topics(settings)
    # idempotent, so a retried batch cannot land behind later ones: a model's order is its
    # partition's order, and the detectors' positions depend on it
    producer = Producer(
        client_config(settings, **{"linger.ms": 20, "compression.type": "lz4", "enable.idempotence": True})
    )
    t = settings.topics
    t0 = time.monotonic()
    n = 0
    for topic, events in ((t.predictions, predictions), (t.labels, labels)):
        for ev in events:
            while True:
                try:
                    producer.produce(topic, orjson.dumps(ev), str(ev.get("model_id", "")).encode())
                    break
                except BufferError:
                    producer.poll(0.2)
            n += 1
            if realtime_rate and topic == t.predictions:
                ahead = n / realtime_rate - (time.monotonic() - t0)
                if ahead > 0:
                    producer.poll(0)
                    time.sleep(ahead)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} events were not delivered to Kafka")
    return n
