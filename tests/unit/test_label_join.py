"""The label join: exact outcome counts under shuffled, delayed, repeated, missing and orphan
labels; the cap holds; snapshots restore the same store."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamwatch.performance.join import LabelJoin

HOUR = 3_600_000


def _predict(join: LabelJoin, ids: list[str], t0: int) -> list:
    n = len(ids)
    times = t0 + np.arange(n, dtype=np.int64) * 1000
    return join.add_predictions(ids, times, np.zeros(n), None, None)


@pytest.mark.parametrize("seed", range(5))
def test_outcomes_are_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    join = LabelJoin(ttl_ms=10 * HOUR, wait_ms=HOUR, cap=100_000)
    ids = [f"e{i}" for i in range(2000)]
    labelled = [i for i in ids if rng.random() < 0.8]
    early = set(labelled[:100])  # these labels arrive before their predictions
    repeats = [i for i in labelled if rng.random() < 0.1]
    orphans = [f"ghost{i}" for i in range(37)]

    t0 = 1_000 * HOUR
    join.match_labels(sorted(early), np.full(len(early), t0 - 1000, dtype=np.int64), ["y"] * len(early))
    completed = []
    for k in range(0, 2000, 250):  # predictions in batches
        completed += _predict(join, ids[k : k + 250], t0 + k * 1000)
    assert len(completed) == len(early)

    later = [i for i in labelled if i not in early] + repeats + orphans
    order = rng.permutation(len(later))
    batch = [later[i] for i in order]
    times = np.full(len(batch), t0 + 2000 * 1000 + HOUR // 2, dtype=np.int64)
    matched = 0
    for k in range(0, len(batch), 300):
        matched += len(join.match_labels(batch[k : k + 300], times[k : k + 300], ["y"] * 300).slots)
    assert matched == len(labelled) - len(early)
    # orphans wait for their prediction up to wait_ms of event time, then count
    _predict(join, ["later"], t0 + 2000 * 1000 + 3 * HOUR)
    o = join.outcomes
    assert o["joined"] == len(labelled)
    assert o["duplicate"] == len(repeats)
    assert o["orphan"] == len(orphans)
    assert o["late"] == 0 and o["sampled_out"] == 0
    assert not join.waiting


def test_labels_after_the_ttl_are_late() -> None:
    join = LabelJoin(ttl_ms=HOUR, wait_ms=0, cap=10_000)
    _predict(join, [f"a{i}" for i in range(100)], 0)
    _predict(join, ["b"], 5 * HOUR)  # moves event time on: the a's expire
    assert len(join) == 1
    join.match_labels([f"a{i}" for i in range(10)], np.full(10, 5 * HOUR), ["y"] * 10)
    assert join.outcomes["late"] == 10 and join.expired_unlabelled == 100


def test_the_cap_holds_and_the_sample_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    join = LabelJoin(ttl_ms=1000 * HOUR, wait_ms=0, cap=1000)
    ids = [f"id-{i}" for i in range(20_000)]
    for k in range(0, 20_000, 500):
        _predict(join, ids[k : k + 500], k * 1000)
        assert len(join) <= 1000
    assert join.sample_rate == pytest.approx(1 / 32)
    labelled = [ids[i] for i in rng.choice(20_000, 5000, replace=False)]
    got = join.match_labels(labelled, np.full(5000, 0), ["y"] * 5000)
    # every label is either joined (its id is in the sample) or counted as sampled out
    assert len(got.slots) + join.outcomes["sampled_out"] == 5000
    assert len(got.slots) == pytest.approx(5000 / 32, rel=0.3)
    # the same ids are kept by a second store: sampling depends on the id alone
    other = LabelJoin(ttl_ms=1000 * HOUR, wait_ms=0, cap=1000)
    for k in range(0, 20_000, 500):
        _predict(other, ids[k : k + 500], k * 1000)
    assert set(other.index) == set(join.index)


def test_snapshot_restores_the_same_store() -> None:
    join = LabelJoin(ttl_ms=HOUR, wait_ms=HOUR, cap=500)
    scores = np.random.default_rng(2).random((800, 2))
    times = np.arange(800, dtype=np.int64) * 1000
    join.add_predictions([f"p{i}" for i in range(800)], times, np.ones(800), None, scores)
    join.match_labels(["p1", "p2", "early"], np.array([5, 6, 7]), ["a", 1, True])
    again = LabelJoin.from_dict(join.to_dict())
    assert set(again.index) == set(join.index)
    assert again.outcomes == join.outcomes and again.waiting == join.waiting
    a = again.match_labels(list(join.index)[:50], np.zeros(50, np.int64), ["y"] * 50)
    b = join.match_labels(list(join.index)[:50], np.zeros(50, np.int64), ["y"] * 50)
    assert np.array_equal(again.scores[a.slots], join.scores[b.slots])
    assert np.array_equal(again.times[a.slots], join.times[b.slots])


def test_hashes_of_older_snapshots_written_as_strings_restore_alike() -> None:
    """Snapshots before session 7 held event hashes as decimal strings; now JSON integers."""
    from streamwatch.performance.ordering import JoinOrder
    from streamwatch.performance.tracker import Rows

    h = np.array([2**64 - 1, 5, 2**63], dtype=np.uint64)
    rows = Rows()
    rows.add(np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]), None, np.array([1, 2, 3]), h)
    new = orjson.loads(orjson.dumps(rows.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    assert new["h"] == [int(x) for x in h]
    old = {**new, "h": [str(x) for x in new["h"]]}
    for d in (new, old):
        assert Rows.from_dict(d).arrays()[4].tolist() == h.tolist()
    order = JoinOrder()
    order.add(np.array([7, 8, 9]), *rows.arrays()[:2], None, np.array([1, 2, 3]), h)
    doc = orjson.loads(orjson.dumps(order.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    for d in (doc, {**doc, "h": [str(x) for x in doc["h"]]}):
        assert JoinOrder.from_dict(d).to_dict()["h"].tolist() == h.tolist()
