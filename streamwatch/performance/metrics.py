"""Model performance from joined (prediction, label) rows: pure, vectorised, scikit-learn's values.

Classification rows are integer class codes (``y_true``, ``y_pred``) and, when the model sends
scores, a ``(n, classes)`` score matrix; regression rows are floats. Every function computes a
window's metric exactly from its rows (windows are bounded by the label store's cap, so exact is
affordable), and :func:`classification_intervals` gives confidence intervals for the
confusion-matrix metrics by resampling the confusion matrix, so one numpy pass covers them all.

Examples
--------
>>> import numpy as np
>>> y_true, y_pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
>>> m = classification_metrics(y_true, y_pred, n_classes=2, positive=1)
>>> m["accuracy"], m["precision"], m["recall"]
(0.75, 1.0, 0.5)
>>> regression_metrics(np.array([1.0, 2.0]), np.array([1.5, 2.5]))["bias"]
0.5
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri
from scipy.stats import rankdata

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HIGHER_IS_BETTER = frozenset(
    {"accuracy", "precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1", "roc_auc"}
)
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse", "mape", "abs_bias"})
_EPS = float(np.finfo(np.float64).eps)


def confusion_matrix(y_true: IntArray, y_pred: IntArray, n_classes: int) -> IntArray:
    """Counts of (true class, predicted class); scikit-learn's orientation (rows are truth)."""
    flat = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _from_confusion(cm: npt.NDArray[np.float64], positive: int | None) -> dict[str, FloatArray]:
    """Metrics of a stack of confusion matrices ``(..., k, k)``, vectorised over the stack.

    Macro averages run over the classes present in the truth or the predictions, and a ratio
    with a zero denominator counts as 0, as scikit-learn's defaults do.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true_n = cm.sum(axis=-1)
    pred_n = cm.sum(axis=-2)
    total = true_n.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_n > 0, tp / np.where(pred_n > 0, pred_n, 1), 0.0)
        recall = np.where(true_n > 0, tp / np.where(true_n > 0, true_n, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
        present = (true_n + pred_n) > 0
        n_present = np.maximum(present.sum(axis=-1), 1)
        out = {
            "accuracy": tp.sum(axis=-1) / np.maximum(total, 1),
            "macro_precision": (precision * present).sum(axis=-1) / n_present,
            "macro_recall": (recall * present).sum(axis=-1) / n_present,
            "macro_f1": (f1 * present).sum(axis=-1) / n_present,
        }
    if positive is not None:
        out["precision"] = precision[..., positive]
        out["recall"] = recall[..., positive]
        out["f1"] = f1[..., positive]
    out["_precision"], out["_recall"], out["_f1"] = precision, recall, f1
    return out


def classification_metrics(
    y_true: IntArray,
    y_pred: IntArray,
    n_classes: int,
    positive: int | None = None,
    scores: FloatArray | None = None,
) -> dict[str, float]:
    """Accuracy, precision/recall/F1 (of ``positive`` when binary, and macro), ROC AUC, log loss
    and Brier score (the last three when ``scores`` are given).

    Per-class values come as ``precision[c]`` etc. keyed by class code in the returned dict
    under ``"precision/<c>"``.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    m = _from_confusion(cm, positive)
    out = {k: float(v) for k, v in m.items() if not k.startswith("_")}
    present = np.flatnonzero(cm.sum(axis=0) + cm.sum(axis=1))
    for name in ("precision", "recall", "f1"):
        for c in present.tolist():
            out[f"{name}/{c}"] = float(m[f"_{name}"][c])
    if scores is not None and len(y_true):
        out["roc_auc"] = roc_auc(y_true, scores, positive)
        out["log_loss"] = log_loss(y_true, scores)
        out["brier"] = brier(y_true, scores, positive)
    return out


def roc_auc(y_true: IntArray, scores: FloatArray, positive: int | None = None) -> float:
    """Binary AUC of ``positive``'s score, else the one-vs-rest macro AUC over the classes that
    have both positives and negatives in the window (NaN when none has)."""
    classes = [positive] if positive is not None else range(scores.shape[1])
    aucs = [_binary_auc(y_true == c, scores[:, c]) for c in classes]
    valid = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(valid)) if valid else float("nan")


def _binary_auc(is_pos: npt.NDArray[np.bool_], score: FloatArray) -> float:
    n_pos = int(is_pos.sum())
    n_neg = len(is_pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)  # mid-ranks: ties count one half (Mann-Whitney)
    return float((ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC estimate."""
    if n_pos == 0 or n_neg == 0 or np.isnan(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def _probabilities(y_true: IntArray, scores: FloatArray) -> FloatArray:
    p = np.clip(scores[np.arange(len(y_true)), y_true], _EPS, 1 - _EPS)
    return np.asarray(p, dtype=np.float64)


def log_loss(y_true: IntArray, scores: FloatArray) -> float:
    """Mean negative log-probability of the true class (probabilities clipped to [eps, 1-eps])."""
    return float(-np.mean(np.log(_probabilities(y_true, scores))))


def brier(y_true: IntArray, scores: FloatArray, positive: int | None = None) -> float:
    """Binary: mean squared error of ``positive``'s probability. Multi-class: mean over events of
    the squared distance between the score vector and the one-hot truth."""
    if positive is not None:
        return float(np.mean((scores[:, positive] - (y_true == positive)) ** 2))
    onehot = np.zeros_like(scores)
    onehot[np.arange(len(y_true)), y_true] = 1.0
    return float(np.mean(((scores - onehot) ** 2).sum(axis=1)))


def regression_metrics(y_true: FloatArray, y_pred: FloatArray) -> dict[str, float]:
    """MAE, RMSE, MAPE (a fraction; denominators floored at machine epsilon, as scikit-learn)
    and bias (mean of prediction minus truth: positive means the model over-predicts)."""
    err = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    if len(err) == 0:
        return {k: float("nan") for k in ("mae", "rmse", "mape", "bias", "abs_bias")}
    bias = float(err.mean())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err * err).mean())),
        "mape": float((np.abs(err) / np.maximum(np.abs(y_true), _EPS)).mean()),
        "bias": bias,
        "abs_bias": abs(bias),
    }


def classification_intervals(
    cm: IntArray, positive: int | None, confidence: float, seed: int, resamples: int = 400
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the confusion-matrix metrics, by resampling the window's
    confusion matrix as a multinomial (the bootstrap of its rows, without touching the rows)."""
    n = int(cm.sum())
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cm.ravel() / n, size=resamples).reshape(resamples, *cm.shape)
    m = _from_confusion(draws.astype(np.float64), positive)
    lo, hi = (1 - confidence) / 2, (1 + confidence) / 2
    return {
        k: (float(np.quantile(v, lo)), float(np.quantile(v, hi)))
        for k, v in m.items()
        if not k.startswith("_")
    }


def mean_interval(losses: FloatArray, confidence: float) -> tuple[float, float]:
    """Normal interval of the mean of per-event losses."""
    n = len(losses)
    if n < 2:
        return (float("nan"), float("nan"))
    z = float(ndtri((1 + confidence) / 2))
    mu, se = float(losses.mean()), float(losses.std(ddof=1) / np.sqrt(n))
    return (mu - z * se, mu + z * se)


__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "auc_standard_error",
    "brier",
    "classification_intervals",
    "classification_metrics",
    "confusion_matrix",
    "log_loss",
    "mean_interval",
    "regression_metrics",
    "roc_auc",
]
