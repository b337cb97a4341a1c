"""New categories: a new value at 2 % share is named; the long tail and clean data stay quiet."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamwatch.quality.new_category import NewCategoryTracker

VOCAB = ["F", "M"]


def _window(rng: np.random.Generator, n: int, new_share: float) -> list[str | None]:
    vals = rng.choice(["F", "M"], n).astype(object)
    vals[rng.random(n) < new_share] = "diverse"
    vals[rng.random(n) < 0.05] = None
    return vals.tolist()


def test_new_value_at_2_percent_is_found_in_500_events() -> None:
    for seed in range(50):
        t = NewCategoryTracker(VOCAB)
        t.update(_window(np.random.default_rng(seed), 500, 0.02))
        r = t.result()
        assert r.detected and list(r.values) == ["diverse"] and not r.exploded
        assert r.evidence["new_values"] == r.values and r.total == r.evidence["total"]
    msg = r.message(["gender"], since="10:42")
    assert msg.startswith("gender has a value never seen in the reference since 10:42: 'diverse' (")


def test_clean_windows_and_a_long_tail_stay_quiet() -> None:
    rng = np.random.default_rng(1)
    # reference: a long-tailed vocabulary of which the reference sample saw only part
    p = 1.0 / np.arange(1, 2001) ** 1.5
    p /= p.sum()
    population = np.array([f"v{i}" for i in range(2000)])
    for _ in range(200):
        ref = rng.choice(population, 5000, p=p)
        values, counts = np.unique(ref, return_counts=True)
        assert len(values) < 2000
        t = NewCategoryTracker(
            values.tolist(), reference_count=5000, reference_singletons=int((counts == 1).sum())
        )
        t.update(rng.choice(population, 500, p=p).tolist())
        r = t.result()
        assert not r.detected, r.values
        assert r.new_count == 0 or r.values == {}


def test_a_new_value_in_a_long_tailed_feature_is_still_found() -> None:
    rng = np.random.default_rng(3)
    found_500 = found_1000 = 0
    for _ in range(50):
        t = NewCategoryTracker(["F", "M", "rare"], reference_count=5000, reference_singletons=1)
        t.update(_window(rng, 500, 0.02))
        found_500 += t.result().detected
        t.update(_window(rng, 500, 0.02))
        found_1000 += t.result().detected
    assert found_500 >= 30 and found_1000 == 50  # the floor is 8 instead of 3 at 500 events


def test_cap_overflow_and_cardinality_explosion() -> None:
    t = NewCategoryTracker(VOCAB, max_tracked=10, explosion_distinct=50)
    t.update([f"user-{i}" for i in range(300)] + ["F"] * 200)
    r = t.result()
    assert len(t.counts) == 10 and r.overflow == 290 and r.new_count == 300 and r.total == 500
    assert r.exploded and r.detected and r.values == {}
    assert "exploded in cardinality" in r.message("gender")
    assert r.distinct_new == 11  # a lower bound: 10 tracked plus the overflow


def test_snapshot_is_json_and_restores_exactly() -> None:
    t = NewCategoryTracker(VOCAB, min_count=2, feature=3)
    t.update(["X", "X", "Y", None, "F"])
    d = json.loads(json.dumps(t.to_dict()))
    u = NewCategoryTracker.from_dict(d)
    assert u.result() == t.result() and u.feature == 3
    u.update(["Y"])
    assert u.result().values == {"X": 2, "Y": 2}
    u.reset()
    assert u.result().total == 0 and not u.result().detected
    with pytest.raises(ValueError, match=r"not a streamwatch\.new_category v1 snapshot"):
        NewCategoryTracker.from_dict({**d, "version": 9})


def test_numpy_input_and_all_missing() -> None:
    t = NewCategoryTracker(VOCAB)
    t.update(np.array([None, None], dtype=object))
    t.update(np.array(["F", "Z", "Z", "Z", "Z", "Z"], dtype=object))
    assert t.result().values == {"Z": 5} and t.result().total == 6
