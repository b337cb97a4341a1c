"""Histograms, bins and PSI against hand computation and known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamwatch.detectors.psi import EPS, psi
from streamwatch.detectors.window import FeatureWindowTests
from streamwatch.sketches import BlockWindow, ReferenceBins


def _hand_psi(p: list[float], q: list[float]) -> float:
    return sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))


def test_psi_matches_hand_computation() -> None:
    ref, cur = [40, 30, 20, 10], [10, 20, 30, 40]
    expected = _hand_psi([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4])
    assert expected == pytest.approx(2 * (0.3 * math.log(4) + 0.1 * math.log(1.5)))  # = 0.9129
    assert float(psi(ref, cur)) == pytest.approx(expected, rel=1e-12)


def test_psi_is_zero_for_identical_proportions_and_symmetric() -> None:
    assert float(psi([5, 10, 85], [50, 100, 850])) == pytest.approx(0.0, abs=1e-15)
    a, b = [10, 20, 70], [30, 30, 40]
    assert float(psi(a, b)) == pytest.approx(float(psi(b, a)))


def test_psi_floors_empty_bins_at_eps() -> None:
    # bin 2 empties in the window: q = EPS instead of 0
    expected = _hand_psi([0.5, 0.5], [1.0, EPS])
    assert float(psi([50, 50], [100, 0])) == pytest.approx(expected)


def test_psi_rows_and_empty_rows() -> None:
    out = psi(np.array([[1, 1], [1, 1]]), np.array([[1, 1], [0, 0]]))
    assert out[0] == 0.0 and math.isnan(out[1])


def test_psi_of_known_normal_shift_matches_theory() -> None:
    # equal-mass deciles of N(0,1) against N(0.5,1); the binned PSI of a 0.5 sd shift is about 0.23
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(200_000)
    bins = ReferenceBins.fit(ref[:, None], np.zeros((ref.size, 0), np.int64), 10, 1)
    cur = rng.standard_normal(200_000) + 0.5
    hist_ref = np.bincount(
        bins.transform(ref[:, None], np.zeros((ref.size, 0), np.int64)).ravel(), minlength=10
    )
    hist_cur = np.bincount(
        bins.transform(cur[:, None], np.zeros((cur.size, 0), np.int64)).ravel(), minlength=10
    )
    assert hist_ref.min() > 19_000  # equal mass
    value = float(psi(hist_ref, hist_cur))
    assert 0.2 < value < 0.26  # KL-symmetrised of N(0,1) vs N(.5,1) unbinned is 0.25


def test_reference_bins_quantiles_missing_and_categories() -> None:
    x = np.array([[v, v * 10] for v in range(1, 101)], dtype=float)
    codes = np.array([[0]] * 60 + [[1]] * 30 + [[2]] * 10)
    bins = ReferenceBins.fit(x, codes, bins=4, max_categories=2)
    assert bins.sizes.tolist() == [4, 4, 3]
    assert bins.offsets.tolist() == [0, 4, 8]
    flat = bins.transform(
        np.array([[1.0, np.nan], [100.0, 1000.0]]),
        np.array([[2], [7]]),  # code 2 is rare, code 7 is new: both go to 'other'
    )
    assert flat.tolist() == [[0, -1, 10], [3, 7, 10]]
    assert bins.transform(np.zeros((1, 2)), np.array([[-1]]))[0, 2] == -1
    again = ReferenceBins.from_dict(bins.to_dict())
    assert np.array_equal(again.edges, bins.edges) and again.total == bins.total


def test_block_window_is_independent_of_batching() -> None:
    rng = np.random.default_rng(3)
    flat = rng.integers(-1, 6, size=(1234, 2))
    times = np.arange(1234)
    one = BlockWindow(4, 50, 6)
    closes_one = list(one.add(flat, times))
    many = BlockWindow(4, 50, 6)
    closes_many = []
    cut = 0
    for size in rng.integers(1, 120, size=100):
        if cut >= 1234:
            break
        closes_many += [(cut + r, b) for r, b in many.add(flat[cut : cut + size], times[cut : cut + size])]
        cut += int(size)
    assert closes_one == closes_many
    assert np.array_equal(one.counts(), many.counts())
    last200 = flat[1200 - 200 : 1200]
    expected = np.bincount(last200[last200 >= 0].ravel(), minlength=6)
    assert np.array_equal(one.counts(), expected)


@pytest.mark.parametrize("seed", range(40))
def test_counts_at_closes_are_the_windows_add_closes(seed: int) -> None:
    """The batch's windows scored up front are exactly those the monitor would see block by block."""
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(1, 7))
    window = BlockWindow(int(rng.integers(1, 6)), int(rng.integers(1, 9)), bins)
    for _ in range(8):
        n = int(rng.integers(0, 40))
        flat = rng.integers(-1, bins, size=(n, int(rng.integers(1, 3))))
        ahead = window.counts_at_closes(flat)
        seen = [window.counts().copy() for _ in window.add(flat, np.arange(n))]
        assert ahead.shape == (len(seen), bins)
        assert all(np.array_equal(a, b) for a, b in zip(ahead, seen, strict=True))


def test_window_tests_score_many_windows_as_each_alone() -> None:
    """Scoring a batch's windows in one call gives, bit for bit, what one call per window gives."""
    rng = np.random.default_rng(7)
    for stats in (["psi", "psi", "psi"], ["ks", "js", "wasserstein"], ["chi2", "psi", "chi2"]):
        sizes = np.array([5, 5, 8])
        tests = FeatureWindowTests(rng.integers(0, 60, int(sizes.sum())), sizes, stats, alpha=0.01, draws=500)
        counts = rng.integers(0, 30, size=(12, int(sizes.sum())))
        counts[rng.random(counts.shape) < 0.2] = 0
        counts[3, :5] = 0  # a feature with no values in one window
        scores, thresholds = tests.evaluate(counts)
        for row, c in enumerate(counts):
            one_scores, one_thresholds = tests.evaluate(c)
            assert np.array_equal(scores[row], one_scores, equal_nan=True)
            assert np.array_equal(thresholds[row], one_thresholds, equal_nan=True)
        assert np.isnan(scores[3, 0]) and np.isnan(thresholds[3, 0])
