"""Column swap: swaps and rotations are found; clean data and ordinary drift stay quiet."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from streamwatch.quality.column_swap import assignment, cycles, detect_column_swap

P = np.linspace(0.0, 1.0, 101)
NAMES = ["height_cm", "width_cm", "depth_cm", "weight", "z1", "visits", "z2"]


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Overlapping heights/widths/depths, a skewed, a standard, a discrete and a twin feature."""
    return np.column_stack(
        [
            rng.normal(170.0, 10.0, n),
            rng.normal(165.0, 10.0, n),  # half a standard deviation from height
            rng.normal(160.0, 12.0, n),
            rng.gamma(2.0, 3.0, n),
            rng.normal(0.0, 1.0, n),
            rng.poisson(3.0, n).astype(float),
            rng.normal(0.0, 1.0, n),  # same distribution as z1: a swap cannot be seen
        ]
    )


def _run(change: Callable[[np.ndarray], np.ndarray], seed: int, m: int, n: int = 500):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    ref = _features(rng, m)
    q = np.quantile(ref, P, axis=0).T
    return detect_column_swap(q, change(_features(rng, n)), reference_counts=[m] * ref.shape[1])


def _permute(perm: dict[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Current column i gets the values of reference feature perm[i]."""

    def f(x: np.ndarray) -> np.ndarray:
        y = x.copy()
        for i, j in perm.items():
            y[:, i] = x[:, j]
        return y

    return f


def _shift(i: int, by: float, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    def f(x: np.ndarray) -> np.ndarray:
        y = x.copy()
        mu = y[:, i].mean()
        y[:, i] = (y[:, i] - mu) * scale + mu + by
        return y

    return f


@pytest.mark.parametrize(
    ("perm", "min_found"),
    [
        ({0: 1, 1: 0}, 0.95),  # overlapping: half a standard deviation apart
        ({0: 3, 3: 0}, 1.0),  # different units and shapes
        ({0: 1, 1: 2, 2: 0}, 0.95),  # rotation among three
        ({3: 5, 5: 3}, 1.0),  # a continuous and a discrete feature
    ],
)
def test_swaps_and_rotations_are_found_within_500_events(perm: dict[int, int], min_found: float) -> None:
    seeds = 60
    found = 0
    for seed in range(seeds):
        r = _run(_permute(perm), seed, m=[1000, 2000, 5000][seed % 3])
        assert not r.detected or r.mapping == perm, (seed, r.mapping)
        found += r.detected
    assert found >= min_found * seeds


def test_message_and_details() -> None:
    r = _run(_permute({0: 1, 1: 0}), 0, m=5000)
    assert r.message(NAMES, since="10:42") == (
        "height_cm looks like width_cm and width_cm like height_cm since 10:42 — likely swapped columns"
    )
    d = r.details(NAMES)
    assert d["mapping"] == {"height_cm": "width_cm", "width_cm": "height_cm"}
    assert d["ks_matched_reference"]["height_cm"] < d["fit_threshold"] < d["drift_threshold"]
    assert d["ks_own_reference"]["height_cm"] > d["drift_threshold"]
    rot = _run(_permute({0: 1, 1: 2, 2: 0}), 0, m=5000)
    assert rot.message(NAMES) == (
        "height_cm looks like width_cm, width_cm like depth_cm and depth_cm like height_cm"
        " — likely rotated columns"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda x: x,  # clean
        _permute({4: 6, 6: 4}),  # identical distributions: nothing to see
        _shift(0, 10.0),  # mean shift of 1 sd
        _shift(0, -5.0),  # height now looks exactly like width's reference, width unchanged
        _shift(1, 5.0),  # width now looks like height's reference
        _shift(2, 0.0, 10.0 / 12.0),  # variance change
        _shift(4, 1.0),
        lambda x: _shift(1, 10.0)(_shift(0, 10.0)(x)),  # two features drift together
    ],
)
def test_clean_data_and_ordinary_drift_stay_quiet(change: Callable[[np.ndarray], np.ndarray]) -> None:
    for seed in range(100):
        r = _run(change, seed, m=[1000, 2000, 5000][seed % 3])
        assert not r.detected, (seed, r.mapping)


def test_candidates_restrict_the_moves() -> None:
    r = _run(_permute({0: 1, 1: 0}), 0, m=5000)
    assert r.detected
    rng = np.random.default_rng(0)
    ref = _features(rng, 5000)
    q = np.quantile(ref, P, axis=0).T
    cur = _permute({0: 1, 1: 0})(_features(rng, 500))
    mask = np.zeros(len(NAMES), dtype=bool)
    mask[[0, 3]] = True
    assert not detect_column_swap(q, cur, reference_counts=[5000] * 7, candidates=mask).detected


def test_assignment_is_optimal() -> None:
    rng = np.random.default_rng(5)
    for k in (1, 2, 4, 6):
        for _ in range(20):
            c = rng.random((k, k))
            best = min(itertools.permutations(range(k)), key=lambda p: sum(c[i, p[i]] for i in range(k)))
            got = assignment(c)
            assert sum(c[i, got[i]] for i in range(k)) == pytest.approx(sum(c[i, best[i]] for i in range(k)))
    assert cycles([0, 1, 2]) == []
