"""Population Stability Index between a reference histogram and a window histogram.

PSI is the symmetrised Kullback-Leibler divergence of two binned distributions,

.. math:: \\mathrm{PSI} = \\sum_i (q_i - p_i) \\ln(q_i / p_i),

with ``p`` the reference and ``q`` the window proportions. Empty bins are floored at ``eps``
so that a bin that empties or fills does not give an infinite score. Common reading: below 0.1
no change, 0.1-0.2 a moderate one, above 0.2 a major one.

References
----------
Yurdakul, B. (2018). Statistical properties of population stability index. Western Michigan
University, dissertation 3208.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamwatch.sketches.binning import ReferenceBins

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EPS = 1e-4


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, eps: float = EPS) -> FloatArray:
    """PSI of each row of ``current`` against the matching row of ``reference`` (counts).

    Rows with no counts on either side give NaN.

    Examples
    --------
    >>> round(float(psi([50, 50], [25, 75])), 4)  # 0.25*ln(0.5) ... by hand: 0.2747
    0.2747
    >>> float(psi([10, 10], [3, 3]))
    0.0
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.maximum(ref / ref.sum(axis=-1, keepdims=True), eps)
        q = np.maximum(cur / cur.sum(axis=-1, keepdims=True), eps)
        out: FloatArray = ((q - p) * np.log(q / p)).sum(axis=-1)
    empty = (ref.sum(axis=-1) == 0) | (cur.sum(axis=-1) == 0)
    return np.where(empty, np.nan, out)


class PSI:
    """Windowed PSI for every feature of a model, over the flat bin layout of ``bins``.

    Parameters
    ----------
    bins
        The reference bin layout.
    reference
        Counts of the reference events in the flat bin space.
    min_fraction
        A feature is scored only when at least this share of the window has a value for it.
    """

    name = "psi"

    def __init__(self, bins: ReferenceBins, reference: IntArray, min_fraction: float = 0.1) -> None:
        self.bins = bins
        self.reference = reference
        self.min_fraction = min_fraction
        self._groups = self._group_layout(bins)
        self._ref_parts = self._per_feature(reference[None, :])

    @staticmethod
    def _group_layout(bins: ReferenceBins) -> list[tuple[int, int, int, int]]:
        # runs of features with equal bin counts: (first feature, last feature, first bin, size)
        groups: list[tuple[int, int, int, int]] = []
        for j, size in enumerate(bins.sizes.tolist()):
            if groups and groups[-1][3] == size and groups[-1][1] == j:
                f0, _, b0, _ = groups[-1]
                groups[-1] = (f0, j + 1, b0, size)
            else:
                groups.append((j, j + 1, int(bins.offsets[j]), size))
        return groups

    def _per_feature(self, flat: IntArray) -> list[IntArray]:
        """Split ``(..., total_bins)`` counts into one ``(..., n_features_in_group, size)`` per group."""
        return [
            flat[..., b0 : b0 + (f1 - f0) * size].reshape(*flat.shape[:-1], f1 - f0, size)
            for f0, f1, b0, size in self._groups
        ]

    def score(self, window: IntArray, window_events: int) -> FloatArray:
        """PSI per feature of a window histogram (flat counts); NaN where too few values."""
        parts = self._per_feature(window[None, :])
        out = np.concatenate([psi(ref, cur)[0] for ref, cur in zip(self._ref_parts, parts, strict=True)])
        present = np.concatenate([cur[0].sum(axis=-1) for cur in parts])
        return np.where(present >= self.min_fraction * window_events, out, np.nan)

    def change_start(self, blocks: IntArray) -> IntArray:
        """Estimate, per feature, the block (oldest = 0) where the change began.

        For every split ``k`` the blocks from ``k`` on are pooled; the estimate maximises
        ``events after k * PSI(after k)``, a likelihood-ratio-style statistic that favours the
        longest stretch that differs from the reference.
        """
        k = blocks.shape[0]
        tails = np.cumsum(blocks[::-1], axis=0)[::-1]  # tails[i] = sum of blocks i..k-1
        parts = self._per_feature(tails)
        scores = np.concatenate(
            [psi(ref, cur) for ref, cur in zip(self._ref_parts, parts, strict=True)],
            axis=-1,
        )  # (k, features)
        weight = (k - np.arange(k))[:, None]
        return np.asarray(np.nanargmax(np.nan_to_num(scores, nan=-1.0) * weight, axis=0), dtype=np.int64)
