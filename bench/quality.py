"""False alarms of the dev-prod and data-quality checks on clean streams, through ModelMonitor.

    .venv/bin/python bench/quality.py [--events 1000000] [--streams 50]

Runs ``streams`` clean streams (the product-like features of tests/unit/test_quality_watch.py:
six numeric, one categorical; warm-up reference of 1000 events) totalling ``events`` events and
counts alerts of the kinds unit_change, column_swap, new_category, data_quality and schema. Writes
bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_quality_watch import QUALITY_KINDS, _monitor, _run, _stream  # noqa: E402

KINDS = QUALITY_KINDS | {"schema"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=50)
    args = ap.parse_args()
    per = args.events // args.streams
    found: Counter[str] = Counter()
    evaluations = 0
    t0 = time.perf_counter()
    for seed in range(args.streams):
        m = _monitor()
        alerts = _run(m, _stream(None, n=per, seed=10_000 + seed), 2_000)
        found.update(f"{a.kind}/{a.detector}" for a in alerts if a.kind in KINDS and a.status == "firing")
        assert m.quality is not None
        evaluations += (per - m.settings.reference_size) // m.quality.settings.step
    out = {
        "events": per * args.streams,
        "streams": args.streams,
        "evaluations": evaluations,
        "features": 7,
        "false_alarms": dict(found),
        "false_alarms_total": sum(found.values()),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/quality.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
