"""Column swap: drifted features that match *other* features' reference distributions.

When a deployment swaps two columns (height and width), each drifts, yet each now looks just
like the other's reference. The check compares every current feature ``i`` with every reference
feature ``j`` by the KS distance of the window to ``j``'s quantile sketch
(:mod:`streamwatch.quality.ks`; scale-free, so features in different units compare), solves the
assignment problem on that cost matrix (Hungarian algorithm, exact) and splits the optimal
permutation into cycles. A cycle of two or more features is reported only when, for *every*
feature ``i`` in it, moved to ``j``:

- its own reference is clearly rejected: ``D(i, i)`` above the threshold for ``alpha_drift``
  (1e-6 by default), and
- the other one fits as clean data would: ``D(i, j)`` below the threshold for ``alpha_fit``
  (1e-4), and by a ``margin`` (2x) better than ``D(i, i)``.

Clean data leaves the identity optimal (or any other cycle fails the first test), the drift of
one feature cannot form a cycle whose other members still fit, and features with identical
reference distributions cannot be told apart (nor need they be). Rotations among three or more
features are cycles like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.quality.ks import ks_distance, ks_distance_matrix, ks_threshold

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def assignment(cost: npt.ArrayLike) -> IntArray:
    """Minimum-cost perfect assignment of a square cost matrix: ``col[i]`` for each row ``i``.

    The O(n^3) Hungarian algorithm with potentials (Kuhn-Munkres, shortest augmenting paths).

    Examples
    --------
    >>> assignment([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]).tolist()
    [1, 0, 2]
    """
    c = np.asarray(cost, dtype=np.float64)
    n = c.shape[0]
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    p = np.zeros(n + 1, dtype=np.int64)  # p[j]: row matched to column j (1-based, 0 = none)
    way = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(n + 1, inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1, :] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            used_idx = np.flatnonzero(used)
            u[p[used_idx]] += delta
            v[used_idx] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = int(way[j0])
            p[j0] = p[j1]
            j0 = j1
    col = np.zeros(n, dtype=np.int64)
    for j in range(1, n + 1):
        if p[j]:
            col[p[j] - 1] = j - 1
    return col


def cycles(perm: Sequence[int] | IntArray) -> list[list[int]]:
    """Cycles of length >= 2 of a permutation, each starting at its smallest element.

    Examples
    --------
    >>> cycles([1, 2, 0, 3, 5, 4])
    [[0, 1, 2], [4, 5]]
    """
    seen: set[int] = set()
    out = []
    for start in range(len(perm)):
        if start in seen or int(perm[start]) == start:
            continue
        cyc, k = [], start
        while k not in seen:
            seen.add(k)
            cyc.append(k)
            k = int(perm[k])
        out.append(cyc)
    return out


@dataclass(frozen=True, slots=True)
class ColumnSwapResult:
    """Outcome of :func:`detect_column_swap`.

    ``mapping`` maps each moved current feature to the reference feature it now looks like
    (indices into the features given); ``cycles`` groups them (a swap is a 2-cycle).
    """

    detected: bool
    mapping: dict[int, int]
    cycles: list[list[int]]
    distances: FloatArray  # (k, k) KS distance of current i to reference j (NaN: not computed)
    drift_threshold: float
    fit_threshold: float
    n: int
    evidence: dict[str, Any] = field(default_factory=dict)

    def details(self, feature_names: Sequence[str]) -> dict[str, Any]:
        """JSON-safe evidence with feature names, for an alert's ``details``."""
        return {
            "mapping": {feature_names[i]: feature_names[j] for i, j in self.mapping.items()},
            "cycles": [[feature_names[i] for i in c] for c in self.cycles],
            "ks_own_reference": {feature_names[i]: float(self.distances[i, i]) for i in self.mapping},
            "ks_matched_reference": {
                feature_names[i]: float(self.distances[i, j]) for i, j in self.mapping.items()
            },
            "drift_threshold": self.drift_threshold,
            "fit_threshold": self.fit_threshold,
            "n": self.n,
        }

    def message(self, feature_names: Sequence[str], since: str | None = None) -> str:
        """One human sentence for the alert.

        Examples
        --------
        >>> import numpy as np
        >>> r = ColumnSwapResult(True, {0: 1, 1: 0}, [[0, 1]], np.zeros((2, 2)), 0.15, 0.11, 500)
        >>> r.message(["height_cm", "width_cm"], since="10:42")
        'height_cm looks like width_cm and width_cm like height_cm since 10:42 — likely swapped columns'
        """
        if not self.detected:
            return "no swapped columns"
        parts = []
        for c in self.cycles:
            clauses = [f"{feature_names[i]} like {feature_names[self.mapping[i]]}" for i in c]
            clauses[0] = clauses[0].replace(" like ", " looks like ", 1)
            parts.append(", ".join(clauses[:-1]) + " and " + clauses[-1])
        what = "; ".join(parts)
        kind = "swapped columns" if all(len(c) == 2 for c in self.cycles) else "rotated columns"
        when = f" since {since}" if since else ""
        return f"{what}{when} — likely {kind}"


def detect_column_swap(
    reference_quantiles: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    reference_counts: npt.ArrayLike | None = None,
    candidates: npt.ArrayLike | None = None,
    alpha_drift: float = 1e-6,
    alpha_fit: float = 1e-4,
    margin: float = 2.0,
    min_values: int = 100,
) -> ColumnSwapResult:
    """Whether a permutation of columns explains the drift of ``current`` against the reference.

    Parameters
    ----------
    reference_quantiles
        ``(k, q)``: each numeric feature's reference quantiles at equally spaced probabilities.
    current
        ``(n, k)``: the window's values of the same features, NaN where missing.
    reference_counts
        ``(k,)`` values behind each sketch (two-sample thresholds); ``None``: exact references.
    candidates
        ``(k,)`` boolean: features allowed to move (e.g. the drifted ones); default all.
    alpha_drift, alpha_fit, margin
        See the module docstring.
    min_values
        Features with fewer finite current values do not move.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = np.column_stack([rng.normal(170, 10, 5000), rng.normal(150, 12, 5000), rng.gamma(2, 3, 5000)])
    >>> q = np.quantile(ref, np.linspace(0, 1, 101), axis=0).T
    >>> cur = np.column_stack([rng.normal(150, 12, 500), rng.normal(170, 10, 500), rng.gamma(2, 3, 500)])
    >>> r = detect_column_swap(q, cur, reference_counts=[5000] * 3)
    >>> r.detected, r.mapping
    (True, {0: 1, 1: 0})
    >>> detect_column_swap(q, ref[:500], reference_counts=[5000] * 3).detected
    False
    """
    q = np.atleast_2d(np.asarray(reference_quantiles, dtype=np.float64))
    x = np.asarray(current, dtype=np.float64)
    k, points = q.shape
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"current must have shape (n, {k}), got {x.shape}")
    counts = None if reference_counts is None else np.asarray(reference_counts, dtype=np.int64)
    movable = np.ones(k, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).copy()
    finite = np.isfinite(x).sum(axis=0)
    movable &= finite >= min_values
    movable &= np.isfinite(q).all(axis=1)
    n = int(finite.min()) if k else 0
    m_min = None if counts is None else int(counts.min())
    d_thr = ks_threshold(alpha_drift, max(n, 1), m_min, points)
    f_thr = ks_threshold(alpha_fit, max(n, 1), m_min, points)
    dist = np.full((k, k), np.nan)
    idx = np.flatnonzero(movable)
    for i in idx:
        dist[i, i] = ks_distance(q[i], x[:, i])
    evidence: dict[str, Any] = {"drift_threshold": d_thr, "fit_threshold": f_thr, "n": n}
    mapping: dict[int, int] = {}
    found: list[list[int]] = []
    # only features clearly unlike their own reference are worth moving
    drifted = idx[dist[idx, idx] > d_thr]
    if len(drifted) >= 2:
        dist[np.ix_(drifted, drifted)] = ks_distance_matrix(q[drifted], [x[:, i] for i in drifted])
    if len(drifted) >= 2:
        sub = dist[np.ix_(drifted, drifted)]
        perm = assignment(sub)
        for cyc in cycles(perm):
            ok = all(sub[a, perm[a]] <= f_thr and sub[a, perm[a]] * margin <= sub[a, a] for a in cyc)
            if ok:
                found.append([int(drifted[a]) for a in cyc])
                mapping.update({int(drifted[a]): int(drifted[perm[a]]) for a in cyc})
    return ColumnSwapResult(bool(found), mapping, found, dist, d_thr, f_thr, n, evidence)
