"""Per-batch data-quality rates against the reference: missing, out of range, turned constant.

All checks are vectorised over a ``(n, k)`` float matrix of numeric features (NaN where a
value is missing or invalid) and per-feature reference arrays from the profile. Each rate is
tested against what clean data would give, so clean batches stay quiet whatever their size:

- **missing** (null/NaN): the count of missing values against a binomial with the reference's
  missing rate (a Laplace-smoothed estimate plus ``tolerance``);
- **out of range**: finite values outside the reference ``[min, max]`` against a binomial with
  rate ``2 / (m + 1)`` - the chance that a new draw falls outside the extremes of ``m``
  reference draws - plus ``tolerance``;
- **constant**: ``min_values`` or more finite values, all equal, when the reference's most
  frequent value (its share ``s``) makes that unlikely: ``s ** n < alpha``.

The binomial tail uses the Chernoff bound ``P(X >= k) <= exp(-n KL(k/n || p))``, an upper
bound on the p-value, so the checks err on the quiet side. ``alpha`` is per feature and batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def binomial_tail_bound(k: npt.ArrayLike, n: npt.ArrayLike, p: npt.ArrayLike) -> FloatArray:
    """Chernoff upper bound on ``P(Binomial(n, p) >= k)``, elementwise (1 where ``k <= n p``).

    Examples
    --------
    >>> binomial_tail_bound([5, 50, 2], [100, 100, 100], [0.05, 0.05, 0.05]).round(6).tolist()
    [1.0, 0.0, 1.0]
    """
    kk = np.asarray(k, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    pp = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1 - 1e-16)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(nn > 0, kk / np.where(nn > 0, nn, 1.0), 0.0)
        t1 = np.where(q > 0, q * np.log(q / pp), 0.0)
        t2 = np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - pp)), 0.0)
        bound = np.exp(-nn * (t1 + t2))
    return np.where(q <= pp, 1.0, np.minimum(bound, 1.0))


@dataclass(frozen=True, slots=True)
class QualityReference:
    """Per numeric feature: what the profile says about missing values, range and ties."""

    count: IntArray  # rows behind the reference
    missing_rate: FloatArray
    minimum: FloatArray
    maximum: FloatArray
    mode_share: FloatArray  # share of the most frequent finite value among finite values

    @classmethod
    def from_profile(cls, profile: dict[str, Any], features: Sequence[str]) -> QualityReference:
        """Build from a profile (see :mod:`streamwatch.profile`) for the named numeric features."""
        cols = [profile["features"][f] for f in features]
        return cls(
            np.array([c["count"] for c in cols], dtype=np.int64),
            np.array([c["missing_rate"] for c in cols], dtype=np.float64),
            np.array([_num(c["min"]) for c in cols], dtype=np.float64),
            np.array([_num(c["max"]) for c in cols], dtype=np.float64),
            np.array([_num(c["mode_share"]) for c in cols], dtype=np.float64),
        )


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


@dataclass(frozen=True, slots=True)
class QualityFinding:
    """One feature failing one check in one batch."""

    check: str  # "missing" | "out_of_range" | "constant"
    feature: int
    observed: float  # the batch's rate (or the constant value)
    expected: float  # the rate clean data would give (or the reference's mode share)
    count: int
    n: int
    p_value: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def message(self, feature_names: str | Sequence[str], since: str | None = None) -> str:
        """One human sentence for the alert.

        Examples
        --------
        >>> f = QualityFinding("missing", 0, 1.0, 0.01, 500, 500, 0.0)
        >>> f.message(["income"], since="10:42")
        'income is missing in 100.0% of events since 10:42 (reference 1.0%)'
        """
        name = feature_names if isinstance(feature_names, str) else feature_names[self.feature]
        when = f" since {since}" if since else ""
        if self.check == "missing":
            return f"{name} is missing in {self.observed:.1%} of events{when} (reference {self.expected:.1%})"
        if self.check == "out_of_range":
            lo, hi = self.evidence.get("reference_min"), self.evidence.get("reference_max")
            return (
                f"{name} is outside its reference range [{lo:.4g}, {hi:.4g}] in {self.observed:.1%} "
                f"of values{when} (clean data: {self.expected:.2%})"
            )
        return f"{name} turned constant at {self.observed:.6g}{when} ({self.n} values in a row)"


def missing_null_rate(ref: QualityReference, tolerance: float = 0.01) -> FloatArray:
    """Missing rate each feature is tested against: the reference's (Laplace-smoothed) plus ``tolerance``."""
    p0: FloatArray = np.asarray((ref.missing_rate * ref.count + 1) / (ref.count + 2) + tolerance)
    return p0


def range_null_rate(ref: QualityReference, tolerance: float = 0.005) -> FloatArray:
    """Out-of-range rate each feature is tested against: ``2 / (m + 1)`` plus ``tolerance``."""
    p0: FloatArray = np.asarray(2.0 / (ref.count + 1.0) + tolerance, dtype=np.float64)
    return p0


def missing_check(
    x: FloatArray, ref: QualityReference, *, alpha: float = 1e-6, tolerance: float = 0.01
) -> list[QualityFinding]:
    """Features whose missing (NaN) rate in the batch is too high for the reference's rate.

    Examples
    --------
    >>> import numpy as np
    >>> ref = QualityReference(
    ...     np.array([1000, 1000]), np.array([0.0, 0.1]), np.zeros(2), np.ones(2), np.zeros(2)
    ... )
    >>> x = np.column_stack([np.full(200, np.nan), np.where(np.arange(200) % 10 == 0, np.nan, 0.5)])
    >>> [(f.feature, f.count) for f in missing_check(x, ref)]
    [(0, 200)]
    """
    return missing_findings(np.isnan(x).sum(axis=0), x.shape[0], ref, alpha=alpha, tolerance=tolerance)


def missing_findings(
    missing: IntArray, n: int, ref: QualityReference, *, alpha: float = 1e-6, tolerance: float = 0.01
) -> list[QualityFinding]:
    """:func:`missing_check` from the per-feature counts of missing values among ``n`` events.

    Examples
    --------
    >>> import numpy as np
    >>> ref = QualityReference(np.array([1000]), np.array([0.0]), np.zeros(1), np.ones(1), np.zeros(1))
    >>> [(f.feature, f.observed) for f in missing_findings(np.array([100]), 500, ref)]
    [(0, 0.2)]
    """
    p0 = missing_null_rate(ref, tolerance)
    pv = binomial_tail_bound(missing, n, p0)
    out = []
    for j in np.flatnonzero(pv < alpha):
        out.append(
            QualityFinding(
                "missing",
                int(j),
                float(missing[j] / n),
                float(ref.missing_rate[j]),
                int(missing[j]),
                n,
                float(pv[j]),
                {
                    "missing": int(missing[j]),
                    "n": n,
                    "rate": float(missing[j] / n),
                    "reference_rate": float(ref.missing_rate[j]),
                    "p_value_bound": float(pv[j]),
                },
            )
        )
    return out


def range_check(
    x: FloatArray, ref: QualityReference, *, alpha: float = 1e-6, tolerance: float = 0.005
) -> list[QualityFinding]:
    """Features with too many finite values outside the reference ``[min, max]``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = QualityReference(np.array([1000]), np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1))
    >>> [f.count for f in range_check(np.linspace(0.5, 1.5, 100).reshape(-1, 1), ref)]
    [50]
    """
    finite = np.isfinite(x)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore"):
        outside = (finite & ((x < ref.minimum) | (x > ref.maximum))).sum(axis=0)
    return range_findings(outside, n, ref, alpha=alpha, tolerance=tolerance)


def range_findings(
    outside: IntArray, n: IntArray, ref: QualityReference, *, alpha: float = 1e-6, tolerance: float = 0.005
) -> list[QualityFinding]:
    """:func:`range_check` from the per-feature counts of finite values (``n``) and of those
    outside the reference range.

    Examples
    --------
    >>> import numpy as np
    >>> ref = QualityReference(np.array([1000]), np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1))
    >>> [f.count for f in range_findings(np.array([50]), np.array([100]), ref)]
    [50]
    """
    p0 = range_null_rate(ref, tolerance)
    pv = binomial_tail_bound(outside, n, p0)
    out = []
    for j in np.flatnonzero((pv < alpha) & np.isfinite(ref.minimum)):
        rate = float(outside[j] / n[j])
        out.append(
            QualityFinding(
                "out_of_range",
                int(j),
                rate,
                float(p0[j] - tolerance),
                int(outside[j]),
                int(n[j]),
                float(pv[j]),
                {
                    "outside": int(outside[j]),
                    "n": int(n[j]),
                    "rate": rate,
                    "reference_min": float(ref.minimum[j]),
                    "reference_max": float(ref.maximum[j]),
                    "p_value_bound": float(pv[j]),
                },
            )
        )
    return out


def constant_check(
    x: FloatArray, ref: QualityReference, *, alpha: float = 1e-6, min_values: int = 20
) -> list[QualityFinding]:
    """Features whose finite batch values are all equal when the reference makes that unlikely.

    Examples
    --------
    >>> import numpy as np
    >>> ref = QualityReference(
    ...     np.array([1000, 1000]), np.zeros(2), np.zeros(2), np.ones(2), np.array([0.01, 1.0])
    ... )
    >>> [(f.feature, f.observed) for f in constant_check(np.zeros((50, 2)), ref)]
    [(0, 0.0)]
    """
    finite = np.isfinite(x)
    n = finite.sum(axis=0)
    lo = np.where(finite, x, np.inf).min(axis=0)
    hi = np.where(finite, x, -np.inf).max(axis=0)
    return constant_findings(n, lo, hi, ref, alpha=alpha, min_values=min_values)


def constant_findings(
    n: IntArray,
    lo: FloatArray,
    hi: FloatArray,
    ref: QualityReference,
    *,
    alpha: float = 1e-6,
    min_values: int = 20,
) -> list[QualityFinding]:
    """:func:`constant_check` from the per-feature count, smallest and largest of the finite values.

    Examples
    --------
    >>> import numpy as np
    >>> ref = QualityReference(np.array([1000]), np.zeros(1), np.zeros(1), np.ones(1), np.array([0.01]))
    >>> [f.observed for f in constant_findings(np.array([50]), np.array([2.0]), np.array([2.0]), ref)]
    [2.0]
    """
    share = np.clip(np.nan_to_num(ref.mode_share, nan=1.0), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_p = n * np.log(share)
    flagged = (n >= min_values) & (lo == hi) & (log_p < np.log(alpha))
    return [
        QualityFinding(
            "constant",
            int(j),
            float(lo[j]),
            float(share[j]),
            int(n[j]),
            int(n[j]),
            float(np.exp(log_p[j])),
            {"value": float(lo[j]), "n": int(n[j]), "reference_mode_share": float(share[j])},
        )
        for j in np.flatnonzero(flagged)
    ]


def check_batch(x: FloatArray, ref: QualityReference, *, alpha: float = 1e-6) -> list[QualityFinding]:
    """All three checks on one batch; a feature entirely missing is reported once (as missing)."""
    missing = missing_check(x, ref, alpha=alpha)
    all_missing = {f.feature for f in missing if f.count == f.n}
    rest = range_check(x, ref, alpha=alpha) + constant_check(x, ref, alpha=alpha)
    return missing + [f for f in rest if f.feature not in all_missing]
