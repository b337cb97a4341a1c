"""CUSUMBank gives bit-identical results to the per-feature CUSUMs it vectorises."""

from __future__ import annotations

import numpy as np
import pytest

from streamwatch.detectors.cusum import CUSUM, CUSUMBank


def _make(rng: np.random.Generator, kind: str, rebaseline: bool = False) -> CUSUM:
    if kind == "discrete":
        ref = rng.integers(0, 4, 800).astype(float)
    elif kind == "ties":
        ref = np.round(rng.normal(size=900), 1)
    else:
        ref = rng.normal(size=1000)
    return CUSUM(min_shift=0.5, direction="both", threshold=9.0, reference=ref, rebaseline=rebaseline)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bank_matches_single_cusums(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kinds = ["normal", "discrete", "ties", "normal", "normal", "discrete"]
    singles = [_make(np.random.default_rng(seed * 10 + i), k) for i, k in enumerate(kinds)]
    banked = [_make(np.random.default_rng(seed * 10 + i), k) for i, k in enumerate(kinds)]
    bank = CUSUMBank(banked)
    alarms = 0
    for b in range(60):
        rows = int(rng.choice([1, 7, 200, 500, 5000])) if b % 10 else 0
        x = rng.normal(size=(rows, len(kinds)))
        x[:, 1] = rng.integers(0, 4, rows)
        x[:, 5] = rng.integers(0, 4, rows)
        x[:, 2] = np.round(x[:, 2], 1)
        if b > 20:  # drifts: repeated alarms of the fixed-reference CUSUMs
            x[:, 0] += 1.5
            x[:, 5] += 1.0
        x[rng.random(x.shape) < 0.05] = np.nan
        x[rng.random(x.shape) < 0.01] = np.inf
        got = bank.update(x)
        for j, c in enumerate(singles):
            want = c.update(x[:, j])
            assert got[j] == want
            alarms += len(want)
            assert banked[j].to_dict() == c.to_dict()
    assert alarms > 10


def test_bank_with_slow_members() -> None:
    rng = np.random.default_rng(5)
    singles = [_make(rng, "normal"), CUSUM(warmup=50, threshold=9.0), _make(rng, "normal", rebaseline=True)]
    rng = np.random.default_rng(5)
    banked = [_make(rng, "normal"), CUSUM(warmup=50, threshold=9.0), _make(rng, "normal", rebaseline=True)]
    bank = CUSUMBank(banked)
    for b in range(20):
        x = rng.normal(size=(100, 3)) + (2.0 if b > 5 else 0.0)
        got = bank.update(x)
        for j, c in enumerate(singles):
            assert got[j] == c.update(x[:, j])
            assert banked[j].to_dict() == c.to_dict()
