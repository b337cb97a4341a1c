"""HDDM_A, drift detection with Hoeffding's bound on moving averages, for 0/1 error streams.

The test follows ``river.drift.binary.HDDMA`` (river 0.26, after MOA) step for step. With
:math:`n` values since the last restart, their mean :math:`\\bar z_n` and the Hoeffding bound
:math:`\\varepsilon_n = \\sqrt{\\ln(1/\\delta_d) / (2n)}`, the *cut point* for an increase is the
last step where :math:`\\bar z_c + \\varepsilon_c` was at its running minimum (ties move it
forward); the detector compares the mean since the restart with the mean up to the cut,

.. math::

    \\bar z_n - \\bar z_c \\ge \\sqrt{\\frac{n - c}{2 c n} \\ln\\frac{2}{\\delta}},

and fires for :math:`\\delta = \\delta_d` (``drift_confidence``) or warns for
:math:`\\delta = \\delta_w` (``warning_confidence``). With ``two_sided_test`` a decrease is
tested the same way against the cut where :math:`\\bar z_c - \\varepsilon_c` was at its running
maximum. After a detection the detector restarts from the next value, as river does on its next
``update``; the warning flag then reads False.

``Detection.statistic`` is the difference of means and ``Detection.threshold`` the drift bound
it reached (the test is ``>=``). ``Detection.start`` is the position where the warning zone in
effect just before the change was entered (the last rise of the warning flag, if the flag was
still up on the value before the one that fired), otherwise the cut point of the side that
fired: the position of the last value of the sample taken as "before the change".

Values must lie in ``[0, 1]`` (a batch with others raises ``ValueError`` and changes nothing);
non-finite values are skipped but counted.

Implementation: between restarts the means are prefix sums over counts, the cut points are
running extremes (``np.minimum.accumulate``/``np.maximum.accumulate``) and the index of their
last update a ``np.maximum.accumulate`` of indices, so a batch is processed in chunks, stopping
at the first change and continuing after it. Chunks start small after a restart and double
while nothing fires.

Intended difference from river: river updates the mean as ``m += (x - m) / n`` (and clones it at
the cut); here it is ``count / n``, exact for 0/1 input. The statistics therefore agree with
river's to rounding (within 1e-13 relative in the tests), not bit for bit, and detections could
differ only when a difference of means lands within that distance of its bound; none did in the
tests or in a search over 900 seeded streams with loose confidences. Counts are carried exactly
between batches, so the batch split does not change any result.

References
----------
I. Frías-Blanco, J. del Campo-Ávila, G. Ramos-Jiménez, R. Morales-Bueno, A. Ortiz-Díaz,
Y. Caballero-Mota (2014). Online and non-parametric drift detection methods based on Hoeffding's
bounds. *IEEE Transactions on Knowledge and Data Engineering* 27(3), 810-823.

A. Bifet, G. Holmes, R. Kirkby, B. Pfahringer (2010). MOA: Massive Online Analysis. *Journal of
Machine Learning Research* 11, 1601-1604.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.base import Detection, FloatArray
from streamwatch.detectors.binary import BinaryDetector

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.int64]


def _last_true(mask: BoolArray, end: int) -> int:
    """Index of the last True in ``mask[:end + 1]``, or -1."""
    head = mask[: end + 1]
    if not head.any():
        return -1
    return end - int(np.argmax(head[::-1]))


class _Cut:
    """The sample up to a cut point: its size, mean and stream position (river's cloned mean)."""

    __slots__ = ("mean", "n", "pos")

    def __init__(self, n: int = 0, mean: float = 0.0, pos: int = -1) -> None:
        self.n = n
        self.mean = mean
        self.pos = pos


class HDDMA(BinaryDetector):
    """HDDM_A for 0/1 error streams, equivalent to river's ``HDDMA``.

    Parameters
    ----------
    drift_confidence
        Confidence :math:`\\delta_d` of the drift test (also used for the cut-point bounds).
    warning_confidence
        Confidence :math:`\\delta_w` of the warning test.
    two_sided_test
        Also detect decreases of the mean (by default only increases of the error rate).

    Attributes
    ----------
    warning
        Whether the detector is in the warning zone after the last value (False right after a
        detection, when the detector has restarted).

    Examples
    --------
    The example of ``river.drift.binary.HDDMA``, fed as one batch, fires where river does:

    >>> import random
    >>> from streamwatch.detectors import Detector
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> hddm = HDDMA()
    >>> [(d.at, d.start) for d in hddm.update(stream)]
    [(1206, 1134)]

    Non-finite values are skipped but keep their positions:

    >>> hddm = HDDMA()
    >>> hddm.update([0] * 100 + [float("inf")])
    []
    >>> [d.at for d in Detector.restore(hddm.snapshot()).update([1] * 10)]
    [104]
    """

    name: ClassVar[str] = "hddm_a"

    def __init__(
        self, drift_confidence: float = 0.001, warning_confidence: float = 0.005, two_sided_test: bool = False
    ) -> None:
        super().__init__()
        if not (0.0 < drift_confidence < 1.0 and 0.0 < warning_confidence < 1.0):
            raise ValueError("drift_confidence and warning_confidence must be in (0, 1)")
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.two_sided_test = bool(two_sided_test)
        self._log_cut = math.log(1.0 / self.drift_confidence)
        self._log_drift = math.log(2.0 / self.drift_confidence)
        self._log_warning = math.log(2.0 / self.warning_confidence)
        self._reset(-1)

    def _reset(self, last_pos: int) -> None:
        """Restart after the value at ``last_pos`` (river's ``_reset``)."""
        self._n = 0  # values since the restart
        self._sum = 0.0  # their sum
        self._low = _Cut(pos=last_pos)  # cut point for increases: running minimum of mean + eps
        self._high = _Cut(pos=last_pos)  # cut point for decreases: running maximum of mean - eps
        self.warning = False
        self._warn_pos = -1  # position where the current warning zone was entered

    def _bound(self, n: FloatArray) -> FloatArray:
        """Hoeffding's bound for means of ``n`` values (river's ``_hoeffding_bound``)."""
        out: FloatArray = np.sqrt(1.0 / (2 * n) * self._log_cut)
        return out

    def _carried(self, cut: _Cut, low: bool) -> float:
        """The key of a cut made in an earlier chunk: mean + bound (low) or mean - bound (high)."""
        if cut.n == 0:
            return math.inf if low else -math.inf
        bound = math.sqrt(1.0 / (2 * cut.n) * self._log_cut)  # the same operations as _bound
        return cut.mean + bound if low else cut.mean - bound

    def _cut_points(
        self, key: FloatArray, cut: _Cut, n: FloatArray, mean: FloatArray, low: bool
    ) -> tuple[IndexArray, FloatArray, FloatArray]:
        """For every step: the chunk index of the cut (-1: before the chunk), its size and mean."""
        carried = self._carried(cut, low)
        if low:
            extreme = np.minimum(np.minimum.accumulate(key), carried)
        else:
            extreme = np.maximum(np.maximum.accumulate(key), carried)
        last = np.maximum.accumulate(np.where(key == extreme, np.arange(key.size), -1))
        has = last >= 0
        return last, np.where(has, n[last], float(cut.n)), np.where(has, mean[last], cut.mean)

    def _tests(
        self, n: FloatArray, n_cut: FloatArray, diff: FloatArray
    ) -> tuple[BoolArray, BoolArray, FloatArray]:
        """River's ``_mean_incr``/``_mean_decr`` at both confidences, and the drift bound."""
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = (n - n_cut) / n_cut * (1.0 / n)
        moved = n_cut != n
        eps_drift = np.sqrt(spread / 2 * self._log_drift)
        eps_warning = np.sqrt(spread / 2 * self._log_warning)
        return moved & (diff >= eps_drift), moved & (diff >= eps_warning), eps_drift

    def _chunk(self, x: FloatArray, pos: IndexArray) -> tuple[int, Detection] | None:
        """Advance over one chunk; stop at the first detection (returned with its chunk index)."""
        m = x.size
        n = self._n + np.arange(1, m + 1, dtype=np.float64)
        sums = np.cumsum(np.concatenate(([self._sum], x)))[1:]
        mean = sums / n
        eps = self._bound(n)
        lo_last, lo_n, lo_mean = self._cut_points(mean + eps, self._low, n, mean, low=True)
        incr_d, incr_w, incr_eps = self._tests(n, lo_n, mean - lo_mean)
        drift = incr_d
        warn = incr_w & ~incr_d
        if self.two_sided_test:
            hi_last, hi_n, hi_mean = self._cut_points(mean - eps, self._high, n, mean, low=False)
            decr_d, decr_w, decr_eps = self._tests(n, hi_n, hi_mean - mean)
            drift = drift | decr_d
            warn = warn | (decr_w & ~decr_d)
        was_warning = np.concatenate(([self.warning], warn[:-1]))
        rise = warn & ~was_warning
        if not drift.any():
            self._n += m
            self._sum = float(sums[-1])
            self._low = self._moved(self._low, lo_last[-1], lo_n[-1], lo_mean[-1], pos)
            if self.two_sided_test:
                self._high = self._moved(self._high, hi_last[-1], hi_n[-1], hi_mean[-1], pos)
            self.warning = bool(warn[-1])
            r = _last_true(rise, m - 1)
            if r >= 0:
                self._warn_pos = int(pos[r])
            return None
        f = int(np.argmax(drift))
        if incr_d[f]:
            statistic, threshold = float(mean[f] - lo_mean[f]), float(incr_eps[f])
            cut = int(pos[lo_last[f]]) if lo_last[f] >= 0 else self._low.pos
        else:
            statistic, threshold = float(hi_mean[f] - mean[f]), float(decr_eps[f])
            cut = int(pos[hi_last[f]]) if hi_last[f] >= 0 else self._high.pos
        if was_warning[f]:
            r = _last_true(rise, f - 1)
            start = int(pos[r]) if r >= 0 else self._warn_pos
        else:
            start = cut
        at = int(pos[f])
        detection = Detection(at=at, start=min(start, at), statistic=statistic, threshold=threshold)
        self._reset(at)
        return f, detection

    @staticmethod
    def _moved(cut: _Cut, last: int, n: float, mean: float, pos: IndexArray) -> _Cut:
        return _Cut(int(n), float(mean), int(pos[last])) if last >= 0 else cut

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift_confidence": self.drift_confidence,
            "warning_confidence": self.warning_confidence,
            "two_sided_test": self.two_sided_test,
            "n_seen": self.n_seen,
            "n": self._n,
            "sum": self._sum,
            "low": [self._low.n, self._low.mean, self._low.pos],
            "high": [self._high.n, self._high.mean, self._high.pos],
            "warning": self.warning,
            "warn_pos": self._warn_pos,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HDDMA:
        det = cls(
            drift_confidence=d["drift_confidence"],
            warning_confidence=d["warning_confidence"],
            two_sided_test=d["two_sided_test"],
        )
        det.n_seen = int(d["n_seen"])
        det._n = int(d["n"])
        det._sum = float(d["sum"])
        det._low = _Cut(int(d["low"][0]), float(d["low"][1]), int(d["low"][2]))
        det._high = _Cut(int(d["high"][0]), float(d["high"][1]), int(d["high"][2]))
        det.warning = bool(d["warning"])
        det._warn_pos = int(d["warn_pos"])
        return det


HDDM_A = HDDMA  # the name used in the HDDM paper and in MOA
