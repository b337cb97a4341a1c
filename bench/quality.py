"""False alarms and CPU cost of the dev-prod and data-quality checks (QualityWatch).

    .venv/bin/python bench/quality.py [--events 1000000] [--streams 50]
    .venv/bin/python bench/quality.py --speed [--events 200000] [--batch 10000] [--repeat 3]

Default: runs ``streams`` clean streams (the product-like features of
tests/unit/test_quality_watch.py: six numeric, one categorical; warm-up reference of 1000 events)
totalling ``events`` events and counts alerts of the kinds unit_change, column_swap, new_category,
data_quality and schema. Writes bench/results/quality.json.

``--speed``: CPU seconds (``process_time``) spent in :meth:`QualityWatch.update` per event, on
bench/throughput.py's events (20 numeric + 2 categorical features) fed through a
:class:`ModelMonitor` in batches of ``batch``; the minimum over ``repeat`` passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from streamwatch.config import DriftSettings, FeatureType  # noqa: E402
from streamwatch.decode import PredictionGroup  # noqa: E402
from streamwatch.monitor import ModelMonitor  # noqa: E402
from streamwatch.quality.watch import QualityWatch  # noqa: E402
from tests.unit.test_quality_watch import QUALITY_KINDS, _monitor, _run, _stream  # noqa: E402

KINDS = QUALITY_KINDS | {"schema"}


def false_alarms(events: int, streams: int) -> None:
    per = events // streams
    found: Counter[str] = Counter()
    evaluations = 0
    t0 = time.perf_counter()
    for seed in range(streams):
        m = _monitor()
        alerts = _run(m, _stream(None, n=per, seed=10_000 + seed), 2_000)
        found.update(f"{a.kind}/{a.detector}" for a in alerts if a.kind in KINDS and a.status == "firing")
        assert m.quality is not None
        evaluations += (per - m.settings.reference_size) // m.quality.settings.step
    out = {
        "events": per * streams,
        "streams": streams,
        "evaluations": evaluations,
        "features": 7,
        "false_alarms": dict(found),
        "false_alarms_total": sum(found.values()),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/quality.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def _timed(counter: list[float]) -> Callable[..., Any]:
    """QualityWatch.update wrapped to add its CPU seconds to ``counter[0]``."""
    update = QualityWatch.update

    def wrapper(self: QualityWatch, *args: Any, **kwargs: Any) -> Any:
        t = time.process_time()
        try:
            return update(self, *args, **kwargs)
        finally:
            counter[0] += time.process_time() - t

    return wrapper


def speed(events: int, batch: int, repeat: int) -> None:
    from throughput import Generator, feature_config

    gen = Generator(events, 1, 0, 0.0, "q")
    feats = {k: FeatureType(v) for k, v in feature_config().items()}
    rows = [
        {**{f"x{j}": v for j, v in enumerate(r)}, "c0": f"k{a}", "c1": f"v{b}"}
        for r, a, b in zip(gen.x.tolist(), gen.c0.tolist(), gen.c1.tolist(), strict=True)
    ]
    groups = [
        PredictionGroup(
            "m",
            [f"e{i}" for i in range(s, min(events, s + batch))],
            [1_800_000_000_000 + i for i in range(s, min(events, s + batch))],
            ["1"] * len(rows[s : s + batch]),
            rows[s : s + batch],
            [{"label": "a"}] * len(rows[s : s + batch]),
        )
        for s in range(0, events, batch)
    ]
    original = QualityWatch.update
    best = float("inf")
    fed = 0
    try:
        for _ in range(repeat):
            spent = [0.0]
            QualityWatch.update = _timed(spent)  # type: ignore[method-assign]
            m = ModelMonitor("m", feats, DriftSettings())
            for g in groups:
                m.process(g)
            assert m.quality is not None
            fed = m.quality.position - m.settings.reference_size
            best = min(best, spent[0])
            print(f"  {spent[0] / fed * 1e6:.2f} us per event ({fed} events, {spent[0]:.3f} s)", flush=True)
    finally:
        QualityWatch.update = original  # type: ignore[method-assign]
    print(f"best: {best / fed * 1e6:.2f} us of QualityWatch.update CPU per event (batches of {batch})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--speed", action="store_true", help="time QualityWatch.update instead")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.speed:
        speed(args.events or 200_000, args.batch, args.repeat)
    else:
        false_alarms(args.events or 1_000_000, args.streams)


if __name__ == "__main__":
    main()
