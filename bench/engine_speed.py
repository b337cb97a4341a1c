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

The batches throughput.py's c consumes differ from these: the consumer reads the label topic
ahead of the predictions, so most labels wait for their prediction. ``--record-consumed FILE``
fills a topic pair on the local broker as throughput.py does, consumes it as c does and keeps
its batches; ``--replay FILE`` runs the engine over them. On a shared machine a 5-10 % change
hides in the timing noise; count instructions instead, one pass minus the process without it:

    valgrind --tool=callgrind .venv/bin/python bench/engine_speed.py --replay F --repeat 1 --no-warm
    valgrind --tool=callgrind .venv/bin/python bench/engine_speed.py --replay F --repeat 0 --no-warm
"""

from __future__ import annotations

import argparse
import cProfile
import pickle
import pstats
import sys
import time
import uuid
from dataclasses import astuple
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


def record_consumed(path: Path, events: int, models: int, label_share: float, bootstrap: str) -> None:
    """Fill a topic pair as throughput.py does, consume it as its c does, pickle the batches."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    from throughput import BATCH, CONSUMER_BASE, create_topics, delete_topics, fill, run_topics

    from streamwatch.runtime.kafka import _raw

    tag = uuid.uuid4().hex[:8]
    t_pred, t_lab = f"bench{tag}.predictions", f"bench{tag}.labels"
    create_topics(bootstrap, [t_pred, t_lab])
    expect = fill(bootstrap, Generator(events, models, 1, label_share, tag), t_pred, t_lab)["messages"]
    consumer = Consumer({**CONSUMER_BASE, "bootstrap.servers": bootstrap, "group.id": tag})
    consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in (t_pred, t_lab)])
    got, out = 0, []
    while got < expect:
        msgs = [_raw(m) for m in consumer.consume(min(BATCH, expect - got), 1.0) if m.error() is None]
        if msgs:
            out.append(([m for m in msgs if m.topic == t_pred], [m for m in msgs if m.topic == t_lab]))
            got += len(msgs)
    consumer.close()
    delete_topics(bootstrap, run_topics(bootstrap, tag))
    with path.open("wb") as f:
        pickle.dump([([astuple(m) for m in p], [astuple(m) for m in lab]) for p, lab in out], f)
    shape = ", ".join(f"{len(p)}+{len(lab)}" for p, lab in out)
    print(f"{got} messages in {len(out)} batches (predictions+labels: {shape}) -> {path}")


def replayed(path: Path) -> list[tuple[list[RawMessage], list[RawMessage]]]:
    with path.open("rb") as f:  # written by --record-consumed on this machine
        saved = pickle.load(f)
    return [([RawMessage(*m) for m in p], [RawMessage(*m) for m in lab]) for p, lab in saved]


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
    ap.add_argument("--record-consumed", type=Path, metavar="FILE", help="record c's batches and exit")
    ap.add_argument("--replay", type=Path, metavar="FILE", help="batches from --record-consumed")
    ap.add_argument("--no-warm", action="store_true", help="no warm-up pass (for instruction counts)")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = ap.parse_args()
    if args.record_consumed:
        record_consumed(args.record_consumed, args.events, args.models, args.label_share, args.bootstrap)
        return
    if args.replay:
        work = replayed(args.replay)
    else:
        work = batches(Generator(args.events, args.models, 0, args.label_share, "e"), args.batch)
    settings = Settings.model_validate(
        {"models": {m: {"features": feature_config()} for m in model_ids(args.models)}}
    )
    if not args.no_warm:
        run(settings, work[: max(1, len(work) // 10)])  # warm: calibrations and thresholds
    best = float("inf")
    n = 0
    for _ in range(args.repeat):
        seconds, n = run(settings, work)
        best = min(best, seconds)
        print(f"  {n / seconds:,.0f} events/s ({n} events in {seconds:.2f} s of CPU)", flush=True)
    if args.repeat:
        what = f"batches of {args.batch}" if args.replay is None else f"c's batches from {args.replay}"
        print(f"best: {n / best:,.0f} events per CPU second (predictions and labels, {what})")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(settings, work)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
