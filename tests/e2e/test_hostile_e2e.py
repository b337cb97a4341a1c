"""Hostile input end to end on the real broker: > 10^5 events, a third of them hostile, mixed with
good ones. Every good event is counted, every bad one is accounted for: in the dead-letter topic
with its reason, and in the worker's ``streamwatch_*`` counters."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.conftest import http_get, wait_until, write_config

T0 = 1_795_774_502_000
MODELS = {
    "m1": {"features": {"x": "numeric", "y": "numeric", "c": "categorical"}},
    "m2": {"features": {"x": "numeric", "y": "numeric", "c": "categorical"}},
}
GOOD = int(os.environ.get("HOSTILE_GOOD", "70000"))
BIG_BYTES = 1_500_000  # larger than limits.max_message_bytes (1 MiB), below the topic's 4 MiB


def _good(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "model_id": f"m{1 + i % 2}",
        "timestamp": T0 + 10 * i,
        "features": {"x": (i * 7919) % 101 / 10.0, "y": (i * 104729) % 53 / 5.0, "c": "abc"[i % 3]},
        "prediction": {"label": "yes", "scores": {"yes": 0.7, "no": 0.3}},
    }


def _hostile(i: int) -> tuple[bytes, str | None]:
    """The i-th hostile message and its expected dead-letter reason (None: it is processed)."""
    ev = _good(i)
    good = orjson.dumps(ev)
    kinds: list[tuple[bytes, str | None]] = [
        (good[: len(good) // 2], "invalid_json"),
        (good.replace(b'"abc"'[:0] + b'"e', b'"\xff\xfee', 1), "invalid_utf8"),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, "invalid_json"),
        (json.dumps({**ev, "features": {**ev["features"], "x": float("nan")}}).encode(), "invalid_json"),
        (good.replace(b'"x":', b'"x":1e400,"_":', 1), "invalid_json"),
        (b"[" + b"1," * 1000 + b"1]", "not_an_object"),
        (b"", "empty_message"),
        (orjson.dumps({**ev, "model_id": 7}), "invalid_field"),
        (orjson.dumps({**ev, "event_id": "z" * 5000}), "invalid_field"),
        (orjson.dumps({**ev, "features": {"x": {"deep": [1, 2]}}}), "invalid_field"),
        (orjson.dumps({**ev, "model_id": f"ghost-{i}"}), "unknown_model"),
        (orjson.dumps({**ev, "timestamp": -5}), "invalid_timestamp"),
        (orjson.dumps({**ev, "timestamp": "10000-01-01T00:00:00Z"}), "invalid_timestamp"),
        (orjson.dumps({**ev, "features": {f"f{k}": k for k in range(1001)}}), "too_many_features"),
        (orjson.dumps({**ev, "prediction": {"scores": {"yes": "high"}}}), "invalid_field"),
        # well formed but hostile values: processed, counted as invalid or missing values
        (orjson.dumps({**ev, "features": {"x": True, "y": None, "c": 12.5}}), None),
        (orjson.dumps({**ev, "features": {"x": 1e308, "y": -0.0, "c": "q" * 20_000}}), None),
        (good.replace(b'"model_id"', b'"model_id":7,"model_id"', 1), None),  # duplicate key: last wins
        (orjson.dumps({**ev, "timestamp": "9999-12-31T23:59:59Z"}), None),
        (orjson.dumps({**ev, "timestamp": 0}), None),
    ]
    return kinds[i % len(kinds)]


def _stream() -> tuple[list[tuple[bytes, bytes]], Counter[str], int]:
    """(key, value) messages, the dead letters expected by reason, and the events expected."""
    out: list[tuple[bytes, bytes]] = []
    dead: Counter[str] = Counter()
    events = 0
    j = 0
    for i in range(GOOD):
        ev = _good(i)
        out.append((ev["model_id"].encode(), orjson.dumps(ev)))
        events += 1
        if i % 2 == 1:  # a hostile message after every second good one
            value, reason = _hostile(10**6 + j)
            j += 1
            out.append((b"m1" if j % 2 else b"m2", value))
            if reason is None:
                events += 1
            else:
                dead[reason] += 1
    for _k in range(3):  # 1.5 MB messages
        out.append((b"m1", b'{"model_id": "m1", "pad": "' + b"p" * BIG_BYTES + b'"}'))
        dead["message_too_large"] += 1
    return out, dead, events


def _wait(url: str, events: int, dead: int, get: Any) -> None:
    wait_until(
        lambda: (
            (t := get())
            and _sum(t, "streamwatch_events_total", type="prediction") >= events
            and _sum(t, "streamwatch_dead_letters_total") >= dead
        ),
        90,
        "every message counted",
        interval=1.0,
    )


def _metrics(url: str) -> str:
    status, body = http_get(url, 10)
    return body.decode() if status == 200 else ""


def _sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_hostile_stream_is_fully_accounted_for(
    kafka: str, topics: dict[str, str], tmp_path: Path, start_worker: Any
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka})
    big = {"max.message.bytes": str(4 * 1024 * 1024)}
    futures = admin.create_topics([NewTopic(topics[t], 2, 1, config=big) for t in ("predictions", "labels")])
    for f in futures.values():
        f.result(30)
    cfg = write_config(
        tmp_path / "c.yaml",
        kafka,
        topics,
        MODELS,
        drift={"reference_size": 500, "window_size": 500, "step": 100, "cusum": False},
    )
    messages, expected_dead, expected_events = _stream()
    assert len(messages) >= 100_000 or GOOD < 70_000

    worker = start_worker(cfg)
    t0 = time.monotonic()
    p = Producer(
        {
            "bootstrap.servers": kafka,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "message.max.bytes": 4 * 1024 * 1024,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    failed: list[str] = []

    def _delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for key, value in messages:
        while True:
            try:
                p.produce(topics["predictions"], value, key, on_delivery=_delivered)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0 and not failed, failed[:3]
    produced = time.monotonic() - t0

    n_dead = sum(expected_dead.values())
    url = worker.url("/metrics")
    last: list[str] = [""]

    def _progress() -> str:
        last[0] = _metrics(url)
        return last[0]

    try:
        _wait(url, expected_events, n_dead, _progress)
    except AssertionError:
        shown = [ln for ln in last[0].splitlines() if "events_total" in ln or "dead_letters_total" in ln]
        raise AssertionError("not every message counted:\n" + "\n".join(shown)) from None
    text = wait_until(
        lambda: (
            (t := _metrics(url))
            and _sum(t, "streamwatch_events_total", type="prediction") >= expected_events
            and _sum(t, "streamwatch_dead_letters_total") >= n_dead
            and t
        ),
        90,
        "every message counted",
        interval=1.0,
    )
    took = time.monotonic() - t0
    assert _sum(text, "streamwatch_events_total", type="prediction") == expected_events
    assert _sum(text, "streamwatch_messages_consumed_total", source="predictions") == len(messages)
    for reason, n in expected_dead.items():
        assert _sum(text, "streamwatch_dead_letters_total", reason=reason) == n, reason
    assert _sum(text, "streamwatch_dead_letters_total") == n_dead
    assert _sum(text, "streamwatch_limit_hits_total", limit="message_bytes") == 3
    assert _sum(text, "streamwatch_limit_hits_total", limit="features") == expected_dead["too_many_features"]
    assert _sum(text, "streamwatch_feature_invalid_values_total", feature="x") > 0

    # the dead-letter topic: one record per bad message, with its reason (read committed)
    c = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"r-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    c.subscribe([topics["dead_letters"]])
    reasons: Counter[str] = Counter()
    largest = 0
    deadline = time.monotonic() + 60
    while sum(reasons.values()) < n_dead and time.monotonic() < deadline:
        for m in c.consume(2000, 0.5):
            if m.error() is None:
                hdr = dict(m.headers() or [])["sw_reason"]
                reasons[hdr.decode() if isinstance(hdr, bytes) else str(hdr)] += 1
                largest = max(largest, len(m.value() or b""))
                if reasons["message_too_large"] == 1 and b"message_too_large" in (m.value() or b""):
                    body = orjson.loads(m.value() or b"")
                    assert body["payload_truncated"] and body["payload_bytes"] > BIG_BYTES
    c.close()
    assert reasons == expected_dead
    assert largest < 1_000_000  # a dead letter of a 1.5 MB message fits the default topic

    # the alert events of the limits: one per (limit, model)
    c = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"r-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([topics["alerts"]])
    limit_alerts: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 20
    while len(limit_alerts) < 2 and time.monotonic() < deadline:
        for m in c.consume(500, 0.5):
            if m.error() is None:
                a = orjson.loads(m.value() or b"")
                if a["kind"] == "resource_limit":
                    limit_alerts.add((a["detector"], a["model_id"]))
    c.close()
    assert {("message_bytes", "m1"), ("features", "m2")} <= limit_alerts
    print(
        f"\nhostile e2e: {len(messages)} messages ({expected_events} events, {n_dead} dead letters, "
        f"largest message {BIG_BYTES + 30} bytes) produced in {produced:.1f} s, "
        f"all counted after {took:.1f} s; "
        f"dead letters by reason {dict(sorted(reasons.items()))}"
    )
    assert re.search(r"streamwatch_limit_usage\{limit=\"models\"\} 2", text)
