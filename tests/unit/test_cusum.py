"""CUSUM bank: finds planted changes, holds its configured false-alarm rate, restores exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamwatch.detectors.base import Detector
from streamwatch.detectors.cusum import CUSUM


def _gauss(seed: int, n: int = 6000, at: int = 4000, shift: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 3.0, n)
    x[at:] += shift * 3.0
    return x


def _bern(seed: int, n: int = 6000, at: int = 4000, p0: float = 0.1, p1: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.where(np.arange(n) < at, p0, p1)
    return (rng.random(n) < p).astype(float)


@pytest.mark.parametrize("make", [_gauss, _bern])
def test_finds_the_planted_change_with_its_start(make) -> None:  # type: ignore[no-untyped-def]
    hits = 0
    for seed in range(10):
        det = CUSUM(min_shift=0.5, direction="up", arl0=100_000, warmup=1000)
        found = [d for d in det.update(make(seed)) if d.at >= 4000]
        if found and found[0].at < 4300:
            hits += 1
            assert 3700 <= found[0].start <= found[0].at
            assert found[0].statistic > found[0].threshold
    assert hits == 10


@pytest.mark.parametrize(("make", "direction"), [(_gauss, "both"), (_gauss, "up"), (_bern, "up")])
def test_false_alarm_rate_matches_the_configured_arl0(make, direction: str) -> None:  # type: ignore[no-untyped-def]
    # ARL0 = 5 000 over 40 x 20 000 null values: about 160 alarms expected (Poisson sd 13). The
    # rate is calibrated on average over references; a large reference keeps that spread small.
    arl0, alarms, exposure = 5_000.0, 0, 0
    for seed in range(40):
        det = CUSUM(min_shift=0.5, direction=direction, arl0=arl0, warmup=4000, rebaseline=False)
        x = make(seed, n=24_000, at=24_000)
        alarms += len(det.update(x))
        exposure += 20_000
    expected = exposure / arl0
    assert 0.75 * expected <= alarms <= 1.25 * expected, (alarms, expected)


def test_one_alarm_per_persistent_change_with_rebaseline() -> None:
    x = _gauss(3, n=12_000, at=4000)
    assert len([d for d in CUSUM(arl0=100_000).update(x) if d.at >= 4000]) == 1
    assert len([d for d in CUSUM(arl0=100_000, rebaseline=False).update(x) if d.at >= 4000]) > 10


@pytest.mark.parametrize("rebaseline", [True, False])
def test_snapshots_do_not_change_the_output_and_batching_only_rounding(rebaseline: bool) -> None:
    x = _gauss(5, n=9000, at=5000)
    sizes = np.random.default_rng(0).integers(1, 700, size=200)
    cuts = np.concatenate([[0], np.cumsum(sizes)])
    cuts = [*cuts[cuts < len(x)].tolist(), len(x)]

    def run(restore: bool) -> list:  # type: ignore[type-arg]
        det: Detector = CUSUM(direction="both", arl0=20_000, rebaseline=rebaseline)
        out = []
        for a, b in itertools.pairwise(cuts):
            out += det.update(x[a:b])
            if restore:
                det = Detector.restore(det.snapshot())
        return out

    restored = run(restore=True)
    assert restored and restored == run(restore=False)  # exact, statistic included
    whole = CUSUM(direction="both", arl0=20_000, rebaseline=rebaseline).update(x)
    # other batch boundaries sum the increments in another order: same alarms, last-bit statistics
    assert [(d.at, d.start) for d in whole] == [(d.at, d.start) for d in restored]
    assert [d.statistic for d in whole] == pytest.approx([d.statistic for d in restored], rel=1e-9)


def test_non_finite_values_are_skipped_but_keep_their_positions() -> None:
    x = _gauss(7, n=6000, at=4000)
    holes = x.copy()
    holes[::10] = np.nan
    holes[5::10] = np.inf
    clean = x.copy()
    clean[::10] = clean[5::10] = np.nan
    a = CUSUM(arl0=100_000).update(holes)
    b = CUSUM(arl0=100_000).update(clean)
    assert a == b and a and a[0].at % 10 not in (0, 5)


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        CUSUM(direction="sideways")
    with pytest.raises(ValueError):
        CUSUM(min_shift=0)
