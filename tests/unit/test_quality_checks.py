"""Per-batch quality rates: all-null, out-of-range and constant features are flagged, clean data not."""

from __future__ import annotations

import numpy as np

from streamwatch.profile import build_profile
from streamwatch.quality.checks import QualityReference, check_batch
from streamwatch.quality.chunks import BINS, COARSE, SketchCells
from streamwatch.quality.ks import ks_distance


def _reference(rng: np.random.Generator, m: int = 2000) -> tuple[QualityReference, list[str]]:
    x = rng.normal(50.0, 10.0, m)
    x[rng.random(m) < 0.02] = np.nan
    chunk = {
        "a": x.tolist(),
        "b": rng.gamma(2.0, 3.0, m).tolist(),
        "c": rng.poisson(2.0, m).astype(float).tolist(),
    }
    prof = build_profile([{k: [None if np.isnan(v) else v for v in vs] for k, vs in chunk.items()}], "m")
    names = ["a", "b", "c"]
    return QualityReference.from_profile(prof, names), names


def _batch(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(50.0, 10.0, n)
    a[rng.random(n) < 0.02] = np.nan
    return np.column_stack([a, rng.gamma(2.0, 3.0, n), rng.poisson(2.0, n).astype(float)])


def test_clean_batches_stay_quiet() -> None:
    rng = np.random.default_rng(0)
    ref, _ = _reference(rng)
    for n in [1, 5, 50, 500, 5000] * 40:
        assert check_batch(_batch(rng, n), ref) == []


def test_all_null_out_of_range_and_constant_are_flagged() -> None:
    rng = np.random.default_rng(1)
    ref, names = _reference(rng)
    x = _batch(rng, 500)
    x[:, 0] = np.nan  # a feature that becomes all null
    x[:, 1] *= 1000.0  # far out of range
    x[:, 2] = 7.0  # turned constant
    found = {(f.check, names[f.feature]) for f in check_batch(x, ref)}
    assert found == {("missing", "a"), ("out_of_range", "b"), ("constant", "c")}
    msgs = [f.message(names, "10:42") for f in check_batch(x, ref)]
    assert msgs[0].startswith("a is missing in 100.0% of events since 10:42 (reference 2.")
    assert any(m.startswith("b is outside its reference range") for m in msgs)
    assert any(m.startswith("c turned constant at 7") for m in msgs)


def test_a_discrete_feature_at_its_mode_is_not_constant_in_a_small_batch() -> None:
    rng = np.random.default_rng(2)
    ref, _ = _reference(rng)
    x = _batch(rng, 10)
    x[:, 2] = 2.0  # mode share ~0.27: 10 in a row is unusual, but not below alpha
    assert not any(f.check == "constant" for f in check_batch(x, ref))


# -- chunk summaries: the cells behind the KS bound of the quality watch -----------------------


def _sketches(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sketches of a normal, a heavy tail, a count, a zero-inflated and a two-valued feature, with
    samples from them and from shifted versions (values equal to quantiles included)."""
    refs = [
        rng.normal(0.0, 1.0, 1000),
        np.exp(rng.normal(0.0, 2.5, 1000)),
        rng.poisson(2.0, 1000).astype(float),
        np.where(rng.random(1000) < 0.4, 0.0, rng.gamma(2.0, 2.0, 1000)),
        rng.choice([3.0, 7.0], 1000, p=[0.8, 0.2]),
    ]
    q = np.vstack([np.quantile(r, np.linspace(0, 1, 101)) for r in refs])
    samples = []
    for r in refs:
        for shift in (0.0, 0.5, 3.0):
            x = rng.choice(r, 500) + shift * (rng.random() < 0.5)
            x[rng.random(500) < 0.1] = rng.choice(np.unique(r), 1)  # an atom at a reference value
            samples.append(x)
    return q, samples


def test_sketch_cells_are_the_counts_of_quantiles_below() -> None:
    rng = np.random.default_rng(5)
    q, samples = _sketches(rng)
    cells = SketchCells(q)
    x = np.column_stack([np.concatenate(samples[3 * j : 3 * j + 3]) for j in range(len(q))])
    got = cells.cells(x)
    for j in range(len(q)):
        inner = q[j, 1:-1]
        below = np.searchsorted(inner, x[:, j], side="right")
        at_atom = np.isin(x[:, j], inner[1:][inner[1:] == inner[:-1]])
        first = np.searchsorted(inner, x[:, j], side="left") + 1
        assert (got[:, j] == np.where(at_atom, first, below)).all(), j


def test_sketch_cells_bound_the_ks_distance_from_above_within_two_percent() -> None:
    rng = np.random.default_rng(6)
    q, samples = _sketches(rng)
    cells = SketchCells(q)
    for i, x in enumerate(samples):
        j = i // 3
        cols = np.zeros((len(x), len(q)))
        cols[:, j] = x
        hist = np.zeros((len(q), BINS), dtype=np.int64)
        hist[j] = np.bincount(cells.cells(cols)[:, j], minlength=BINS)
        exact = ks_distance(q[j], x)
        bound = float(cells.ks_bound(hist[j : j + 1], np.array([j]))[0])
        coarse = float(cells.coarse_bound(hist.reshape(len(q), COARSE, -1).sum(axis=-1))[j])
        assert exact <= bound + 1e-12 <= coarse + 2e-12, (i, exact, bound, coarse)
        assert bound <= exact + 0.02 + 1e-12, (i, exact, bound)
