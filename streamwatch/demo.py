"""The README's first command: a drift demo on the local broker, printed as it happens.

Starts a worker (``streamwatch run``), streams simulated traffic in real time with a mean
shift half way, prints every alert from the alerts topic as one line with how long the
change took to find, then says where the metrics are.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import yaml
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.alerts import describe
from streamwatch.config import load_config
from streamwatch.events import parse_timestamp
from streamwatch.runtime.produce import produce_events
from streamwatch.simulate import Scenario, generate


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamwatch.demo", description=__doc__)
    ap.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    ap.add_argument("--metrics-port", type=int, default=9400)
    ap.add_argument("--events", type=int, default=24_000)
    ap.add_argument("--rate", type=float, default=1_000.0, help="events per second")
    ap.add_argument("--workdir", type=Path, default=Path(".cache/demo"))
    ap.add_argument(
        "--hold",
        choices=["auto", "yes", "no"],
        default="auto",
        help="keep the worker up after the demo until Ctrl-C (auto: on a terminal)",
    )
    args = ap.parse_args(argv)

    run = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    scenario = Scenario(
        events=args.events,
        change_at=args.events // 2,
        shift_feature="income",
        rate_per_second=args.rate,
        start_ms=int(time.time() * 1000) + 3000,
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
                "kafka": {
                    "bootstrap_servers": args.bootstrap_servers,
                    "group_id": f"streamwatch-demo-{run}",
                },
                "topics": topics,
                "batch": {"max_events": 2000, "timeout_seconds": 0.1, "commit_interval_seconds": 1},
                "metrics": {"host": "127.0.0.1", "port": args.metrics_port},
                "models": scenario.config(),
            },
            sort_keys=False,
        )
    )
    settings = load_config(config_path)
    metrics_url = f"http://127.0.0.1:{args.metrics_port}/metrics"

    print(f"streamwatch demo: model '{scenario.model_id}', features {', '.join(scenario.features)}, country")
    print(
        f"  {args.events} prediction events at {args.rate:.0f}/s; "
        f"income shifts by +1 sd at event {scenario.change_at}"
    )
    log = (args.workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                if _get(f"http://127.0.0.1:{args.metrics_port}/readyz").startswith("ready"):
                    break
            except OSError:
                pass
            if worker.poll() is not None:
                print(f"the worker exited; see {args.workdir / 'worker.log'}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"  worker up: metrics at {metrics_url}, log in {args.workdir / 'worker.log'}")

        alerts: list[dict[str, object]] = []
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
                        took = ""
                        if ev.get("change_started_at"):
                            secs = (
                                parse_timestamp(ev["detected_at"]) - parse_timestamp(ev["change_started_at"])
                            ) / 1000
                            took = f"  -> found {secs:.2f} s after it began"
                        print("  ALERT " + describe(ev) + took, flush=True)
            c.close()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        predictions, labels = generate(scenario)
        print(f"  streaming to {topics['predictions']} ...", flush=True)
        produce_events(settings, predictions, labels, realtime_rate=args.rate)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(a["status"] == "firing" for a in alerts):
            time.sleep(0.2)
        time.sleep(1.5)
        stop.set()
        reader.join(5)

        print("\n  drift now, per feature (statistic / threshold):")
        for line in _summary(_get(metrics_url)):
            print("    " + line)
        found = any(a["status"] == "firing" for a in alerts)
        print(
            f"\n  {'drift found' if found else 'NO ALERT ARRIVED'}: "
            f"{len(alerts)} alert event(s) on {topics['alerts']}"
        )
        print(f"  metrics:    {metrics_url}")
        print(
            "  prometheus: http://127.0.0.1:9090/graph?g0.expr=streamwatch_feature_drift_score"
            " (when deploy/local/prometheus.sh up)"
        )
        print(
            "  replay the same traffic from files: streamwatch simulate --out /tmp/sim && streamwatch replay "
            "--config /tmp/sim/config.yaml --predictions /tmp/sim/predictions.jsonl "
            "--alerts /tmp/sim/alerts.jsonl"
        )
        hold = args.hold == "yes" or (args.hold == "auto" and sys.stdin.isatty())
        if hold:
            print("\n  the worker keeps serving metrics; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                worker.wait()
        return 0 if found else 1
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
