"""Values per second of the vectorised histogram update: bin every value of a batch of events
(numeric and categorical features at once) and add the batch to the sliding window.

    python bench/histogram_speed.py [--events 2000] [--numeric 20] [--categorical 2] [--repeat 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streamwatch.sketches import BlockWindow, ReferenceBins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000, help="events per batch")
    ap.add_argument("--numeric", type=int, default=20)
    ap.add_argument("--categorical", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ref_x = rng.standard_normal((5000, args.numeric))
    ref_c = rng.integers(0, 8, size=(5000, args.categorical))
    bins = ReferenceBins.fit(ref_x, ref_c, bins=10, max_categories=20)
    window = BlockWindow(blocks=10, step=100, total_bins=bins.total)
    x = rng.standard_normal((args.events, args.numeric))
    x[rng.random(x.shape) < 0.01] = np.nan
    c = rng.integers(-1, 12, size=(args.events, args.categorical))
    times = np.arange(args.events, dtype=np.int64)
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        for _closed in window.add(bins.transform(x, c), times):
            pass
    secs = time.perf_counter() - t0
    features = args.numeric + args.categorical
    values = args.repeat * args.events * features
    print(
        f"{values / secs / 1e6:.1f} M values/s ({args.events} events x {features} features "
        f"per batch, {args.repeat} batches, {secs:.2f} s)"
    )


if __name__ == "__main__":
    main()
