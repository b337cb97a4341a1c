"""DDM, the Drift Detection Method, for a stream of errors (1) and successes (0).

The test follows ``river.drift.binary.DDM`` (river 0.26) step for step. With :math:`n` values
since the last restart, the error rate :math:`p_n` (their mean) and
:math:`s_n = \\sqrt{p_n (1 - p_n) / n}`, once :math:`n` exceeds ``warm_start`` the detector
keeps :math:`p_{min}, s_{min}` from the last step where :math:`p_n + s_n` was at its running
minimum (ties move it forward) and reports

* a warning while :math:`p_n + s_n > p_{min} + w \\, s_{min}` (``warning_threshold``),
* a change when :math:`p_n + s_n > p_{min} + d \\, s_{min}` (``drift_threshold``); the warning
  flag is cleared and the detector restarts from the next value, as river does on its next
  ``update``.

``Detection.statistic`` is :math:`p_n + s_n` and ``Detection.threshold`` the bound
:math:`p_{min} + d \\, s_{min}` it crossed. ``Detection.start`` is the position where the
warning zone in effect just before the change was entered (the last rise of the warning flag,
if the flag was still up on the value before the one that fired), otherwise the position where
:math:`p_n + s_n` was last at its running minimum.

Values must lie in ``[0, 1]`` (a batch with others raises ``ValueError`` and changes nothing);
non-finite values are skipped but counted.

Implementation: between restarts every quantity is a prefix operation, so a batch is processed
in chunks with ``np.cumsum`` (error counts), ``np.minimum.accumulate`` (the running minimum)
and ``np.maximum.accumulate`` (the index of its last update), stopping at the first change and
continuing after it. Chunks start small after a restart and double while nothing fires.

Intended difference from river: river updates the error rate as ``p += (x - p) / n``; here it is
``count / n``, exact for 0/1 input. The statistics therefore agree with river's to rounding
(within 1e-14 relative in the tests), not bit for bit, and detections could differ only when
:math:`p_n + s_n` lands within that distance of a bound; none did in the tests or in a search
over 900 seeded streams with small warm starts. Counts are carried exactly between batches, so
the batch split does not change any result.

References
----------
J. Gama, P. Medas, G. Castillo, P. Rodrigues (2004). Learning with drift detection. *Advances
in Artificial Intelligence - SBIA 2004*, LNCS 3171, 286-295.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.base import Detection, FloatArray
from streamwatch.detectors.binary import BinaryDetector


def _last_true(mask: npt.NDArray[np.bool_], end: int) -> int:
    """Index of the last True in ``mask[:end + 1]``, or -1."""
    head = mask[: end + 1]
    if not head.any():
        return -1
    return end - int(np.argmax(head[::-1]))


def _enc(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _dec(v: float | None, default: float) -> float:
    return default if v is None else float(v)


class DDM(BinaryDetector):
    """Drift Detection Method for 0/1 error streams, equivalent to river's ``DDM``.

    Parameters
    ----------
    warm_start
        Values needed since the last restart before the minimum is tracked and the detector may
        warn or fire (it acts from value ``warm_start + 1`` on).
    warning_threshold
        Multiple of :math:`s_{min}` above :math:`p_{min}` that opens the warning zone.
    drift_threshold
        Multiple of :math:`s_{min}` above :math:`p_{min}` that signals a change.

    Attributes
    ----------
    warning
        Whether the detector is in the warning zone after the last value (False right after a
        detection, when the detector has restarted).

    Examples
    --------
    The example of ``river.drift.binary.DDM``, fed as one batch, fires where river does:

    >>> import random
    >>> from streamwatch.detectors import Detector
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> ddm = DDM()
    >>> [(d.at, d.start) for d in ddm.update(stream)]  # the warning zone in effect began at 1095
    [(1334, 1095)]

    Non-finite values are skipped but keep their positions:

    >>> ddm = DDM(warm_start=10)
    >>> ddm.update([0, 0, 0, 1] * 10 + [float("nan")])
    []
    >>> [(d.at, d.start) for d in Detector.restore(ddm.snapshot()).update([1] * 20)]
    [(56, 46)]
    """

    name: ClassVar[str] = "ddm"

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ) -> None:
        super().__init__()
        self.warm_start = int(warm_start)
        self.warning_threshold = float(warning_threshold)
        self.drift_threshold = float(drift_threshold)
        self._reset(-1)

    def _reset(self, last_pos: int) -> None:
        """Restart after the value at ``last_pos`` (river's ``_reset``)."""
        self._n = 0  # values since the restart
        self._sum = 0.0  # their sum: the error count
        self._p_min = math.nan
        self._s_min = math.nan
        self._ps_min = math.inf
        self._min_pos = last_pos  # position of the last running minimum of p + s
        self.warning = False
        self._warn_pos = -1  # position where the current warning zone was entered

    def _chunk(self, x: FloatArray, pos: npt.NDArray[np.int64]) -> tuple[int, Detection] | None:
        """Advance over one chunk; stop at the first detection (returned with its chunk index)."""
        m = x.size
        j0 = max(0, self.warm_start - self._n)  # first index with n > warm_start
        sums = np.cumsum(np.concatenate(([self._sum], x)))[1:]
        if j0 >= m:
            self._n += m
            self._sum = float(sums[-1])
            return None
        n = self._n + np.arange(j0 + 1, m + 1, dtype=np.float64)
        p = sums[j0:] / n
        s = np.sqrt(p * (1 - p) / n)
        ps = p + s
        ps_min = np.minimum(np.minimum.accumulate(ps), self._ps_min)
        is_min = ps == ps_min  # p + s <= the minimum before it: river moves (p_min, s_min) here
        last = np.maximum.accumulate(np.where(is_min, np.arange(ps.size), -1))
        has = last >= 0
        p_min = np.where(has, p[last], self._p_min)
        s_min = np.where(has, s[last], self._s_min)
        warn = ps > p_min + self.warning_threshold * s_min
        drift_bound = p_min + self.drift_threshold * s_min
        drift = ps > drift_bound
        was_warning = np.concatenate(([self.warning], warn[:-1]))
        rise = warn & ~was_warning
        if not drift.any():
            self._n += m
            self._sum = float(sums[-1])
            self._p_min = float(p_min[-1])
            self._s_min = float(s_min[-1])
            self._ps_min = float(ps_min[-1])
            if has[-1]:
                self._min_pos = int(pos[j0 + last[-1]])
            self.warning = bool(warn[-1])
            r = _last_true(rise, ps.size - 1)
            if r >= 0:
                self._warn_pos = int(pos[j0 + r])
            return None
        f = int(np.argmax(drift))
        if was_warning[f]:
            r = _last_true(rise, f - 1)
            start = int(pos[j0 + r]) if r >= 0 else self._warn_pos
        else:
            start = int(pos[j0 + last[f]]) if has[f] else self._min_pos
        at = int(pos[j0 + f])
        detection = Detection(
            at=at, start=min(start, at), statistic=float(ps[f]), threshold=float(drift_bound[f])
        )
        self._reset(at)
        return j0 + f, detection

    def to_dict(self) -> dict[str, Any]:
        return {
            "warm_start": self.warm_start,
            "warning_threshold": self.warning_threshold,
            "drift_threshold": self.drift_threshold,
            "n_seen": self.n_seen,
            "n": self._n,
            "sum": self._sum,
            "p_min": _enc(self._p_min),  # None until the warm start is over
            "s_min": _enc(self._s_min),
            "min_pos": self._min_pos,
            "warning": self.warning,
            "warn_pos": self._warn_pos,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DDM:
        det = cls(
            warm_start=d["warm_start"],
            warning_threshold=d["warning_threshold"],
            drift_threshold=d["drift_threshold"],
        )
        det.n_seen = int(d["n_seen"])
        det._n = int(d["n"])
        det._sum = float(d["sum"])
        det._p_min = _dec(d["p_min"], math.nan)
        det._s_min = _dec(d["s_min"], math.nan)
        det._ps_min = det._p_min + det._s_min if d["p_min"] is not None else math.inf
        det._min_pos = int(d["min_pos"])
        det.warning = bool(d["warning"])
        det._warn_pos = int(d["warn_pos"])
        return det
