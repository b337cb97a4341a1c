"""The README's first command: a tour of problems on the local broker, printed as they are found.

Makes sure the local Kafka broker and Prometheus are up (starting them with
``deploy/local/*.sh`` when they are not), starts a worker (``streamwatch run``), and streams the
``tour`` scenario in real time: labels flip in one region (concept drift, seen only once the
delayed labels come), then ``income`` shifts by one standard deviation, ``country`` gets a value
never seen before, and ``debt_ratio`` arrives in percent instead of as a fraction. Each alert is
printed as one line when it reaches the alerts topic; at the end the demo says which injected
problem was found how fast, and where to look next.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm  # type: ignore[import-untyped]

from streamwatch.config import Settings, load_config
from streamwatch.events import parse_timestamp
from streamwatch.runtime.kafka import client_config
from streamwatch.simulate import SCENARIOS, Scenario, generate

REPO = Path(__file__).resolve().parent.parent  # deploy/local/*.sh live here in a checkout


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _service(name: str, host: str, port: int) -> bool:
    """True when ``host:port`` answers, after ``deploy/local/<name>.sh up`` if it did not."""
    if _port_open(host, port):
        return True
    script = REPO / "deploy" / "local" / f"{name}.sh"
    if host not in ("127.0.0.1", "localhost") or not script.is_file():
        return False
    print(f"  starting {name} ({script.relative_to(REPO)} up; the first time fetches it) ...", flush=True)
    done = subprocess.run([str(script), "up"], check=False)
    return done.returncode == 0 and _port_open(host, port)


def _summary(metrics_text: str) -> list[str]:
    """One line per feature: each detector's statistic against its threshold, and the status."""
    wanted = (
        "streamwatch_feature_drift_score",
        "streamwatch_feature_drift_threshold",
        "streamwatch_feature_drift_status",
    )
    rows: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name in wanted:
            kind = fam.name.rsplit("_", 1)[1]
            for smp in fam.samples:
                rows.setdefault(smp.labels["feature"], {})[f"{smp.labels['detector']}.{kind}"] = smp.value
    out = []
    for feature, r in rows.items():
        detectors = sorted({k.split(".")[0] for k in r if k.endswith(".score")}, key=lambda d: d == "cusum")
        parts = [
            f"{d} {r[d + '.score']:.3f} / {r.get(d + '.threshold', float('nan')):.3f}" for d in detectors
        ]
        drifting = any(v for k, v in r.items() if k.endswith(".status"))
        out.append(f"{feature:<14} {'DRIFTING' if drifting else 'ok':<9} " + ",  ".join(parts))
    return out


def alert_line(ev: dict[str, Any], t0: float) -> str:
    """One readable line: when (seconds into the demo), what, where, and the alert's sentence.

    Examples
    --------
    >>> ev = {"status": "firing", "kind": "data_drift", "model_id": "m", "feature": "income",
    ...       "message": "Feature 'income' drifted.", "detected_at": "2027-01-01T00:00:16.310Z",
    ...       "change_started_at": "2027-01-01T00:00:15.990Z"}
    >>> print(alert_line(ev, time.time() - 12.34))  # doctest: +NORMALIZE_WHITESPACE
      +12s FIRING   data_drift        m/income               Feature 'income' drifted.
      [found 0.3 s after it began]
    """
    where = f"{ev['model_id']}/{ev['feature']}" if ev.get("feature") else ev["model_id"]
    took = ""
    if ev["status"] == "firing" and ev.get("change_started_at"):
        secs = (parse_timestamp(ev["detected_at"]) - parse_timestamp(ev["change_started_at"])) / 1000
        took = f" [found {secs:.1f} s after it began]"
    return (
        f"  +{time.time() - t0:.0f}s {ev['status'].upper():<8} {ev['kind']:<17} {where:<22} "
        f"{ev['message']}{took}"
    )


def _stream(
    settings: Settings,
    predictions: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    bar: Any,
) -> None:
    """Produce every event when the wall clock reaches its event time (labels interleaved with the
    predictions, as they would come); labels due after the last prediction go at once."""
    producer = Producer(client_config(settings, **{"linger.ms": 20, "enable.idempotence": True}))
    t = settings.topics
    last = parse_timestamp(predictions[-1]["timestamp"])
    timed = [(parse_timestamp(e["timestamp"]), 0, t.predictions, e) for e in predictions]
    timed += [(min(parse_timestamp(e["timestamp"]), last), 1, t.labels, e) for e in labels]
    timed.sort(key=lambda r: (r[0], r[1]))
    sent = 0
    for due_ms, _, topic, ev in timed:
        wait = due_ms / 1000 - time.time()
        if wait > 0:
            producer.poll(0)
            time.sleep(wait)
        while True:
            try:
                producer.produce(topic, orjson.dumps(ev), str(ev["model_id"]).encode())
                break
            except BufferError:
                producer.poll(0.1)
        if topic == t.predictions:
            sent += 1
            if sent % 200 == 0:
                bar.update(200)
    bar.update(sent % 200)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} events were not delivered to Kafka")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamwatch.demo", description=__doc__)
    ap.add_argument("--bootstrap-servers", default="127.0.0.1:9092", metavar="HOST:PORT")
    ap.add_argument("--metrics-port", type=int, default=9400, help="the port Prometheus scrapes (9400)")
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090", metavar="URL")
    ap.add_argument("--scenario", default="tour", choices=SCENARIOS, metavar="NAME", help="default tour")
    ap.add_argument("--events", type=int, default=30_000, help="prediction events (default 30000)")
    ap.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    ap.add_argument("--label-delay", type=float, default=15.0, help="mean label delay, seconds (default 15)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path(".cache/demo"), metavar="DIR")
    ap.add_argument("--no-services", action="store_true", help="do not start the local broker or Prometheus")
    ap.add_argument(
        "--hold",
        choices=["auto", "yes", "no"],
        default="auto",
        help="keep the worker up after the demo until Ctrl-C (auto: on a terminal)",
    )
    args = ap.parse_args(argv)
    t_start = time.time()

    host, _, port = args.bootstrap_servers.rpartition(":")
    print("streamwatch demo")
    if not (_port_open(host, int(port)) or (not args.no_services and _service("kafka", host, int(port)))):
        print(
            f"cannot reach Kafka at {args.bootstrap_servers}: start it with deploy/local/kafka.sh up "
            "(or give --bootstrap-servers)",
            file=sys.stderr,
        )
        return 1
    prom_host, _, prom_port = args.prometheus.rpartition("//")[2].partition("/")[0].rpartition(":")
    prometheus = _port_open(prom_host, int(prom_port)) or (
        not args.no_services and _service("prometheus", prom_host, int(prom_port))
    )

    run = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    scenario = Scenario(
        name=args.scenario,
        events=args.events,
        change_at=args.events // 2,
        rate_per_second=args.rate,
        label_share=0.8,
        label_delay_seconds=args.label_delay,
        seed=args.seed,
        start_ms=int(time.time() * 1000) + 60_000,  # placeholder: set when the worker is ready
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    config_path = args.workdir / "config.yaml"
    topics = {
        "predictions": f"demo.{run}.predictions",
        "labels": f"demo.{run}.labels",
        "alerts": f"demo.{run}.alerts",
        "dead_letters": f"demo.{run}.dead-letters",
        "state": f"demo.{run}.state",
    }
    config_path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": args.bootstrap_servers, "group_id": f"streamwatch-demo-{run}"},
                "topics": {**topics, "partitions": 1},
                "batch": {"max_events": 2000, "timeout_seconds": 0.1, "commit_interval_seconds": 1},
                "metrics": {"host": "127.0.0.1", "port": args.metrics_port},
                # windows short enough to be judged within the demo
                "performance": {"window_seconds": 30, "label_ttl_seconds": 3600},
                "models": scenario.config(),
            },
            sort_keys=False,
        )
    )
    settings = load_config(config_path)  # the worker creates the topics before it is ready
    metrics_url = f"http://127.0.0.1:{args.metrics_port}/metrics"

    log = (args.workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamwatch", "--log-format", "json", "run", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                if _get(f"http://127.0.0.1:{args.metrics_port}/readyz").startswith("ready"):
                    break
            if worker.poll() is not None:
                print(f"the worker exited; see {args.workdir / 'worker.log'}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"  worker up: {metrics_url}  (log: {args.workdir / 'worker.log'})")

        t0 = time.time()
        scenario.start_ms = int(t0 * 1000) + 1000
        truth = scenario.truth()
        seconds = args.events / args.rate
        print(
            f"  model {scenario.model_id!r}: features {', '.join(truth['features'])}; "
            f"{args.events} predictions at {args.rate:.0f}/s ({seconds:.0f} s), 80% labelled "
            f"~{args.label_delay:.0f} s later"
        )
        for c in truth["changes"]:
            where = f"{c['feature']}: " if c["feature"] else ""
            print(f"    at +{c['start_index'] / args.rate:3.0f}s  {c['scenario']:<14} {where}{c['change']}")
        if not truth["changes"]:
            print("    nothing changes: no alert should come")
        print(f"  alerts from {topics['alerts']}, as they arrive:", flush=True)

        alerts: list[dict[str, Any]] = []
        stop = threading.Event()

        def follow() -> None:
            c = Consumer(
                {
                    "bootstrap.servers": args.bootstrap_servers,
                    "group.id": f"demo-reader-{run}",
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                }
            )
            c.subscribe([topics["alerts"]])
            while not stop.is_set():
                for m in c.consume(100, 0.2):
                    if m.error() is None:
                        ev = orjson.loads(m.value() or b"null")
                        alerts.append(ev)
                        tqdm.write(alert_line(ev, t0), file=sys.stdout)
                        sys.stdout.flush()
            c.close()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        predictions, labels = generate(scenario)
        with tqdm(
            total=len(predictions),
            desc="  streaming",
            unit="ev",
            leave=False,
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
        ) as bar:
            _stream(settings, predictions, labels, bar)

        def found(want: dict[str, Any], began: int) -> dict[str, Any] | None:
            return next(
                (
                    a
                    for a in alerts
                    if a["status"] == "firing"
                    and (a["kind"], a["feature"]) == (want["kind"], want["feature"])
                    and parse_timestamp(a["detected_at"]) >= began
                ),
                None,
            )

        expected = [
            (w, parse_timestamp(c["start_time"])) for c in truth["changes"] for w in c["expected_alerts"]
        ]
        deadline = time.monotonic() + 30  # the last labels and a checkpoint or two
        while time.monotonic() < deadline and not all(found(w, b) for w, b in expected):
            time.sleep(0.3)
        time.sleep(2.0)
        stop.set()
        reader.join(5)

        print("\n  what was injected, and what found it:")
        missed = 0
        for c in truth["changes"]:
            for want in c["expected_alerts"]:
                hit = found(want, parse_timestamp(c["start_time"]))
                if hit is None:
                    missed += 1
                    print(f"    {c['scenario']:<14} NOT FOUND (expected {want['kind']})")
                    continue
                after = (parse_timestamp(hit["detected_at"]) - parse_timestamp(c["start_time"])) / 1000
                print(
                    f"    {c['scenario']:<14} found by {hit['kind']} ({hit['detector']}) "
                    f"{after:.1f} s of event time after it began"
                )
        firing_without_cause = [
            a
            for a in alerts
            if a["status"] == "firing" and not truth["changes"] and a["kind"] != "performance"
        ]
        print("\n  drift now, per feature (statistic / threshold):")
        with contextlib.suppress(OSError):
            for line in _summary(_get(metrics_url)):
                print("    " + line)
        print(
            f"\n  {len(alerts)} alert event(s) in {time.time() - t_start:.0f} s. Where to look next:"
            f"\n    metrics      {metrics_url}"
        )
        if prometheus:
            print(
                f"    prometheus   {args.prometheus}/graph?g0.expr=streamwatch_feature_drift_score"
                "&g1.expr=streamwatch_alerts_firing"
            )
        else:
            print("    prometheus   not running (deploy/local/prometheus.sh up)")
        print(
            f"    report       streamwatch report --config {config_path} --from-state --out report.html"
            f"\n    alerts       {topics['alerts']} on {args.bootstrap_servers} (read_committed)"
            f"\n    from files   streamwatch simulate --scenario {args.scenario} --out /tmp/sim && "
            "streamwatch replay --config /tmp/sim/config.yaml --predictions /tmp/sim/predictions.jsonl "
            "--labels /tmp/sim/labels.jsonl --out /tmp/sim/out"
        )
        hold = args.hold == "yes" or (args.hold == "auto" and sys.stdin.isatty())
        if hold:
            print("\n  the worker keeps serving metrics for Prometheus; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                worker.wait()
        return 1 if missed or firing_without_cause else 0
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
