"""Two-sample tests of a window histogram against the reference, calibrated per window size.

Fixed distance thresholds depend on the sample size in both directions: with 100 events and no
change at all, ``PSI > 0.2`` fires 42% of the time, while with 20 000 events a test of "any
difference" flags shifts nobody cares about. Here a window alarms only when its statistic is both

* beyond the ``1 - alpha`` quantile of the statistic's null distribution for a window of that
  size against a reference of that size - found by parametric bootstrap, drawing both histograms
  from the reference's bin proportions - so the per-test false-alarm rate is ``alpha`` at every
  window size; and
* at least ``min_effect``, the smallest change worth an alert, in the statistic's own units.

Statistics (all on the reference's bins): ``psi``; ``js`` (Jensen-Shannon distance, base 2);
``ks`` (the largest gap between the two binned CDFs); ``wasserstein`` (W1 between the binned
distributions in reference-quantile space: for equal-mass bins, 0.1 is a tenth of the
reference's probability mass moved across the whole range); ``chi2`` (Pearson's statistic of the
2 x bins table; its effect size is Cramér's V). Numeric features suit all five; for categories
the order of bins means nothing, so use ``psi``, ``js`` or ``chi2``.

References
----------
Rabanser, S., Günnemann, S., Lipton, Z. (2019). Failing loudly: an empirical study of methods
for detecting dataset shift. NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.calibration import _disk_cached
from streamwatch.detectors.psi import EPS

FloatArray = npt.NDArray[np.float64]
STATISTICS = ("psi", "js", "ks", "wasserstein", "chi2")
DEFAULT_MIN_EFFECT = {"psi": 0.1, "js": 0.1, "ks": 0.1, "wasserstein": 0.05, "chi2": 0.1}
WINDOW_NULL_VERSION = 1  # bump when the bootstrap of null_quantile changes


def statistic(name: str, reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """The named statistic for each row pair of counts; ``chi2`` returns Cramér's V.

    Examples
    --------
    >>> float(statistic("ks", [50, 50], [20, 80]).round(3))
    0.3
    >>> float(statistic("js", [10, 0], [0, 10]).round(3))
    1.0
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    n_ref = ref.sum(axis=-1, keepdims=True)
    n_cur = cur.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p, q = ref / n_ref, cur / n_cur
        if name == "psi":
            pe, qe = np.maximum(p, EPS), np.maximum(q, EPS)
            out = ((qe - pe) * np.log(qe / pe)).sum(axis=-1)
        elif name == "js":
            m = (p + q) / 2
            kl = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1) + np.where(
                q > 0, q * np.log2(q / m), 0.0
            ).sum(axis=-1)
            out = np.sqrt(np.maximum(kl / 2, 0.0))
        elif name == "ks":
            out = np.abs(np.cumsum(p - q, axis=-1)).max(axis=-1)
        elif name == "wasserstein":
            out = np.abs(np.cumsum(p - q, axis=-1))[..., :-1].sum(axis=-1) / p.shape[-1]
        elif name == "chi2":
            total = n_ref + n_cur
            col = ref + cur
            e_ref, e_cur = n_ref * col / total, n_cur * col / total
            chi = np.where(col > 0, (ref - e_ref) ** 2 / e_ref + (cur - e_cur) ** 2 / e_cur, 0.0).sum(axis=-1)
            k = np.maximum((col > 0).sum(axis=-1) - 1, 1)
            out = np.sqrt(chi / (total[..., 0] * k))  # Cramér's V of the 2 x k table
        else:
            raise ValueError(f"unknown statistic {name!r}; choose one of {', '.join(STATISTICS)}")
    result: FloatArray = np.where((n_ref[..., 0] > 0) & (n_cur[..., 0] > 0), out, np.nan)
    return result


@lru_cache(maxsize=4096)
def null_quantile(
    name: str,
    proportions: tuple[float, ...],
    n_reference: int,
    n_window: int,
    alpha: float,
    draws: int,
    seed: int,
) -> float:
    """``1 - alpha`` quantile of the statistic when both histograms come from ``proportions``.

    Where ``draws`` put at least 20 values beyond the quantile it is read off the bootstrap
    directly. Further out (small ``alpha``, as a false-alarm budget shared by many features gives)
    the tail is extrapolated: the squared distances behave like a scaled chi-square (each is a
    quadratic form of the bin proportions' errors, asymptotically), so a ``c * chi2(nu)`` matched to
    the bootstrap's mean and variance (Satterthwaite) gives the quantile.

    The bootstrap is deterministic in its arguments, so its result is kept in the calibration
    cache on disk (keyed by all of them) as well as in memory: a new process does not redo it.
    """
    args = (name, proportions, n_reference, n_window, alpha, draws, seed)
    key = f"window-v{WINDOW_NULL_VERSION}|" + "|".join(map(repr, args))
    return _disk_cached(key, lambda: _bootstrap_quantile(*args))


def _bootstrap_quantile(
    name: str,
    proportions: tuple[float, ...],
    n_reference: int,
    n_window: int,
    alpha: float,
    draws: int,
    seed: int,
) -> float:
    rng = np.random.default_rng(seed)
    p = np.asarray(proportions, dtype=np.float64)
    p = p / p.sum()
    values = statistic(
        name, rng.multinomial(n_reference, p, size=draws), rng.multinomial(n_window, p, size=draws)
    )
    values = values[np.isfinite(values)]
    if alpha * len(values) >= 20:
        return float(np.quantile(values, 1 - alpha))
    squared = name != "psi"  # psi is already quadratic; the others are roots of quadratic forms
    v = values**2 if squared else values
    mean, var = float(v.mean()), float(v.var())
    if mean <= 0 or var <= 0:
        return float(values.max())
    nu, c = 2 * mean**2 / var, var / (2 * mean)
    q = c * _chi2_quantile(1 - alpha, nu)
    return float(np.sqrt(q) if squared else q)


def _chi2_quantile(prob: float, nu: float) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (a few % at nu >= 2)."""
    z = NormalDist().inv_cdf(prob)
    h = 2 / (9 * nu)
    return float(nu * max(0.0, 1 - h + z * math.sqrt(h)) ** 3)


@dataclass(frozen=True, slots=True)
class WindowResult:
    statistic: float
    threshold: float  # max(null quantile, min_effect)
    null_quantile: float
    alarm: bool


class WindowTest:
    """Calibrated two-sample test of windows against one reference histogram.

    Parameters
    ----------
    reference
        Reference counts per bin.
    statistic
        One of ``psi``, ``js``, ``ks``, ``wasserstein``, ``chi2``.
    alpha
        False-alarm probability per test (split it across features and tests upstream).
    min_effect
        Effect-size floor in the statistic's units (Cramér's V for ``chi2``); 0 turns it off.
    draws
        Bootstrap draws per window size; the quantile's own error shrinks with it.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.full(10, 500)                     # 5 000 reference values in 10 equal-mass bins
    >>> test = WindowTest(ref, "psi", alpha=0.01, min_effect=0.1)
    >>> test.test(np.array([10] * 10)).alarm       # 100 values, no change
    False
    >>> test.test(np.array([2, 3, 4, 6, 8, 10, 12, 15, 18, 22])).alarm
    True
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        statistic: str = "psi",
        alpha: float = 0.01,
        min_effect: float | None = None,
        draws: int = 4000,
        seed: int = 0,
    ) -> None:
        if statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        self.reference = np.asarray(reference, dtype=np.int64)
        self.statistic = statistic
        self.alpha = alpha
        self.min_effect = DEFAULT_MIN_EFFECT[statistic] if min_effect is None else min_effect
        self.draws = draws
        self.seed = seed
        n = int(self.reference.sum())
        # proportions on a 10 % geometric grid: references with similar proportions (such as
        # every numeric feature's equal-mass bins) share one calibration
        self._props = calibration_key(self.reference / max(n, 1))

    def null_quantile(self, n_window: int) -> float:
        return null_quantile(
            self.statistic,
            self._props,
            int(self.reference.sum()),
            int(n_window),
            self.alpha,
            self.draws,
            self.seed,
        )

    def test(self, window: npt.ArrayLike) -> WindowResult:
        counts = np.asarray(window, dtype=np.int64)
        n = int(counts.sum())
        value = float(statistic(self.statistic, self.reference, counts))
        if n == 0:
            return WindowResult(value, float("nan"), float("nan"), False)
        q = self.null_quantile(n)
        threshold = max(q, self.min_effect)
        return WindowResult(value, threshold, q, bool(value > threshold))


class FeatureWindowTests:
    """:class:`WindowTest` for every feature of a model at once, over a flat bin layout.

    ``sizes`` gives each feature's number of bins (features lie side by side in the flat
    counts); ``statistics`` its statistic. Statistics are computed per run of features with equal
    bin counts in one vectorised call; thresholds are cached per feature and window count.
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        sizes: npt.ArrayLike,
        statistics: Sequence[str],
        alpha: float,
        min_effect: Mapping[str, float] | None = None,
        draws: int | None = None,
    ) -> None:
        ref = np.asarray(reference, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        floors = {**DEFAULT_MIN_EFFECT, **(min_effect or {})}
        # up to 20 000 draws; beyond that the tail is extrapolated (see null_quantile)
        n_draws = draws or int(min(20_000, max(4000, 20 / alpha)))
        self.tests = [
            WindowTest(ref[o : o + k], stat, alpha=alpha, min_effect=floors[stat], draws=n_draws)
            for o, k, stat in zip(self.offsets.tolist(), self.sizes.tolist(), statistics, strict=True)
        ]
        self.statistics = list(statistics)
        groups: list[tuple[int, int, str]] = []  # (first feature, end feature, statistic) of equal size
        for j, (k, stat) in enumerate(zip(self.sizes.tolist(), statistics, strict=True)):
            if groups and groups[-1][1] == j and groups[-1][2] == stat and self.sizes[groups[-1][0]] == k:
                groups[-1] = (groups[-1][0], j + 1, stat)
            else:
                groups.append((j, j + 1, stat))
        self._groups = groups
        self._ref = ref
        self._cache: list[dict[int, float]] = [{} for _ in self.tests]

    def values(self, counts: npt.ArrayLike) -> FloatArray:
        """Statistic per feature for flat counts (NaN where a feature has no values); counts of
        shape ``(..., total_bins)`` give statistics of shape ``(..., features)``."""
        flat = np.asarray(counts, dtype=np.int64)
        lead = flat.shape[:-1]
        stats = np.full((*lead, len(self.tests)), np.nan)
        for f0, f1, stat in self._groups:
            k = int(self.sizes[f0])
            lo, hi = int(self.offsets[f0]), int(self.offsets[f0]) + (f1 - f0) * k
            current = flat[..., lo:hi].reshape(*lead, f1 - f0, k)
            stats[..., f0:f1] = statistic(stat, self._ref[lo:hi].reshape(-1, k), current)
        return stats

    def evaluate(self, window: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Statistic and threshold per feature for flat window counts (NaN: no values); a
        ``(windows, total_bins)`` array gives one row of each per window.

        Thresholds are computed for the window's count rounded down (:func:`count_key`), so
        that missing values do not make every window a new size.
        """
        counts = np.asarray(window, dtype=np.int64)
        stats = self.values(counts)
        if counts.shape[-1] == 0:
            return stats, np.full(stats.shape, np.nan)
        per_feature = np.add.reduceat(counts.reshape(-1, counts.shape[-1]), self.offsets, axis=1)
        # windows of one batch mostly hold the same count per feature: look each up once
        rows = list(map(tuple, per_feature.tolist()))
        known = {row: self._thresholds(row) for row in dict.fromkeys(rows)}
        thresholds = np.array([known[row] for row in rows], dtype=np.float64).reshape(stats.shape)
        return stats, thresholds

    def _thresholds(self, per_feature: tuple[int, ...]) -> FloatArray:
        thresholds = np.full(len(self.tests), np.nan)
        for j, n in enumerate(per_feature):
            if n > 0:
                n_key = count_key(n)
                cached = self._cache[j].get(n_key)
                if cached is None:
                    test = self.tests[j]
                    cached = self._cache[j][n_key] = max(test.null_quantile(n_key), test.min_effect)
                thresholds[j] = cached
        return thresholds


def calibration_key(proportions: npt.ArrayLike) -> tuple[float, ...]:
    """Proportions rounded to a 10 % geometric grid (0 stays 0), so that references with similar
    proportions share one cached calibration.

    >>> calibration_key([0.1, 0.9, 0.0])
    (0.1015, 0.9091, 0.0)
    """
    return tuple(
        0.0 if v == 0 else float(f"{1.1 ** round(math.log(v, 1.1)):.4g}")
        for v in np.asarray(proportions, dtype=np.float64).tolist()
    )


def round_down(n: int, digits: int = 2) -> int:
    """``n`` rounded down to ``digits`` significant digits: 987 -> 980, 20345 -> 20000.

    >>> round_down(987), round_down(20345), round_down(7)
    (980, 20000, 7)
    """
    scale = int(10 ** max(len(str(int(n))) - digits, 0))
    return max(1, int(n) // scale * scale)


def count_key(n: int) -> int:
    """A window count rounded down to a geometric grid of ratio 1.05, so that windows whose
    counts differ by missing values share one threshold (a slightly conservative one).

    >>> count_key(1000), count_key(987), count_key(905), count_key(7)
    (1000, 972, 881, 7)
    """
    if n < 20 or n == round_down(n, 1):  # small counts and round sizes (the configured window) as they are
        return max(1, int(n))
    k = math.floor(math.log(n) / math.log(1.05) + 1e-9)
    key = math.floor(1.05**k + 1e-6)
    return key if key <= n else math.floor(1.05 ** (k - 1) + 1e-6)
