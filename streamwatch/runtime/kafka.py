"""The Kafka worker: consume micro-batches, run the engine, publish alerts, checkpoint state.

Partition ``p`` of the predictions topic, partition ``p`` of the labels topic and partition
``p`` of the state topic form one **unit**: the worker that holds both input partitions ``p``
owns the state of every model whose events land there. Every
``state.checkpoint_interval_seconds`` (and on revoke and shutdown) a checkpoint writes the
snapshots of the models that changed to state partition ``p``, tagged with the input offsets
they are consistent with, and commits the input offsets:

* ``exactly_once`` (default): snapshots, alert events, dead letters and the consumer offsets
  commit in one Kafka transaction (``send_offsets_to_transaction``). An abortable failure
  aborts and rewinds: state is rebuilt from the state topic and the input re-read from the
  committed offsets, which reproduces the same state and alerts (the core is deterministic).
* ``at_least_once``: snapshots, alerts and dead letters are flushed, then offsets committed.
  State stays exact through the offset tags; alerts after a crash may repeat (stable
  ``alert_id``).

On assignment the worker reads the committed (stable) offsets, rebuilds the units' state from
the state topic (records whose tag is at or below the committed offsets) and only then starts
consuming at those offsets. See docs/operations.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamwatch.config import Settings
from streamwatch.decode import DeadLetter, RawMessage
from streamwatch.engine import BatchResult, Engine
from streamwatch.exporter import Exporter
from streamwatch.monitor import ModelMonitor
from streamwatch.runtime.state import (
    CHECKPOINT_KEY,
    KIND_CHECKPOINT,
    PART_BYTES,
    RestoredPartition,
    RestoreError,
    RuntimeStats,
    Tag,
    encode_model_record,
    headers,
    read_state,
    restore_monitors,
)

log = logging.getLogger("streamwatch.kafka")

MAX_STATE_RECORD_BYTES = 32 * 1024 * 1024  # larger snapshots are compressed and split (state.PART_BYTES)
_CALL_TIMEOUT = 10.0  # the timeout given to each transactional call
# librdkafka 2.16 does not always honour those timeouts: after a broker outage
# send_offsets_to_transaction can wait forever for a group coordinator it cached before the
# outage (librdkafka issues #5456 and #5511). Each call therefore runs on a helper thread, and
# one that is still blocked this long past its own timeout, counting only the time during which
# the broker answered, is stuck for good: the worker exits 1 and its restart recovers.
_STUCK_GRACE = 20.0
_STOP_GRACE = 30.0  # a call blocked this long after a stop was requested ends the process too
CRASH_PHASES = ("before_offsets", "after_offsets", "after_commit", "in_revoke")
# besides: "abort" aborts the n-th checkpoint's transaction and rewinds; "stuck" makes the n-th
# send_offsets_to_transaction never return, as librdkafka's can after a broker outage


class KafkaSetupError(RuntimeError):
    """The broker cannot be reached or refuses what the worker needs."""


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers}
    conf.update(settings.kafka.librdkafka())  # kafka.client plus the SASL/TLS fields
    conf.update(extra)
    return conf


def _layered(settings: Settings, defaults: dict[str, Any], required: dict[str, Any]) -> dict[str, Any]:
    """Our defaults, overlaid by the user's ``kafka.client``, overlaid by what correctness needs."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers, **defaults}
    conf.update(settings.kafka.librdkafka())  # kafka.client plus the SASL/TLS fields
    conf.update(required)
    return conf


def state_topic_config() -> dict[str, str]:
    return {
        "cleanup.policy": "compact",
        "max.message.bytes": str(MAX_STATE_RECORD_BYTES),
        # at-least-once: a flushed but never committed snapshot must not compact away the
        # committed one before a restore has read it
        "min.compaction.lag.ms": str(3_600_000),
        "segment.ms": str(3_600_000),
    }


def _partition_counts(admin: AdminClient, names: Iterable[str], timeout: float) -> dict[str, int]:
    md = admin.list_topics(timeout=timeout)
    return {n: len(md.topics[n].partitions) for n in names if n in md.topics and md.topics[n].error is None}


def ensure_topics(settings: Settings, timeout: float = 15.0) -> None:
    """Create the input, output and state topics that do not exist yet.

    The state topic gets the partition count of the input topics, which must agree.
    """
    t = settings.topics
    auth: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in _AUTH_ERRORS:
            auth.append(err.str())

    admin = AdminClient(client_config(settings, error_cb=on_error))
    existing = set(_metadata(admin, settings, auth, timeout).topics)
    wanted = [t.predictions, t.labels, t.alerts, t.dead_letters]
    new = [
        NewTopic(name, t.partitions, t.replication_factor)
        for name in dict.fromkeys(wanted)
        if name not in existing
    ]
    _create(admin, new, timeout)
    if t.state in existing:
        return
    counts = _wait_counts(admin, [t.predictions, t.labels], timeout)
    if len(set(counts.values())) != 1:
        raise KafkaSetupError(_mismatch(counts))
    n = counts[t.predictions]
    _create(admin, [NewTopic(t.state, n, t.replication_factor, config=state_topic_config())], timeout)


_AUTH_ERRORS = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL)


def _metadata(admin: AdminClient, settings: Settings, auth: list[str], timeout: float) -> Any:
    """The cluster's metadata; a refused login or TLS handshake fails at once (librdkafka would
    retry it until the timeout), and its reason, never the credentials, is in the message."""
    deadline = time.monotonic() + timeout
    where = settings.kafka.bootstrap_servers
    while True:
        try:
            return admin.list_topics(timeout=min(1.0, timeout))
        except KafkaException as e:
            admin.poll(0)  # serves error_cb, which collects authentication failures
            if auth:
                raise KafkaSetupError(
                    f"Kafka at {where} refused the connection: {auth[0]} (check kafka.security_protocol, "
                    "kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password, or the TLS settings)"
                ) from None
            if time.monotonic() > deadline:
                raise KafkaSetupError(f"cannot reach Kafka at {where}: {e.args[0].str()}") from None


def _wait_counts(admin: AdminClient, names: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = _partition_counts(admin, names, timeout)
        if len(counts) == len(set(names)) or time.monotonic() > deadline:
            missing = [n for n in names if n not in counts]
            if missing:
                raise KafkaSetupError(f"topics {', '.join(missing)} do not exist")
            return counts
        time.sleep(0.2)


def _mismatch(counts: dict[str, int]) -> str:
    shown = ", ".join(f"{n}: {c}" for n, c in counts.items())
    return (
        f"topics must have the same number of partitions ({shown}): partition p of each holds the "
        "same models, and the state of partition p lives in state partition p"
    )


def _create(admin: AdminClient, new: list[NewTopic], timeout: float) -> None:
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
            log.info("created topic %s", name, extra={"event": "topic_created", "topic": name})
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"cannot create topic {name}: {e.args[0].str()}") from None


def fetch_sizes(settings: Settings) -> dict[str, int]:
    """Consumer fetch sizes that fit ``limits.max_message_bytes``: one partition's fetch holds a
    message of the limit, and a response of the whole fetch can be received. Larger messages are
    still fetched (the broker returns at least one batch) and dead-lettered as message_too_large."""
    one = max(1_048_576, settings.limits.max_message_bytes)
    fetch = max(52_428_800, 4 * one)
    return {
        "max.partition.fetch.bytes": one,
        "fetch.max.bytes": fetch,
        "receive.message.max.bytes": max(100_000_000, fetch + 1_048_576),
    }


def _raw(m: Message) -> RawMessage:
    kind, ts = m.timestamp()
    # a message without error always has topic, partition and offset
    return RawMessage(
        m.value(), ts if kind != 0 and ts >= 0 else None, m.topic() or "", m.partition() or 0, m.offset() or 0
    )


def _tps(parts: Iterable[TopicPartition]) -> list[tuple[str, int]]:
    return sorted((tp.topic, tp.partition) for tp in parts)


def _shown(tps: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in tps) or "nothing"


class _AbortError(Exception):
    """The open transaction cannot commit: abort it and rewind."""


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
        st = settings.state
        self.eos = st.mode == "exactly_once"
        self.stats = RuntimeStats(mode=st.mode)
        t = settings.topics
        self.inputs = {t.predictions: "predictions", t.labels: "labels"}
        self.input_topics = list(self.inputs)
        self.held: set[tuple[str, int]] = set()  # input partitions assigned to this consumer
        self.active: set[int] = set()  # units whose state this worker owns
        self.positions: dict[tuple[str, int], int] = {}  # next offset to process
        self.committed: dict[tuple[str, int], int] = {}  # what the last commit stored
        self._txn_open = False
        self._stuck: str | None = None  # a producer call that never returned: the producer is unusable
        self._delivery_errors = 0
        self._failed = False  # a fatal error: stop, exit 1, and commit nothing more
        self._last_checkpoint = time.monotonic()
        self._interval = st.checkpoint_interval_seconds or settings.batch.commit_interval_seconds
        self._op_timeout = max(30.0, st.transaction_timeout_seconds)
        self._crash_at = os.environ.get("STREAMWATCH_TEST_CRASH_AT", "")
        self._crash_after = int(os.environ.get("STREAMWATCH_TEST_CRASH_AFTER", "1"))
        self._crash_seen = 0
        self._warned: dict[tuple[int, str], float] = {}
        # (unit, model) -> parts its key space may hold on the state topic: beyond the parts a
        # checkpoint needs, they are tombstoned (restored from the topic, raised before produce)
        self._parts: dict[tuple[int, str], int] = {}
        # tests: split snapshots without building tens of MB (kept below the record limit)
        part_bytes = int(os.environ.get("STREAMWATCH_TEST_STATE_PART_BYTES", PART_BYTES))
        self._part_bytes = min(max(1024, part_bytes), PART_BYTES)
        instance = st.instance_id
        user = settings.kafka.client
        self.incremental = str(user.get("group.protocol", "classic")).lower() == "consumer"
        required: dict[str, Any] = {
            "group.id": settings.kafka.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",  # also: committed() returns stable offsets
            "error_cb": self._on_error,
            # broker connection states every few seconds: /readyz turns ready again on reconnect
            "stats_cb": self._on_stats,
            "statistics.interval.ms": int(user.get("statistics.interval.ms", 0) or 5000),
        }
        if self.incremental:
            # KIP-848: the broker's range assignor keeps partition p of both inputs together
            required["group.remote.assignor"] = user.get("group.remote.assignor", "range")
        else:
            strategy = str(user.get("partition.assignment.strategy", "range"))
            if strategy != "range":
                log.warning(
                    "partition.assignment.strategy %s does not keep partition p of the predictions and "
                    "labels topics on one worker; using range (for incremental rebalances set "
                    "kafka.client group.protocol: consumer, brokers >= 4.0)",
                    strategy,
                    extra={"event": "config"},
                )
            required["partition.assignment.strategy"] = "range"
        if instance:
            required["group.instance.id"] = instance  # static membership: restarts don't rebalance
        self.consumer = Consumer(
            _layered(
                settings,
                {
                    "auto.offset.reset": "earliest",
                    "queued.max.messages.kbytes": 32768,
                    **fetch_sizes(settings),
                },
                required,
            )
        )
        txn_id = f"streamwatch-{settings.kafka.group_id}-{instance or uuid.uuid4().hex}"
        pdefaults: dict[str, Any] = {
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": MAX_STATE_RECORD_BYTES + 65536,
        }
        preq: dict[str, Any] = {"error_cb": self._on_error, "enable.idempotence": True}
        if self.eos:
            preq["transactional.id"] = txn_id
            preq["transaction.timeout.ms"] = int(st.transaction_timeout_seconds * 1000)
        self.producer = Producer(_layered(settings, pdefaults, preq))
        self._restorer: Consumer | None = None
        # outputs counted up to the last commit: an abort rewinds the engine's counters here
        self._counted = engine.counters()
        exporter.health.restore_seconds = st.restore_timeout_seconds
        log.info(
            "worker %s: %s, checkpoints every %.1f s to %s",
            instance or "(no instance_id)",
            st.mode,
            self._interval,
            t.state,
            extra={"event": "start", "mode": st.mode, "instance_id": instance, "state_topic": t.state},
        )

    # -- errors and test hooks ---------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal Kafka error: %s", err.str(), extra={"event": "error", "code": err.name()})
            self._fail()
        elif err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            log.error("Kafka authentication failed: %s", err.str(), extra={"event": "error"})
            self._fail()
        else:
            if err.code() == KafkaError._ALL_BROKERS_DOWN:
                self.exporter.health.connected = False  # not ready until a broker is up again
            # an outage repeats the same complaint many times a second: once per 10 s is enough
            now = time.monotonic()
            key = (err.code(), err.str())
            if now - self._warned.get(key, -1e9) >= 10.0:
                self._warned[key] = now
                log.warning("Kafka: %s", err.str(), extra={"event": "kafka_warning", "code": err.name()})

    def _on_stats(self, stats_json: str) -> None:
        try:
            brokers = orjson.loads(stats_json).get("brokers", {})
            up = any(b.get("state") == "UP" for b in brokers.values())
        except (orjson.JSONDecodeError, AttributeError):
            return
        if up != self.exporter.health.connected:
            self.exporter.health.connected = up
            log.log(
                logging.INFO if up else logging.WARNING,
                "broker connection %s",
                "restored" if up else "lost",
                extra={"event": "connected" if up else "disconnected"},
            )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors += 1
            if self.eos:
                # the transaction will not commit; the checkpoint aborts and rewinds
                log.warning("could not deliver to %s: %s", msg.topic(), err.str(), extra={"event": "error"})
            else:
                # offsets past an undelivered output must not be committed: stop, and let the
                # restart replay from the last commit
                log.error(
                    "could not deliver to %s: %s; stopping", msg.topic(), err.str(), extra={"event": "error"}
                )
                self._fail()

    def _fail(self) -> None:
        self._failed = True
        self.stop.set()

    def _crash_point(self, phase: str) -> None:
        """Test hook (STREAMWATCH_TEST_CRASH_AT=phase, _AFTER=n): die like kill -9 at that point.

        ``abort`` instead makes the n-th checkpoint abort its transaction (once) and rewind.
        """
        if self._crash_at == "abort" and phase == "before_offsets":
            self._crash_seen += 1
            if self._crash_seen == self._crash_after:
                log.warning("test hook: aborting this checkpoint", extra={"event": "test_abort"})
                raise _AbortError
            return
        if self._crash_at != phase:
            return
        self._crash_seen += 1
        if self._crash_seen >= self._crash_after:
            log.warning("test hook: crashing at %s", phase, extra={"event": "test_crash", "phase": phase})
            for h in logging.getLogger().handlers:
                h.flush()
            os._exit(137)

    def _stuck_hook(self) -> bool:
        """Test hook (STREAMWATCH_TEST_CRASH_AT=stuck, _AFTER=n): True at the n-th offsets call."""
        if self._crash_at != "stuck":
            return False
        self._crash_seen += 1
        if self._crash_seen != self._crash_after:
            return False
        log.warning(
            "test hook: this send_offsets_to_transaction never returns", extra={"event": "test_stuck"}
        )
        return True

    # -- rebalance callbacks -------------------------------------------------------------------

    def _guarded(self, fn: Callable[[Consumer, list[TopicPartition]], None]) -> Callable[..., None]:
        def call(c: Consumer, parts: list[TopicPartition]) -> None:
            try:
                fn(c, parts)
            except _FatalError:
                pass  # already logged; the loop stops and the process exits 1
            except BaseException:
                # never continue with half-restored state: exit and let the supervisor restart
                log.exception("rebalance handling failed; stopping", extra={"event": "error"})
                self._fail()
                raise

        return call

    def _on_assign(self, c: Consumer, parts: list[TopicPartition]) -> None:
        new = set(_tps(parts))
        self.held |= new
        with self.stats.lock:
            self.stats.rebalances += 1
        ready = sorted(
            {
                p
                for _, p in new
                if p not in self.active and all((t, p) in self.held for t in self.input_topics)
            }
        )
        with self.exporter.health.restoring():  # not ready meanwhile
            positions = self._restore(ready) if ready and not self._failed else {}
        assignment = [TopicPartition(t, p, positions.get((t, p), OFFSET_INVALID)) for t, p in sorted(new)]
        if self.incremental:
            c.incremental_assign(assignment)
        else:
            c.assign(assignment)
        waiting = [TopicPartition(t, p) for t, p in sorted(new) if p not in self.active]
        if waiting:  # its partner input partition is not ours (yet): hold it still
            c.pause(waiting)
        for (t, p), off in sorted(positions.items()):
            if (t, p) not in new:  # held and paused before; its partner just arrived
                c.seek(TopicPartition(t, p, off))
                c.resume([TopicPartition(t, p)])
        self._update_assignment()
        log.info(
            "assigned %s; state of partitions %s restored",
            _shown(sorted(new)),
            ready,
            extra={"event": "assignment", "assigned": _shown(sorted(new)), "restored": ready},
        )
        self.exporter.health.ready = True

    def _on_revoke(self, c: Consumer, parts: list[TopicPartition]) -> None:
        self._crash_point("in_revoke")
        gone = set(_tps(parts))
        units = sorted({p for _, p in gone if p in self.active})
        if units and not self._failed:
            self.checkpoint("revoke", leaving=units)
        for p in units:
            self._deactivate(p)
        self.held -= gone
        self._pause_orphans(c)
        self._update_assignment()
        log.info(
            "revoked %s; state of partitions %s handed over",
            _shown(sorted(gone)),
            units,
            extra={"event": "revoke", "revoked": _shown(sorted(gone)), "units": units},
        )

    def _on_lost(self, c: Consumer, parts: list[TopicPartition]) -> None:
        gone = set(_tps(parts))
        units = sorted({p for _, p in gone if p in self.active})
        # someone else may own these already: commit nothing for them
        if units and self.eos and self._txn_open:
            self._abort_and_rewind(leaving=units)
        for p in units:
            self._deactivate(p)
        self.held -= gone
        self._pause_orphans(c)
        self._update_assignment()
        log.warning(
            "lost %s; their uncommitted work is dropped",
            _shown(sorted(gone)),
            extra={"event": "lost", "lost": _shown(sorted(gone)), "units": units},
        )

    def _pause_orphans(self, c: Consumer) -> None:
        orphans = [TopicPartition(t, p) for t, p in sorted(self.held) if p not in self.active]
        if orphans and self.incremental:
            c.pause(orphans)

    def _deactivate(self, p: int) -> None:
        self.engine.drop(p)
        self.active.discard(p)
        for t in self.input_topics:
            self.positions.pop((t, p), None)
            self.committed.pop((t, p), None)
        with self.stats.lock:
            for key in [k for k in self.stats.committed_counts if k[0] == p]:
                del self.stats.committed_counts[key]

    def _update_assignment(self) -> None:
        with self.stats.lock:
            self.stats.assigned = sorted(self.held)
            self.stats.owned = sorted(self.active)
            self.stats.lag = {k: v for k, v in self.stats.lag.items() if k in self.held}

    # -- restore ---------------------------------------------------------------------------------

    def _restorer_consumer(self) -> Consumer:
        if self._restorer is None:
            self._restorer = Consumer(
                _layered(
                    self.settings,
                    {},
                    {
                        "group.id": f"{self.settings.kafka.group_id}.restore",
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                        "isolation.level": "read_committed",
                        "auto.offset.reset": "earliest",
                        "error_cb": self._on_error,
                    },
                )
            )
        return self._restorer

    def _restore(self, units: list[int]) -> dict[tuple[str, int], int]:
        """Committed offsets, then state as of those offsets; returns where to resume."""
        t0 = time.perf_counter()
        st = self.settings.state
        tps = [TopicPartition(t, p) for p in units for t in self.input_topics]
        committed: dict[int, Tag] = {p: {} for p in units}
        positions: dict[tuple[str, int], int] = {}
        for tp in self.consumer.committed(tps, timeout=self._op_timeout + 10):
            if tp.error is not None:
                raise KafkaException(tp.error)
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=self._op_timeout, cached=False
            )
            pos = tp.offset
            if pos >= 0:
                committed[tp.partition][tp.topic] = pos
                if pos < low:
                    log.warning(
                        "committed offset %d of %s[%d] is older than the retention (first offset %d): "
                        "events %d..%d are lost; resuming at %d",
                        pos,
                        tp.topic,
                        tp.partition,
                        low,
                        pos,
                        low - 1,
                        low,
                        extra={
                            "event": "offset_reset",
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "committed": pos,
                            "low": low,
                        },
                    )
                    with self.stats.lock:
                        self.stats.offset_resets += 1
                    pos = low
            else:
                pos = max(low, 0)
            positions[(tp.topic, tp.partition)] = pos
            if high >= 0:
                with self.stats.lock:
                    self.stats.lag[(tp.topic, tp.partition)] = max(0, high - pos)
        for p, c in committed.items():
            if set(c) != set(self.input_topics):
                committed[p] = {}  # not both committed: nothing committed by a state-keeping worker
        restored = read_state(
            self._restorer_consumer(),
            self.settings.topics.state,
            committed,
            timeout=st.restore_timeout_seconds,
            wait_for_checkpoint=5.0 if self.eos else 0.0,
        )
        models = 0
        nbytes = 0
        for p in units:
            self._parts = {k: n for k, n in self._parts.items() if k[0] != p}
            self._parts.update({(p, m): n for m, n in restored[p].stored_parts.items()})
            monitors = self._load(restored[p])
            self.engine.install(p, monitors)
            self.active.add(p)
            for t in self.input_topics:
                self.positions[(t, p)] = positions[(t, p)]
                if t in committed[p]:
                    self.committed[(t, p)] = committed[p][t]
            with self.stats.lock:
                for model_id, m in monitors.items():
                    self.stats.committed_counts[(p, model_id)] = (m.events_seen, m.labels_seen)
            models += len(monitors)
            nbytes += restored[p].bytes
        seconds = time.perf_counter() - t0
        with self.stats.lock:
            self.stats.restore.observe(seconds)
            self.stats.restored_models += models
            self.stats.restored_bytes += nbytes
        log.info(
            "restored %d models (%d bytes) of partitions %s in %.3f s",
            models,
            nbytes,
            units,
            seconds,
            extra={
                "event": "restore",
                "partitions": units,
                "models": models,
                "bytes": nbytes,
                "seconds": round(seconds, 4),
                "skipped_records": sum(r.skipped for r in restored.values()),
                "committed": {str(p): c for p, c in committed.items()},
            },
        )
        return positions

    def _load(self, rp: RestoredPartition) -> dict[str, ModelMonitor]:
        """Decode one state partition's records strictly; corrupt or foreign ones are skipped with a
        ``state_corrupt`` alert (one id per record) and counted, never executed or crashed on."""
        out = restore_monitors(rp, self.settings.topics.state, self.settings.models, self.engine.new_monitor)
        for model_id, why in out.dropped:
            log.warning(
                "state of model %s (partition %d) not restored: %s; it starts afresh",
                model_id,
                rp.partition,
                why,
                extra={"event": "restore_skip", "model": model_id, "partition": rp.partition},
            )
        now_ms = int(time.time() * 1000)
        for q in out.problems:
            ev = q.event(now_ms)
            log.warning(
                "%s",
                ev["message"],
                extra={
                    "event": "state_corrupt",
                    "alert_id": ev["alert_id"],
                    "reason": q.reason,
                    "offset": q.offset,
                },
            )
            with self.stats.lock:
                self.stats.state_corrupt[q.reason] = self.stats.state_corrupt.get(q.reason, 0) + 1
            self._produce(self.settings.topics.alerts, ev["model_id"].encode(), orjson.dumps(ev), None)
            if self.on_alert:
                self.on_alert(ev)
        return out.monitors

    # -- the loop --------------------------------------------------------------------------------

    def _start(self) -> None:
        t = self.settings.topics
        names = list(dict.fromkeys([t.predictions, t.labels, t.state]))
        deadline = time.monotonic() + 15
        while True:  # topics just created may take a moment to appear in metadata
            try:
                md = self.consumer.list_topics(timeout=15)
            except KafkaException as e:
                raise KafkaSetupError(
                    f"cannot reach Kafka at {self.settings.kafka.bootstrap_servers}: {e.args[0].str()}"
                ) from None
            seen = [n for n in names if n in md.topics and md.topics[n].error is None]
            if len(seen) == len(names) or not self.settings.topics.create or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        counts = {}
        for name in dict.fromkeys([t.predictions, t.labels, t.state]):
            tm = md.topics.get(name)
            if tm is None or tm.error is not None:
                raise KafkaSetupError(
                    f"topic {name} does not exist (create it, or set topics.create: true)"
                    + (
                        "; the state topic needs cleanup.policy=compact and as many partitions "
                        f"as {t.predictions}"
                        if name == t.state
                        else ""
                    )
                )
            counts[name] = len(tm.partitions)
        if len(set(counts.values())) != 1:
            raise KafkaSetupError(_mismatch(counts))
        if self.eos:
            try:
                self._bounded(
                    "init_transactions",
                    lambda: self.producer.init_transactions(self._op_timeout),
                    self._op_timeout,
                )
            except KafkaException as e:
                raise KafkaSetupError(f"cannot start transactions: {e.args[0].str()}") from None
            except _FatalError as e:
                raise KafkaSetupError(f"cannot start transactions: {e}") from None

    def run(self, install_signals: bool = True) -> int:
        """Consume until stopped; returns the process exit code."""
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop.set())
        try:
            self._start()
        except KafkaSetupError as e:
            log.error("%s", e, extra={"event": "error"})
            self.consumer.close()
            return 1
        b = self.settings.batch
        self.consumer.subscribe(
            self.input_topics,
            on_assign=self._guarded(self._on_assign),
            on_revoke=self._guarded(self._on_revoke),
            on_lost=self._guarded(self._on_lost),
        )
        try:
            while not self.stop.is_set():
                msgs = self.consumer.consume(b.max_events, b.timeout_seconds)
                self.exporter.health.beat()
                try:
                    if msgs and not self._failed:
                        try:
                            self._process(msgs)
                        except _AbortError:
                            self._abort_and_rewind()
                    if time.monotonic() - self._last_checkpoint >= self._interval:
                        self.checkpoint("interval")
                except _FatalError:
                    break
                self.producer.poll(0)
            if not self._failed:
                with contextlib.suppress(_FatalError):
                    self.checkpoint("shutdown")
        except BaseException:
            # never commit past a batch that was not processed (close() runs the revoke callback)
            self._failed = True
            raise
        finally:
            self.exporter.health.ready = False
            self._close()
        log.info("stopped", extra={"event": "stop", "failed": self._failed})
        return 1 if self._failed else 0

    def _close(self) -> None:
        try:
            self.consumer.close()  # leaves the group; the revoke callback checkpoints
        except (KafkaException, RuntimeError) as e:
            log.warning("closing the consumer: %s", e, extra={"event": "error"})
        if self._stuck is None:  # else the producer cannot be touched: the restart aborts
            if self.eos and self._txn_open:
                with contextlib.suppress(KafkaException, _FatalError):
                    self._bounded("abort_transaction", lambda: self.producer.abort_transaction(10), 10)
            with contextlib.suppress(KafkaException):  # a fatal producer refuses even this
                self.producer.flush(10)
        if self._restorer is not None:
            self._restorer.close()

    def _process(self, msgs: list[Message]) -> None:
        by_source: dict[str, list[RawMessage]] = {"predictions": [], "labels": []}
        done: list[tuple[str, int, int]] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal() or err.code() == KafkaError._FATAL:
                    log.error("fatal consumer error: %s; exiting", err.str(), extra={"event": "error"})
                    self._fail()
                    return
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning(
                        "consume error on %s[%s]: %s",
                        m.topic(),
                        m.partition(),
                        err.str(),
                        extra={"event": "error"},
                    )
                continue
            raw = _raw(m)
            if raw.partition not in self.active:
                continue  # fetched before a revoke or while its partner was missing; re-read later
            pos = self.positions.get((raw.topic, raw.partition))
            if pos is not None and raw.offset < pos:
                continue  # already in the state (a rewind raced with a fetch)
            by_source[self.inputs[raw.topic]].append(raw)
            done.append((raw.topic, raw.partition, raw.offset + 1))
        if not done:
            return
        with self.exporter.batch_seconds.time():
            results = [
                self.engine.process_predictions(by_source["predictions"]),
                self.engine.process_labels(by_source["labels"]),
            ]
        now_ms = int(time.time() * 1000)
        for r in results:
            self._publish(r, now_ms)
        # only now are these messages done: their outputs are queued (in the transaction)
        for topic, p, nxt in done:
            self.positions[(topic, p)] = nxt

    def _publish(self, r: BatchResult, now_ms: int) -> None:
        t = self.settings.topics
        for a in r.alerts:
            ev = a.to_event(now_ms)
            self._produce(t.alerts, a.model_id.encode(), orjson.dumps(ev), None)
            log.info(
                "%s",
                a.message,
                extra={
                    "event": "alert",
                    "alert_id": ev["alert_id"],
                    "model": a.model_id,
                    "kind": a.kind,
                    "feature": a.feature,
                    "status": a.status,
                    "detected_at": ev["detected_at"],
                    "change_started_at": ev["change_started_at"],
                },
            )
            if self.on_alert:
                self.on_alert(ev)
        for d in r.dead_letters:
            self._produce(t.dead_letters, _key(d), d.body(), _headers(d))

    def _begin(self) -> None:
        if self.eos and not self._txn_open:
            try:
                self.producer.begin_transaction()
            except KafkaException as e:
                self._txn_error(e)
            self._txn_open = True

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,  # None: a tombstone
        hdrs: list[tuple[str, bytes]] | None,
        partition: int | None = None,
    ) -> None:
        self._begin()
        kw: dict[str, Any] = {"headers": hdrs, "on_delivery": self._on_delivery}
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value, key, **kw)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                if self.stop.is_set() and self._failed:
                    raise
                self.producer.poll(0.5)
            except KafkaException as e:
                self._txn_error(e)

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self, reason: str, leaving: list[int] | None = None) -> bool:
        """Write changed state and commit offsets; False if nothing could be committed."""
        self._last_checkpoint = time.monotonic()
        if self._failed:
            return False
        units = [
            p
            for p in sorted(self.active)
            if any(self.positions.get((t, p)) != self.committed.get((t, p)) for t in self.input_topics)
        ]
        if not units and not self._txn_open and not self.engine.dirty:
            self._update_lag()
            return True
        t0 = time.perf_counter()
        try:
            snaps = self.engine.take_dirty(self.active)
            units = sorted(set(units) | {s.partition for s in snaps})
            tags = {p: {t: self.positions[(t, p)] for t in self.input_topics} for p in units}
            state = self.settings.topics.state
            nbytes = stored = nparts = 0
            now_parts: dict[tuple[int, str], int] = {}
            for s in snaps:
                at = (s.partition, s.model_id)
                before = self._parts.get(at, 1)
                recs = encode_model_record(
                    s.model_id, s.data, tags[s.partition], before, part_bytes=self._part_bytes
                )
                n = sum(1 for r in recs if r.value is not None)
                # until this commits, the topic may hold the old parts or the new ones
                self._parts[at] = max(before, n)
                now_parts[at] = n
                for r in recs:
                    self._produce(state, r.key, r.value, r.headers, s.partition)
                nbytes += len(s.data)
                stored += sum(len(r.value or b"") for r in recs)
                nparts += n - 1
            for p in units:
                self._produce(state, CHECKPOINT_KEY, b"{}", headers(tags[p], KIND_CHECKPOINT), p)
            offsets = [TopicPartition(t, p, tags[p][t]) for p in units for t in self.input_topics]
            self._crash_point("before_offsets")
            tc = time.perf_counter()
            if self.eos:
                if offsets:
                    meta = self.consumer.consumer_group_metadata()
                    hang = self._stuck_hook()

                    def send() -> None:
                        self.producer.send_offsets_to_transaction(offsets, meta, _CALL_TIMEOUT)
                        if hang:
                            threading.Event().wait()

                    self._txn_call("send_offsets_to_transaction", send)
                self._crash_point("after_offsets")
                self._commit()
                self._txn_open = False
                if self._delivery_errors:  # cannot happen after a successful commit; be safe
                    raise _AbortError
            else:
                left = self.producer.flush(self._op_timeout)
                if left or self._delivery_errors:
                    log.error(
                        "%d outputs undelivered, %d failed: offsets not committed",
                        left,
                        self._delivery_errors,
                        extra={"event": "error"},
                    )
                    self._fail()
                    return False
                self._crash_point("after_offsets")
                if offsets:
                    try:
                        self.consumer.commit(offsets=offsets, asynchronous=False)
                    except KafkaException as e:
                        # e.g. ILLEGAL_GENERATION during a rebalance: the snapshots are tagged, so
                        # a later commit (or the revoke) makes them valid
                        with self.stats.lock:
                            self.stats.commit_failures += 1
                        log.warning(
                            "offset commit failed (retried at the next checkpoint): %s",
                            e.args[0].str(),
                            extra={"event": "commit_failed"},
                        )
                        return False
            self._crash_point("after_commit")
        except _AbortError:
            self._abort_and_rewind(leaving=leaving or [])
            return False
        now = time.perf_counter()
        self._counted = self.engine.counters()
        self._parts.update(now_parts)  # committed: the unused part keys are tombstoned
        for o in offsets:
            self.committed[(o.topic, o.partition)] = o.offset
        with self.stats.lock:
            self.stats.checkpoints += 1
            self.stats.checkpoint.observe(now - t0)
            self.stats.commit.observe(now - tc)
            self.stats.state_records += len(snaps)
            self.stats.state_bytes += nbytes
            self.stats.state_stored_bytes += stored
            self.stats.state_parts += nparts
            for s in snaps:
                self.stats.snapshot_bytes.observe(len(s.data))
                self.stats.committed_counts[(s.partition, s.model_id)] = (s.events_seen, s.labels_seen)
        self._update_lag()
        log.debug(
            "checkpoint (%s): %d models, %d bytes, partitions %s in %.3f s",
            reason,
            len(snaps),
            nbytes,
            units,
            now - t0,
            extra={
                "event": "checkpoint",
                "reason": reason,
                "models": len(snaps),
                "bytes": nbytes,
                "stored_bytes": stored,
                "partitions": units,
                "seconds": round(now - t0, 4),
            },
        )
        return True

    def _update_lag(self) -> None:
        lag: dict[tuple[str, int], int] = {}
        for t, p in sorted(self.held):
            pos = self.positions.get((t, p))
            if pos is None:
                continue
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                lag[(t, p)] = max(0, high - pos)
        with self.stats.lock:
            self.stats.lag.update(lag)

    def _txn_error(self, e: KafkaException) -> None:
        """Classify a transactional error: fatal (exit 1) or abortable (raise _AbortError)."""
        err: KafkaError = e.args[0]
        if err.fatal() or err.code() == KafkaError._FENCED:
            fenced = err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED)
            log.error(
                "transactional producer failed fatally%s: %s; exiting (the restart resumes from the "
                "last commit)",
                " (fenced by another instance with the same state.instance_id?)" if fenced else "",
                err.str(),
                extra={"event": "fenced" if fenced else "error", "code": err.name()},
            )
            self._fail()
            raise _FatalError(err.str()) from None
        if not err.txn_requires_abort():
            # neither fatal nor abortable (e.g. a timeout after the broker came back): abort and
            # rewind; if the producer cannot even abort, that error is fatal and ends the process
            log.warning(
                "transaction error: %s; aborting", err.str(), extra={"event": "txn_error", "code": err.name()}
            )
        raise _AbortError from None

    def _retrying(self, what: str, fn: Callable[[], None]) -> None:
        """Run a transactional call, retrying retriable errors (a broker outage) until it works.

        Gives up 30 s after a stop was requested; fatal errors end the process, others abort.
        """
        stop_deadline: float | None = None
        warned = 0.0
        while True:
            try:
                self._bounded(what, fn, _CALL_TIMEOUT)
                return
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if self.stop.is_set() and stop_deadline is None:
                    stop_deadline = time.monotonic() + 30.0
                gave_up = stop_deadline is not None and time.monotonic() > stop_deadline
                if (
                    err.retriable()
                    and not err.fatal()
                    and err.code() != KafkaError._CONFLICT  # another call in progress: never clears
                    and not self._failed
                    and not gave_up
                ):
                    if time.monotonic() - warned > 10.0:
                        warned = time.monotonic()
                        log.warning(
                            "%s retried: %s", what, err.str(), extra={"event": "txn_retry", "step": what}
                        )
                    time.sleep(0.5)
                    continue
                self._txn_error(e)

    def _txn_call(self, what: str, fn: Callable[[], None]) -> None:
        # no retries: after a transport failure librdkafka 2.16 can block a retried
        # send_offsets_to_transaction indefinitely; aborting and rewinding always recovers
        try:
            self._bounded(what, fn, _CALL_TIMEOUT)
        except KafkaException as e:
            self._txn_error(e)

    def _commit(self) -> None:
        """commit_transaction; a retriable error (a timeout while the broker is away) resumes the
        same commit, as librdkafka recommends: an abort is refused once a commit has begun."""
        deadline = time.monotonic() + self._op_timeout
        warned = 0.0
        while True:
            try:
                self._bounded(
                    "commit_transaction",
                    lambda: self.producer.commit_transaction(_CALL_TIMEOUT),
                    _CALL_TIMEOUT,
                )
                return
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if err.retriable() and not err.fatal() and not err.txn_requires_abort():
                    if not self._failed and not self.stop.is_set() and time.monotonic() < deadline:
                        if time.monotonic() - warned > 10.0:
                            warned = time.monotonic()
                            log.warning(
                                "commit_transaction retried: %s",
                                err.str(),
                                extra={"event": "txn_retry", "step": "commit_transaction"},
                            )
                        time.sleep(0.5)
                        continue
                    # the commit is still in progress inside librdkafka, which refuses an abort
                    # ("conflicting commit_transaction API call"): only a restart gets out
                    log.error(
                        "commit_transaction did not finish in %.0f s (%s) and cannot be aborted; "
                        "exiting (the restart resumes from the last commit)",
                        self._op_timeout,
                        err.str(),
                        extra={"event": "txn_stuck", "step": "commit_transaction", "code": err.name()},
                    )
                    self._fail()
                    raise _FatalError(err.str()) from None
                self._txn_error(e)

    def _bounded(self, what: str, fn: Callable[[], None], timeout: float) -> None:
        """Run a blocking producer call on a helper thread and return or raise what it does.

        librdkafka does not bound every transactional call by its timeout (see _STUCK_GRACE). The
        main thread waits here instead, probing the broker every second: while the broker does not
        answer, the call is waiting out an outage (the loop stays alive for /healthz, not ready for
        /readyz); once the call has been blocked for ``timeout + _STUCK_GRACE`` seconds of answered
        probes, or ``_STOP_GRACE`` seconds after a stop was requested, it is stuck: the producer
        cannot be used, aborted or closed any more, so the worker stops with exit code 1 and its
        restart aborts the open transaction (same transactional id) and restores the last commit.
        """
        if self._stuck is not None:
            raise _FatalError(f"{self._stuck} never returned")
        result: list[BaseException] = []
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            except BaseException as e:  # handed to the caller's thread
                result.append(e)
            finally:
                done.set()

        threading.Thread(target=call, name=f"kafka-{what}", daemon=True).start()
        t0 = last = time.monotonic()
        with self.stats.lock:
            self.stats.txn_call = (what, t0)
        try:
            self._wait_bounded(what, done, t0, last, timeout)
        finally:
            with self.stats.lock:
                self.stats.txn_call = None
        if result:
            raise result[0]

    def _wait_bounded(self, what: str, done: threading.Event, t0: float, last: float, timeout: float) -> None:
        """Wait for a transactional call started at ``t0`` (see :meth:`_bounded`)."""
        answered = 0.0  # seconds blocked while the broker answered
        stopped_at: float | None = None
        warned = 0.0
        while not done.wait(1.0):
            reachable = self._broker_answers()
            now = time.monotonic()
            if reachable:
                answered += now - last
            else:
                self.exporter.health.connected = False
                self.exporter.health.beat()  # waiting for the broker, not stalled
            last = now
            if self.stop.is_set() and stopped_at is None:
                stopped_at = now
            if now - t0 > timeout and now - warned >= 10.0:
                warned = now
                log.warning(
                    "%s has been blocked for %.0f s (%s)",
                    what,
                    now - t0,
                    "the broker answers" if reachable else "no broker reachable: waiting for it",
                    extra={"event": "txn_blocked", "step": what, "seconds": round(now - t0, 1)},
                )
            stuck = answered > timeout + _STUCK_GRACE
            if stuck or (stopped_at is not None and now - stopped_at > _STOP_GRACE):
                self._stuck = what
                log.error(
                    "%s has not returned in %.0f s %s; the producer is unusable: exiting so that "
                    "the supervisor restarts the worker, which resumes from the last commit",
                    what,
                    now - t0,
                    "although the broker answers (a librdkafka bug, confluentinc/librdkafka#5456 and #5511)"
                    if stuck
                    else "after a stop was requested",
                    extra={"event": "txn_stuck", "step": what, "seconds": round(now - t0, 1)},
                )
                self._fail()
                raise _FatalError(f"{what} never returned")

    def _broker_answers(self) -> bool:
        """Whether the producer gets a metadata response from a broker within 2 s."""
        try:
            self.producer.list_topics(self.settings.topics.state, timeout=2.0)
            return True
        except KafkaException:
            return False

    def _abort_and_rewind(self, leaving: list[int] | None = None) -> None:
        """Abort the open transaction; rebuild the other units' state from the last commit."""
        with self.stats.lock:
            self.stats.aborts += 1
        log.warning(
            "aborting the transaction and rewinding to the last commit",
            extra={"event": "abort", "leaving": leaving or []},
        )
        if self._txn_open:
            try:
                self._retrying("abort", lambda: self.producer.abort_transaction(_CALL_TIMEOUT))
            except _AbortError:
                log.error("the transaction cannot be aborted; exiting", extra={"event": "error"})
                self._fail()
                raise _FatalError("abort failed") from None
            self._txn_open = False
        self._delivery_errors = 0
        self.engine.rewind_counters(self._counted)
        keep = sorted(self.active - set(leaving or []))
        for p in keep:
            self.engine.drop(p)
            self.active.discard(p)
        if not keep:
            return
        while True:
            try:
                with self.exporter.health.restoring():
                    positions = self._restore(keep)
                break
            except (KafkaException, RestoreError) as e:
                if self.stop.is_set():
                    self._fail()
                    raise _FatalError(str(e)) from None
                log.warning("rewind failed, retrying: %s", e, extra={"event": "restore_retry"})
                time.sleep(1.0)
        for (t, p), off in sorted(positions.items()):
            try:
                self.consumer.seek(TopicPartition(t, p, off))
            except KafkaException as e:  # lost meanwhile: the next consume() reports it
                log.warning("seek %s[%d] failed: %s", t, p, e, extra={"event": "seek_failed"})
        self._update_assignment()


class _FatalError(Exception):
    """A fatal Kafka error: the worker stops with exit code 1 (the supervisor restarts it)."""


def _key(d: DeadLetter) -> bytes | None:
    return d.model_id.encode() if d.model_id else None


def _headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        ("sw_reason", d.reason.encode()),
        ("sw_detail", d.detail.encode("utf-8", "replace")[:1000]),
        ("sw_source", f"{d.raw.topic}/{d.raw.partition}/{d.raw.offset}".encode()),
    ]
