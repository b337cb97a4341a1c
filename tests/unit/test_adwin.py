"""ADWIN against river 0.26's ``drift.ADWIN`` fed value by value, and its batch/snapshot contract.

River is the reference: the detections must be the ones river gives on the same finite values,
at the same indices, for every stream and parameter set here, and the window (width, mean,
variance) must end the same. River does not expose where its cut fell, but right after a
detection its ``width`` is the kept newer sub-window, so ``Detection.start`` is checked against
``at - width + 1``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from river import drift as river_drift

from streamwatch.detectors import adwin
from streamwatch.detectors.adwin import ADWIN
from streamwatch.detectors.base import Detection, Detector, SnapshotError

drift: Any = river_drift  # river is untyped

CHANGE_AT = 5_000


# ---------------------------------------------------------------------------------------------
# streams


def bernoulli_shift(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rate = np.where(np.arange(2 * CHANGE_AT) < CHANGE_AT, 0.1, 0.3)
    out: np.ndarray = (rng.random(rate.size) < rate).astype(np.float64)
    return out


def gauss_shift(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate((rng.normal(0.0, 1.0, CHANGE_AT), rng.normal(0.5, 1.0, CHANGE_AT)))


def gauss_steps(seed: int) -> np.ndarray:
    """Mean shifts every 3 000 values, up and down."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mu, 1.0, 3_000) for mu in (0.0, 1.0, 0.0, 2.0, -1.0, 0.5, 0.5, -0.5)])


def null_stream(seed: int) -> np.ndarray:
    out: np.ndarray = np.random.default_rng(seed).normal(0.0, 1.0, 50_000)
    return out


def offset_shift(seed: int) -> np.ndarray:
    """A large mean (1e6) with unit noise: the prefix sums lose digits, river's rounding rules."""
    rng = np.random.default_rng(seed)
    return 1e6 + np.concatenate((rng.normal(0.0, 1.0, 8_000), rng.normal(0.3, 1.0, 8_000)))


def many_changes(seed: int) -> np.ndarray:
    """Frequent detections: the mean jumps every 300 to 3 000 values, by up to 2 sd either way."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(300, 3_000, 20)
    return np.concatenate([rng.normal(rng.uniform(-2.0, 2.0), 1.0, k) for k in lengths])


STREAMS = {
    "bernoulli_0.1_to_0.3": bernoulli_shift,
    "gauss_0_to_0.5": gauss_shift,
    "gauss_steps": gauss_steps,
    "null_50k": null_stream,
}


def river_run(x: np.ndarray, **params: Any) -> tuple[list[tuple[int, int]], Any]:
    """River's detections as (index, start from the kept width) and the detector at the end."""
    det = drift.ADWIN(**params)
    found: list[tuple[int, int]] = []
    for i, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            found.append((i, i - int(det.width) + 1))
    return found, det


def assert_same_window(ours: ADWIN, theirs: Any) -> None:
    assert ours.width == theirs.width
    assert ours.total == pytest.approx(theirs.total, rel=1e-12, abs=1e-12)
    assert ours.estimation == pytest.approx(theirs.estimation, rel=1e-12, abs=1e-12)
    assert ours.variance == pytest.approx(theirs.variance, rel=1e-12, abs=1e-12)


@pytest.fixture(params=["hybrid", "switch_700", "pure"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which path the detectors built in the test take: river's core for windows shorter than
    the default switch length, or than 700 values (so most windows move to our path), or ours
    only."""
    if request.param == "switch_700":
        monkeypatch.setattr(adwin, "_RUST_SWITCH", 700)
    elif request.param == "pure":
        monkeypatch.setattr(adwin, "_RUST_SWITCH", 0)
    return str(request.param)


def check_detections(found: list[Detection], ref: list[tuple[int, int]]) -> None:
    assert [(d.at, d.start) for d in found] == ref
    for d in found:
        assert d.start <= d.at
        assert d.statistic > d.threshold > 0.0


# ---------------------------------------------------------------------------------------------
# river equivalence


@pytest.mark.parametrize("clock", [1, 32])
@pytest.mark.parametrize("delta", [0.002, 0.1])
@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.usefixtures("path")
def test_detections_match_river(stream: str, delta: float, clock: int) -> None:
    x = STREAMS[stream](7)
    ref, theirs = river_run(x, delta=delta, clock=clock)
    det = ADWIN(delta=delta, clock=clock)
    check_detections(det.update(x), ref)
    assert_same_window(det, theirs)
    assert det.n_detections == len(ref)  # river's counter restarts with its core: not compared
    if stream != "null_50k":  # the planted change is found (after it, and not long after)
        first_after = [at for at, _ in ref if at >= CHANGE_AT]
        assert first_after and first_after[0] < CHANGE_AT + 2_000


@pytest.mark.parametrize("clock", [1, 32])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.usefixtures("path")
def test_frequent_detections_match_river(seed: int, clock: int) -> None:
    # the regime where every run between restarts is short: null noise at delta 0.1 (a false
    # alarm every few thousand values), then mean jumps every few hundred values
    x = np.r_[null_stream(seed)[:20_000], many_changes(seed)]
    ref, theirs = river_run(x, delta=0.1, clock=clock)
    assert len(ref) >= 12
    det = ADWIN(delta=0.1, clock=clock)
    found = det.update(x)
    check_detections(found, ref)
    assert_same_window(det, theirs)
    # the per-value port (batches below the batch path's minimum) and random batch sizes give
    # the same statistics, thresholds and buckets, bit for bit
    ported = ADWIN(delta=0.1, clock=clock)
    assert [d for i in range(0, x.size, 40) for d in ported.update(x[i : i + 40])] == found
    assert ported.to_dict() == det.to_dict()
    split = ADWIN(delta=0.1, clock=clock)
    assert feed_in_batches(split, x, np.random.default_rng(seed)) == found
    assert split.to_dict() == det.to_dict()


@pytest.mark.parametrize(
    "params",
    [
        {"max_buckets": 5, "min_window_length": 5},
        {"max_buckets": 2, "min_window_length": 1},
        {"max_buckets": 9, "min_window_length": 20},
    ],
)
def test_the_vectorised_cut_test_is_the_loop_bit_for_bit(
    params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the batch path runs river's cut test (every pass, one oldest bucket dropped per cut) as
    # one (pass, edge) matrix: same cut, same statistics, same window and buckets after it
    monkeypatch.setattr(adwin, "_RUST_SWITCH", 0)  # the bucket lists of our path, read below
    rng = np.random.default_rng(11)
    cuts = 0  # trials where more than a bucket or two is dropped
    for trial in range(30):
        before, after = rng.integers(20, 3_000, 2)
        scale = float(rng.choice([1.0, 1e-3, 1e6]))
        offset = float(rng.choice([0.0, 1e6]))
        x = offset + scale * np.r_[rng.normal(0.0, 1.0, before), rng.normal(rng.uniform(-2, 2), 1.0, after)]
        det = ADWIN(clock=10**9, **params)  # never tested: the buckets of the whole stream
        for i in range(0, x.size, 40):  # the per-value port
            det.update(x[i : i + 40])
        delta = float(rng.choice([0.002, 0.1, 0.9]))
        lmin = params["min_window_length"]
        tot, var, pos = [list(v) for v in det._tot], [list(v) for v in det._var], [list(v) for v in det._pos]
        loop = adwin._cut_window(tot, var, pos, det.width, det.total, det.variance, delta, lmin)
        vtot, vvar, vpos = (
            [list(v) for v in det._tot],
            [list(v) for v in det._var],
            [list(v) for v in det._pos],
        )
        with np.errstate(all="ignore"):  # as in the batch path: masked pairs divide by zero
            vec = adwin._cut_window_vec(vtot, vvar, vpos, det.width, det.total, det.variance, delta, lmin)
        assert vec == loop, trial
        assert (vtot, vvar, vpos) == (tot, var, pos), trial
        cuts += loop is not None and loop[0] < x.size - 100
    assert cuts >= 10


def test_planted_changes_are_found_like_river() -> None:
    # at the default delta each planted change of the step stream gives one detection
    x = gauss_steps(3)
    ref, _ = river_run(x, clock=1)
    found = ADWIN(clock=1).update(x)
    assert [d.at for d in found] == [at for at, _ in ref]
    assert len(found) >= 5
    for change in range(3_000, 24_000, 3_000):
        if change == 18_000:  # 0.5 -> 0.5: no change
            continue
        assert any(change <= d.at < change + 1_500 for d in found), change


@pytest.mark.parametrize(
    "params",
    [
        {"clock": 1, "max_buckets": 2, "min_window_length": 1, "grace_period": 0},
        {"clock": 1, "max_buckets": 3, "min_window_length": 20, "grace_period": 100},
        {"clock": 3, "max_buckets": 9, "min_window_length": 5, "grace_period": 10, "delta": 0.5},
        {"clock": 1, "delta": 1e-5},
    ],
)
@pytest.mark.usefixtures("path")
def test_other_parameters_match_river(params: dict[str, Any]) -> None:
    x = gauss_steps(11)
    ref, theirs = river_run(x, **params)
    det = ADWIN(**params)
    check_detections(det.update(x), ref)
    assert_same_window(det, theirs)


@pytest.mark.parametrize("clock", [1, 32])
@pytest.mark.usefixtures("path")
def test_large_mean_rounding_matches_river(clock: int) -> None:
    x = offset_shift(5)
    ref, theirs = river_run(x, clock=clock)
    det = ADWIN(clock=clock)
    check_detections(det.update(x), ref)
    assert ref  # the 0.3 shift is found
    assert_same_window(det, theirs)


@pytest.mark.usefixtures("path")
def test_state_right_after_a_detection_is_rivers() -> None:
    # river shows the kept newer sub-window until the next value, then restarts
    x = gauss_shift(1)
    ref, _ = river_run(x, clock=1)
    at = ref[0][0]
    ours, theirs = ADWIN(clock=1), drift.ADWIN(clock=1)
    ours.update(x[: at + 1])
    for v in x[: at + 1].tolist():
        theirs.update(v)
    assert theirs.drift_detected
    assert_same_window(ours, theirs)
    ours.update(x[at + 1 : at + 2])
    theirs.update(float(x[at + 1]))
    assert_same_window(ours, theirs)
    assert ours.width == 1


# ---------------------------------------------------------------------------------------------
# batches, snapshots, non-finite values


def feed_in_batches(det: ADWIN, x: np.ndarray, rng: np.random.Generator) -> list[Detection]:
    out: list[Detection] = []
    i = 0
    while i < x.size:
        size = int(rng.choice([1, 2, 7, 47, 48, 200, 5_000, 20_000]))
        out += det.update(x[i : i + size])
        i += size
    return out


@pytest.mark.parametrize("clock", [1, 32])
@pytest.mark.usefixtures("path")
def test_random_batches_give_the_same_result_as_one_batch(clock: int) -> None:
    x = np.r_[gauss_steps(4), bernoulli_shift(4)]
    whole = ADWIN(clock=clock)
    expected = whole.update(x)
    assert len(expected) >= 4
    for seed in range(3):
        det = ADWIN(clock=clock)
        assert feed_in_batches(det, x, np.random.default_rng(seed)) == expected
        assert det.to_dict() == whole.to_dict()  # same buckets, bit for bit


def test_value_by_value_equals_one_batch() -> None:
    x = gauss_shift(2)[3_000:7_000]
    whole = ADWIN(clock=1)
    expected = whole.update(x)
    det = ADWIN(clock=1)
    found = [d for v in x.tolist() for d in det.update(v)]  # scalars are batches of one
    assert found == expected
    assert det.to_dict() == whole.to_dict()


@pytest.mark.usefixtures("path")
def test_a_long_window_continued_by_a_large_batch() -> None:
    # the batch path starting from a window built by earlier batches (old buckets + new values)
    x = np.r_[null_stream(9)[:30_000], np.random.default_rng(9).normal(0.4, 1.0, 30_000)]
    ref, theirs = river_run(x, clock=1)
    det = ADWIN(clock=1)
    found = det.update(x[:29_990]) + det.update(x[29_990:])
    check_detections(found, ref)
    assert_same_window(det, theirs)


@pytest.mark.parametrize("clock", [1, 32])
@pytest.mark.usefixtures("path")
def test_snapshot_restore_continues_exactly(clock: int) -> None:
    x = np.r_[gauss_steps(6), null_stream(6)[:10_000]]
    whole = ADWIN(clock=clock)
    expected = whole.update(x)
    cuts = sorted({1, 500, 3_049, 9_000, 17_777} | {d.at + 1 for d in expected[:2]})  # incl. right after
    det: Detector = ADWIN(clock=clock)
    found: list[Detection] = []
    prev = 0
    for cut in [*cuts, x.size]:
        found += det.update(x[prev:cut])
        snap = det.snapshot()
        json.loads(snap)  # plain JSON
        det = Detector.restore(snap)
        prev = cut
    assert found == expected
    assert det.to_dict() == whole.to_dict()


def test_to_dict_is_plain_json_and_round_trips() -> None:
    det = ADWIN(delta=0.01, clock=4, max_buckets=3, min_window_length=7, grace_period=20)
    det.update(gauss_shift(8))
    state = det.to_dict()
    assert json.loads(json.dumps(state)) == state
    back = ADWIN.from_dict(state)
    assert back.to_dict() == state
    assert (back.width, back.estimation, back.variance) == (det.width, det.estimation, det.variance)


@pytest.mark.usefixtures("path")
def test_non_finite_values_are_skipped_but_counted_in_positions() -> None:
    rng = np.random.default_rng(12)
    finite = gauss_steps(12)
    ref, theirs = river_run(finite, clock=1)
    holes = np.sort(rng.choice(finite.size + 3_000, 3_000, replace=False))
    x = np.empty(finite.size + holes.size)
    mask = np.ones(x.size, dtype=bool)
    mask[holes] = False
    x[mask] = finite
    x[holes] = rng.choice([np.nan, np.inf, -np.inf], holes.size)
    where = np.flatnonzero(mask)  # finite index -> stream position
    det = ADWIN(clock=1)
    found = feed_in_batches(det, x, np.random.default_rng(0))
    assert [(d.at, d.start) for d in found] == [(int(where[at]), int(where[s])) for at, s in ref]
    assert det.n_seen == x.size
    assert_same_window(det, theirs)
    assert all(math.isfinite(v) for v in (det.total, det.variance, det.estimation))


def test_all_non_finite_and_empty_batches() -> None:
    det = ADWIN(clock=1)
    assert det.update([]) == []
    assert det.update([np.nan, np.inf, -np.inf]) == []
    assert (det.n_seen, det.width, det.estimation) == (3, 0, 0.0)
    det.update(np.ones(20))
    assert (det.n_seen, det.width, det.estimation) == (23, 20, 1.0)


# ---------------------------------------------------------------------------------------------
# river's compiled core for short windows: exactly our path's results


def quiet_40k(seed: int) -> np.ndarray:
    return null_stream(seed)[:40_000]


HYBRID_REGIMES = {  # name: (stream, delta)
    "quiet": (quiet_40k, 0.002),
    "jumps": (many_changes, 0.002),
    "delta_0.1": (quiet_40k, 0.1),
}


def batch_sizes(rng: np.random.Generator, total: int, switch: int) -> list[int]:
    """Batches that split anywhere: single values, around the batch path's minimum, around
    the switch length and across it."""
    choices = [1, 2, 7, 47, 48, 300, switch - 1, switch, switch + 1, 2 * switch + 5, 5_000]
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice(choices)))
    return sizes


def run_batches(x: np.ndarray, sizes: list[int], **params: Any) -> tuple[list[Detection], list[Any], ADWIN]:
    """Detections, the public state after each batch, and the detector at the end."""
    det = ADWIN(**params)
    found: list[Detection] = []
    states: list[Any] = []
    i = 0
    for size in sizes:
        found += det.update(x[i : i + size])
        i += size
        states.append((det.n_seen, det.n_detections, det.width, det.total, det.variance, det.estimation))
    return found, states, det


def no_replay(self: ADWIN) -> list[Detection]:
    raise AssertionError("our cut test disagreed with river's core")


def run_both(
    x: np.ndarray, sizes: list[int], switch: int, monkeypatch: pytest.MonkeyPatch, **params: Any
) -> tuple[list[Detection], ADWIN]:
    """Run with our path only, then with river's core up to ``switch`` values, and check that
    they agree bit for bit: detections (statistics and bounds too), state after every batch,
    saved state at the end. Returns the detections and the detector of the second run."""
    monkeypatch.setattr(adwin, "_RUST_SWITCH", 0)
    pure, pure_states, pure_det = run_batches(x, sizes, **params)
    assert pure_det._helper is None
    monkeypatch.setattr(adwin, "_RUST_SWITCH", switch)
    monkeypatch.setattr(ADWIN, "_replay", no_replay)  # river's core and our cut test agree
    found, states, det = run_batches(x, sizes, **params)
    assert found == pure
    assert states == pure_states
    assert det.to_dict() == pure_det.to_dict()
    return found, det


@pytest.mark.parametrize("switch", [300, 4_096, adwin._RUST_SWITCH])
@pytest.mark.parametrize("clock", [1, 32])
@pytest.mark.parametrize("regime", sorted(HYBRID_REGIMES))
@pytest.mark.parametrize("seed", range(3))
def test_river_core_gives_our_paths_results(
    seed: int, regime: str, clock: int, switch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, delta = HYBRID_REGIMES[regime]
    x = make(seed)
    sizes = batch_sizes(np.random.default_rng(seed), x.size, switch)
    found, _ = run_both(x, sizes, switch, monkeypatch, clock=clock, delta=delta)
    if regime == "jumps":
        assert len(found) >= 3


@pytest.mark.parametrize("switch", [300, adwin._RUST_SWITCH])
@pytest.mark.parametrize("clock", [1, 32])
def test_river_core_with_non_finite_values(clock: int, switch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = many_changes(5)
    holes = rng.choice(x.size, 2_000, replace=False)
    x[holes] = rng.choice([np.nan, np.inf, -np.inf], holes.size)
    found, det = run_both(x, batch_sizes(rng, x.size, switch), switch, monkeypatch, clock=clock, delta=0.1)
    assert len(found) >= 3
    assert det.n_seen == x.size
    assert not any(np.isnan(x[d.at]) for d in found)  # positions count the skipped values


@pytest.mark.parametrize("clock", [1, 32])
def test_snapshot_in_the_short_phase(clock: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = many_changes(3)
    whole = ADWIN(clock=clock, delta=0.1)
    expected = whole.update(x)
    at = expected[0].at
    for cut in (0, 30, at + 1, at + 200):  # fresh, early in the first window, after a detection
        det = ADWIN(clock=clock, delta=0.1)
        found = det.update(x[:cut])
        assert det._helper is not None or cut == at + 1  # river's core holds the window
        state = det.to_dict()
        back = Detector.restore(det.snapshot())
        assert back.to_dict() == state
        monkeypatch.setattr(adwin, "_RUST_SWITCH", 0)
        pure = ADWIN(clock=clock, delta=0.1)
        pure.update(x[:cut])
        monkeypatch.setattr(adwin, "_RUST_SWITCH", 1 << 16)
        assert pure.to_dict() == state  # the saved state is our path's, bit for bit
        assert found + back.update(x[cut:]) == expected
        assert back.to_dict() == whole.to_dict()
        assert found + det.update(x[cut:]) == expected  # saving did not disturb the detector
        assert det.to_dict() == whole.to_dict()


class SpuriousCore:
    """River's core, but reporting a change on the 150th value of each window as well."""

    real: Any = adwin._AdaptiveWindowing

    def __init__(self, **params: Any) -> None:
        self.core = self.real(**params)
        self.n = 0

    def update(self, x: float) -> bool:
        self.n += 1
        return bool(self.core.update(x)) or self.n == 150

    def get_width(self) -> int:
        return int(self.core.get_width())

    def get_total(self) -> float:
        return float(self.core.get_total())

    def get_variance(self) -> float:
        return float(self.core.get_variance())


@pytest.mark.parametrize("core", [SpuriousCore, None])
def test_our_path_decides_when_river_core_disagrees_or_is_missing(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.r_[null_stream(2)[:20_000], many_changes(2)]
    monkeypatch.setattr(adwin, "_RUST_SWITCH", 0)
    expected = ADWIN(clock=1, delta=0.1).update(x)
    whole = ADWIN(clock=1, delta=0.1)
    whole.update(x)
    monkeypatch.setattr(adwin, "_RUST_SWITCH", 1 << 16)
    monkeypatch.setattr(adwin, "_AdaptiveWindowing", core)
    for seed in range(2):
        det = ADWIN(clock=1, delta=0.1)
        assert feed_in_batches(det, x, np.random.default_rng(seed)) == expected
        assert det.to_dict() == whole.to_dict()


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "params",
    [
        {"delta": 0.0},
        {"delta": 1.0},
        {"clock": 0},
        {"max_buckets": 1},  # river's core panics on a cut with one bucket per level
        {"min_window_length": 0},
        {"grace_period": -1},
        {"clock": 2.5},
        {"max_buckets": True},
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ADWIN(**params)


def test_bad_states_are_rejected() -> None:
    det = ADWIN(clock=1)
    det.update(null_stream(1)[:1_000])
    good = det.to_dict()
    for key, value in [
        ("width", 999),  # bucket layout no longer matches
        ("bucket_totals", [[1.0]]),
        ("total", "x"),
        ("n_seen", 1.5),
        ("max_buckets", 1),
    ]:
        with pytest.raises(SnapshotError):
            ADWIN.from_dict({**good, key: value})
    with pytest.raises(SnapshotError):
        ADWIN.from_dict({k: v for k, v in good.items() if k != "bucket_starts"})
