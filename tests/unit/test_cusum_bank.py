"""CUSUMBank and CUSUM give bit-identical results to the per-feature CUSUM they replaced.

``_FrozenCUSUM`` keeps the single CUSUM's batch recursion as it was before the bank handled long
batches, the members were vectorised and an alarm stopped redoing the standardisation (a list
comprehension over signs per chunk, the cumulative sums cut every ``_CHUNK`` finite values): the
oracle for the differential tests below, with rebaselining and warm-up too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from streamwatch.detectors.base import Detection
from streamwatch.detectors.cusum import _CHUNK, CUSUM, CUSUMBank


class _FrozenCUSUM(CUSUM):
    def _continue(self, x: np.ndarray, positions: npt.NDArray[np.int64]) -> list[Detection]:
        detections: list[Detection] = []
        while True:
            if not self.ready:
                need = self.warmup - len(self._ref)
                self._ref.extend(x[:need].tolist())
                if len(self._ref) < self.warmup:
                    return detections
                self.zero_at[:] = positions[need - 1]
                x, positions = x[need:], positions[need:]
                self._fit(np.asarray(self._ref))
            if x.size == 0:
                return detections
            found, used = self._scan_values(x, positions)
            if found is None:
                return detections
            detections.append(found)
            x, positions = x[used:], positions[used:]
            if self.rebaseline:
                self.kind, self._ref = "", []

    def _scan_values(self, x: np.ndarray, positions: npt.NDArray[np.int64]) -> tuple[Detection | None, int]:
        d = self.shifts
        for lo in range(0, len(x), _CHUNK):
            hi = min(lo + _CHUNK, len(x))
            z = self.standardise(x[lo:hi])
            inc = np.concatenate([d * (sign * z[:, None] - d / 2) for sign in self.signs], axis=1)
            c = np.cumsum(inc, axis=0)
            low = np.minimum(np.minimum.accumulate(c, axis=0), -self.s)
            s = c - low
            over = s.max(axis=1) > self.threshold
            if not over.any():
                self._advance(c, low, s, positions[lo:hi])
                continue
            t = int(np.argmax(over))
            j = int(np.argmax(s[t]))
            self._advance(c[: t + 1], low[: t + 1], s[: t + 1], positions[lo : lo + t + 1])
            at = int(positions[lo + t])
            found = Detection(at, int(self.zero_at[j]) + 1, float(s[t, j]), self.threshold)
            self.s[:] = 0.0
            self.zero_at[:] = at
            return found, lo + t + 1
        return None, len(x)


KINDS = ["normal", "discrete", "ties", "normal", "heavy", "discrete", "normal"]


@pytest.mark.parametrize("rebaseline", [True, False])
def test_cusum_matches_the_frozen_recursion_with_warmups(rebaseline: bool) -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=40_000)
    # the level steps every 4 000 values: alarms, and with rebaseline new warm-ups mid-batch
    x += 0.6 * ((np.arange(len(x)) // 4000) % 2)
    x[rng.random(len(x)) < 0.1] = np.nan
    one, frozen = (
        cls(direction="both", warmup=300, threshold=9.0, rebaseline=rebaseline)
        for cls in (CUSUM, _FrozenCUSUM)
    )
    alarms = 0
    for lo, hi in [(0, 100), (100, 9000), (9000, 9001), (9001, 25_000), (25_000, 40_000)]:
        want = frozen.update(x[lo:hi])
        assert one.update(x[lo:hi]) == want
        assert one.to_dict() == frozen.to_dict()
        alarms += len(want)
    assert alarms > 5, alarms


def _make(seed: int, kind: str, cls: type[CUSUM] = CUSUM, rebaseline: bool = False, **kw: object) -> CUSUM:
    rng = np.random.default_rng(seed)
    if kind == "discrete":
        ref = rng.integers(0, 4, 800).astype(float)
    elif kind == "ties":
        ref = np.round(rng.normal(size=900), 1)
    elif kind == "heavy":  # most reference values in a few of the search guide's buckets
        ref = rng.standard_cauchy(1000) ** 3
    else:
        ref = rng.normal(size=1000)
    args = {"min_shift": 0.5, "direction": "both", "threshold": 9.0, **kw}
    return cls(reference=ref, rebaseline=rebaseline, **args)  # type: ignore[arg-type]


def _batch(rng: np.random.Generator, rows: int, drift: bool, holes: float) -> np.ndarray:
    x = rng.normal(size=(rows, len(KINDS)))
    x[:, 1] = rng.integers(0, 4, rows)
    x[:, 5] = rng.integers(0, 4, rows)
    x[:, 2] = np.round(x[:, 2], 1)
    x[:, 4] = rng.standard_cauchy(rows) ** 3
    if drift:  # repeated alarms of the fixed-reference CUSUMs (each restarts a chunk: keep few)
        x[:, 0] += 0.4
        x[:, 5] += 0.2
        x[rows // 2 : rows // 2 + 100, 6] -= 1.5  # an alarm in the middle of a long batch
    x[rng.random(x.shape) < holes] = np.nan
    x[rng.random(x.shape) < holes / 5] = np.inf
    x[rng.random(x.shape) < holes / 10] = -np.inf
    return x


@pytest.mark.parametrize(
    ("seed", "sizes", "holes"),
    [
        (0, [1, 7, 200, 500, 5000], 0.05),
        (1, [4096, 4097, 9000, 12_000, 3], 0.05),  # long batches: cut in chunks like one CUSUM's
        (2, [10_000, 100, 8191, 8193], 0.0),
        (3, [6000, 2, 20_000], 0.3),  # many holes: each column's chunks end at different rows
    ],
)
def test_bank_and_cusum_match_the_frozen_recursion(seed: int, sizes: list[int], holes: float) -> None:
    rng = np.random.default_rng(seed)
    frozen = [_make(seed * 10 + i, k, _FrozenCUSUM) for i, k in enumerate(KINDS)]
    singles = [_make(seed * 10 + i, k) for i, k in enumerate(KINDS)]
    banked = [_make(seed * 10 + i, k) for i, k in enumerate(KINDS)]
    bank = CUSUMBank(banked)
    alarms = long_alarms = 0
    for b in range(16):
        rows = int(rng.choice(sizes)) if b % 8 else 0
        x = _batch(rng, rows, drift=b > 4, holes=holes)
        got = bank.update(x)
        for j, (f, c) in enumerate(zip(frozen, singles, strict=True)):
            want = f.update(x[:, j])
            assert c.update(x[:, j]) == want  # exact: positions, starts and statistics
            assert got[j] == want
            assert banked[j].to_dict() == c.to_dict() == f.to_dict()
            alarms += len(want)
            long_alarms += len(want) * (rows > _CHUNK)
    assert alarms > 20 and long_alarms > 5, (alarms, long_alarms)


def test_bank_with_slow_members() -> None:
    def make() -> list[CUSUM]:
        return [
            _make(5, "normal"),
            CUSUM(warmup=50, threshold=9.0),  # not ready yet
            _make(6, "normal", rebaseline=True),
            _make(7, "normal", direction="up"),  # another bank of signs
        ]

    singles, banked = make(), make()
    bank = CUSUMBank(banked)
    assert bank.slow == [1, 2, 3]
    rng = np.random.default_rng(5)
    for b in range(20):
        x = rng.normal(size=(int(rng.choice([100, 5000])), 4)) + (0.5 if b > 5 else 0.0)
        got = bank.update(x)
        for j, c in enumerate(singles):
            assert got[j] == c.update(x[:, j])
            assert banked[j].to_dict() == c.to_dict()
