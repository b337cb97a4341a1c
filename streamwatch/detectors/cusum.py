"""CUSUM with a bank of allowances, calibrated to a target false-alarm rate.

Page's cumulative sum is the optimal detector of a known shift in the mean (Lorden, 1971). Here
each bank member tracks the log-likelihood ratio of a Gaussian mean shift of ``d`` standard
deviations, ``S <- max(0, S + d (z - d/2))``, so all members share one threshold ``h`` and the
maximum over the bank approximates a generalised likelihood ratio test over the grid of shifts
(Lai, 1995). The allowance comes from the smallest shift worth catching (``min_shift``); larger
shifts are covered by members at ``min_shift * 2**k``.

Values are standardised against a reference - the first ``warmup`` finite values unless one is
given. Continuous references use normal scores (the reference's mid-ranks mapped through the
normal quantile function), so the null input is close to N(0, 1) whatever the feature's shape and
one cached calibration serves every continuous feature. References with few distinct values
(such as a 0/1 error stream) are standardised by mean and standard deviation and calibrated by
bootstrap from their own distribution. Either way ``h`` is set from ``arl0``, the expected number
of values between false alarms (see :mod:`streamwatch.detectors.calibration`).

The batch update is vectorised: between alarms the statistic follows Lindley's recursion,
``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the cumulative increments, so a batch costs a
few numpy passes; after an alarm the statistic restarts at zero from the next value.

References
----------
Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
Lorden, G. (1971). Procedures for reacting to a change in distribution. Ann. Math. Stat. 42(6).
Lai, T. L. (1995). Sequential changepoint detection in quality control and dynamical systems.
J. R. Stat. Soc. B 57(4), 613-658.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.base import Detection, Detector, FloatArray, as_values
from streamwatch.detectors.calibration import discrete_threshold, gaussian_threshold, normal_score_table
from streamwatch.detectors.window import calibration_key, round_down

DISCRETE_MAX_VALUES = 32
_CHUNK = 4096  # values per vectorised pass
_BUCKETS = 2048  # steps of the guide to the reference searches (CUSUMBank)


class CUSUM(Detector):
    """Bank of one- or two-sided CUSUMs on standardised values.

    Parameters
    ----------
    min_shift
        Smallest mean shift worth catching, in reference standard deviations.
    members
        Bank size: allowances for ``min_shift * 2**k``, ``k < members``.
    direction
        ``"up"``, ``"down"`` or ``"both"``.
    arl0
        Target average run length without change: values between false alarms.
    warmup
        Finite values taken as the reference when ``reference`` is not given.
    reference
        Reference values (pre-change); fixes the standardisation at once.
    threshold
        Fix ``h`` instead of calibrating it from ``arl0``.
    rebaseline
        After an alarm, take the next ``warmup`` values as the new reference (river's reset:
        one persistent change gives one alarm). Otherwise keep the reference and restart the
        statistic at zero, so a persistent change alarms again and again. The threshold is
        calibrated for that choice: the long-run rate of a detector that renews its reference,
        or the mean rate over references of one that keeps it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(1, 1, 500)])
    >>> det = CUSUM(min_shift=0.5, direction="up", arl0=100_000, warmup=1000)
    >>> [(d.at, d.start) for d in det.update(x)]
    [(3011, 2969)]
    """

    name = "cusum"

    def __init__(
        self,
        min_shift: float = 0.5,
        members: int = 1,
        direction: str = "both",
        arl0: float = 100_000,
        warmup: int = 1000,
        reference: npt.ArrayLike | None = None,
        threshold: float | None = None,
        rebaseline: bool = True,
    ) -> None:
        super().__init__()
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be 'up', 'down' or 'both'")
        if min_shift <= 0 or members < 1 or arl0 <= 1 or warmup < 2:
            raise ValueError("need min_shift > 0, members >= 1, arl0 > 1, warmup >= 2")
        self.min_shift = float(min_shift)
        self.members = int(members)
        self.direction = direction
        self.arl0 = float(arl0)
        self.warmup = int(warmup)
        self.fixed_threshold = threshold
        self.rebaseline = rebaseline
        self.shifts = self.min_shift * 2.0 ** np.arange(self.members)
        self.signs = {"up": [1.0], "down": [-1.0], "both": [1.0, -1.0]}[direction]
        m = len(self.shifts) * len(self.signs)
        self.s = np.zeros(m)  # statistic per member (sign-major, then shift)
        self.zero_at = np.full(m, -1, dtype=np.int64)  # last position after which S was 0
        self._ref: list[float] = []
        self.threshold = float("nan")
        self.kind = ""  # "normal_scores" or "discrete"
        self._table: FloatArray = np.zeros(0)
        self._sorted: FloatArray = np.zeros(0)
        self._loc, self._scale = 0.0, 1.0
        if reference is not None:
            ref = as_values(reference)
            self._fit(ref[np.isfinite(ref)])

    @property
    def ready(self) -> bool:
        return bool(self.kind)

    @property
    def statistic(self) -> float:
        return float(self.s.max()) if self.s.size else 0.0

    def _fit(self, ref: FloatArray) -> None:
        if ref.size < 2:
            raise ValueError("the reference needs at least two finite values")
        values, counts = np.unique(ref, return_counts=True)
        if len(values) <= DISCRETE_MAX_VALUES:
            self.kind = "discrete"
            self._loc = float(ref.mean())
            self._scale = float(ref.std()) or 1.0
            # the null is the reference's own distribution, its probabilities rounded to a 10 %
            # geometric grid so that similar references share one cached calibration (the
            # reference's own sampling error is larger than that at any practical size)
            probs = calibration_key(counts / counts.sum())
            z = tuple(float(f"{v:.6g}") for v in values.tolist())
            n_key = round_down(len(ref))
            h = (
                float("nan")  # a fixed threshold needs no calibration
                if self.fixed_threshold is not None
                else discrete_threshold(
                    z,
                    probs,
                    tuple(self.shifts.tolist()),
                    self.direction,
                    self.arl0,
                    n_key,
                    not self.rebaseline,
                )
            )
        else:
            self.kind = "normal_scores"
            self._sorted = np.sort(ref)
            self._table = normal_score_table(len(ref))
            # calibrated for the reference size rounded down (slightly conservative), so that
            # features with a few missing reference values share one calibration
            n_key = round_down(len(ref))
            h = (
                float("nan")
                if self.fixed_threshold is not None
                else gaussian_threshold(
                    tuple(self.shifts.tolist()), self.direction, self.arl0, n_key, not self.rebaseline
                )
            )
        self.threshold = float(self.fixed_threshold) if self.fixed_threshold is not None else h
        self._ref = ref.tolist()

    def standardise(self, x: FloatArray) -> FloatArray:
        if self.kind == "discrete":
            return (x - self._loc) / self._scale
        k = np.searchsorted(self._sorted, x, "left") + np.searchsorted(self._sorted, x, "right")
        z: FloatArray = self._table[k]
        return z

    def update(self, values: npt.ArrayLike) -> list[Detection]:
        raw = as_values(values)
        finite = np.isfinite(raw)
        positions = self.n_seen + np.flatnonzero(finite)
        self.n_seen += len(raw)
        return self._continue(raw[finite], positions)

    def _continue(self, x: FloatArray, positions: npt.NDArray[np.int64]) -> list[Detection]:
        detections: list[Detection] = []
        inc: FloatArray | None = None  # the increments of x, once per reference
        while True:
            if not self.ready:
                need = self.warmup - len(self._ref)
                self._ref.extend(x[:need].tolist())
                if len(self._ref) < self.warmup:
                    return detections
                self.zero_at[:] = positions[need - 1]  # a change can only start after the reference
                x, positions = x[need:], positions[need:]
                self._fit(np.asarray(self._ref))
            if x.size == 0:
                return detections
            if inc is None:  # element-wise: an alarm needs no new standardisation
                inc = self._increments(x)
            found, used = self._scan(inc, positions)
            if found is None:
                return detections
            detections.append(found)
            x, positions, inc = x[used:], positions[used:], inc[used:]
            if self.rebaseline:  # the values after the alarm are the new reference
                self.kind, self._ref, inc = "", [], None

    def _increments(self, x: FloatArray) -> FloatArray:
        """Each member's increment ``shift * (sign * z - shift / 2)``, (values, members), the
        members sign-major (the order of ``self.s``)."""
        d = np.tile(self.shifts, len(self.signs))
        sign = np.repeat(np.asarray(self.signs, dtype=np.float64), len(self.shifts))
        inc: FloatArray = d * (sign * self.standardise(x)[:, None] - d / 2)
        return inc

    def _scan(self, inc: FloatArray, positions: npt.NDArray[np.int64]) -> tuple[Detection | None, int]:
        """Run the bank on the increments until its first alarm; returns it and the values
        consumed up to it.

        Works in chunks so that an alarm costs a chunk's worth of recomputation, not the rest
        of a long batch (and the cumulative sums stay short: their rounding error small).
        """
        for lo in range(0, len(inc), _CHUNK):
            hi = min(lo + _CHUNK, len(inc))
            c = np.cumsum(inc[lo:hi], axis=0)
            low = np.minimum(np.minimum.accumulate(c, axis=0), -self.s)
            s = c - low
            over = s.max(axis=1) > self.threshold
            if not over.any():
                self._advance(c, low, s, positions[lo:hi])
                continue
            t = int(np.argmax(over))
            j = int(np.argmax(s[t]))
            self._advance(c[: t + 1], low[: t + 1], s[: t + 1], positions[lo : lo + t + 1])
            at = int(positions[lo + t])
            found = Detection(at, int(self.zero_at[j]) + 1, float(s[t, j]), self.threshold)
            self.s[:] = 0.0
            self.zero_at[:] = at
            return found, lo + t + 1
        return None, len(inc)

    def _advance(
        self, c: FloatArray, low: FloatArray, s: FloatArray, positions: npt.NDArray[np.int64]
    ) -> None:
        """Carry the statistic and, per member, the last position where it touched zero."""
        # S_t == 0 exactly where C_t reaches the running low (or the carried-in -S_0)
        at_zero = c <= low + 1e-12
        touched = at_zero.any(axis=0)
        last = len(c) - 1 - np.argmax(at_zero[::-1], axis=0)
        self.zero_at = np.where(touched, positions[last], self.zero_at)
        self.s = s[-1].copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_shift": self.min_shift,
            "members": self.members,
            "direction": self.direction,
            "arl0": self.arl0,
            "warmup": self.warmup,
            "threshold": self.threshold if self.ready else None,
            "fixed_threshold": self.fixed_threshold,
            "rebaseline": self.rebaseline,
            "reference": self._ref,
            "ready": self.ready,
            "s": self.s.tolist(),
            "zero_at": self.zero_at.tolist(),
            "n_seen": self.n_seen,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CUSUM:
        det = cls(
            min_shift=d["min_shift"],
            members=d["members"],
            direction=d["direction"],
            arl0=d["arl0"],
            warmup=d["warmup"],
            threshold=d["fixed_threshold"],
            rebaseline=d["rebaseline"],
        )
        if d["ready"]:
            det._fit(np.asarray(d["reference"], dtype=np.float64))
            det.threshold = float(d["threshold"])
        else:
            det._ref = list(d["reference"])
        det.s = np.asarray(d["s"], dtype=np.float64)
        det.zero_at = np.asarray(d["zero_at"], dtype=np.int64)
        det.n_seen = int(d["n_seen"])
        return det


class CUSUMBank:
    """Several features' CUSUMs updated together: one pass over a (rows, features) batch.

    The bank holds no state of its own: the statistics, change-start positions and counts stay in
    the :class:`CUSUM` objects (so their snapshots are unchanged) and are gathered and written back
    around each batch. It vectorises the members that can be (ready, with a fixed reference, the
    same bank of shifts and signs); the others, and a feature's values after an alarm, take the
    CUSUM's own path, so the results are the same to the bit:

    * standardisation is the same element-wise arithmetic (mid-rank table look-ups, or
      ``(x - loc) / scale``), and so are the increments;
    * the batch is cut where each CUSUM cuts it, after every ``_CHUNK`` finite values of its
      column (the cumulative sums restart there): when a long batch has non-finite values, each
      column's finite values are first moved up to its top, in order, so one cut serves all;
    * otherwise a non-finite value, which a single CUSUM skips, becomes a zero increment: the
      cumulative sum and its running minimum (so the statistic) are carried through it unchanged,
      and it is masked out where the last zero of the statistic is located.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> cusums = [CUSUM(direction="both", threshold=11.0, reference=rng.normal(size=1000), rebaseline=False)
    ...           for _ in range(3)]
    >>> x = rng.normal(size=(6000, 3))
    >>> x[3000:, 1] += 1.0  # the second feature shifts: it alarms again and again
    >>> [[(d.at, d.start) for d in found][:2] for found in CUSUMBank(cusums).update(x)]
    [[], [(3022, 2981), (3072, 3024)], []]
    """

    def __init__(self, cusums: list[CUSUM]) -> None:
        self.cusums = list(cusums)
        first = self.cusums[0] if self.cusums else None
        fast = [
            i
            for i, c in enumerate(self.cusums)
            if first is not None
            and c.ready
            and not c.rebaseline
            and c.signs == first.signs
            and np.array_equal(c.shifts, first.shifts)
        ]
        self.fast = np.asarray(fast, dtype=np.int64)
        self.slow = [i for i in range(len(self.cusums)) if i not in set(fast)]
        banked = [self.cusums[i] for i in fast]
        self._banked = banked
        shifts = first.shifts if first is not None else np.zeros(0)
        signs = list(first.signs) if first is not None else []
        # per member, sign-major as in CUSUM.s: the increment is shift * (sign * z - shift / 2)
        self._shift = np.tile(shifts, len(signs))
        self._sign = np.repeat(np.asarray(signs, dtype=np.float64), len(shifts))
        self.threshold = np.array([c.threshold for c in banked], dtype=np.float64)
        discrete = np.array([c.kind == "discrete" for c in banked], dtype=bool)
        self._disc = np.flatnonzero(discrete)
        self._norm = np.flatnonzero(~discrete)
        self._loc = np.array([banked[i]._loc for i in self._disc.tolist()], dtype=np.float64)
        self._scale = np.array([banked[i]._scale for i in self._disc.tolist()], dtype=np.float64)
        # per normal-score feature its sorted reference; concatenated, each followed by +inf, with
        # the end of each run of equal values, so one search per feature gives both mid-rank ends
        self._sorted = [banked[i]._sorted for i in self._norm.tolist()]
        pad = [np.append(r, np.inf) for r in self._sorted]
        self._refcat = np.concatenate(pad) if pad else np.zeros(0)
        self._ref_at = np.cumsum([0] + [len(r) for r in pad[:-1]]).astype(np.int64)
        ends = [np.append(r.searchsorted(r, "right"), len(r)) for r in self._sorted]
        self._run_end = np.concatenate(ends).astype(np.int64) if ends else np.zeros(0, np.int64)
        # a guide to the searches: per feature, _BUCKETS equal steps between its reference's
        # ends, and the number of reference values in the buckets below each
        self._low = np.array([r[0] for r in self._sorted], dtype=np.float64)
        self._per = np.array([_BUCKETS / (r[-1] - r[0]) for r in self._sorted], dtype=np.float64)
        guides = [
            np.searchsorted(self._bucket(r, k), np.arange(_BUCKETS), "left")
            for k, r in enumerate(self._sorted)
        ]
        self._guide = np.concatenate(guides).astype(np.int64) if guides else np.zeros(0, np.int64)
        tables = [banked[i]._table for i in self._norm.tolist()]
        self._table = np.concatenate(tables) if tables else np.zeros(0)
        self._table_at = np.cumsum([0] + [len(t) for t in tables[:-1]]).astype(np.int64)

    def update(self, values: FloatArray) -> list[list[Detection]]:
        """Feed ``values`` (rows, features), column ``j`` to ``cusums[j]``; detections per CUSUM."""
        out: list[list[Detection]] = [[] for _ in self.cusums]
        for i in self.slow:
            out[i] = self.cusums[i].update(values[:, i])
        if len(self.fast) == 0 or values.shape[0] == 0:
            return out
        x = values[:, self.fast].T  # (features, rows): each feature's values contiguous
        finite = np.isfinite(x)
        inc = self._increments(x, finite)
        rows_of: npt.NDArray[np.int64] | None = None  # batch row of each (feature, row) of inc
        valid = finite
        if x.shape[1] > _CHUNK and not finite.all():  # move finite values up, so chunks cut alike
            rows_of = np.argsort(~finite, axis=1, kind="stable")
            inc = np.take_along_axis(inc, rows_of[None], axis=2)
            valid = np.arange(x.shape[1]) < finite.sum(axis=1)[:, None]
        for f, row, found in self._run(inc, valid, rows_of):
            # rare: after its first alarm, a feature takes CUSUM's own path
            det, col = self._banked[f], int(self.fast[f])
            rest = values[row + 1 :, col]
            ok = np.isfinite(rest)
            out[col] = [found, *det._continue(rest[ok], found.at + 1 + np.flatnonzero(ok))]
        return out

    def _increments(self, x: FloatArray, finite: npt.NDArray[np.bool_]) -> FloatArray:
        """Each member's increment (members, features, rows) of ``x`` (features, rows); zero where
        the value is not finite."""
        z = np.zeros(x.shape)
        if len(self._disc):
            z[self._disc] = (x[self._disc] - self._loc[:, None]) / self._scale[:, None]
        if len(self._norm):
            xn = np.where(finite[self._norm], x[self._norm], 0.0)
            g = self._search(xn)  # searchsorted "left", into the concatenated references
            left = g - self._ref_at[:, None]
            # searchsorted "right": the end of the run of values equal to x, if x is in it
            right = np.where(self._refcat[g] == xn, self._run_end[g], left)
            z[self._norm] = self._table[left + right + self._table_at[:, None]]
        inc = np.empty((len(self._shift), *x.shape))
        skip = ~finite
        for m, (d, sign) in enumerate(zip(self._shift.tolist(), self._sign.tolist(), strict=True)):
            np.multiply(d, sign * z - d / 2, out=inc[m])
            np.copyto(inc[m], 0.0, where=skip)
        return inc

    def _bucket(self, x: FloatArray, k: int | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Guide bucket of values of normal-score feature ``k``: non-decreasing in ``x``, so every
        reference value in a lower bucket is below ``x``."""
        b = np.clip((x - self._low[k]) * self._per[k], 0, _BUCKETS - 1)
        return b.astype(np.int64)

    def _search(self, xn: FloatArray) -> npt.NDArray[np.int64]:
        """``searchsorted(reference, x, "left")`` of each normal-score feature's (row of) finite
        values, as an index into the concatenated references: from the guide's count below the
        value's bucket, step over the few reference values left below it (the +inf after each
        reference stops the steps). Binary searches cost more, one feature at a time."""
        k = np.arange(len(xn))[:, None]
        g: npt.NDArray[np.int64] = self._guide[self._bucket(xn, k) + k * _BUCKETS] + self._ref_at[:, None]
        flat_g, flat_x = g.reshape(-1), xn.reshape(-1)
        todo = np.flatnonzero(self._refcat[flat_g] < flat_x)
        while todo.size:
            flat_g[todo] += 1
            todo = todo[self._refcat[flat_g[todo]] < flat_x[todo]]
        return g

    def _run(
        self, inc: FloatArray, valid: npt.NDArray[np.bool_], rows_of: npt.NDArray[np.int64] | None
    ) -> list[tuple[int, int, Detection]]:
        """Lindley's recursion over the batch in chunks, all features at once; writes the state
        back and returns (feature, batch row, detection) of each feature's first alarm."""
        banked = self._banked
        s = np.stack([c.s for c in banked], axis=1)  # (members, features)
        zero_at = np.stack([c.zero_at for c in banked], axis=1)
        base = np.array([c.n_seen for c in banked], dtype=np.int64)
        live = np.ones(len(banked), dtype=bool)
        hits: list[tuple[int, int, Detection]] = []
        features = np.arange(len(banked))
        rows = inc.shape[2]
        for lo in range(0, rows, _CHUNK):
            hi = min(lo + _CHUNK, rows)
            c = np.cumsum(inc[:, :, lo:hi], axis=2)
            low = np.minimum(np.minimum.accumulate(c, axis=2), -s[:, :, None])
            stat = c - low
            top = stat[0] if len(stat) == 1 else np.maximum.reduce(stat, axis=0)
            # S_t == 0 exactly where C_t reaches the running low (or the carried-in -S_0)
            at_zero = (c <= low + 1e-12) & valid[None, :, lo:hi]
            over = (top > self.threshold[:, None]) & live[:, None]  # (features, rows)
            for f in np.flatnonzero(over.any(axis=1)).tolist():  # rare: the feature's first alarm
                t = int(np.argmax(over[f]))
                seen = at_zero[:, f, : t + 1]
                last = lo + t - np.argmax(seen[:, ::-1], axis=1)
                where = last if rows_of is None else rows_of[f, last]
                start = np.where(seen.any(axis=1), base[f] + where, zero_at[:, f])
                j = int(np.argmax(stat[:, f, t]))
                row = lo + t if rows_of is None else int(rows_of[f, lo + t])
                at = int(base[f]) + row
                found = Detection(at, int(start[j]) + 1, float(stat[j, f, t]), banked[f].threshold)
                hits.append((f, row, found))
                s[:, f], zero_at[:, f] = 0.0, at
                live[f] = False
            touched = at_zero.any(axis=2) & live
            last = hi - 1 - np.argmax(at_zero[:, :, ::-1], axis=2)  # (members, features)
            where = last if rows_of is None else rows_of[features, last]
            zero_at = np.where(touched, base + where, zero_at)
            s = np.where(live, stat[:, :, -1], s)
        for f, det in enumerate(banked):  # write the state back
            det.s = s[:, f].copy()
            det.zero_at = zero_at[:, f].copy()
            det.n_seen = int(base[f]) + rows
        return hits
