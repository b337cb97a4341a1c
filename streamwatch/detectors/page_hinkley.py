"""Page-Hinkley test for a change in the mean of a real-valued stream.

The test follows ``river.drift.PageHinkley`` (river 0.26) step for step. With the running mean
:math:`\\bar x_t` of the values since the last restart,

.. math::

    U_t = \\alpha U_{t-1} + (x_t - \\bar x_t) - \\delta, \\qquad
    L_t = \\alpha L_{t-1} + (x_t - \\bar x_t) + \\delta,

and the detector fires when :math:`U_t - \\min_{i \\le t} U_i` (an increase, mode ``"up"``) or
:math:`\\max(-1, \\max_{i \\le t} L_i) - L_t` (a decrease, mode ``"down"``) exceeds ``threshold``,
provided at least ``min_instances`` values were seen since the restart. ``"both"`` tests both.
The ``-1`` that starts the running maximum of :math:`L` is river's. After a detection the
detector restarts from the next value, as river does on its next ``update``.

``Detection.start`` is the classic CUSUM change-point estimate: the position after the last time
the fired one-sided sum was at its running minimum (:math:`U`) or maximum (:math:`L`), that is
the last point where the one-sided statistic was zero; ties count, so the latest one is used.

Implementation: the recursion is sequential, but between detections it is linear, so a batch is
processed in chunks with vectorised prefix sums: the running mean is a cumulative sum divided by
the count, and :math:`U_t = \\alpha^t (U_0 + \\sum_{i \\le t} \\alpha^{-i} c_i)` with
:math:`c_i = x_i - \\bar x_i - \\delta` (likewise :math:`L_t`) within a chunk short enough that
:math:`\\alpha^{-t}` stays below :math:`2^{60}`. The two sides are the rows of one array,
:math:`U` and :math:`-L`, so both are tested as "sum minus its running minimum", with
``np.minimum.accumulate``. Chunks start small after a restart and double while nothing fires,
so dense detections do not make the work quadratic.

Intended difference from river: river updates its mean as ``m += (x - m) / n`` and its sums one
product at a time; here the mean is ``sum / n`` and the faded sums come from a scaled prefix sum.
The statistics therefore agree with river's to about 1e-12 relative (5e-13 at worst in the
tests), not bit for bit, and detections can differ only when a statistic lands within that
distance of ``threshold``. For the same reason, splitting a stream into different batches can
move the statistics by a few ulps (the running mean and counts are carried exactly, the faded
sums are not).

Such a difference needs a statistic equal to ``threshold`` in exact arithmetic, which happens on
lattice data: integer values with ``alpha=1`` and a ``delta`` and ``threshold`` on the same
lattice. River's rounding can then land one ulp above the threshold and fire where the exact
statistic only equals it (the test is ``>``); the restart points then differ, so the following
detections differ too. Over 5,400 such seeded integer streams (``alpha=1``, ``delta`` in
{0, 0.25, 0.5}, ``threshold`` in {1, 2, 5}), 16 differed from river, and in all 16 these
detections were the ones exact rational arithmetic gives; with ``alpha = 0.5`` or on continuous
data none differed.

References
----------
E. S. Page (1954). Continuous inspection schemes. *Biometrika* 41(1/2), 100-115.

H. Mouss, D. Mouss, N. Mouss, L. Sefouhi (2004). Test of Page-Hinkley, an approach for fault
detection in an agro-alimentary production system. *5th Asian Control Conference*, 815-818.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.base import Detection, Detector, FloatArray, as_values

MODES = ("both", "up", "down")
_MIN_CHUNK = 256  # shortest chunk; chunks double while nothing fires, up to the cap
_MAX_CHUNK = 1 << 16
_MAX_GROWTH = 60 * math.log(2.0)  # alpha**-t stays below 2**60 inside a chunk
_COUNTS = np.arange(1, _MAX_CHUNK + 1, dtype=np.float64)


@lru_cache(maxsize=32)
def _fade_powers(alpha: float) -> tuple[FloatArray, FloatArray]:
    """``alpha**t`` and ``alpha**-t`` for ``t = 1 .. cap``; ``cap`` is the longest safe chunk.

    For ``alpha`` 0 or 1 :func:`_fade` needs no powers; the arrays then only set the chunk cap.
    """
    if alpha in (0.0, 1.0):
        ones = np.ones(_MAX_CHUNK)
        return ones, ones
    cap = max(1, min(_MAX_CHUNK, int(_MAX_GROWTH / -math.log(alpha))))
    t = np.arange(1, cap + 1, dtype=np.float64)
    up, down = np.power(alpha, t), np.power(alpha, -t)
    up.flags.writeable = False
    down.flags.writeable = False
    return up, down


def _fade(c: FloatArray, g0: FloatArray, alpha: float, up: FloatArray, down: FloatArray) -> FloatArray:
    """``g_t = alpha * g_{t-1} + c_t`` from ``g0`` along each row of ``c`` (one row per side)."""
    if alpha == 1.0:
        out: FloatArray = np.cumsum(np.concatenate((g0[:, None], c), axis=1), axis=1)[:, 1:]
        return out
    if alpha == 0.0:
        return c
    m = c.shape[1]
    if m == 1:
        out = alpha * g0[:, None] + c
        return out
    out = up[:m] * (g0[:, None] + np.cumsum(c * down[:m], axis=1))
    return out


def _last_true(mask: npt.NDArray[np.bool_], end: int) -> int:
    """Index of the last True in ``mask[:end + 1]``, or -1."""
    head = mask[: end + 1]
    if not head.any():
        return -1
    return end - int(np.argmax(head[::-1]))


def _position(base: int | npt.NDArray[np.int64], k: int) -> int:
    """Stream position of chunk index ``k``: ``base`` is the first one's, or all of them."""
    return base + k if isinstance(base, int) else int(base[k])


def _enc(v: float) -> float | None:
    return v if math.isfinite(v) else None


class PageHinkley(Detector):
    """Page-Hinkley change detector for the mean of a stream, equivalent to river's.

    Parameters
    ----------
    min_instances
        Values needed since the last restart before the detector may fire.
    delta
        Magnitude of change tolerated (the drift allowance of the one-sided sums).
    threshold
        The bound (lambda) the one-sided statistic must exceed.
    alpha
        Fading factor of the one-sided sums, in ``[0, 1]``. Values close to 1 (the default,
        ``1 - 1e-4``) are the fast path; smaller ones make the vectorised chunks shorter.
    mode
        ``"up"`` watches for increases, ``"down"`` for decreases, ``"both"`` for either.

    Examples
    --------
    The example of ``river.drift.PageHinkley``, fed as one batch, fires where river does:

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> [d.at for d in PageHinkley().update(stream)]
    [1006]

    A shift of one standard deviation at position 2000, with ``delta`` half the shift:

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> stream = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 1000)])
    >>> [(d.at, d.start, round(d.statistic, 2)) for d in PageHinkley(delta=0.25, threshold=20).update(stream)]
    [(2026, 2000, 20.43)]

    Non-finite values are skipped but keep their positions, and state survives a snapshot:

    >>> ph = PageHinkley(delta=0.1, threshold=8.0, mode="down")
    >>> ph.update([0.0] * 40 + [float("nan")])
    []
    >>> ph = Detector.restore(ph.snapshot())
    >>> [d.at for d in ph.update([-1.0] * 20)]
    [51]
    """

    name: ClassVar[str] = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], not {alpha!r}")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        # river tracks both sides; a mode tests these rows (see _reset)
        self._rows = {"both": slice(0, 2), "up": slice(0, 1), "down": slice(1, 2)}[mode]
        self._signs = np.array([1.0, -1.0])[self._rows, None]
        self._reset(-1)

    def _reset(self, last_pos: int) -> None:
        """Restart after the value at ``last_pos`` (river's ``_reset``)."""
        self._n = 0  # values since the restart
        self._sum = 0.0  # their sum (the running mean is _sum / _n)
        # Both sides as rows of g = sign * sum, so that each is tested as g - min(g):
        # row 0 the increase sum U, row 1 minus the decrease sum, -L (river's max starts at -1).
        self._g = np.array([0.0, 0.0])
        self._g_min = np.array([math.inf, 1.0])
        self._turn = [last_pos, last_pos]  # position of the last running minimum of each row

    def update(self, values: npt.ArrayLike) -> list[Detection]:
        x = as_values(values)
        first = self.n_seen
        self.n_seen += x.size
        finite = np.isfinite(x)
        index = None if finite.all() else np.flatnonzero(finite)
        if index is not None:
            x = x[index]
        up, down = _fade_powers(self.alpha)
        detections: list[Detection] = []
        i = 0
        size = max(_MIN_CHUNK, self._n)
        while i < x.size:
            m = min(x.size - i, size, up.size)
            base = first + i if index is None else index[i : i + m] + first
            n_before = self._n
            hit = self._chunk(x[i : i + m], base, up, down)
            if hit is None:
                i += m
                size *= 2
            else:
                detections.append(hit[1])
                i += hit[0] + 1
                size = max(_MIN_CHUNK, n_before + hit[0] + 1)  # guess: as long as the last segment
        return detections

    def _chunk(
        self, x: FloatArray, base: int | npt.NDArray[np.int64], up: FloatArray, down: FloatArray
    ) -> tuple[int, Detection] | None:
        """Advance over one chunk; stop at the first detection (returned with its chunk index).

        ``base`` is the stream position of the chunk's first value, or the positions of all.
        """
        m = x.size
        rows = self._rows
        n = self._n + _COUNTS[:m]
        sums = np.cumsum(np.concatenate(([self._sum], x)))[1:]
        dev = x - sums / n
        c = self._signs * dev - self.delta  # U: dev - delta; -L: -(dev + delta)
        g = _fade(c, self._g[rows], self.alpha, up, down)
        g_min = np.minimum(np.minimum.accumulate(g, axis=1), self._g_min[rows, None])
        test = g - g_min
        j0 = max(0, self.min_instances - self._n - 1)  # first index with n >= min_instances
        over = (test[:, j0:] > self.threshold).any(axis=0)
        if not over.any():
            self._n += m
            self._sum = float(sums[-1])
            self._g[rows] = g[:, -1]
            self._g_min[rows] = g_min[:, -1]
            for k in range(g.shape[0]):
                last = _last_true(g[k] == g_min[k], m - 1)
                if last >= 0:
                    self._turn[rows.start + k] = _position(base, last)
            return None
        f = j0 + int(np.argmax(over))
        t = test[:, f]
        k = int(np.argmax(np.where(t > self.threshold, t, -math.inf)))  # the larger; ties: increase
        last = _last_true(g[k] == g_min[k], f)
        turn = self._turn[rows.start + k] if last < 0 else _position(base, last)
        at = _position(base, f)
        detection = Detection(at=at, start=min(turn + 1, at), statistic=float(t[k]), threshold=self.threshold)
        self._reset(at)
        return f, detection

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "mode": self.mode,
            "n_seen": self.n_seen,
            "n": self._n,
            "sum": self._sum,
            "sum_increase": float(self._g[0]),
            "sum_decrease": float(0.0 - self._g[1]),  # not -0.0 before the first value
            "min_increase": _enc(float(self._g_min[0])),  # None before the first value (infinity)
            "max_decrease": float(-self._g_min[1]),
            "min_pos": self._turn[0],
            "max_pos": self._turn[1],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PageHinkley:
        det = cls(
            min_instances=d["min_instances"],
            delta=d["delta"],
            threshold=d["threshold"],
            alpha=d["alpha"],
            mode=d["mode"],
        )
        det.n_seen = int(d["n_seen"])
        det._n = int(d["n"])
        det._sum = float(d["sum"])
        min_increase = math.inf if d["min_increase"] is None else float(d["min_increase"])
        det._g = np.array([float(d["sum_increase"]), -float(d["sum_decrease"])])
        det._g_min = np.array([min_increase, -float(d["max_decrease"])])
        det._turn = [int(d["min_pos"]), int(d["max_pos"])]
        return det
