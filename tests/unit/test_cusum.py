"""CUSUM bank: finds planted changes, holds its configured false-alarm rate, restores exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamwatch.detectors.base import Detector
from streamwatch.detectors.cusum import CUSUM
from streamwatch.detectors.fixed_reference import _passage_probability, _time_per_cycle


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
    found_soon = 0
    for seed in range(10):
        det = CUSUM(min_shift=0.5, direction="up", arl0=100_000, warmup=1000)
        alarms = det.update(make(seed))
        after = [d for d in alarms if d.at >= 4000]
        if not after:  # only a false alarm within a warm-up of the change may hide it
            assert alarms and alarms[-1].at >= 3000, f"seed {seed}: change missed"
            continue
        found_soon += after[0].at < 4300
        assert after[0].statistic > after[0].threshold
        if len(alarms) == len(after):  # no false alarm moved the reference
            assert 3700 <= after[0].start <= after[0].at
    assert found_soon >= 8


@pytest.mark.parametrize(("make", "direction"), [(_gauss, "both"), (_gauss, "up"), (_bern, "up")])
def test_false_alarm_rate_matches_the_configured_arl0(make, direction: str) -> None:  # type: ignore[no-untyped-def]
    # The rate is calibrated on average over references, and a reference's error makes its own
    # rate scatter with a heavy tail, so many short streams (references) are needed: about 600
    # alarms are expected. After each alarm the next warm-up values become the new reference
    # and are not monitored.
    arl0, alarms, monitored = 2_000.0, 0, 0
    for seed in range(150):
        det = CUSUM(min_shift=0.5, direction=direction, arl0=arl0, warmup=1000)
        found = len(det.update(make(seed, n=12_000, at=12_000)))
        alarms += found
        monitored += 12_000 - 1000 * (1 + found)
    expected = monitored / arl0
    assert 0.85 * expected <= alarms <= 1.15 * expected, (alarms, expected)


@pytest.mark.parametrize(("make", "direction"), [(_gauss, "both"), (_bern, "up")])
def test_a_fixed_reference_holds_the_configured_rate_on_average(make, direction: str) -> None:  # type: ignore[no-untyped-def]
    # The monitor's CUSUMs and the concept-drift CUSUM keep their reference (rebaseline=False):
    # each reference has its own rate, and the calibration targets their mean, for continuous
    # and discrete references alike (bench/detection.py --fixed-reference measures it closely).
    arl0, alarms, monitored = 2_000.0, 0, 0
    for seed in range(150):
        x = make(seed, n=11_000, at=11_000)
        det = CUSUM(min_shift=0.5, direction=direction, arl0=arl0, reference=x[:1000], rebaseline=False)
        alarms += len(det.update(x[1000:]))
        monitored += 10_000
    expected = monitored / arl0
    assert 0.85 * expected <= alarms <= 1.15 * expected, (alarms, expected)


@pytest.mark.parametrize(("p", "ones", "shift", "h"), [(0.25, 232, 0.5, 4.0), (0.1, 100, 0.3, 5.0)])
def test_the_rate_of_one_fixed_reference_matches_brute_force(
    p: float, ones: int, shift: float, h: float
) -> None:
    # the calibration's per-reference rate (renewal cycles and tilted excursions, see
    # streamwatch/detectors/fixed_reference.py) against a CUSUM keeping that 0/1 reference
    # through 3 * 10^6 null values (about 1 500 alarms: 2.6 % Poisson error; the estimate's is 3 %)
    ref = np.r_[np.ones(ones), np.zeros(1000 - ones)]
    det = CUSUM(min_shift=shift, direction="up", threshold=h, reference=ref, rebaseline=False)
    null = (np.random.default_rng(3).random(3_000_000) < p).astype(float)
    brute = len(det.update(null)) / len(null)
    atoms = (np.array([0.0, 1.0]) - ref.mean()) / ref.std()
    inc = shift * (atoms[None, :] - shift / 2)
    probs, thresholds, rng = np.array([1 - p, p]), np.array([h]), np.random.default_rng(4)
    rates = [
        _passage_probability(inc, probs, thresholds, rng, 64)[0][0]
        / _time_per_cycle(inc, probs, thresholds, rng, 4000)[0]
        for _ in range(100)
    ]
    assert float(np.mean(rates)) == pytest.approx(brute, rel=0.1), (np.mean(rates), brute)


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
