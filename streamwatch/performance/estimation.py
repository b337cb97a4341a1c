"""Performance before labels: confidence-based estimation (CBPE), incremental.

NannyML's CBPE estimates a classifier's confusion matrix from its calibrated scores: an event
predicted as class ``c`` whose calibrated probability of really being ``c`` is ``p`` adds ``p`` to
the expected true positives of ``c`` and ``1 - p`` to its false positives, and every event adds
its calibrated probability of ``c`` to ``c``'s expected false negatives when predicted otherwise.
Here the calibration is histogram binning per class, fitted on the labelled reference, and the
expected counts are sums, so a window's estimate grows one batch at a time and windows merge by
addition.

The estimate is only as good as two assumptions: the scores' calibration learnt on the
reference still holds (no concept drift), and the reference covers the scores seen now.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.random(20_000)
>>> scores = np.column_stack([1 - p, p])
>>> y = (rng.random(20_000) < p).astype(np.int64)
>>> cal = BinnedCalibrator.fit(scores, y, bins=10)
>>> est = ExpectedConfusion(2)
>>> est.add(cal.transform(scores), scores.argmax(axis=1))
>>> round(est.metrics(positive=1)["accuracy"], 2), round(float((scores.argmax(1) == y).mean()), 2)
(0.75, 0.75)

References
----------
NannyML. Confidence-based Performance Estimation (CBPE).
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class BinnedCalibrator:
    """Per class: quantile bins of the score and the share of that class in each bin."""

    def __init__(self, edges: list[FloatArray], rates: list[FloatArray]) -> None:
        self.edges, self.rates = edges, rates

    @classmethod
    def fit(cls, scores: FloatArray, y_true: IntArray, bins: int = 10) -> BinnedCalibrator:
        edges, rates = [], []
        for c in range(scores.shape[1]):
            s = np.nan_to_num(scores[:, c], nan=0.0)
            e = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1]))
            idx = np.searchsorted(e, s, side="right")
            hits = np.bincount(idx, weights=(y_true == c).astype(np.float64), minlength=len(e) + 1)
            n = np.bincount(idx, minlength=len(e) + 1)
            # a Beta(1, 1) prior keeps empty or tiny bins away from 0 and 1
            edges.append(e)
            rates.append((hits + 1.0) / (n + 2.0))
        return cls(edges, rates)

    @property
    def classes(self) -> int:
        return len(self.edges)

    def transform(self, scores: FloatArray) -> FloatArray:
        """Calibrated probability of each class, ``(n, classes)``; classes unseen in the
        reference get 0."""
        out = np.zeros((len(scores), max(self.classes, scores.shape[1])))
        for c in range(min(self.classes, scores.shape[1])):
            s = np.nan_to_num(scores[:, c], nan=0.0)
            out[:, c] = self.rates[c][np.searchsorted(self.edges[c], s, side="right")]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [e.tolist() for e in self.edges], "rates": [r.tolist() for r in self.rates]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinnedCalibrator:
        return cls(
            [np.asarray(e, dtype=np.float64) for e in d["edges"]],
            [np.asarray(r, dtype=np.float64) for r in d["rates"]],
        )


class ExpectedConfusion:
    """Expected true positives, false positives and false negatives per class."""

    def __init__(self, classes: int) -> None:
        self.n = 0
        self.tp, self.fp, self.fn = np.zeros(classes), np.zeros(classes), np.zeros(classes)

    def _widen(self, k: int) -> None:
        if k > len(self.tp):
            pad = k - len(self.tp)
            self.tp, self.fp, self.fn = (np.pad(a, (0, pad)) for a in (self.tp, self.fp, self.fn))

    def add(self, calibrated: FloatArray, predicted: IntArray) -> None:
        k = calibrated.shape[1]
        self._widen(k)
        onehot = np.zeros_like(calibrated)
        onehot[np.arange(len(predicted)), predicted] = 1.0
        self.tp[:k] += (onehot * calibrated).sum(axis=0)
        self.fp[:k] += (onehot * (1 - calibrated)).sum(axis=0)
        self.fn[:k] += ((1 - onehot) * calibrated).sum(axis=0)
        self.n += len(predicted)

    def metrics(self, positive: int | None) -> dict[str, float]:
        if self.n == 0:
            return {}
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(self.tp + self.fp > 0, self.tp / (self.tp + self.fp), 0.0)
            recall = np.where(self.tp + self.fn > 0, self.tp / (self.tp + self.fn), 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        present = (self.tp + self.fp + self.fn) > 0
        out = {
            "accuracy": float(self.tp.sum() / self.n),
            "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
            "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        }
        if positive is not None and positive < len(self.tp):
            out |= {
                "precision": float(precision[positive]),
                "recall": float(recall[positive]),
                "f1": float(f1[positive]),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "tp": self.tp.tolist(), "fp": self.fp.tolist(), "fn": self.fn.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpectedConfusion:
        e = cls(len(d["tp"]))
        e.n = int(d["n"])
        e.tp, e.fp, e.fn = (np.asarray(d[k], dtype=np.float64) for k in ("tp", "fp", "fn"))
        return e


__all__ = ["BinnedCalibrator", "ExpectedConfusion"]
