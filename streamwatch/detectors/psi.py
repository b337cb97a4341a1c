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

FloatArray = npt.NDArray[np.float64]

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
