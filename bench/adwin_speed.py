"""Values per second of streamwatch's batch ADWIN against river's ADWIN fed value by value.

Both run in this process, alternating, on the same stream; each timing is the best of
``--repeat`` runs of the process's CPU time (``--timer wall`` for elapsed time): the machine may
be shared, and CPU time varies less with the load (both are single-threaded). River's loop is
the usual ``update(x)``-then-``drift_detected`` one. The detections of the two are compared, and
the run fails if they differ.

    .venv/bin/python bench/adwin_speed.py                  # 10**6 values, every regime, clock 1 and 32
    .venv/bin/python bench/adwin_speed.py --regime frequent --repeat 5
    .venv/bin/python bench/adwin_speed.py --stream shifts --delta 0.01   # a custom regime

Regimes: ``quiet`` (N(0, 1) at the default delta: a few detections, long windows),
``frequent`` (N(0, 1) at ``delta=0.1``: a false alarm every 10**4 values or so) and
``changes`` (the mean jumps every 1 000 to 5 000 values, default delta: a detection per jump).

Ours is one ``update`` with the whole stream. Each window after a restart starts in river's
compiled core (``AdaptiveWindowing``, without river's Python frame per value) and moves to our
path at ``adwin._RUST_SWITCH`` values (``--switch``; 0: our path only). Our path screens the
(check time, bucket edge) pairs with vectorised bounds and pays per detection (a restart, the
exact test, the block screened past the cut), so frequent detections were its slow case, at
``clock=1`` most (every value is a check time); the table reports them next to the quiet one.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from river import drift as river_drift

from streamwatch.detectors import adwin
from streamwatch.detectors.adwin import ADWIN

drift: Any = river_drift  # river is untyped

STREAMS = ("null", "shifts", "jumps", "bernoulli")
REGIMES: dict[str, tuple[str, float]] = {  # name: (stream, delta)
    "quiet": ("null", 0.002),
    "frequent": ("null", 0.1),
    "changes": ("jumps", 0.002),
}


def make_stream(kind: str, n: int, seed: int) -> np.ndarray:
    """``null``: N(0, 1); ``shifts``: N(mu, 1) with mu redrawn every 50k; ``jumps``: N(mu, 1)
    with mu redrawn in [-2, 2] every 1 000 to 5 000 values; ``bernoulli``: 0.1 then 0.3."""
    rng = np.random.default_rng(seed)
    if kind == "null":
        return rng.normal(size=n)
    if kind == "shifts":
        mu = np.repeat(rng.normal(0.0, 0.5, -(-n // 50_000)), 50_000)[:n]
        return rng.normal(size=n) + mu
    if kind == "jumps":
        lengths = rng.integers(1_000, 5_000, n // 1_000 + 1)
        mu = np.repeat(rng.uniform(-2.0, 2.0, lengths.size), lengths)[:n]
        return rng.normal(size=n) + mu
    rate = np.where(np.arange(n) < n // 2, 0.1, 0.3)
    return (rng.random(n) < rate).astype(np.float64)


TIMERS = {"cpu": time.process_time, "wall": time.perf_counter}


def time_ours(x: np.ndarray, clock: int, delta: float, timer: str = "cpu") -> tuple[float, list[int]]:
    now = TIMERS[timer]
    det = ADWIN(clock=clock, delta=delta)
    t = now()
    found = det.update(x)
    return now() - t, [d.at for d in found]


def time_river(values: list[float], clock: int, delta: float, timer: str = "cpu") -> tuple[float, list[int]]:
    now = TIMERS[timer]
    det = drift.ADWIN(clock=clock, delta=delta)
    found: list[int] = []
    t = now()
    for i, v in enumerate(values):
        det.update(v)
        if det.drift_detected:
            found.append(i)
    return now() - t, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--regime", choices=REGIMES, nargs="+", default=list(REGIMES))
    ap.add_argument("--stream", choices=STREAMS, help="a custom regime instead (with --delta)")
    ap.add_argument("--delta", type=float, help="a custom regime instead (with --stream)")
    ap.add_argument("--clock", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timer", choices=TIMERS, default="cpu")
    ap.add_argument(
        "--switch", type=int, default=adwin._RUST_SWITCH, help="river's core per window (0: none)"
    )
    args = ap.parse_args(argv)
    adwin._RUST_SWITCH = args.switch

    if args.stream is not None or args.delta is not None:
        stream, delta = REGIMES["quiet"]
        regimes = {"custom": (args.stream or stream, delta if args.delta is None else args.delta)}
    else:
        regimes = {name: REGIMES[name] for name in args.regime}
    ok = True
    print(f"n={args.n} seed={args.seed} best of {args.repeat} ({args.timer} time), switch {args.switch}")
    print(
        f"{'regime':>8}  {'stream':>9}  {'delta':>6}  {'clock':>5}  {'streamwatch values/s':>21}  "
        f"{'river values/s':>15}  {'ratio':>6}  detections"
    )
    for name, (stream, delta) in regimes.items():
        x = make_stream(stream, args.n, args.seed)
        values = x.tolist()
        for clock in args.clock:
            ours, theirs = float("inf"), float("inf")
            ours_found: list[int] = []
            river_found: list[int] = []
            for _ in range(args.repeat):  # alternate, so both see the same load
                dt, ours_found = time_ours(x, clock, delta, args.timer)
                ours = min(ours, dt)
                dt, river_found = time_river(values, clock, delta, args.timer)
                theirs = min(theirs, dt)
            same = ours_found == river_found
            ok &= same
            print(
                f"{name:>8}  {stream:>9}  {delta:>6g}  {clock:>5}  {args.n / ours:>21,.0f}  "
                f"{args.n / theirs:>15,.0f}  {theirs / ours:>6.2f}  "
                f"{len(ours_found)} {'(same as river)' if same else f'DIFFER: river {river_found}'}",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
