"""Events per second of the core alone: ``Engine`` over pre-encoded messages, no Kafka.

The events are bench/throughput.py's (20 numeric + 2 categorical features, three class scores,
labels for a share of them 1-60 s later in event time), fed in batches as the worker would:
predictions and the labels that are due by then. Use it to see what a change to the hot path
buys before running the broker benchmark; ``--profile`` prints the top of a cProfile.

    .venv/bin/python bench/engine_speed.py [--events 100000] [--models 10] [--batch 5000]
                                           [--repeat 3] [--profile]

The first pass of a process pays for calibrations (cached in ~/.cache/streamwatch after the
first run on a machine) and window-test thresholds; the figure reported is the best of
``--repeat`` passes with a fresh engine each.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import Generator, feature_config, model_ids

from streamwatch.config import Settings
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine


def batches(
    gen: Generator, batch: int, t0_ms: int = 1_790_000_000_000
) -> list[tuple[list[RawMessage], list[RawMessage]]]:
    """(predictions, labels due by the batch's last prediction time) per batch, 1 ms apart."""
    t0 = t0_ms
    due: list[tuple[int, bytes]] = []
    out = []
    for lo in range(0, gen.n, batch):
        hi = min(gen.n, lo + batch)
        preds = [RawMessage(gen.prediction(i, t0 + i)) for i in range(lo, hi)]
        labelled = [i for i in range(lo, hi) if gen.labelled[i]]
        due += [(t0 + i + int(gen.delay_ms[i]), gen.label(i, t0 + i)) for i in labelled]
        due.sort()
        k = 0
        while k < len(due) and due[k][0] <= t0 + hi:
            k += 1
        out.append((preds, [RawMessage(v) for _, v in due[:k]]))
        due = due[k:]
    return out


def run(settings: Settings, work: list[tuple[list[RawMessage], list[RawMessage]]]) -> tuple[float, int]:
    """CPU seconds of one pass (the machine is shared: wall time moves with the neighbours)."""
    engine = Engine(settings)
    n = 0
    t = time.process_time()
    for preds, labels in work:
        engine.process_predictions(preds)
        engine.process_labels(labels)
        n += len(preds) + len(labels)
    return time.process_time() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--label-share", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    gen = Generator(args.events, args.models, 0, args.label_share, "e")
    work = batches(gen, args.batch)
    settings = Settings.model_validate(
        {"models": {m: {"features": feature_config()} for m in model_ids(args.models)}}
    )
    run(settings, work[: max(1, len(work) // 10)])  # warm: calibrations and thresholds
    best = float("inf")
    n = 0
    for _ in range(args.repeat):
        seconds, n = run(settings, work)
        best = min(best, seconds)
        print(f"  {n / seconds:,.0f} events/s ({n} events in {seconds:.2f} s of CPU)", flush=True)
    print(f"best: {n / best:,.0f} events per CPU second (predictions and labels, batches of {args.batch})")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(settings, work)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
