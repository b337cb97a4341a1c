"""The runtime's checkpoint/commit/restore timings and consumer lag reach /metrics."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from streamwatch.config import load_config
from streamwatch.engine import Engine
from streamwatch.exporter import Exporter, RuntimeCollector
from streamwatch.runtime.state import RuntimeStats


def test_runtime_families_render_from_stats() -> None:
    engine = Engine(load_config(None, models={"m": {"features": {"x": "numeric"}}}))
    exporter = Exporter(engine)
    stats = RuntimeStats()
    exporter.registry.register(RuntimeCollector(stats))
    stats.checkpoint.observe(0.02)
    stats.checkpoint.observe(0.3)
    stats.commit.observe(0.01)
    stats.checkpoints = 2
    stats.lag[("preds", 0)] = 42
    stats.owned = [0, 1]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(exporter.render().decode())
        for s in fam.samples
    }
    assert samples[("streamwatch_checkpoint_duration_seconds_count", ())] == 2
    assert samples[("streamwatch_checkpoint_duration_seconds_sum", ())] == 0.32
    assert samples[("streamwatch_checkpoint_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("streamwatch_commit_duration_seconds_count", ())] == 1
    assert samples[("streamwatch_checkpoints_total", ())] == 2
    assert samples[("streamwatch_consumer_lag", (("partition", "0"), ("topic", "preds")))] == 42
    assert samples[("streamwatch_partitions_owned", ())] == 2
    assert not any(name == "streamwatch_transaction_call_seconds" for name, _ in samples)
    # a partition no longer held has no lag series
    del stats.lag[("preds", 0)]
    assert "streamwatch_consumer_lag{" not in exporter.render().decode()
    # a transactional call that has waited 25 s (an outage, or librdkafka never returning)
    stats.txn_call = ("send_offsets_to_transaction", time.monotonic() - 25)
    text = exporter.render().decode().splitlines()
    line = next(x for x in text if x.startswith("streamwatch_transaction_call"))
    assert line.startswith('streamwatch_transaction_call_seconds{call="send_offsets_to_transaction"} 25')


def test_counters_never_go_back_when_state_is_rewound() -> None:
    """An aborted transaction rewinds a monitor to its last checkpoint; the worker then counts
    the same events again, so its counters pause rather than fall."""
    import orjson

    from streamwatch.decode import RawMessage
    from streamwatch.monitor import ModelMonitor

    engine = Engine(load_config(None, models={"m": {"features": {"x": "numeric"}}}))
    exporter = Exporter(engine)

    def events() -> float:
        for fam in text_string_to_metric_families(exporter.render().decode()):
            for s in fam.samples:
                if s.name == "streamwatch_events_total" and s.labels["type"] == "prediction":
                    return float(s.value)
        raise AssertionError("no events series")

    def batch(start: int) -> list[RawMessage]:
        return [
            RawMessage(orjson.dumps({"event_id": f"e{i}", "model_id": "m", "timestamp": i,
                                     "features": {"x": i % 7}, "prediction": {"value": 1.0}}))
            for i in range(start, start + 100)
        ]  # fmt: skip

    engine.process_predictions(batch(0))
    checkpoint = engine.monitors["m"].snapshot()
    engine.process_predictions(batch(100))
    assert events() == 200
    for ms in engine.owned.values():  # the rewind
        ms["m"] = ModelMonitor.restore(checkpoint)
    engine._reindex(["m"])
    assert events() == 200
    engine.process_predictions(batch(100))
    engine.process_predictions(batch(200))
    assert events() == 300
