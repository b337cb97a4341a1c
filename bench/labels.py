"""Label join and performance-metric throughput, and memory with 10^6 open predictions.

    .venv/bin/python bench/labels.py            # 10^6 open predictions (about 1 min)
    .venv/bin/python bench/labels.py --quick    # 10^5

Writes bench/results/labels.json. Three measurements, each on a fresh object:

* ``join``: LabelJoin alone - predictions stored (with two class scores) and labels matched in
  shuffled order, events/s, and resident memory per open prediction;
* ``tracker``: PerformanceTracker end to end - encoding the prediction dicts, the join, window
  bookkeeping, CBPE estimates, the concept-drift CUSUM and the baseline checks;
* ``capped``: the store at a cap of 10^5 fed 10^6 predictions: it must stay within the cap.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from streamwatch.config import PerformanceSettings
from streamwatch.performance.join import LabelJoin
from streamwatch.performance.tracker import PerformanceTracker

OUT = Path(__file__).parent / "results" / "labels.json"
BATCH = 2000


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def bench_join(n: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    ids = [f"model-a-{i:09d}" for i in range(n)]
    scores = rng.random((n, 2))
    times = np.arange(n, dtype=np.int64) * 10
    join = LabelJoin(ttl_ms=10**12, wait_ms=0, cap=2 * n)
    before = _rss_mb()
    t0 = time.perf_counter()
    for k in range(0, n, BATCH):
        join.add_predictions(
            ids[k : k + BATCH], times[k : k + BATCH], scores[k : k + BATCH, 1], None, scores[k : k + BATCH]
        )
    t_add = time.perf_counter() - t0
    rss = _rss_mb() - before
    order = rng.permutation(n)
    shuffled = [ids[i] for i in order]
    lt = times[order] + 1000
    t0 = time.perf_counter()
    for k in range(0, n, BATCH):
        join.match_labels(shuffled[k : k + BATCH], lt[k : k + BATCH], ["y"] * len(shuffled[k : k + BATCH]))
    t_match = time.perf_counter() - t0
    assert join.outcomes["joined"] == n
    return {
        "open_predictions": n,
        "store_events_per_s": n / t_add,
        "match_events_per_s": n / t_match,
        "rss_mb": rss,
        "bytes_per_open_prediction": rss * 2**20 / n,
    }


def bench_tracker(n: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    p = rng.random(n)
    y = rng.random(n) < p
    preds = [{"label": "b" if v >= 0.5 else "a", "scores": {"a": 1 - v, "b": v}} for v in p.round(4).tolist()]
    labels = ["b" if v else "a" for v in y.tolist()]
    ids = [f"e{i}" for i in range(n)]
    times = np.arange(n, dtype=np.int64) * 100  # 10 events/s of event time
    t = PerformanceTracker("m", PerformanceSettings(window_seconds=600, max_open_predictions=2 * n), 10**6)
    lag = 5 * BATCH  # labels trail predictions by five batches
    t0 = time.perf_counter()
    for k in range(0, n + lag, BATCH):
        if k < n:
            predicted, scores = t.encode_predictions(preds[k : k + BATCH])
            t.observe_predictions(ids[k : k + BATCH], times[k : k + BATCH], predicted, scores)
        j = k - lag
        if 0 <= j < n:
            t.observe_labels(ids[j : j + BATCH], times[j : j + BATCH] + 60_000, labels[j : j + BATCH], [])
    elapsed = time.perf_counter() - t0
    return {
        "events": n,
        "labels": n,
        "events_per_s": n / elapsed,
        "label_and_prediction_events_per_s": 2 * n / elapsed,
    }


def bench_capped(n: int, cap: int) -> dict[str, float]:
    ids = [f"x{i}" for i in range(n)]
    join = LabelJoin(ttl_ms=10**12, wait_ms=0, cap=cap)
    worst = 0
    for k in range(0, n, BATCH):
        join.add_predictions(
            ids[k : k + BATCH],
            np.full(min(BATCH, n - k), k, dtype=np.int64),
            np.zeros(min(BATCH, n - k)),
            None,
            None,
        )
        worst = max(worst, len(join))
    return {"predictions": n, "cap": cap, "largest_store": worst, "sample_rate": join.sample_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 100_000 if args.quick else 1_000_000
    results = {
        "join": bench_join(n),
        "tracker": bench_tracker(n // 5),
        "capped": bench_capped(n, n // 10),
    }
    print(json.dumps(results, indent=2))
    if not args.quick:
        OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
