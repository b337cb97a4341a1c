"""Per-batch quality rates: all-null, out-of-range and constant features are flagged, clean data not."""

from __future__ import annotations

import numpy as np

from streamwatch.profile import build_profile
from streamwatch.quality.checks import QualityReference, check_batch


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
