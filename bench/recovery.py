"""Recovery benchmark: how long a new owner takes to rebuild 100 models x 50 features from the
state topic, and what a checkpoint of all of them costs.

Runs the worker's own code paths against the local broker (deploy/local/kafka.sh up):

1. one realistic monitor (45 numeric + 5 categorical features, default drift settings, past
   its warm-up) is snapshotted under 100 model ids;
2. a checkpoint writes all 100 snapshots to a fresh state topic (4 partitions) in one
   transaction with the offsets (``KafkaWorker.checkpoint``), measured;
3. a second worker restores the 4 partitions (``KafkaWorker._restore``: committed offsets,
   state topic read to the end, 100 ``ModelMonitor.restore``), measured, three times.

    .venv/bin/python bench/recovery.py [--bootstrap 127.0.0.1:9092] [--models 100]

Writes bench/results/recovery.json. Target: restore <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamwatch.config import Settings
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.exporter import Exporter
from streamwatch.runtime.kafka import KafkaWorker, ensure_topics

OUT = Path(__file__).parent / "results" / "recovery.json"
N_NUMERIC, N_CATEGORICAL, PARTITIONS = 45, 5, 4


def _features() -> dict[str, str]:
    f = {f"x{i}": "numeric" for i in range(N_NUMERIC)}
    f.update({f"c{i}": "categorical" for i in range(N_CATEGORICAL)})
    return f


def _events(n: int, seed: int) -> list[RawMessage]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        feats: dict[str, Any] = {f"x{j}": float(rng.normal(j, 1 + j % 3)) for j in range(N_NUMERIC)}
        feats.update({f"c{j}": f"v{int(rng.integers(0, 8))}" for j in range(N_CATEGORICAL)})
        ev = {
            "event_id": f"e{i}",
            "model_id": "m0",
            "timestamp": 1_798_761_600_000 + i * 10,
            "features": feats,
            "prediction": {"value": float(rng.normal())},
        }
        out.append(RawMessage(orjson.dumps(ev), partition=0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--events", type=int, default=3000, help="events per model before the snapshot")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:8]
    models = {f"m{i}": {"features": _features()} for i in range(args.models)}
    base: dict[str, Any] = {
        "kafka": {"bootstrap_servers": args.bootstrap, "group_id": f"bench-recovery-{tag}"},
        "topics": {
            "predictions": f"bench{tag}.predictions",
            "labels": f"bench{tag}.labels",
            "alerts": f"bench{tag}.alerts",
            "dead_letters": f"bench{tag}.dlq",
            "state": f"bench{tag}.state",
            "partitions": PARTITIONS,
        },
        "models": models,
    }
    settings = Settings(**base, state={"instance_id": f"bench-{tag}-writer"})
    ensure_topics(settings)

    # one monitor past its warm-up, its state copied to every model (same size, same work)
    t0 = time.perf_counter()
    engine = Engine(settings)
    engine.process_predictions(_events(args.events, 1))
    template = engine.monitors["m0"]
    warm = time.perf_counter() - t0
    one = template.snapshot()
    units = list(range(PARTITIONS))
    for i in range(args.models):
        doc = orjson.loads(one)
        doc["model_id"] = f"m{i}"
        engine.install(
            i % PARTITIONS,
            {**engine.owned.get(i % PARTITIONS, {}), f"m{i}": type(template).restore(orjson.dumps(doc))},
        )

    writer = KafkaWorker(settings, engine, Exporter(engine))
    writer._start()
    for p in units:
        writer.active.add(p)
        for t in writer.input_topics:
            writer.positions[(t, p)] = 0
    engine.dirty = {p: set(engine.owned[p]) for p in units}
    t0 = time.perf_counter()
    assert writer.checkpoint("bench")
    checkpoint_s = time.perf_counter() - t0
    stats = writer.stats.as_dict()
    writer.producer.flush(10)
    writer.consumer.close()

    restores: list[float] = []
    models_restored = 0
    for r in range(args.repeats):
        s2 = Settings(**base, state={"instance_id": f"bench-{tag}-reader{r}"})
        e2 = Engine(s2)
        reader = KafkaWorker(s2, e2, Exporter(e2))
        reader._start()
        t0 = time.perf_counter()
        reader._restore(units)
        restores.append(time.perf_counter() - t0)
        models_restored = sum(len(v) for v in e2.owned.values())
        reader.consumer.close()
        if reader._restorer is not None:
            reader._restorer.close()
    assert models_restored == args.models, f"restored {models_restored} of {args.models} models"

    # the parts of a restore: JSON -> monitor alone
    t0 = time.perf_counter()
    for _ in range(20):
        type(template).restore(one)
    per_monitor = (time.perf_counter() - t0) / 20

    result = {
        "what": f"restore of {args.models} models x {N_NUMERIC + N_CATEGORICAL} features "
        "from the state topic",
        "target_seconds": 5.0,
        "restore_seconds": [round(x, 3) for x in restores],
        "restore_seconds_median": round(statistics.median(restores), 3),
        "checkpoint_all_models_seconds": round(checkpoint_s, 3),
        "commit_seconds": round(stats["commit_seconds"]["last"], 3),
        "snapshot_bytes_per_model": len(one),
        "state_bytes": stats["state_bytes"],
        "monitor_restore_ms": round(per_monitor * 1000, 2),
        "events_per_model_before_snapshot": args.events,
        "warm_up_seconds_incl_calibration": round(warm, 2),
        "partitions": PARTITIONS,
        "mode": settings.state.mode,
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "broker": args.bootstrap,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
