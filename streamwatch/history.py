"""Bounded histories of a monitor's evaluations, so a report can show them over time.

The monitors hold current state only; these two small objects remember what their evaluations
said, recorded at evaluation points only (one window test, one judged or expired performance
window), never per event, and bounded whatever the monitor's age:

* :class:`DriftHistory` - every window evaluation of one monitor (event time, events seen, per
  feature the window statistic and its threshold, the CUSUM statistic and its threshold) in at
  most ``capacity`` points. When full, neighbouring points merge pairwise and each point stands
  for twice as many evaluations from then on, so the history spans the monitor's whole life at an
  even resolution. A merged point keeps the largest statistics of its evaluations (a short alarm
  is never averaged away) and the time, events seen and thresholds of its newest one.
* :class:`PerformanceHistory` - per prediction-time window of the performance tracker: its
  judged metrics, their baselines, label coverage, labels and predictions; the newest
  ``capacity`` windows are kept.

Both snapshot to plain JSON (``to_dict``/``from_dict``) inside their owner's snapshot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.jsonarrays import floats as _floats

HISTORY_POINTS = 256  # drift history points per monitor (even: merged pairwise when full)
PERFORMANCE_WINDOWS = 256  # performance windows remembered per model

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class DriftHistory:
    """Window evaluations of one monitor's ``features`` features, in at most ``capacity`` points.

    Examples
    --------
    >>> import numpy as np
    >>> h = DriftHistory(features=1, capacity=4)
    >>> for i in range(6):
    ...     h.record(1000 * i, 100 * (i + 1), np.array([i % 3]), np.ones(1), np.zeros(1), np.ones(1))
    >>> h.stride, h.series()["times_ms"].tolist(), h.series()["scores"][:, 0].tolist()
    (2, [1000, 3000, 5000], [1.0, 2.0, 2.0])
    """

    def __init__(self, features: int, capacity: int = HISTORY_POINTS) -> None:
        if capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 2, got {capacity}")
        self.features = features
        self.capacity = capacity
        self.stride = 1  # evaluations per stored point
        self.n = 0  # stored points
        self.times = np.zeros(capacity, dtype=np.int64)
        self.events = np.zeros(capacity, dtype=np.int64)
        # (capacity, 4, features): score, threshold, cusum statistic, cusum threshold
        self.values = np.full((capacity, 4, features), np.nan, dtype=np.float32)
        # the point being filled: evaluations in it, and its time, events and values so far
        self.pending = 0
        self.pending_time = 0
        self.pending_events = 0
        self.pending_values = np.full((4, features), np.nan, dtype=np.float32)

    def record(
        self,
        t_ms: int,
        events_seen: int,
        scores: npt.ArrayLike,
        thresholds: npt.ArrayLike,
        cusum: npt.ArrayLike,
        cusum_thresholds: npt.ArrayLike,
    ) -> None:
        """Add one evaluation (``cusum``/``cusum_thresholds`` may be shorter: numeric features only)."""
        row = np.full((4, self.features), np.nan, dtype=np.float32)
        for k, v in enumerate((scores, thresholds, cusum, cusum_thresholds)):
            a = np.asarray(v, dtype=np.float32)
            row[k, : len(a)] = a
        p = self.pending_values
        if self.pending:
            np.fmax(p[0::2], row[0::2], out=p[0::2])  # statistics: the largest of the point
            p[1::2] = row[1::2]  # thresholds: the newest
        else:
            p[:] = row
        self.pending += 1
        self.pending_time, self.pending_events = int(t_ms), int(events_seen)
        if self.pending < self.stride:
            return
        self.times[self.n], self.events[self.n], self.values[self.n] = t_ms, events_seen, p
        self.n += 1
        self.pending = 0
        if self.n == self.capacity:
            self._halve()

    def _halve(self) -> None:
        k = self.capacity // 2
        v = self.values
        merged = v[1::2].copy()  # time, events and thresholds of the newer point of each pair
        np.fmax(v[0::2, 0::2], v[1::2, 0::2], out=merged[:, 0::2])
        self.values[:k], self.values[k:] = merged, np.nan
        self.times[:k], self.times[k:] = self.times[1::2].copy(), 0
        self.events[:k], self.events[k:] = self.events[1::2].copy(), 0
        self.n = k
        self.stride *= 2

    def __len__(self) -> int:
        return self.n + (1 if self.pending else 0)

    def series(self) -> dict[str, npt.NDArray[Any]]:
        """Points oldest first, the one being filled included: ``times_ms``, ``events`` (n,) and
        ``scores``, ``thresholds``, ``cusum``, ``cusum_thresholds`` (n, features) as float64."""
        times, events, values = self.times[: self.n], self.events[: self.n], self.values[: self.n]
        if self.pending:
            times = np.append(times, self.pending_time)
            events = np.append(events, self.pending_events)
            values = np.concatenate([values, self.pending_values[None]])
        v = values.astype(np.float64)
        return {
            "times_ms": times,
            "events": events,
            "scores": v[:, 0],
            "thresholds": v[:, 1],
            "cusum": v[:, 2],
            "cusum_thresholds": v[:, 3],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "capacity": self.capacity,
            "stride": self.stride,
            "times": self.times[: self.n],
            "events": self.events[: self.n],
            "values": self.values[: self.n],
            "pending": self.pending,
            "pending_time": self.pending_time,
            "pending_events": self.pending_events,
            "pending_values": self.pending_values,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftHistory:
        h = cls(int(d["features"]), int(d["capacity"]))
        h.stride = int(d["stride"])
        h.n = n = len(d["times"])
        h.times[:n] = np.asarray(d["times"], dtype=np.int64)
        h.events[:n] = np.asarray(d["events"], dtype=np.int64)
        if n:
            h.values[:n] = _floats(d["values"]).reshape(n, 4, h.features)
        h.pending = int(d["pending"])
        h.pending_time, h.pending_events = int(d["pending_time"]), int(d["pending_events"])
        h.pending_values[:] = _floats(d["pending_values"]).reshape(4, h.features)
        return h


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


class PerformanceHistory:
    """Per performance window (prediction-time index ``window``): what it showed, newest kept.

    A window is recorded when it is judged against the baseline and again when it leaves the
    tracker, with its final labels; the newer record of a window replaces the older.

    Examples
    --------
    >>> h = PerformanceHistory(capacity=2)
    >>> h.record(5, 5000, {"accuracy": 0.9}, {"accuracy": 0.92}, 0.5, 50, 100)
    >>> h.record(5, 5000, {"accuracy": 0.8}, {"accuracy": 0.92}, 1.0, 100, 100)
    >>> h.record(7, 7000, {}, {}, 0.0, 0, 10)
    >>> h.record(6, 6000, {"accuracy": float("nan")}, {}, 0.1, 1, 10)
    >>> [(r["window"], r["values"]) for r in h.rows()]
    [(6, {'accuracy': None}), (7, {})]
    """

    def __init__(self, capacity: int = PERFORMANCE_WINDOWS) -> None:
        self.capacity = capacity
        self.windows: dict[int, dict[str, Any]] = {}

    def record(
        self,
        window: int,
        start_ms: int,
        values: dict[str, float],
        baseline: dict[str, float],
        coverage: float,
        labels: int,
        predictions: int,
    ) -> None:
        self.windows[int(window)] = {
            "window": int(window),
            "start_ms": int(start_ms),
            "values": {k: _num(v) for k, v in values.items()},
            "baseline": {k: _num(v) for k, v in baseline.items()},
            "coverage": _num(coverage),
            "labels": int(labels),
            "predictions": int(predictions),
        }
        if len(self.windows) > self.capacity:
            del self.windows[min(self.windows)]

    def rows(self) -> list[dict[str, Any]]:
        """The windows oldest first."""
        return [self.windows[i] for i in sorted(self.windows)]

    def __len__(self) -> int:
        return len(self.windows)

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "windows": self.rows()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerformanceHistory:
        h = cls(int(d["capacity"]))
        for r in d["windows"]:
            h.windows[int(r["window"])] = dict(r)
        return h


__all__ = ["HISTORY_POINTS", "PERFORMANCE_WINDOWS", "DriftHistory", "PerformanceHistory"]
