"""Window metrics equal scikit-learn's on random data; intervals cover the truth."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from streamwatch.performance.metrics import (
    classification_intervals,
    classification_metrics,
    confusion_matrix,
    regression_metrics,
)


def _scores(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    s = rng.random((n, k))
    return s / s.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(10))
def test_binary_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 500))
    scores = _scores(rng, n, 2)
    y_true = (rng.random(n) < scores[:, 1]).astype(np.int64)
    y_pred = (scores[:, 1] >= 0.5).astype(np.int64)
    m = classification_metrics(y_true, y_pred, 2, positive=1, scores=scores)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    kw = {"zero_division": 0}
    assert m["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, **kw))
    assert m["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, **kw))
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, **kw))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", **kw))
    if 0 < y_true.sum() < n:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, scores[:, 1]))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y_true, scores, labels=[0, 1]))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y_true, scores[:, 1]))


@pytest.mark.parametrize("seed", range(10))
def test_multiclass_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(50, 800)), int(rng.integers(3, 6))
    scores = _scores(rng, n, k)
    y_true = np.array([rng.choice(k, p=p) for p in scores], dtype=np.int64)
    y_pred = scores.argmax(axis=1).astype(np.int64)
    m = classification_metrics(y_true, y_pred, k, scores=scores)
    kw = {"zero_division": 0}
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for avg in ("precision", "recall", "f1"):
        fn = getattr(skm, f"{avg}_score")
        assert m[f"macro_{avg}"] == pytest.approx(fn(y_true, y_pred, average="macro", **kw))
        per_class = fn(y_true, y_pred, average=None, labels=list(range(k)), **kw)
        for c in range(k):
            if f"{avg}/{c}" in m:
                assert m[f"{avg}/{c}"] == pytest.approx(per_class[c])
    if len(np.unique(y_true)) == k:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, scores, multi_class="ovr"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y_true, scores, labels=list(range(k))))
    onehot = np.eye(k)[y_true]
    assert m["brier"] == pytest.approx(np.mean(((scores - onehot) ** 2).sum(axis=1)))


def test_auc_with_ties_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.random(400), 1)  # heavy ties
    scores = np.column_stack([1 - s, s])
    m = classification_metrics(y, (s >= 0.5).astype(np.int64), 2, positive=1, scores=scores)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))


@pytest.mark.parametrize("seed", range(10))
def test_regression_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 30, 300)
    p = y + rng.normal(2, 10, 300)
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, p))
    assert m["bias"] == pytest.approx(np.mean(p - y))


def test_intervals_cover_the_true_accuracy() -> None:
    """Over many windows drawn with accuracy 0.8, the 90% interval covers 0.8 about 90% of the time."""
    rng = np.random.default_rng(0)
    covered = 0
    for seed in range(300):
        y_true = rng.integers(0, 2, 400)
        y_pred = np.where(rng.random(400) < 0.8, y_true, 1 - y_true)
        lo, hi = classification_intervals(confusion_matrix(y_true, y_pred, 2), 1, 0.9, seed)["accuracy"]
        covered += lo <= 0.8 <= hi
    assert 0.85 <= covered / 300 <= 0.95
