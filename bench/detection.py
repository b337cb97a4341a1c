"""Detection-quality benchmark (protocol DQ-v1): delay, misses and false alarms at a declared
false-alarm budget, against river's detectors and an oracle CUSUM, in one run.

    python bench/detection.py            # full: 50 seeds, >= 10^6 null values per stream type
    python bench/detection.py --quick    # 20 seeds, smaller null streams, under a minute
    python bench/detection.py --fixed-reference [--quick]   # fleet rate of fixed-reference CUSUMs

Prints markdown tables and writes bench/results/detection.json (``--fixed-reference`` updates
only its ``fixed_reference`` entry).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import river
from river import drift

from streamwatch.detectors.calibration import threshold_for_arl
from streamwatch.detectors.cusum import CUSUM, CUSUMBank
from streamwatch.detectors.window import WindowTest

CHANGE_AT, LENGTH = 5000, 10_000
TARGET_ARL0 = 100_000  # 0.1 false alarms per 10 000 values
Stream = Callable[[np.random.Generator, int], np.ndarray]


def bernoulli(p0: float, p1: float, ramp: int = 0) -> Stream:
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        t = np.arange(n)
        p = np.where(t < CHANGE_AT, p0, p1)
        if ramp:
            p = np.where(
                (t >= CHANGE_AT) & (t < CHANGE_AT + ramp), p0 + (p1 - p0) * (t - CHANGE_AT) / ramp, p
            )
        return (rng.random(n) < p).astype(np.float64)

    return make


def gaussian(mu1: float, sd1: float = 1.0) -> Stream:
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.standard_normal(n)
        x[CHANGE_AT:] = x[CHANGE_AT:] * sd1 + mu1
        return x

    return make


STREAMS: dict[str, tuple[str, Stream, dict[str, float]]] = {
    "E1": ("Bernoulli error 0.1 -> 0.3", bernoulli(0.1, 0.3), {"p0": 0.1, "p1": 0.3}),
    "E2": ("Bernoulli error 0.1 -> 0.15", bernoulli(0.1, 0.15), {"p0": 0.1, "p1": 0.15}),
    "E3": (
        "Bernoulli error ramp 0.1 -> 0.3 over 2000",
        bernoulli(0.1, 0.3, ramp=2000),
        {"p0": 0.1, "p1": 0.3},
    ),
    "G1": ("N(0,1) -> N(0.5,1)", gaussian(0.5), {"mu1": 0.5, "sd1": 1.0}),
    "G2": ("N(0,1) -> N(0.25,1)", gaussian(0.25), {"mu1": 0.25, "sd1": 1.0}),
    "G3": ("N(0,1) -> N(0,1.5^2)", gaussian(0.0, 1.5), {"mu1": 0.0, "sd1": 1.5}),
}

# the one streamwatch configuration used for every stream: it knows the smallest shift worth
# catching (half a standard deviation, upwards: a rising error rate or score), never the true one
STREAMWATCH_CONFIG = {"min_shift": 0.5, "members": 1, "direction": "up", "arl0": TARGET_ARL0, "warmup": 1000}


# -- detectors under one interface: run(values) -> alarm positions ------------------------------


def run_streamwatch(x: np.ndarray) -> list[int]:
    return [d.at for d in CUSUM(**STREAMWATCH_CONFIG).update(x)]  # type: ignore[arg-type]


def run_river(make: Callable[[], Any]) -> Callable[[np.ndarray], list[int]]:
    def run(x: np.ndarray) -> list[int]:
        det = make()
        out = []
        for i, v in enumerate(x.tolist()):
            det.update(v)
            if det.drift_detected:
                out.append(i)
        return out

    return run


def oracle_llr(stream: str) -> Callable[[np.ndarray], np.ndarray]:
    params = STREAMS[stream][2]
    if "p0" in params:
        p0, p1 = params["p0"], params["p1"]
        up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
        return lambda x: np.where(x > 0.5, up, down)
    mu1, sd1 = params["mu1"], params["sd1"]
    return lambda x: -math.log(sd1) - (x - mu1) ** 2 / (2 * sd1**2) + x**2 / 2


def oracle_threshold(stream: str, null: Stream, arl0: float) -> float:
    """CUSUM on the exact log-likelihood ratio, threshold set by simulation for ``arl0``."""
    llr = oracle_llr(stream)
    rng = np.random.default_rng(123)
    grid = np.linspace(1.0, 1.5 * math.log(arl0), 60)
    rate_sum, alarms, groups = np.zeros(len(grid)), np.zeros(len(grid), dtype=np.int64), 0
    for _ in range(100):
        c = np.cumsum(llr(null(rng, 4 * 25_000).reshape(4, 25_000)), axis=1)
        s = np.maximum.accumulate(c - np.minimum(np.minimum.accumulate(c, axis=1), 0.0), axis=1)
        first = np.stack([np.searchsorted(row, grid) + 1 for row in s])
        crossed = first <= 25_000
        exposure = np.where(crossed, first, 25_000).sum(axis=0)
        rate_sum += crossed.sum(axis=0) / exposure
        alarms += crossed.sum(axis=0)
        groups += 1
    arl = np.where(rate_sum > 0, groups / np.maximum(rate_sum, 1e-300), np.inf)
    return threshold_for_arl(grid, arl, alarms, arl0)


def run_oracle(stream: str, h: float) -> Callable[[np.ndarray], list[int]]:
    llr = oracle_llr(stream)

    def run(x: np.ndarray) -> list[int]:
        out, s = [], 0.0
        for i, v in enumerate(llr(x).tolist()):
            s = max(0.0, s + v)
            if s > h:
                out.append(i)
                s = 0.0
        return out

    return run


# -- measurement --------------------------------------------------------------------------------


def change_runs(stream: Stream, run: Callable[[np.ndarray], list[int]], seeds: int) -> dict[str, Any]:
    delays, missed, early = [], 0, 0
    for seed in range(seeds):
        alarms = run(stream(np.random.default_rng(seed), LENGTH))
        early += sum(1 for a in alarms if a < CHANGE_AT)
        after = [a for a in alarms if a >= CHANGE_AT]
        if after:
            delays.append(after[0] - CHANGE_AT)
        else:
            missed += 1
    d = np.asarray(delays, dtype=np.float64)
    return {
        "mean_delay": round(float(d.mean()), 1) if d.size else None,
        "median_delay": float(np.median(d)) if d.size else None,
        "p90_delay": float(np.percentile(d, 90)) if d.size else None,
        "missed": missed,
        "seeds": seeds,
        "false_alarms_before_change_per_10k": round(early / (seeds * CHANGE_AT) * 1e4, 3),
    }


def null_runs(
    null: Stream, run: Callable[[np.ndarray], list[int]], streams: int, length: int
) -> dict[str, Any]:
    alarms = 0
    for seed in range(streams):
        alarms += len(run(null(np.random.default_rng(10_000 + seed), length)))
    total = streams * length
    return {
        "null_values": total,
        "null_alarms": alarms,
        "false_alarms_per_10k": round(alarms / total * 1e4, 4),
    }


def null_of(stream: str) -> Stream:
    params = STREAMS[stream][2]
    if "p0" in params:
        p0 = params["p0"]
        return lambda rng, n: (rng.random(n) < p0).astype(np.float64)
    return lambda rng, n: rng.standard_normal(n)


def window_tests(quick: bool) -> list[dict[str, Any]]:
    """Null alarm rate and power of calibrated window tests against a 5 000-value reference."""
    rng = np.random.default_rng(7)
    reps = 200 if quick else 1000
    ref_values = rng.standard_normal(5000)
    edges = np.quantile(ref_values, np.linspace(0, 1, 11)[1:-1])
    ref_counts = np.bincount(np.searchsorted(edges, ref_values), minlength=10)
    rows = []
    for stat in ("psi", "js", "ks", "wasserstein"):
        for floor in (True, False):
            test = WindowTest(ref_counts, stat, alpha=0.01, min_effect=None if floor else 0.0)
            for n, shift in [
                (100, 0),
                (500, 0),
                (1000, 0),
                (5000, 0),
                (20000, 0),
                (100, 0.5),
                (500, 0.5),
                (1000, 0.5),
                (500, 0.25),
                (1000, 0.25),
                (5000, 0.25),
                (20000, 0.05),
            ]:
                hits = 0
                for _ in range(reps):
                    w = rng.standard_normal(n) + shift
                    hits += test.test(np.bincount(np.searchsorted(edges, w), minlength=10)).alarm
                rows.append(
                    {
                        "statistic": stat,
                        "effect_floor": test.min_effect,
                        "n": n,
                        "shift_sd": shift,
                        "alarm_rate": round(hits / reps, 4),
                        "repetitions": reps,
                    }
                )
    return rows


def monitor_false_alerts(quick: bool) -> dict[str, Any]:
    """False drift alerts of a whole ModelMonitor (4 numeric + 1 categorical feature, window
    tests and CUSUMs, default settings) on null streams, against its per-model budget."""
    from streamwatch.config import DriftSettings, FeatureType
    from streamwatch.decode import PredictionGroup
    from streamwatch.monitor import ModelMonitor

    streams, length, batch = (4, 25_000, 2000) if quick else (100, 50_000, 2000)
    settings = DriftSettings()
    names = ["a", "b", "c", "d"]
    feats = {n: FeatureType.NUMERIC for n in names} | {"k": FeatureType.CATEGORICAL}
    alerts = monitored = 0
    for seed in range(streams):
        rng = np.random.default_rng(90_000 + seed)
        x = rng.standard_normal((length, 4))
        cats = rng.choice(np.array(["DE", "FR", "NL", "IT"]), size=length, p=[0.4, 0.3, 0.2, 0.1])
        m = ModelMonitor("m", feats, settings)
        for lo in range(0, length, batch):
            g = PredictionGroup("m")
            rows = x[lo : lo + batch].tolist()
            g.event_ids = [str(i) for i in range(lo, lo + len(rows))]
            g.times_ms = list(range(lo, lo + len(rows)))
            g.versions = [None] * len(rows)
            g.features = [
                dict(zip(names, r, strict=True), k=c)
                for r, c in zip(rows, cats[lo : lo + batch].tolist(), strict=True)
            ]
            g.predictions = [{"label": "x"}] * len(rows)
            alerts += sum(1 for a in m.process(g) if a.status == "firing")
        monitored += length - settings.reference_size
    return {
        "streams": streams,
        "events_monitored": monitored,
        "false_alerts": alerts,
        "configured_per_10k": round(1e4 / settings.false_alarm_events, 4),
        "achieved_per_10k": round(alerts / monitored * 1e4, 4),
    }


def attach_configured_vs_achieved(results: dict[str, Any], calibration: list[dict[str, Any]]) -> None:
    """Give each stream's streamwatch row the configured rate and the long-run achieved rate of
    its family (Bernoulli for E*, Gaussian for G*), measured on the long null streams."""
    for sid, stream in results.items():
        family = "Bernoulli(0.1)" if sid.startswith("E") else "N(0,1)"
        row = next(
            c
            for c in calibration
            if c["null"] == family
            and c["configured_arl0"]
            == max(c2["configured_arl0"] for c2 in calibration if c2["null"] == family)
        )
        stream["detectors"]["streamwatch CUSUM"].update(
            configured_false_alarms_per_10k=row["configured_per_10k"],
            achieved_false_alarms_per_10k_long_run=row["achieved_per_10k"],
        )


# -- fixed references: the fleet's false-alarm rate -----------------------------------------------
#
# A CUSUM that keeps its reference (the monitor's, rebaseline=False) has that reference's own
# rate; a fleet of them shows the mean over references, which is what the calibration targets.
# The rates of references have a heavy tail, so the mean needs many references. Measured here
# with the production detectors (CUSUMBank, one column per reference):
# * continuous references: plain Monte Carlo over references drawn from N(0, 1);
# * 0/1 references: a reference acts only through its count of ones k, so the mean is exactly
#   sum_k Binomial(k; n, p) rate(k), with rate(k) measured on a long null stream per k.

FIXED_CASES: list[dict[str, Any]] = [
    {"case": "normal scores, two-sided, 0.5 sd", "p": None, "min_shift": 0.5, "direction": "both"},
    {"case": "0/1 p = 0.25, up, 0.5 sd", "p": 0.25, "min_shift": 0.5, "direction": "up"},
]
CONCEPT_CASE = {
    "case": "0/1 p = 0.27, up, 0.3 sd (concept drift)",
    "p": 0.27,
    "min_shift": 0.3,
    "direction": "up",
}


def _bank_alarms(cusums: list[CUSUM], draw: Callable[[int], np.ndarray], length: int) -> np.ndarray:
    """Alarms per CUSUM over ``length`` null rows fed in batches (one column per CUSUM)."""
    bank, alarms = CUSUMBank(cusums), np.zeros(len(cusums), dtype=np.int64)
    for lo in range(0, length, 4096):
        found = bank.update(draw(min(4096, length - lo)))
        alarms += [len(f) for f in found]
    return alarms


def fixed_reference_rate(
    case: dict[str, Any], arl0: float, references: int, length: int, n: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Achieved / configured false-alarm rate over references of ``n`` values, with its standard error."""
    rng = np.random.default_rng(seed)
    kw = {"min_shift": case["min_shift"], "direction": case["direction"], "arl0": arl0, "rebaseline": False}
    p = case["p"]
    if p is None:
        rates, values = [], 0
        for lo in range(0, references, 500):
            cols = min(500, references - lo)
            cusums = [CUSUM(reference=rng.standard_normal(n), **kw) for _ in range(cols)]
            thresholds = {c.threshold for c in cusums}
            draw = partial(lambda r, c: rng.standard_normal((r, c)), c=cols)
            rates += (_bank_alarms(cusums, draw, length) / length).tolist()
            values += cols * length
        r = np.asarray(rates)
        mean, se = float(r.mean()), float(r.std(ddof=1) / math.sqrt(len(r)))
        how = f"{references} references x {length:,} values"
    else:
        from scipy.stats import binom

        sd = math.sqrt(n * p * (1 - p))
        # references off the truth in the alarming direction dominate; the other side adds nothing
        below, above = {"up": (6, 3), "down": (3, 6), "both": (6, 6)}[case["direction"]]
        ks = np.arange(max(1, math.floor(n * p - below * sd)), min(n - 1, math.ceil(n * p + above * sd)) + 1)
        weight = binom.pmf(ks, n, p)
        cusums = [CUSUM(reference=np.r_[np.ones(k), np.zeros(n - k)], **kw) for k in ks.tolist()]
        thresholds = {c.threshold for c in cusums}
        alarms = _bank_alarms(cusums, lambda r: (rng.random((r, len(ks))) < p).astype(np.float64), length)
        mean = float(weight @ alarms / length)
        se = float(np.sqrt(weight**2 @ alarms) / length)  # Poisson counts
        values = len(ks) * length
        how = f"k = {ks[0]}..{ks[-1]} ones (mass {weight.sum():.6f}) x {length:,} values"
    return {
        "case": case["case"],
        "configured_arl0": arl0,
        "achieved_over_configured": round(mean * arl0, 3),
        "standard_error": round(se * arl0, 3),
        "values": values,
        "sampling": how,
        "thresholds": sorted(round(t, 3) for t in thresholds)[:3] + (["..."] if len(thresholds) > 3 else []),
    }


def fixed_reference_table(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for case in FIXED_CASES:
        for arl0 in (2000.0, 100_000.0):
            continuous = case["p"] is None
            if continuous:
                refs, length = (
                    (400, 20_000) if quick else ((2000, 20_000) if arl0 < 10_000 else (6000, 20_000))
                )
            else:
                refs, length = 0, (50_000 if quick else (200_000 if arl0 < 10_000 else 1_000_000))
            rows.append(fixed_reference_rate(case, arl0, refs, length))
            print(rows[-1], flush=True)
    if not quick:
        rows.append(fixed_reference_rate(CONCEPT_CASE, 900_000.0, 0, 2_000_000))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 seeds and smaller null streams (< 1 min)")
    ap.add_argument(
        "--fixed-reference",
        action="store_true",
        help="only the fleet false-alarm rate of fixed-reference CUSUMs (updates its entry of --out)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detection.json")
    args = ap.parse_args()
    if args.fixed_reference:
        t0 = time.time()
        rows = fixed_reference_table(args.quick)
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        old["fixed_reference"] = {"quick": args.quick, "rows": rows, "seconds": round(time.time() - t0, 1)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(old, indent=2) + "\n")
        print_fixed(rows)
        return
    seeds = 20 if args.quick else 50
    # long null streams: the long-run rate (short ones over-count after a restart)
    null_streams, null_len = (1, 200_000) if args.quick else (2, 500_000)
    t0 = time.time()

    baselines: dict[str, Callable[[str], Callable[[np.ndarray], list[int]]]] = {
        "streamwatch CUSUM": lambda s: run_streamwatch,
        "river ADWIN (default)": lambda s: run_river(drift.ADWIN),
        "river ADWIN (clock=1)": lambda s: run_river(lambda: drift.ADWIN(clock=1)),
        "river ADWIN (clock=1, delta=0.1)": lambda s: run_river(lambda: drift.ADWIN(clock=1, delta=0.1)),
        "river PageHinkley (default)": lambda s: run_river(drift.PageHinkley),
    }
    results: dict[str, Any] = {}
    for sid, (desc, stream, _) in STREAMS.items():
        h = oracle_threshold(sid, null_of(sid), TARGET_ARL0)
        runners = {name: make(sid) for name, make in baselines.items()}
        runners["oracle CUSUM (knows both distributions)"] = run_oracle(sid, h)
        per: dict[str, Any] = {}
        for name, run in runners.items():
            row = change_runs(stream, run, seeds)
            if sid in ("E1", "G1"):  # one null stream per family
                row.update(null_runs(null_of(sid), run, null_streams, null_len))
            per[name] = row
        results[sid] = {"stream": desc, "change_at": CHANGE_AT, "length": LENGTH, "detectors": per}

    # achieved vs configured false-alarm rate of the streamwatch detector: the long-run rate, so
    # long null streams (short ones over-count: a cycle cut off by the end of a stream never
    # counts, and run lengths vary a lot between references)
    calibration = []
    for arl0 in (10_000,) if args.quick else (10_000, TARGET_ARL0):
        for family, sid in (("Bernoulli(0.1)", "E1"), ("N(0,1)", "G1")):
            cfg = {**STREAMWATCH_CONFIG, "arl0": arl0}
            n_streams = 4 if args.quick else (20 if arl0 <= 10_000 else 40)
            n_len = 500_000
            alarms = monitored = 0
            for seed in range(n_streams):
                det = CUSUM(**cfg)  # type: ignore[arg-type]
                x = null_of(sid)(np.random.default_rng(50_000 + seed), n_len)
                found = len(det.update(x))
                alarms += found
                # after each alarm the next warm-up values form a new reference: not monitored
                monitored += n_len - cfg["warmup"] * (1 + found)
            calibration.append(
                {
                    "null": family,
                    "configured_arl0": arl0,
                    "configured_per_10k": 1e4 / arl0,
                    "values": monitored,
                    "alarms": alarms,
                    "achieved_per_10k": round(alarms / monitored * 1e4, 4),
                    "achieved_over_configured": round(alarms / monitored * arl0, 3),
                    "poisson_sd_of_ratio": round(1 / math.sqrt(max(alarms, 1)), 3),
                }
            )
    attach_configured_vs_achieved(results, calibration)
    monitor = monitor_false_alerts(args.quick)
    windows = window_tests(args.quick)
    out = {
        "protocol": "DQ-v1 (shared/research/detection.md)",
        "quick": args.quick,
        "streamwatch_config": STREAMWATCH_CONFIG,
        "target_false_alarms_per_10k": 1e4 / TARGET_ARL0,
        "streams": results,
        "calibration": calibration,
        "monitor_null": monitor,
        "window_tests": windows,
        "river": river.__version__,
        "python": platform.python_version(),
        "seconds": round(time.time() - t0, 1),
    }
    if args.out.exists():  # keep the slow --fixed-reference measurement
        kept = json.loads(args.out.read_text()).get("fixed_reference")
        if kept is not None:
            out["fixed_reference"] = kept
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print_tables(out)


def print_fixed(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| fixed reference (1 000 values) | ARL0 | achieved / configured (± se) | thresholds | sampling |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['configured_arl0']:g} | {r['achieved_over_configured']} ± "
            f"{r['standard_error']} | {r['thresholds']} | {r['sampling']} |"
        )


def print_tables(out: dict[str, Any]) -> None:
    seeds = out["streams"]["E1"]["detectors"]["streamwatch CUSUM"]["seeds"]
    print(f"## Change streams (change at {CHANGE_AT}, {seeds} seeds)\n")
    print("| stream | detector | mean / median / p90 delay | missed | FA/10k before change | null FA/10k |")
    print("|---|---|---|---|---|---|")
    for sid, s in out["streams"].items():
        for name, r in s["detectors"].items():
            null = r.get("false_alarms_per_10k", "")
            print(
                f"| {sid} | {name} | {r['mean_delay']} / {r['median_delay']} / {r['p90_delay']} | "
                f"{r['missed']} | {r['false_alarms_before_change_per_10k']} | {null} |"
            )
    print("\n## streamwatch CUSUM: configured vs achieved false alarms (null streams)\n")
    print("| null | configured /10k | achieved /10k | alarms | values | achieved/configured |")
    print("|---|---|---|---|---|---|")
    for c in out["calibration"]:
        print(
            f"| {c['null']} | {c['configured_per_10k']} | {c['achieved_per_10k']} | {c['alarms']} | "
            f"{c['values']:,} | {c['achieved_over_configured']} |"
        )
    mon = out["monitor_null"]
    print("\n## Whole monitor on null streams (4 numeric + 1 categorical feature, default settings)\n")
    print(
        f"{mon['false_alerts']} false drift alerts in {mon['events_monitored']:,} monitored events: "
        f"{mon['achieved_per_10k']} per 10k against a budget of {mon['configured_per_10k']}"
    )
    print("\n## Window tests (reference 5 000 values, 10 quantile bins, alpha 0.01)\n")
    print("| statistic | effect floor | n | shift (sd) | alarm rate |")
    print("|---|---|---|---|---|")
    for w in out["window_tests"]:
        print(f"| {w['statistic']} | {w['effect_floor']} | {w['n']} | {w['shift_sd']} | {w['alarm_rate']} |")
    print(f"\n{out['seconds']} s")


if __name__ == "__main__":
    main()
