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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.psi import EPS

FloatArray = npt.NDArray[np.float64]
STATISTICS = ("psi", "js", "ks", "wasserstein", "chi2")
DEFAULT_MIN_EFFECT = {"psi": 0.1, "js": 0.1, "ks": 0.1, "wasserstein": 0.05, "chi2": 0.1}


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
    """``1 - alpha`` quantile of the statistic when both histograms come from ``proportions``."""
    rng = np.random.default_rng(seed)
    p = np.asarray(proportions, dtype=np.float64)
    p = p / p.sum()
    ref = rng.multinomial(n_reference, p, size=draws)
    cur = rng.multinomial(n_window, p, size=draws)
    values = statistic(name, ref, cur)
    return float(np.quantile(values[np.isfinite(values)], 1 - alpha))


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
        # two significant digits: references with similar proportions share a calibration
        self._props = tuple(float(f"{v:.2g}") for v in (self.reference / max(n, 1)).tolist())

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
