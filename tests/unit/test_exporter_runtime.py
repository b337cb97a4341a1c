"""The runtime's checkpoint/commit/restore timings and consumer lag reach /metrics."""

from __future__ import annotations

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
    # a partition no longer held has no lag series
    del stats.lag[("preds", 0)]
    assert "streamwatch_consumer_lag{" not in exporter.render().decode()
