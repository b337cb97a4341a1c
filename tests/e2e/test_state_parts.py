"""Model records split into parts on the real broker: a worker whose snapshots exceed the part
size (lowered with STREAMWATCH_TEST_STATE_PART_BYTES instead of building 40 MB models) is killed
with -9 twice and restarted; the state restores exactly (counts and alerts as one uninterrupted
run), and when a restart needs fewer parts the part keys it no longer uses are tombstoned."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamwatch.config import load_config
from streamwatch.runtime.kafka import ensure_topics
from streamwatch.runtime.state import (
    ENC_ZLIB,
    H_ENC,
    H_PARTS,
    KIND_MODEL,
    KIND_PART,
    split_part_key,
)
from tests.conftest import http_get, wait_until
from tests.e2e.conftest import Proc, check_result, config, expect, make_stream, produce, progress, wait_done

SMALL, LARGER = 4096, 16384  # part sizes: snapshots of 80-500 KB compress to 18-190 KB


def _records(bootstrap: str, topic: str) -> list[tuple[int, int, bytes, bytes | None, dict[str, bytes]]]:
    """Every committed record of ``topic``: (partition, offset, key, value, headers)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, -2) for p in range(n)])
        ended: set[int] = set()
        got: list[tuple[int, int, bytes, bytes | None, dict[str, bytes]]] = []

        def step() -> bool:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(m.partition() or 0)
                    continue
                hdrs = {k: bytes(v or b"") for k, v in m.headers() or []}
                got.append((m.partition() or 0, m.offset() or 0, m.key() or b"", m.value(), hdrs))
            return len(ended) == n

        wait_until(step, 60, f"{topic} read to the end", interval=0)
        return got
    finally:
        c.close()


def _restores(p: Proc) -> list[dict[str, Any]]:
    out = []
    for line in p.text().splitlines():
        if line.startswith("{") and '"event":"restore"' in line:
            doc = orjson.loads(line)
            if "models" in doc:
                out.append(doc)
    return out


def _metric(port: int, name: str) -> float:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line.startswith(name + " ")
    )


def test_split_state_survives_kill_9_and_shrinks(kafka: str, tmp_path: Path, procs: list[Proc]) -> None:
    stream = make_stream(4, 3000)
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"t{tag}.{k}" for k in ("predictions", "labels", "alerts", "dead_letters", "state")}
    group = f"g-{uuid.uuid4().hex[:8]}"
    cfg = config(tmp_path / "config.yaml", kafka, topics, stream.models, group, instance_id="w1")
    settings = load_config(cfg)
    expect(stream, settings)
    ensure_topics(settings)
    inputs = [topics["predictions"], topics["labels"]]
    half = len(stream.predictions) // 2
    produce(kafka, topics["predictions"], stream.predictions[:half])
    produce(kafka, topics["labels"], stream.labels)
    small = {"STREAMWATCH_TEST_STATE_PART_BYTES": str(SMALL)}

    # life 1: killed -9 right after its first commits (of snapshots split into parts)
    first = Proc(cfg, tmp_path / "w1.log", small)
    procs.append(first)
    first.wait_ready()
    wait_until(lambda: progress(kafka, group, inputs)[0] > 0, 60, "a first commit")
    first.kill()
    # life 2: restores the split state, finishes the first half, killed -9
    second = Proc(cfg, tmp_path / "w2.log", small)
    procs.append(second)
    second.wait_ready()
    wait_done(kafka, group, inputs, 90)
    second.kill()
    assert any(r["models"] > 0 and r["bytes"] > 0 for r in _restores(second)), second.text()[-3000:]
    # life 3: larger parts, so each model needs fewer part keys than the topic holds
    produce(kafka, topics["predictions"], stream.predictions[half:])
    last = Proc(cfg, tmp_path / "w3.log", {"STREAMWATCH_TEST_STATE_PART_BYTES": str(LARGER)})
    procs.append(last)
    last.wait_ready()
    wait_done(kafka, group, inputs, 90)
    assert _metric(last.port, "streamwatch_state_part_records_total") > 0
    assert _metric(last.port, "streamwatch_state_snapshot_bytes_count") > 0
    assert last.stop() == 0
    restored = _restores(last)
    assert restored and restored[0]["models"] == len(stream.models), last.text()[-3000:]
    for p in (first, second, last):
        assert "state_corrupt" not in p.text(), p.text()[-3000:]

    # exact: per-model counts of the committed state and every alert exactly once
    check_result(stream, cfg)

    # the topic: compressed model records split into parts; stale part keys tombstoned
    recs = _records(kafka, topics["state"])
    heads = [r for r in recs if r[4].get("sw_kind") == KIND_MODEL]
    # snapshots that fit one part stay plain JSON, larger ones are compressed
    assert any(r[4].get(H_ENC) == ENC_ZLIB for r in heads)
    assert all(r[4].get(H_ENC) == ENC_ZLIB or len(r[3] or b"") <= LARGER for r in heads)
    assert max(int(r[4].get(H_PARTS, b"1")) for r in heads) > 5
    last_of: dict[tuple[int, bytes], tuple[bytes | None, dict[str, bytes]]] = {}
    for p, _, key, value, hdrs in recs:  # in offset order per partition
        last_of[(p, key)] = (value, hdrs)
    tombstones = [r for r in recs if r[4].get("sw_kind") == KIND_PART and r[3] is None]
    assert tombstones, "life 3 needed fewer parts: the unused part keys should be tombstoned"
    for (p, key), (value, _) in last_of.items():
        where = split_part_key(key)
        if where is None:
            continue
        head = last_of.get((p, where[0].encode()))
        assert head is not None and head[0] is not None, f"part {key!r} without a model record"
        needed = int(head[1].get(H_PARTS, b"1"))
        assert (value is None) == (where[1] >= needed), f"part {key!r}: {needed} parts needed"
