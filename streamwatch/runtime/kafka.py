"""The Kafka worker: consume micro-batches, run the engine, publish alerts and dead letters.

Offsets are committed only after the alerts and dead letters of the events before them have
been delivered (at-least-once: after a crash some alerts may repeat; their ``alert_id`` is
stable, so consumers can drop repeats). State checkpoints and exactly-once commits
arrive with the state work (issue 6).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamwatch.config import Settings
from streamwatch.decode import DeadLetter, RawMessage
from streamwatch.engine import BatchResult, Engine
from streamwatch.exporter import Exporter

log = logging.getLogger("streamwatch.kafka")


class KafkaSetupError(RuntimeError):
    """The broker cannot be reached or refuses what the worker needs."""


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers}
    conf.update(settings.kafka.client)
    conf.update(extra)
    return conf


def ensure_topics(settings: Settings, timeout: float = 15.0) -> None:
    """Create the input and output topics that do not exist yet."""
    t = settings.topics
    admin = AdminClient(client_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as e:
        raise KafkaSetupError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {e.args[0].str()}"
        ) from None
    wanted = [t.predictions, t.labels, t.alerts, t.dead_letters]
    new = [
        NewTopic(name, t.partitions, t.replication_factor)
        for name in dict.fromkeys(wanted)
        if name not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
            log.info("created topic %s", name)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"cannot create topic {name}: {e.args[0].str()}") from None


def _raw(m: Message) -> RawMessage:
    kind, ts = m.timestamp()
    # a message without error always has topic, partition and offset
    return RawMessage(
        m.value(), ts if kind != 0 and ts >= 0 else None, m.topic() or "", m.partition() or 0, m.offset() or 0
    )


class KafkaWorker:
    """One worker process of the ``group_id`` consumer group."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        exporter: Exporter,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.exporter = exporter
        self.on_alert = on_alert
        self.stop = threading.Event()
        self._next_offsets: dict[tuple[str, int], int] = {}
        self._delivery_errors = 0
        self._failed = False  # a fatal error: stop, exit 1, and commit nothing more
        self._last_commit = time.monotonic()
        t = settings.topics
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": settings.kafka.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "queued.max.messages.kbytes": 32768,
                    "error_cb": self._on_error,
                },
            )
        )
        self.producer = Producer(
            client_config(
                settings,
                **{
                    "enable.idempotence": True,
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "error_cb": self._on_error,
                },
            )
        )
        self.inputs = {t.predictions: "predictions", t.labels: "labels"}

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal Kafka error: %s", err.str())
            self._fail()
        elif err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            log.error("Kafka authentication failed: %s", err.str())
            self._fail()
        else:
            log.warning("Kafka: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            # offsets past an undelivered output must not be committed: stop, and let the
            # restart replay from the last commit
            self._delivery_errors += 1
            log.error("could not deliver to %s: %s; stopping", _msg.topic(), err.str())
            self._fail()

    def _fail(self) -> None:
        self._failed = True
        self.stop.set()

    def _on_assign(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in parts) or "nothing")
        self.exporter.health.ready = True

    def _on_revoke(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in parts) or "nothing")
        self.commit()
        for p in parts:
            self._next_offsets.pop((p.topic, p.partition), None)

    def run(self, install_signals: bool = True) -> int:
        """Consume until stopped; returns the process exit code."""
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop.set())
        b = self.settings.batch
        self.consumer.subscribe(list(self.inputs), on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self.stop.is_set():
                msgs = self.consumer.consume(b.max_events, b.timeout_seconds)
                self.exporter.health.beat()
                if msgs:
                    self._process(msgs)
                if time.monotonic() - self._last_commit >= b.commit_interval_seconds:
                    self.commit()
                self.producer.poll(0)
            self.commit()
        except BaseException:
            # never commit past a batch that was not processed (close() runs the revoke callback)
            self._failed = True
            raise
        finally:
            self.exporter.health.ready = False
            self.consumer.close()
            self.producer.flush(10)
        return 1 if self._failed else 0

    def _process(self, msgs: list[Message]) -> None:
        by_source: dict[str, list[RawMessage]] = {"predictions": [], "labels": []}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error on %s[%s]: %s", m.topic(), m.partition(), err.str())
                continue
            raw = _raw(m)
            by_source[self.inputs[raw.topic]].append(raw)
        with self.exporter.batch_seconds.time():
            results = [
                self.engine.process_predictions(by_source["predictions"]),
                self.engine.process_labels(by_source["labels"]),
            ]
        now_ms = int(time.time() * 1000)
        for r in results:
            self._publish(r, now_ms)
        # only now are these messages done: their outputs are queued for delivery
        for m in msgs:
            if m.error() is None:
                self._next_offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1

    def _publish(self, r: BatchResult, now_ms: int) -> None:
        t = self.settings.topics
        for a in r.alerts:
            ev = a.to_event(now_ms)
            self._produce(t.alerts, a.model_id.encode(), orjson.dumps(ev), None)
            if self.on_alert:
                self.on_alert(ev)
        for d in r.dead_letters:
            self._produce(t.dead_letters, _key(d), d.body(), _headers(d))

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None,
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                if self.stop.is_set() and self._failed:
                    raise
                self.producer.poll(0.5)

    def commit(self) -> None:
        """Commit consumed offsets once everything produced for them is delivered."""
        self._last_commit = time.monotonic()
        if not self._next_offsets or self._failed:
            return
        left = self.producer.flush(30)
        if left or self._delivery_errors:
            log.error(
                "%d outputs undelivered, %d failed: offsets not committed",
                left,
                self._delivery_errors,
            )
            return
        offsets = [TopicPartition(tp, p, off) for (tp, p), off in self._next_offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            log.warning("offset commit failed (will retry): %s", e.args[0].str())


def _key(d: DeadLetter) -> bytes | None:
    return d.model_id.encode() if d.model_id else None


def _headers(d: DeadLetter) -> list[tuple[str, str | bytes | None]]:
    return [
        ("sw_reason", d.reason.encode()),
        ("sw_detail", d.detail.encode("utf-8", "replace")[:1000]),
        ("sw_source", f"{d.raw.topic}/{d.raw.partition}/{d.raw.offset}".encode()),
    ]
