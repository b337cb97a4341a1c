"""Values per second of streamwatch's batch ADWIN against river's ADWIN fed value by value.

Both run in this process, one after the other, on the same stream; each timing is the best of
``--repeat`` runs (the machine may be shared). River's loop is the usual
``update(x)``-then-``drift_detected`` one. The detections of the two are compared, and the run
fails if they differ.

    .venv/bin/python bench/adwin_speed.py                 # 10**6 values, clock 1 and 32
    .venv/bin/python bench/adwin_speed.py --stream shifts --repeat 5

Ours is one ``update`` with the whole stream. Its speed depends on the stream: it screens most
values with cheap vectorised bounds, and pays per detection (a restart, the check times near the
cut that need the exact test, the rest of the chunk screened in vain), so streams with frequent
detections (``--delta 0.1``, about one per 10**4 values) are its slow case; river's cost per
value is flat, and lower when its window stays short.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from river import drift as river_drift

from streamwatch.detectors.adwin import ADWIN

drift: Any = river_drift  # river is untyped

STREAMS = ("null", "shifts", "bernoulli")


def make_stream(kind: str, n: int, seed: int) -> np.ndarray:
    """``null``: N(0, 1); ``shifts``: N(mu, 1) with mu redrawn every 50k; ``bernoulli``: 0.1 then 0.3."""
    rng = np.random.default_rng(seed)
    if kind == "null":
        return rng.normal(size=n)
    if kind == "shifts":
        mu = np.repeat(rng.normal(0.0, 0.5, -(-n // 50_000)), 50_000)[:n]
        return rng.normal(size=n) + mu
    rate = np.where(np.arange(n) < n // 2, 0.1, 0.3)
    return (rng.random(n) < rate).astype(np.float64)


def time_ours(x: np.ndarray, clock: int, delta: float) -> tuple[float, list[int]]:
    det = ADWIN(clock=clock, delta=delta)
    t = time.perf_counter()
    found = det.update(x)
    return time.perf_counter() - t, [d.at for d in found]


def time_river(values: list[float], clock: int, delta: float) -> tuple[float, list[int]]:
    det = drift.ADWIN(clock=clock, delta=delta)
    found: list[int] = []
    t = time.perf_counter()
    for i, v in enumerate(values):
        det.update(v)
        if det.drift_detected:
            found.append(i)
    return time.perf_counter() - t, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--stream", choices=STREAMS, default="null")
    ap.add_argument("--clock", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--delta", type=float, default=0.002)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    x = make_stream(args.stream, args.n, args.seed)
    values = x.tolist()
    ok = True
    print(f"stream={args.stream} n={args.n} delta={args.delta} best of {args.repeat}")
    print(f"{'clock':>5}  {'streamwatch values/s':>21}  {'river values/s':>15}  {'ratio':>6}  detections")
    for clock in args.clock:
        ours, theirs = float("inf"), float("inf")
        ours_found: list[int] = []
        river_found: list[int] = []
        for _ in range(args.repeat):
            dt, ours_found = time_ours(x, clock, args.delta)
            ours = min(ours, dt)
            dt, river_found = time_river(values, clock, args.delta)
            theirs = min(theirs, dt)
        same = ours_found == river_found
        ok &= same
        print(
            f"{clock:>5}  {args.n / ours:>21,.0f}  {args.n / theirs:>15,.0f}  {theirs / ours:>6.2f}  "
            f"{len(ours_found)} {'(same as river)' if same else f'DIFFER: river {river_found}'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
