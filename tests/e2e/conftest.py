"""Fixtures of the exactly-once tests: input streams with known results, worker processes that
can be killed, the group's progress, the final state read back from the state topic, and a
second, private broker that a test may stop and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamwatch.config import Settings, load_config
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.monitor import ModelMonitor
from streamwatch.runtime.state import read_state
from streamwatch.simulate import Scenario, generate
from tests.conftest import REPO, free_port, http_get, spawn_worker, wait_until

DRIFT = {"reference_size": 200, "window_size": 200, "step": 50}


@dataclass
class Stream:
    """Prediction and label events of several models, and what an uninterrupted run makes of them."""

    predictions: list[tuple[str, bytes]]  # (key, value) in production order
    labels: list[tuple[str, bytes]]
    models: dict[str, Any]
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # model -> (events, labels)
    alerts: Counter[str] = field(default_factory=Counter)  # alert_id -> how often
    described: dict[str, str] = field(default_factory=dict)  # alert_id -> what it is


def make_stream(n_models: int, events: int, seed: int = 1) -> Stream:
    preds: list[list[tuple[str, bytes]]] = []
    labels: list[tuple[str, bytes]] = []
    models: dict[str, Any] = {}
    for i in range(n_models):
        s = Scenario(
            model_id=f"m{i}",
            events=events,
            change_at=events // 2,
            numeric_features=2,
            shift_feature="age",
            shift_sigmas=1.5,
            label_share=0.3,
            seed=seed * 100 + i,
        )
        p, lab = generate(s)
        preds.append([(s.model_id, orjson.dumps(e)) for e in p])
        labels += [(s.model_id, orjson.dumps(e)) for e in lab]
        models.update(s.config())
    # interleave the models, as services publishing at the same time would
    mixed = [ev for group in zip(*preds, strict=True) for ev in group]
    return Stream(mixed, labels, models)


def expect(stream: Stream, settings: Settings) -> None:
    """Run the core over the stream in one go: the result every interrupted run must equal."""
    engine = Engine(settings)
    by_model: dict[str, list[RawMessage]] = {}
    for k, v in stream.predictions:
        by_model.setdefault(k, []).append(RawMessage(v))
    label_msgs = [RawMessage(v) for _, v in stream.labels]
    for msgs in by_model.values():
        for a in engine.process_predictions(msgs).alerts:
            stream.alerts[a.alert_id] += 1
            stream.described[a.alert_id] = _describe(
                a.model_id, a.kind, a.feature, a.detector, a.status, a.events_seen
            )
    # labels raise alerts too (label drift, performance, concept drift); which batch raises
    # them does not change their ids, so the order labels and predictions meet does not matter
    for a in engine.process_labels(label_msgs).alerts:
        stream.alerts[a.alert_id] += 1
        stream.described[a.alert_id] = _describe(
            a.model_id, a.kind, a.feature, a.detector, a.status, a.events_seen
        )
    stream.counts = {m: (mon.events_seen, mon.labels_seen) for m, mon in engine.monitors.items()}


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    # idempotent: a retried batch (a topic just created, a loaded broker) must not land after
    # the batches sent behind it, or the partition's order differs from the expected run's
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    for k, v in records:
        while True:
            try:
                p.produce(topic, v, k.encode())
                break
            except BufferError:
                p.poll(0.2)
    assert p.flush(30) == 0


def config(
    path: Path, bootstrap: str, topics: dict[str, str], models: dict[str, Any], group: str, **state: Any
) -> Path:
    import yaml

    doc = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "client": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        },
        "topics": {**topics, "partitions": 6},
        "batch": {"max_events": 200, "timeout_seconds": 0.05, "commit_interval_seconds": 0.3},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "state": {"transaction_timeout_seconds": 20, **state},
        "drift": DRIFT,
        "models": models,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Proc:
    """``streamwatch run`` in a child process that a test may kill at any moment."""

    def __init__(self, cfg: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("ab")
        self.port = free_port()
        self.proc = spawn_worker(cfg, self.port, self._out, env)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker has its partitions (``/readyz``); it handles SIGTERM from then on."""
        wait_until(
            lambda: (
                self.proc.poll() is not None or http_get(f"http://127.0.0.1:{self.port}/readyz", 1)[0] == 200
            ),
            timeout,
            "worker ready",
        )
        assert self.proc.poll() is None, self.text()[-3000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        return int(self.proc.wait(timeout))

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return int(self.proc.returncode)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop(10)


def _consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **extra,
        }
    )


_COORDINATOR_ERRORS = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
)


def progress(bootstrap: str, group: str, topics: list[str]) -> tuple[int, int]:
    """(committed, end) offsets summed over the input partitions (not waiting for open transactions)."""
    c = _consumer(bootstrap, group, **{"isolation.level": "read_uncommitted"})
    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p) for t in topics for p in md.topics[t].partitions]
        deadline = time.monotonic() + 60
        while True:  # a fresh broker's group coordinator takes a moment to load
            try:
                committed = c.committed(tps, timeout=30)
                break
            except KafkaException as e:
                err = e.args[0]
                if time.monotonic() > deadline or not (err.retriable() or err.code() in _COORDINATOR_ERRORS):
                    raise
                time.sleep(0.5)
        done = sum(max(0, tp.offset) for tp in committed)
        # markers of transactions in the state-free input topics do not exist: end = high watermark
        end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return done, end
    finally:
        c.close()


def wait_done(bootstrap: str, group: str, topics: list[str], timeout: float) -> None:
    def done() -> bool:
        try:
            a, b = progress(bootstrap, group, topics)
        except Exception:
            return False
        return a == b

    wait_until(done, timeout, "the group to commit every input offset", interval=0.5)


def final_state(settings: Settings) -> dict[str, tuple[int, int]]:
    """Per model (events, labels) of the committed state, read back as a new owner would."""
    bootstrap, group, t = settings.kafka.bootstrap_servers, settings.kafka.group_id, settings.topics
    c = _consumer(bootstrap, group)
    r = _consumer(bootstrap, f"reader-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True})
    try:
        n = len(c.list_topics(timeout=10).topics[t.predictions].partitions)
        tps = [TopicPartition(tp, p) for p in range(n) for tp in (t.predictions, t.labels)]
        committed: dict[int, dict[str, int]] = {p: {} for p in range(n)}
        for tp in c.committed(tps, timeout=30):
            if tp.offset != OFFSET_INVALID:
                committed[tp.partition][tp.topic] = tp.offset
        state = read_state(r, t.state, committed, timeout=60)
    finally:
        c.close()
        r.close()
    out: dict[str, tuple[int, int]] = {}
    where: dict[str, list[int]] = {}
    for p, rp in state.items():
        for model_id, data in rp.records.items():
            m = ModelMonitor.restore(data)
            e, lab = out.get(model_id, (0, 0))
            out[model_id] = (e + m.events_seen, lab + m.labels_seen)
            where.setdefault(model_id, []).append(p)
    # keyed by model id, a model's events all go to one partition: one monitor, one state
    split = {m: ps for m, ps in where.items() if len(ps) > 1}
    assert not split, f"models with state in several partitions: {split}"
    return out


def read_all(bootstrap: str, topic: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every committed record of ``topic`` (read_committed, to the end of each partition)."""
    c = _consumer(bootstrap, f"reader-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True})
    try:
        n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, -2) for p in range(n)])
        ended: set[int] = set()
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(ended) < n and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(m.partition() or 0)
                    continue
                got.append(orjson.loads(m.value() or b"null"))
        assert len(ended) == n, f"{topic} not read to the end"
        return got
    finally:
        c.close()


def check_result(stream: Stream, cfg: Path) -> None:
    settings = load_config(cfg)
    got = final_state(settings)
    assert got == stream.counts, "per-model counts in the committed state differ from an uninterrupted run"
    events = read_all(settings.kafka.bootstrap_servers, settings.topics.alerts)
    alerts = Counter(a["alert_id"] for a in events)
    described = dict(stream.described)
    for a in events:
        described[a["alert_id"]] = _describe(
            a["model_id"], a["kind"], a["feature"], a["detector"], a["status"], a["events_seen"]
        )
    missing = {described.get(k, k): n for k, n in (stream.alerts - alerts).items()}
    extra = {described.get(k, k): n for k, n in (alerts - stream.alerts).items()}
    assert not missing and not extra, f"alerts lost {missing}, duplicated or new {extra}"


def _describe(model: str, kind: str, feature: str | None, detector: str, status: str, seen: int) -> str:
    return f"{model}/{kind}/{feature}/{detector}/{status}@{seen}"


class PrivateBroker:
    """A second single-node broker on its own ports and data dir, free to stop and restart."""

    def __init__(self, workdir: Path) -> None:
        shared = REPO / ".cache" / "kafka" / "libs"
        if not (shared / ".complete").exists():
            pytest.skip("the broker jars are not fetched (deploy/local/kafka.sh fetch)")
        (workdir / "kafka").mkdir(parents=True)
        (workdir / "kafka" / "libs").symlink_to(shared)
        self.port = free_port()
        self.env = {
            **os.environ,
            "STREAMWATCH_CACHE": str(workdir),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            "KAFKA_HEAP": "384m",
        }
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _run(self, verb: str) -> None:
        subprocess.run([str(REPO / "deploy/local/kafka.sh"), verb], check=True, timeout=180, env=self.env)

    def up(self) -> None:
        self._run("up")

    def down(self) -> None:
        self._run("down")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    b = PrivateBroker(tmp_path / "broker")
    b.up()
    try:
        yield b
    finally:
        b.down()
