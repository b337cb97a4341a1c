"""A cardinality bomb through the worker on the real broker: 10^5 distinct category values and
10^4 distinct model ids. The worker's RSS (from /proc/<pid>/status) and its series count (from
/metrics) stay within the limits; the measured numbers are printed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from tests.conftest import http_get, wait_until, write_config

T0 = 1_795_774_502_000
CONFIGURED = 50  # models in the config; limits.max_models lets 20 of them have a monitor
N = 100_000


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _series(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def _value(text: str, prefix: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in _series(text) if ln.startswith(prefix))


def test_cardinality_bomb_through_the_worker(
    kafka: str, topics: dict[str, str], tmp_path: Path, start_worker: Any
) -> None:
    models = {f"m{i}": {"features": {"x": "numeric", "c": "categorical"}} for i in range(CONFIGURED)}
    cfg = write_config(
        tmp_path / "c.yaml",
        kafka,
        topics,
        models,
        drift={"reference_size": 500, "window_size": 500, "step": 100, "cusum": False},
        limits={"max_models": 20, "max_category_values": 1000},
    )
    worker = start_worker(cfg)
    rss0 = _status_kib(worker.proc.pid, "VmRSS")
    p = Producer(
        {"bootstrap.servers": kafka, "linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4"}
    )
    for i in range(N):  # 10^5 distinct values of c, spread over 10 monitored models
        model = f"m{i % 10}"
        ev = {
            "event_id": f"e{i}",
            "model_id": model,
            "timestamp": T0 + i,
            "features": {"x": float(i % 31), "c": f"value-{i}"},
            "prediction": {"label": "a"},
        }
        _produce(p, topics["predictions"], model.encode(), orjson.dumps(ev))
    for i in range(10_000):  # 10^4 distinct model ids: 9 950 unknown, 40 configured beyond the limit
        model = f"m{i % CONFIGURED}" if i < CONFIGURED * 2 else f"id-{i}"
        ev = {
            "event_id": f"z{i}",
            "model_id": model,
            "features": {"x": 1.0, "c": "a"},
            "prediction": {"label": "a"},
        }
        _produce(p, topics["predictions"], model.encode(), orjson.dumps(ev))
    assert p.flush(60) == 0
    url = worker.url("/metrics")
    text = wait_until(
        lambda: (
            (t := http_get(url, 10)[1].decode())
            and _value(t, 'streamwatch_messages_consumed_total{source="predictions"}') >= N + 10_000
            and t
        ),
        90,
        "every message consumed",
        interval=1.0,
    )
    rss = _status_kib(worker.proc.pid, "VmRSS") / 1024
    hwm = _status_kib(worker.proc.pid, "VmHWM") / 1024
    series = _series(text)
    monitors = _value(text, 'streamwatch_limit_usage{limit="models"}')
    vocab = _value(text, 'streamwatch_limit_usage{limit="category_values"}')
    print(
        f"\ncardinality bomb (worker): {N} distinct categories, 10000 model ids -> monitors {monitors:.0f}, "
        f"largest vocabulary {vocab:.0f}, {len(series)} series on /metrics, RSS {rss0 / 1024:.0f} MiB at "
        f"start, {rss:.0f} MiB after (peak {hwm:.0f} MiB)"
    )
    assert monitors <= 20 and vocab <= 1001
    assert _value(text, 'streamwatch_dead_letters_total{reason="model_limit"}') > 0
    assert _value(text, 'streamwatch_dead_letters_total{reason="unknown_model"}') >= 9_800
    assert _value(text, 'streamwatch_limit_hits_total{limit="category_values"}') > 0
    assert len(series) < 20 * 2000  # max_series_per_model per monitored model, at most
    assert not any("id-" in ln for ln in series)  # unknown ids never become series
    assert hwm < 1024


def _produce(p: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            p.produce(topic, value, key)
            return
        except BufferError:
            p.poll(0.1)
            time.sleep(0)
