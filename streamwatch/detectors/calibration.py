"""Thresholds from a target false-alarm rate, by simulating the detector on null streams.

A sequential detector's false-alarm rate is set by its threshold ``h``; what a user can reason
about is the average run length without change, ARL0 (events between false alarms, Alibi
Detect's ERT). :func:`calibrate_cusum` finds the ``h`` of a CUSUM bank whose ARL0 is the
target: it runs the bank without resets on many simulated null streams, each standardised
against its own simulated reference, reads off the first passage time of every candidate
threshold from the running maximum of the statistic (one simulation serves all thresholds),
estimates ARL(h) (see :func:`simulate_arl`), and interpolates ``log ARL`` linearly in ``h`` - the
exponential tail that renewal theory predicts for CUSUM - extrapolating from thresholds with
many alarms when the target lies beyond them.

A detector that keeps its reference (the monitor's) has that reference's own rate, and a fleet
of them shows the mean over references, ``E[rate]``. :func:`calibrate_fixed_cusum` targets that
mean. The rates of references have a heavy tail (a reference that sits a few standard errors off
the truth alarms orders of magnitude more often), and each one's alarms are rare, so both are
importance-sampled (:mod:`streamwatch.detectors.fixed_reference`).

Results are cached per (null distribution, bank, direction, target, reference size), in memory
and on disk, so a machine pays for each calibration once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.fixed_reference import (
    ReferenceModel,
    discrete_reference,
    normal_score_reference,
    simulate_fixed_rate,
)

FloatArray = npt.NDArray[np.float64]
CALIBRATION_VERSION = 5  # bump when the simulation changes, so cached thresholds are redone
Sampler = Callable[[np.random.Generator, tuple[int, int]], FloatArray]


def _running_max_no_reset(z: FloatArray, shifts: FloatArray, direction: str) -> FloatArray:
    """Running max over time of the bank's statistic without resets; ``z`` is (streams, time)."""
    best = np.full(z.shape, -np.inf)
    signs = {"up": (1.0,), "down": (-1.0,), "both": (1.0, -1.0)}[direction]
    for d in shifts.tolist():
        for sign in signs:
            c = np.cumsum(d * (sign * z - d / 2), axis=1)
            # Lindley: S_t = C_t - min(0, min_{s<=t} C_s)
            c -= np.minimum(np.minimum.accumulate(c, axis=1), 0.0)
            np.maximum(best, c, out=best)
    return np.maximum.accumulate(best, axis=1)


def simulate_arl(
    sampler: Sampler,
    shifts: Sequence[float],
    direction: str,
    thresholds: FloatArray,
    streams: int = 1600,
    length: int = 100_000,
    seed: int = 0,
    chunk: int = 20,
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """ARL estimate and alarm count for each threshold, from ``streams`` x ``length`` null values.

    1600 streams: the run length's spread over references has a heavy tail, and with 400 the
    threshold for ARL0 = 10^4 still moved by about 0.17 between seeds (+-15 % in the rate).

    Every row the sampler draws is standardised against its own freshly drawn reference, and
    its first passage is one renewal cycle of a detector that takes a new reference after each
    alarm (the default, ``rebaseline=True``). The long-run false-alarm rate is 1 / E[run
    length]. Run lengths mix references that alarm soon with ones that almost never do, so
    beyond the simulated ``length`` the survival is extrapolated with the hazard of the second
    half of the run (where the patient references dominate) instead of one exponential fitted
    to all: that estimator, exposure / alarms, undercounts the long tail and made thresholds for
    ARL0 = 10^5 about 15 % too conservative.
    """
    rng = np.random.default_rng(seed)
    d = np.asarray(shifts, dtype=np.float64)
    area = np.zeros(len(thresholds))  # sum of min(run length, length)
    alarms = np.zeros(len(thresholds), dtype=np.int64)
    late_alarms = np.zeros(len(thresholds))  # alarms in the second half
    late_exposure = np.zeros(len(thresholds))  # time at risk in the second half
    half = length // 2
    for start in range(0, streams, chunk):
        runmax = _running_max_no_reset(sampler(rng, (min(chunk, streams - start), length)), d, direction)
        for row in runmax:  # monotone: first passage of every threshold by one search
            first = np.searchsorted(row, thresholds, side="left") + 1
            crossed = first <= length
            area += np.minimum(first, length)
            alarms += crossed
            late_alarms += crossed & (first > half)
            late_exposure += np.clip(np.minimum(first, length) - half, 0, None)
    survivors = streams - alarms
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = late_alarms / late_exposure
        tail = np.where(survivors > 0, survivors / hazard, 0.0)
        arl = np.where(alarms > 0, (area + tail) / streams, np.inf)
    return np.nan_to_num(arl, nan=np.inf, posinf=np.inf), alarms


def threshold_for_arl(
    thresholds: FloatArray, arl: FloatArray, alarms: npt.NDArray[np.int64], target: float
) -> float:
    """Interpolate (or extrapolate) ``log ARL`` linearly in ``h`` to reach ``target``."""
    ok = alarms >= 30  # enough alarms for a stable estimate
    if ok.sum() < 3:
        raise ValueError("calibration saw too few alarms; widen the threshold grid downwards")
    # ARL grows with h; an estimate's noise must not make the interpolation go backwards
    h, la = thresholds[ok], np.maximum.accumulate(np.log(arl[ok]))
    if la[-1] >= math.log(target):  # target within the well-estimated range: interpolate
        return float(np.interp(math.log(target), la, h))
    # beyond it: fit the exponential tail on the upper half of the usable points
    top = slice(len(h) // 2, None)
    slope, intercept = np.polyfit(h[top], la[top], 1)
    return float((math.log(target) - intercept) / slope)


def _grid(arl0: float) -> FloatArray:
    return np.linspace(1.0, max(4.0, 1.5 * math.log(arl0)), 60)


def calibrate_cusum(
    sampler: Sampler, shifts: Sequence[float], direction: str, arl0: float, seed: int = 0
) -> float:
    """Threshold ``h`` (LLR units) at which the bank's ARL0 is ``arl0`` on the sampler's null,
    for a detector that takes a new reference after each alarm (see :func:`simulate_arl`)."""
    grid = _grid(arl0)
    arl, alarms = simulate_arl(sampler, shifts, direction, grid, seed=seed)
    return threshold_for_arl(grid, arl, alarms, arl0)


def calibrate_fixed_cusum(
    model: ReferenceModel,
    shifts: Sequence[float],
    direction: str,
    arl0: float,
    seed: int = 0,
    references: int = 1024,
) -> float:
    """Threshold ``h`` at which a fleet of detectors that keep their reference alarms once per
    ``arl0`` values on average (see :func:`simulate_fixed_rate`).

    References that happen to sit off the truth alarm far more often than the others, so this
    ``h`` is higher than the renewal one: with a 1 000-value reference of a 0/1 stream at
    p = 0.25, the renewal threshold gave 2.8 times the configured rate over many references.
    """
    grid = _grid(arl0)
    arl, alarms = simulate_fixed_rate(model, shifts, direction, grid, references=references, seed=seed)
    return threshold_for_arl(grid, arl, alarms, arl0)


_LOADED: dict[Path, dict[str, float]] = {}  # the cache file's entries, read once per process and path


def _read_cache(path: Path) -> dict[str, float]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    return cache if isinstance(cache, dict) else {}


def _disk_cached(key: str, compute: Callable[[], float]) -> float:
    """Calibrations take seconds; keep them across processes in ``$STREAMWATCH_CACHE_DIR``
    (default ``~/.cache/streamwatch``). A missing or unwritable cache only costs time.

    The file is read once per process (and again on a miss, for what other processes added),
    so a hit costs a dict look-up: window thresholds are looked up here on the hot path."""
    folder = Path(os.environ.get("STREAMWATCH_CACHE_DIR", Path.home() / ".cache" / "streamwatch"))
    path = folder / f"calibration-v{CALIBRATION_VERSION}.json"
    known = _LOADED.get(path)
    if known is None:
        known = _LOADED[path] = _read_cache(path)
    if key in known:
        return float(known[key])
    cache = _read_cache(path)
    known.update(cache)
    if key in cache:
        return float(cache[key])
    value = compute()
    known[key] = value
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cache[key] = value
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(path)
    except OSError:
        pass
    return value


FIXED_KEY = "|fixed-is3"  # cache-key suffix of fixed-reference thresholds; bump when their method changes


@lru_cache(maxsize=256)
def gaussian_threshold(
    shifts: tuple[float, ...],
    direction: str,
    arl0: float,
    reference_size: int,
    fixed_reference: bool = False,
) -> float:
    """Threshold for normal scores against a continuous reference of ``reference_size`` values.

    The simulation draws references too, so ``h`` accounts for the error of standardising
    against a finite reference (which otherwise inflates false alarms), not just for the noise
    of the stream itself: a new reference per stream for a detector that takes a new one after
    each alarm, or references drawn by importance sampling for a detector that keeps its
    reference (``fixed_reference``, see :func:`calibrate_fixed_cusum`).
    """
    n = reference_size
    table = normal_score_table(n)
    key = f"gaussian|{shifts}|{direction}|{arl0}|{n}"
    if fixed_reference:
        model = normal_score_reference(table[::2], min(shifts))
        return _disk_cached(key + FIXED_KEY, lambda: calibrate_fixed_cusum(model, shifts, direction, arl0))

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> FloatArray:
        z = np.empty(shape)
        for r in range(shape[0]):  # each row against its own reference
            z[r] = table[_ranks(np.sort(rng.random(n)), rng.random(shape[1])) * 2]
        return z

    return _disk_cached(key, lambda: calibrate_cusum(draw, shifts, direction, arl0))


@lru_cache(maxsize=1024)
def discrete_threshold(
    values: tuple[float, ...],
    probs: tuple[float, ...],
    shifts: tuple[float, ...],
    direction: str,
    arl0: float,
    reference_size: int,
    fixed_reference: bool = False,
) -> float:
    """Threshold for input taking ``values`` with ``probs``, standardised by the mean and standard
    deviation of a reference of ``reference_size`` values drawn from the same distribution (one
    per stream, or by importance sampling for a fixed reference, see :func:`discrete_reference`).

    (Drawing each stream's truth from the posterior of the reference counts instead was tried
    and measured worse: 1.13 x the configured rate at ARL0 = 10^5 against 0.95 x for this.)
    """
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(probs) / np.sum(probs)
    key = f"discrete|{values}|{probs}|{shifts}|{direction}|{arl0}|{reference_size}"
    if fixed_reference:
        model = discrete_reference(values, probs, reference_size)
        # with few atoms each reference costs less to simulate, and a 0/1 error stream's small
        # allowance (0.3 sd) makes its rate depend on the reference more steeply: twice the references
        return _disk_cached(
            key + FIXED_KEY,
            lambda: calibrate_fixed_cusum(model, shifts, direction, arl0, references=1536),
        )

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> FloatArray:
        x = v[rng.choice(len(v), size=shape, p=p)]
        ref = v[rng.choice(len(v), size=(shape[0], reference_size), p=p)]  # one per row
        scale = ref.std(axis=1, keepdims=True)
        z: FloatArray = (x - ref.mean(axis=1, keepdims=True)) / np.where(scale > 0, scale, 1.0)
        return z

    return _disk_cached(key, lambda: calibrate_cusum(draw, shifts, direction, arl0))


_BUCKETS = 1 << 18
_EDGES = np.arange(_BUCKETS) / _BUCKETS


def _ranks(ref: FloatArray, u: FloatArray) -> npt.NDArray[np.int64]:
    """``searchsorted(ref, u)`` for sorted ``ref`` in [0, 1) and many unsorted ``u``.

    Random look-ups into a sorted array miss the cache on every step; instead, start from the
    rank at the bucket that holds ``u`` (a look-up table) and step over the few reference
    points inside that bucket.
    """
    rank = np.searchsorted(ref, _EDGES)[(u * _BUCKETS).astype(np.int64)]
    padded = np.append(ref, 2.0)
    while True:
        ahead = u > padded[rank]
        if not ahead.any():
            return rank
        rank += ahead


@lru_cache(maxsize=64)
def normal_score_table(n: int) -> FloatArray:
    """Normal score of mid-rank ``k/2`` among ``n`` reference values: quantile (k+1) / (2(n+1))."""
    from statistics import NormalDist

    nd = NormalDist()
    return np.array([nd.inv_cdf((k + 1) / (2 * (n + 1))) for k in range(2 * n + 1)])
