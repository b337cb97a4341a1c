"""Resident memory of the core over a long stream: does it level off once every bound is reached?

Feeds ``--events`` prediction events (bench/throughput.py's: 20 numeric + 2 categorical
features, three class scores, 1 ms apart in event time) over ``--models`` models, with labels
for ``--label-share`` of them 1-60 s later, through one ``Engine`` in batches, generated chunk by
chunk so the input itself takes no memory. Every ``--every`` events it records the process's
RSS and the number of open predictions in the label stores. The stores fill up to
``performance.max_open_predictions`` per model (unlabelled predictions wait up to the 7-day
TTL) and then sample; after that, RSS should stay flat.

    .venv/bin/python bench/memory.py [--events 10000000] [--models 10] [--every 500000]

Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_speed import batches
from throughput import Generator, feature_config, model_ids

from streamwatch.config import Settings
from streamwatch.engine import Engine

OUT = Path(__file__).resolve().parent / "results" / "memory.json"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--every", type=int, default=500_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--label-share", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    settings = Settings.model_validate(
        {"models": {m: {"features": feature_config()} for m in model_ids(args.models)}}
    )
    engine = Engine(settings)
    cap = settings.performance.max_open_predictions
    samples = []
    done, t0 = 0, time.perf_counter()
    print(f"{'events':>10}  {'RSS MB':>8}  {'open predictions':>16}  {'events/s':>9}", flush=True)
    while done < args.events:
        # a new generator per chunk: fresh ids (tag) and event times continuing where we left
        gen = Generator(args.chunk, args.models, done // args.chunk, args.label_share, f"c{done}")
        for preds, labels in batches(gen, args.batch, t0_ms=1_790_000_000_000 + done):
            engine.process_predictions(preds)
            engine.process_labels(labels)
        done += args.chunk
        if done % args.every == 0 or done >= args.events:
            open_preds = sum(
                len(m.performance.join.index) for m in engine.monitors.values() if m.performance is not None
            )
            s = {
                "events": done,
                "rss_mb": round(rss_mb(), 1),
                "open_predictions": open_preds,
                "events_per_second": round(done / (time.perf_counter() - t0)),
            }
            samples.append(s)
            print(
                f"{done:>10,}  {s['rss_mb']:>8}  {open_preds:>16,}  {s['events_per_second']:>9,}",
                flush=True,
            )
    half = [s["rss_mb"] for s in samples if s["events"] > args.events // 2]
    result = {
        "command": "bench/memory.py " + " ".join(sys.argv[1:]),
        "models": args.models,
        "max_open_predictions_per_model": cap,
        "samples": samples,
        "second_half_rss_mb": {"min": min(half), "max": max(half)} if half else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
