"""Kolmogorov-Smirnov distance of a sample to a reference known only by its quantile sketch.

A profile keeps ``q`` exact quantiles of each numeric reference feature at equally spaced
probabilities (101 by default: 0, 1, ..., 100 %). The reference CDF is read from them by
linear interpolation, right- or left-continuous where quantiles tie (discrete features), and a
sample is compared with it by the KS distance ``sup |F_sample - F_ref|``. The distance is
scale-free, so one threshold fits every feature, and its null distribution is known: for a
sample of ``n`` against a reference of ``m`` values, ``D * sqrt(n m / (n + m))`` follows
Kolmogorov's law, whose upper tail is ``P(K > t) ~ 2 exp(-2 t^2)`` for the small levels used
here. :func:`ks_threshold` adds the sketch's resolution (half a quantile step) on top.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sketch_cdf(quantiles: FloatArray, x: FloatArray, side: str = "right") -> FloatArray:
    """Reference CDF at ``x`` from quantiles at equally spaced probabilities.

    Parameters
    ----------
    quantiles
        Non-decreasing quantiles at probabilities ``linspace(0, 1, len(quantiles))``.
    x
        Points, any shape.
    side
        ``"right"``: at a tied quantile value take the largest probability (``F(x)``);
        ``"left"``: the smallest (``F(x-)``, up to the sketch's resolution).

    Examples
    --------
    >>> import numpy as np
    >>> q = np.array([0.0, 1.0, 1.0, 2.0, 4.0])
    >>> sketch_cdf(q, np.array([-1.0, 0.5, 1.0, 3.0, 9.0])).tolist()
    [0.0, 0.125, 0.5, 0.875, 1.0]
    >>> sketch_cdf(q, np.array([1.0]), side="left").tolist()
    [0.25]
    """
    q = np.asarray(quantiles, dtype=np.float64)
    m = len(q)
    p = np.linspace(0.0, 1.0, m)
    xs = np.asarray(x, dtype=np.float64)
    j = np.searchsorted(q, xs, side="right" if side == "right" else "left")
    lo = np.clip(j - 1, 0, m - 1)
    hi = np.clip(j, 0, m - 1)
    width = q[hi] - q[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(width > 0, (xs - q[lo]) / np.where(width > 0, width, 1.0), 0.0)
    f = p[lo] + (p[hi] - p[lo]) * np.clip(frac, 0.0, 1.0)
    f = np.where(j <= 0, 0.0, np.where(j >= m, 1.0, f))
    return np.asarray(f, dtype=np.float64)


def ks_distance(quantiles: FloatArray, sample: FloatArray, *, is_sorted: bool = False) -> float:
    """KS distance between the finite values of ``sample`` and the sketched reference.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.linspace(0.0, 1.0, 101)  # uniform on [0, 1]
    >>> round(ks_distance(q, np.linspace(0.0, 1.0, 1001)), 4)
    0.001
    >>> round(ks_distance(q, np.linspace(0.5, 1.5, 1001)), 3)
    0.5
    """
    x = np.asarray(sample, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return 0.0
    if not is_sorted:
        x = np.sort(x)
    upper = np.searchsorted(x, x, side="right") / n  # ECDF(x)
    lower = np.searchsorted(x, x, side="left") / n  # ECDF(x-)
    d_hi = np.abs(upper - sketch_cdf(quantiles, x, "right"))
    d_lo = np.abs(lower - sketch_cdf(quantiles, x, "left"))
    return float(max(d_hi.max(), d_lo.max()))


def ks_distance_matrix(quantiles: FloatArray, samples: list[FloatArray]) -> FloatArray:
    """KS distance of every sample ``i`` to every sketched reference ``j``: shape ``(len(samples), k)``.

    ``quantiles`` has one row per reference feature.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.vstack([np.linspace(0.0, 1.0, 101), np.linspace(5.0, 6.0, 101)])
    >>> ks_distance_matrix(q, [np.linspace(5.0, 6.0, 1001), np.linspace(0.0, 1.0, 1001)]).round(2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    qs = np.atleast_2d(np.asarray(quantiles, dtype=np.float64))
    sorted_samples = [np.sort(np.asarray(s, dtype=np.float64)[np.isfinite(s)]) for s in samples]
    out = np.zeros((len(samples), qs.shape[0]))
    for i, x in enumerate(sorted_samples):
        for j in range(qs.shape[0]):
            out[i, j] = ks_distance(qs[j], x, is_sorted=True)
    return out


def ks_threshold(alpha: float, n: int, m: int | None, sketch_points: int = 101) -> float:
    """KS distance exceeded with probability about ``alpha`` when the sample comes from the reference.

    Parameters
    ----------
    alpha
        Tail probability (small: the approximation ``2 exp(-2 t^2)`` is for the upper tail).
    n
        Finite values in the sample.
    m
        Values behind the reference sketch; ``None`` for an exact, known distribution.
    sketch_points
        Quantiles in the sketch; half a probability step is added for its resolution.

    Examples
    --------
    >>> round(ks_threshold(1e-3, 500, 1000), 3)
    0.112
    >>> ks_threshold(1e-3, 500, None) < ks_threshold(1e-3, 500, 1000)
    True
    """
    t = math.sqrt(-math.log(alpha / 2.0) / 2.0)
    n_eff = float(n) if m is None else n * m / (n + m)
    return t / math.sqrt(max(n_eff, 1.0)) + 0.5 / max(sketch_points - 1, 1)
