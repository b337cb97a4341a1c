"""Large model records: compressed above a threshold, split into parts produced with the same
tag, stale parts tombstoned; restore reassembles only complete sets of one checkpoint and reports
incomplete, mismatched, malformed or bomb-like records as state problems, never crashing."""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.config import Settings, load_config
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.exporter import RuntimeCollector
from streamwatch.runtime import state
from streamwatch.runtime.state import (
    CORRUPT_REASONS,
    ENC_ZLIB,
    H_CRC,
    H_ENC,
    H_PARTS,
    KIND_MODEL,
    KIND_PART,
    RestoredPartition,
    RuntimeStats,
    StateRecord,
    StateRecordError,
    decode_snapshot,
    encode_model_record,
    headers,
    inflate,
    part_key,
    read_state,
    restore_monitors,
    split_part_key,
)
from streamwatch.simulate import Scenario, generate
from tests.unit.test_state_safety import _Consumer, _Msg

TOPIC = "sw.state"
DRIFT = {"reference_size": 200, "window_size": 200, "step": 50}  # calibrated and cached by other tests
T1 = {"p": 100, "l": 40}
T2 = {"p": 200, "l": 80}
PART = 4096  # small parts: a ~100 KB snapshot compresses to several of them


@pytest.fixture(scope="module")
def setup() -> tuple[Settings, Engine, dict[str, bytes]]:
    models: dict[str, Any] = {}
    first: list[RawMessage] = []
    second: list[RawMessage] = []
    for i in range(2):
        sc = Scenario(model_id=f"m{i}", events=600, change_at=300, numeric_features=3, seed=i)
        preds, _ = generate(sc)
        models.update(sc.config())
        first += [RawMessage(orjson.dumps(e)) for e in preds[:300]]
        second += [RawMessage(orjson.dumps(e)) for e in preds[300:]]
    settings = load_config(None, models=models, drift=DRIFT)
    engine = Engine(settings)
    engine.process_predictions(first)
    early = {f"{s.model_id}@1": s.data for s in engine.take_dirty()}
    engine.process_predictions(second)
    snaps = {s.model_id: s.data for s in engine.take_dirty()}
    return settings, engine, {**early, **snaps}


# -- a fake consumer of the state topic ---------------------------------------------------------


def _msg(offset: int, rec: StateRecord | tuple[bytes, bytes | None, Any]) -> _Msg:
    key, value, hdrs = (rec.key, rec.value, rec.headers) if isinstance(rec, StateRecord) else rec
    return _Msg(0, offset, key, value, hdrs)


def _read(recs: list[Any], committed: dict[str, int] = T2) -> RestoredPartition:
    consumer = _Consumer([_msg(i, r) for i, r in enumerate(recs)])
    return read_state(consumer, TOPIC, {0: committed}, timeout=5)[0]  # type: ignore[arg-type]


def _split(model: str, data: bytes, tag: dict[str, int] = T2, stored: int = 1) -> list[StateRecord]:
    return encode_model_record(model, data, tag, stored, part_bytes=PART, compress_above=1024)


def _hdr(rec: StateRecord, name: str) -> bytes | None:
    return dict(rec.headers).get(name)


# -- encoding -----------------------------------------------------------------------------------


def test_small_snapshots_stay_plain_json() -> None:
    data = b'{"format": "x"}'
    (rec,) = encode_model_record("m0", data, T1)
    assert (rec.key, rec.value) == (b"m0", data)
    assert rec.headers == headers(T1, KIND_MODEL)  # exactly what older builds wrote and read


def test_large_snapshots_are_compressed_and_split(setup: tuple[Settings, Engine, dict[str, bytes]]) -> None:
    _, _, snaps = setup
    data = snaps["m0"]
    (one,) = encode_model_record("m0", data, T1, compress_above=1024)  # parts of 8 MiB: one record
    assert _hdr(one, H_ENC) == ENC_ZLIB and _hdr(one, H_PARTS) is None
    assert one.value is not None and zlib.decompress(one.value) == data
    recs = _split("m0", data)
    packed = zlib.compress(data, state.ZLIB_LEVEL)
    n = -(-len(packed) // PART)
    assert n >= 3, "the test needs a snapshot of several parts"
    assert len(recs) == n and all(r.value is not None and len(r.value) <= PART for r in recs)
    head, *rest = recs
    assert head.key == b"m0" and _hdr(head, H_PARTS) == str(n).encode()
    assert _hdr(head, H_CRC) == f"{zlib.crc32(packed):08x}".encode()
    assert [r.key for r in rest] == [b"m0\x00part\x00%d" % i for i in range(1, n)]
    assert all(_hdr(r, "sw_kind") == KIND_PART and _hdr(r, "sw_src") == _hdr(head, "sw_src") for r in rest)
    assert b"".join(r.value or b"" for r in recs) == packed


def test_part_keys_round_trip_and_foreign_keys_are_refused() -> None:
    assert split_part_key(part_key("m0", 3)) == ("m0", 3)
    assert split_part_key(part_key("a\x00b", 12)) == ("a\x00b", 12)
    for bad in (b"m0", b"m0\x00part\x00", b"m0\x00part\x000", b"m0\x00part\x0001", b"m0\x00part\x00-1",
                b"m0\x00part\x00x", b"\x00part\x001", b"m0\x00part\x009999999"):  # fmt: skip
        assert split_part_key(bad) is None, bad


def test_fewer_parts_tombstone_the_part_keys_no_longer_used(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    _, _, snaps = setup
    n = len(_split("m0", snaps["m0"]))
    recs = _split("m0", snaps["m0"], stored=n + 3)
    assert [(r.key, r.value) for r in recs[n:]] == [(part_key("m0", i), None) for i in range(n, n + 3)]
    assert all(_hdr(r, "sw_kind") == KIND_PART and _hdr(r, "sw_src") for r in recs[n:])
    # shrinking to one plain record tombstones every part key
    small = encode_model_record("m0", b"{}", T2, n)
    assert [r.value for r in small] == [b"{}"] + [None] * (n - 1)


# -- restore ------------------------------------------------------------------------------------


def test_split_records_restore_exactly_in_any_order(setup: tuple[Settings, Engine, dict[str, bytes]]) -> None:
    settings, engine, snaps = setup
    recs = (
        _split("m0", snaps["m0"])
        + _split("m1", snaps["m1"])
        + [StateRecord(b"\x00checkpoint", b"{}", headers(T2, b"checkpoint"))]
    )
    for seed in range(3):  # the parts of a transaction may be read in any order
        random.Random(seed).shuffle(recs)
        rp = _read(recs)
        assert rp.records == {"m0": snaps["m0"], "m1": snaps["m1"]} and not rp.problems
        assert rp.bytes == len(snaps["m0"]) + len(snaps["m1"])
        assert rp.stored_bytes == sum(len(r.value or b"") for r in recs if r.key != b"\x00checkpoint")
    n0 = len(_split("m0", snaps["m0"]))
    assert rp.stored_parts == {"m0": n0, "m1": len(_split("m1", snaps["m1"]))}
    out = restore_monitors(rp, TOPIC, settings.models, engine.new_monitor)
    assert sorted(out.monitors) == ["m0", "m1"] and out.monitors["m0"].snapshot() == snaps["m0"]


def test_the_newest_valid_set_wins_and_old_plain_records_still_restore(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    _, _, snaps = setup
    old, new = snaps["m0@1"], snaps["m0"]
    plain = StateRecord(b"m0", old, headers(T1, KIND_MODEL))  # as every earlier build wrote it
    assert _read([plain]).records == {"m0": old}
    later = _split("m0", new, T2)
    assert _read([plain, *later]).records == {"m0": new}
    # a checkpoint beyond the committed offsets (never committed) is ignored, its parts too
    assert _read([plain, *later], committed=T1).records == {"m0": old}
    assert _read([*_split("m0", old, T1), *later], committed=T1).records == {"m0": old}
    # the model record rewritten plain after a split one: its old part keys are tombstoned
    n = len(later)
    shrunk = encode_model_record("m0", old, {"p": 300, "l": 90}, n)
    rp = _read([*later, *shrunk], committed={"p": 300, "l": 90})
    assert rp.records == {"m0": old} and not rp.problems and rp.stored_parts == {}


def test_stale_parts_on_the_topic_are_found_for_tombstoning(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    _, _, snaps = setup
    committed = _split("m0", snaps["m0@1"], T1)
    # a flushed but never committed checkpoint (at-least-once crash) with more parts
    big = _split("m0", snaps["m0"] + b" " * 30_000, T2)  # whitespace: still the same JSON
    rp = _read([*committed, *big], committed=T1)
    assert rp.records == {"m0": snaps["m0@1"]}
    assert rp.stored_parts == {"m0": max(len(committed), len(big))}, "the uncommitted parts exist too"


def _problem(rp: RestoredPartition) -> tuple[str, str]:
    assert "m0" not in rp.records
    ((key, reason),) = [(q.key, q.reason) for q in rp.problems]
    return key, reason


def test_incomplete_and_mismatched_sets_are_state_problems(
    setup: tuple[Settings, Engine, dict[str, bytes]],
) -> None:
    settings, engine, snaps = setup
    old, new = _split("m0", snaps["m0@1"], T1), _split("m0", snaps["m0"], T2)
    assert len(old) >= 3 and len(new) >= 3
    last = new[-1]
    changed = StateRecord(last.key, b"x" + (last.value or b"")[1:], last.headers)
    cases: dict[str, list[StateRecord]] = {
        "a part missing": [new[0], *new[2:]],
        "only the model record": new[:1],
        "a part of an older checkpoint": [*old, new[0], *new[2:]],
        "a part tombstoned": [*new, StateRecord(new[1].key, None, headers(T2, KIND_PART))],
        "a part changed": [*new[:-1], changed],
        "no crc": [StateRecord(b"m0", new[0].value, [h for h in new[0].headers if h[0] != H_CRC]), *new[1:]],
        "sw_parts not a number": [StateRecord(b"m0", new[0].value, [*new[0].headers[:2], (H_PARTS, b"x")])],
        "sw_parts zero": [StateRecord(b"m0", new[0].value, [*new[0].headers[:2], (H_PARTS, b"0")])],
        "sw_parts huge": [StateRecord(b"m0", new[0].value, [*new[0].headers[:2], (H_PARTS, b"999999")])],
    }  # fmt: skip
    for name, recs in cases.items():
        rp = _read(recs)
        assert _problem(rp) == ("m0", "bad_parts"), name
        # the worker reports it (state_corrupt alert, counter) and the model starts afresh
        out = restore_monitors(rp, TOPIC, settings.models, engine.new_monitor)
        assert not out.monitors and [q.reason for q in out.problems] == ["bad_parts"], name
        # reported at the model record it kept (the newest)
        assert out.problems[0].offset == max(i for i, r in enumerate(recs) if r.key == b"m0"), name
    # the other model of the partition is not affected
    rp = _read([*cases["a part missing"], *_split("m1", snaps["m1"])])
    assert list(rp.records) == ["m1"] and [q.reason for q in rp.problems] == ["bad_parts"]


def test_part_records_with_foreign_keys_are_reported() -> None:
    recs = [
        (b"m0", b"plain", headers(T1, KIND_PART)),
        (b"m0\x00part\x00one", b"x", headers(T1, KIND_PART)),
        (b"m0\x00part\x00one", None, headers(T1, KIND_PART)),  # a tombstone: nothing to report
    ]
    rp = _read(recs, committed=T1)
    assert [(q.offset, q.reason) for q in rp.problems] == [(0, "bad_parts"), (1, "bad_parts")]
    assert not rp.records


def test_bad_encodings_are_state_problems(setup: tuple[Settings, Engine, dict[str, bytes]]) -> None:
    _, _, snaps = setup
    packed = zlib.compress(snaps["m0"], 1)
    cases = {
        "unknown encoding": (packed, b"lz77-custom"),
        "not zlib": (b"\x00\x01garbage", ENC_ZLIB),
        "truncated": (packed[: len(packed) // 2], ENC_ZLIB),
        "trailing bytes": (packed + b"more", ENC_ZLIB),
        "a pickle": (b"\x80\x04\x95", ENC_ZLIB),
    }
    for name, (value, enc) in cases.items():
        rp = _read([(b"m0", value, [*headers(T2, KIND_MODEL), (H_ENC, enc)])])
        assert _problem(rp) == ("m0", "bad_encoding"), name


def test_a_decompression_bomb_is_refused_within_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # 256 MiB of zeros in ~250 KB: stopped at the cap, never expanded in full
    c = zlib.compressobj(9)
    chunk = bytes(16 << 20)
    bomb = b"".join(c.compress(chunk) for _ in range(16)) + c.flush()
    assert len(bomb) < 1 << 20
    t0 = time.perf_counter()
    with pytest.raises(StateRecordError) as info:
        inflate(bomb, 4 << 20)
    assert info.value.reason == "bad_encoding" and "more than" in info.value.detail
    assert time.perf_counter() - t0 < 1.0
    monkeypatch.setattr(state, "MAX_SNAPSHOT_BYTES", 4 << 20)
    rp = _read([(b"m0", bomb, [*headers(T2, KIND_MODEL), (H_ENC, ENC_ZLIB)])])
    assert _problem(rp) == ("m0", "bad_encoding")
    # a bomb split into parts is refused the same way
    recs = encode_model_record("m0", bytes(8 << 20), T2, part_bytes=2048, compress_above=1024)
    assert len(recs) > 1
    assert _problem(_read(recs)) == ("m0", "bad_encoding")
    # at the cap is fine
    assert inflate(zlib.compress(bytes(4 << 20)), 4 << 20) == bytes(4 << 20)


def test_decoded_records_are_still_checked_strictly(setup: tuple[Settings, Engine, dict[str, bytes]]) -> None:
    _, engine, snaps = setup
    # compressed or split, another model's snapshot is still another model's snapshot
    rp = _read(_split("m0", snaps["m1"]))
    with pytest.raises(StateRecordError) as info:
        decode_snapshot("m0", rp.records["m0"], engine.new_monitor("m0"))
    assert info.value.reason == "wrong_model"
    assert list(rp.records) == ["m0"]  # part keys never appear as models


def test_new_reasons_are_corrupt_reasons_and_exported() -> None:
    assert {"bad_parts", "bad_encoding"} <= set(CORRUPT_REASONS)
    stats = RuntimeStats()
    stats.state_corrupt["bad_parts"] = 1
    for size in (2_000, 300_000, 21_000_000):
        stats.snapshot_bytes.observe(size)
    stats.state_stored_bytes, stats.state_parts = 7_000_000, 2
    reg = CollectorRegistry()
    reg.register(RuntimeCollector(stats))
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
    corrupt = {s.labels["reason"]: s.value for s in fams["streamwatch_state_corrupt_records"].samples}
    assert corrupt["bad_parts"] == 1 and corrupt["bad_encoding"] == 0
    h = {(s.name, s.labels.get("le")): s.value for s in fams["streamwatch_state_snapshot_bytes"].samples}
    assert h[("streamwatch_state_snapshot_bytes_bucket", "16000")] == 1
    assert h[("streamwatch_state_snapshot_bytes_bucket", "1000000")] == 2
    assert h[("streamwatch_state_snapshot_bytes_bucket", "+Inf")] == 3
    assert h[("streamwatch_state_snapshot_bytes_sum", None)] == 21_302_000
    assert fams["streamwatch_state_stored_bytes"].samples[0].value == 7_000_000
    assert fams["streamwatch_state_part_records"].samples[0].value == 2
