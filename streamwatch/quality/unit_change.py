"""Unit change: a numeric feature now looks like its reference times a factor (plus an offset).

The decision is two KS tests against the reference's quantile sketch (:mod:`streamwatch.quality.ks`):

1. the current window must be clearly *unlike* the reference (``D`` above the threshold for
   ``alpha_drift``, 1e-6 by default) - clean data stops here;
2. for each known conversion ``current = a * reference + b`` (table :data:`CONVERSIONS`, both
   directions), the window mapped back, ``(x - b) / a``, must be *like* the reference (``D`` below
   the threshold for ``alpha_fit``, 1e-4), and the factor estimated with the conversion's offset
   (the median of ``(q_cur - b) / q_ref`` over the 5-95 % quantiles) must be within
   ``tolerance`` (10 %; the table's factors are at least 15 % apart) of ``a``. Of such
   conversions the one closest to the window's quantiles (RMS gap in reference spreads) is the
   match.

A mean shift or a variance change leaves the window unlike every converted version of the
reference, so it is not a unit change. Without a known match the factor of a pure scaling
(``current = a * reference``, fitted through the origin) is reported as a raw factor when
``allow_unknown``, ``a`` is at least ``min_unknown_factor`` (10) away from 1 either way - smaller
scalings of a positive feature are ordinary multiplicative drift (prices up 30 %) - and the
reference is one-signed or centred at least one interquartile range away from zero: around zero a scaling
cannot be told from a change of variance. For the same reason pure scalings (all but the
temperature conversions) are not matched on such features (a standardised feature).

The factor and offset reported come from an ordinary least-squares line of the window's
quantiles on the reference's over the 5-95 % range, with its R^2 (fit quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.quality.ks import ks_distance, ks_threshold

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Conversion:
    """``current = factor * reference + offset``, named ``"<reference unit> → <current unit>"``."""

    name: str
    factor: float
    offset: float = 0.0


def _both(a: str, b: str, factor: float) -> list[Conversion]:
    return [Conversion(f"{a} → {b}", factor), Conversion(f"{b} → {a}", 1.0 / factor)]


#: Known conversions, both directions. Factors shared by several (1000, 60) give joint names.
CONVERSIONS: tuple[Conversion, ...] = (
    *_both("in", "cm", 2.54),
    *_both("m", "ft", 3.28084),
    *_both("kg", "lb", 2.20462),
    *_both("kg", "g", 1000.0),
    *_both("s", "ms", 1000.0),
    *_both("h", "min", 60.0),
    *_both("min", "s", 60.0),
    *_both("fraction", "percent", 100.0),
    *_both("cm", "mm", 10.0),
    *_both("m", "cm", 100.0),
    *_both("m", "mm", 1000.0),
    Conversion("°C → °F", 1.8, 32.0),
    Conversion("°F → °C", 1.0 / 1.8, -32.0 / 1.8),
)

_CENTRAL = slice(5, 96)  # 5..95 % of a 101-point sketch


@dataclass(frozen=True, slots=True)
class UnitChangeResult:
    """Outcome of :func:`detect_unit_change` for one feature; ``detected`` says whether to alert."""

    detected: bool
    feature: int  # index of the feature, for message()
    factor: float  # fitted a in current ~ a * reference + b (5-95 % quantiles)
    offset: float  # fitted b
    r2: float  # fit quality of that line
    conversion: str | None  # matched conversion's name, or None
    conversion_factor: float | None  # its exact factor (or the raw factor of an unknown scaling)
    conversion_offset: float | None
    distance: float  # KS distance of the window to the reference
    fitted_distance: float | None  # KS distance after undoing the matched (or raw) conversion
    drift_threshold: float
    fit_threshold: float
    n: int
    evidence: dict[str, Any] = field(default_factory=dict)

    def message(self, feature_names: str | list[str] | tuple[str, ...], since: str | None = None) -> str:
        """One human sentence for the alert.

        Examples
        --------
        >>> r = UnitChangeResult(
        ...     True, 0, 2.205, 0.0, 1.0, "kg → lb", 2.20462, 0.0, 0.6, 0.03, 0.15, 0.11, 500
        ... )
        >>> r.message("weight", since="10:42")
        'weight looks like its reference times 2.205 (kg → lb) since 10:42 — likely a unit change'
        """
        name = feature_names if isinstance(feature_names, str) else feature_names[self.feature]
        when = f" since {since}" if since else ""
        if self.conversion_factor is None:
            return f"{name} shows no unit change (factor {self.factor:.4g}, offset {self.offset:.4g})"
        off = self.conversion_offset or 0.0
        what = f"times {self.conversion_factor:.4g}"
        if off:
            what += f" {'+' if off > 0 else '-'} {abs(off):.4g}"
        label = self.conversion or "no known conversion"
        return f"{name} looks like its reference {what} ({label}){when} — likely a unit change"


def _ratio(q_ref: FloatArray, q_cur: FloatArray, offset: float) -> float:
    """The factor ``a`` of ``current = a * reference + offset``: median ratio over the quantiles.

    Quantiles near zero (within a tenth of the 5-95 % spread) are left out; the median keeps
    a heavy tail's noisy upper quantiles from pulling the estimate.
    """
    usable = np.abs(q_ref) > 0.1 * float(q_ref[-1] - q_ref[0])
    if not usable.any():
        return math.nan
    return float(np.median((q_cur[usable] - offset) / q_ref[usable]))


def _discrepancy(q_ref: FloatArray, q_cur: FloatArray, factor: float, offset: float) -> float:
    """RMS gap between the window's quantiles and the converted reference's, in reference spreads."""
    gap = (q_cur - (factor * q_ref + offset)) / (abs(factor) * float(q_ref[-1] - q_ref[0]))
    return float(np.sqrt((gap**2).mean()))


def detect_unit_change(
    reference_quantiles: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    reference_count: int | None = None,
    feature: int = 0,
    alpha_drift: float = 1e-6,
    alpha_fit: float = 1e-4,
    tolerance: float = 0.1,
    allow_unknown: bool = True,
    min_unknown_factor: float = 10.0,
    min_values: int = 100,
    conversions: tuple[Conversion, ...] = CONVERSIONS,
) -> UnitChangeResult:
    """Whether ``current`` (one window of one feature) looks like a unit conversion of the reference.

    Parameters
    ----------
    reference_quantiles
        The feature's reference quantiles at equally spaced probabilities (the profile's
        101-point sketch); the 5-95 % range is used for the fit, so at least 21 points.
    current
        Current values; non-finite ones are ignored.
    reference_count
        Values behind the sketch (for the two-sample threshold); ``None`` treats it as exact.
    feature
        Index of the feature, carried into the result for :meth:`UnitChangeResult.message`.
    alpha_drift, alpha_fit
        Levels of the "unlike the reference" and "like the converted reference" KS tests.
    tolerance
        Relative tolerance on the factor estimated with a conversion's offset.
    allow_unknown, min_unknown_factor
        Report a pure scaling by a factor outside ``[1/f, f]`` without a known conversion.
    min_values
        Fewer finite current values give no decision.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(170.0, 10.0, 5000)
    >>> q = np.quantile(ref, np.linspace(0, 1, 101))
    >>> r = detect_unit_change(q, rng.normal(170.0, 10.0, 500) / 2.54, reference_count=5000)
    >>> r.detected, r.conversion, round(r.factor, 2)
    (True, 'cm → in', 0.39)
    >>> detect_unit_change(q, rng.normal(180.0, 10.0, 500), reference_count=5000).detected
    False
    """
    q = np.asarray(reference_quantiles, dtype=np.float64)
    x = np.asarray(current, dtype=np.float64).ravel()
    x = np.sort(x[np.isfinite(x)])
    n = len(x)
    points = len(q)
    probs = np.linspace(0.0, 1.0, points)
    lo, hi = round(0.05 * (points - 1)), round(0.95 * (points - 1))
    q_ref = q[lo : hi + 1]
    d_thr = ks_threshold(alpha_drift, max(n, 1), reference_count, points)
    f_thr = ks_threshold(alpha_fit, max(n, 1), reference_count, points)
    spread = float(q_ref[-1] - q_ref[0])
    if n < min_values or not np.isfinite(q).all() or spread <= 0:
        return UnitChangeResult(
            False,
            feature,
            math.nan,
            math.nan,
            math.nan,
            None,
            None,
            None,
            math.nan,
            None,
            d_thr,
            f_thr,
            n,
            {"reason": "too few values" if n < min_values else "constant or empty reference", "n": n},
        )
    q_cur = np.quantile(x, probs[lo : hi + 1])
    dx, dy = q_ref - q_ref.mean(), q_cur - q_cur.mean()
    a = float((dx * dy).sum() / (dx * dx).sum())
    b = float(q_cur.mean() - a * q_ref.mean())
    resid = q_cur - (a * q_ref + b)
    ss = float(((q_cur - q_cur.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 0.0
    d0 = ks_distance(q, x, is_sorted=True)
    evidence: dict[str, Any] = {
        "factor": a,
        "offset": b,
        "r2": r2,
        "ks_distance": d0,
        "drift_threshold": d_thr,
        "fit_threshold": f_thr,
        "n": n,
        "reference_count": reference_count,
    }
    best: tuple[float, float, Conversion] | None = None  # (discrepancy, KS distance, conversion)
    q25, median, q75 = (float(v) for v in np.interp([0.25, 0.5, 0.75], probs, q))
    iqr = q75 - q25
    # a scaling is told apart from a change of variance only away from zero
    scalable = q[0] >= 0 or q[-1] <= 0 or abs(median) >= iqr
    evidence["scale_identifiable"] = bool(scalable)
    if d0 > d_thr:
        ratios: dict[float, float] = {}  # factor estimate per offset (few distinct offsets)
        for c in conversions:
            if c.offset == 0 and not scalable:
                continue
            if c.offset not in ratios:
                ratios[c.offset] = _ratio(q_ref, q_cur, c.offset)
            a_c = ratios[c.offset]
            if not abs(a_c / c.factor - 1.0) <= tolerance:
                continue
            d_c = ks_distance(q, (x - c.offset) / c.factor, is_sorted=True)
            if d_c <= f_thr:
                disc = _discrepancy(q_ref, q_cur, c.factor, c.offset)
                if best is None or disc < best[0]:
                    best = (disc, d_c, c)
        if best is None and allow_unknown and scalable:
            a0 = ratios[0.0] if 0.0 in ratios else _ratio(q_ref, q_cur, 0.0)
            if a0 > 0 and abs(math.log(a0)) >= math.log(min_unknown_factor):
                d_u = ks_distance(q, x / a0, is_sorted=True)
                if d_u <= f_thr:
                    best = (_discrepancy(q_ref, q_cur, a0, 0.0), d_u, Conversion("", a0))
    if best is None:
        return UnitChangeResult(
            False, feature, a, b, r2, None, None, None, d0, None, d_thr, f_thr, n, evidence
        )
    disc, d_best, conv = best
    same = [c.name for c in conversions if c.factor == conv.factor and c.offset == conv.offset]
    name = " or ".join(same) if conv.name else None
    evidence.update(
        conversion=name,
        conversion_factor=conv.factor,
        conversion_offset=conv.offset,
        fitted_ks_distance=d_best,
        fitted_discrepancy=disc,
    )
    return UnitChangeResult(
        True, feature, a, b, r2, name, conv.factor, conv.offset, d0, d_best, d_thr, f_thr, n, evidence
    )
