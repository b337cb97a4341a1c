"""The ``streamwatch`` command: run, replay, simulate, check.

Exit codes: 0 success, 1 failure at run time (e.g. Kafka unreachable), 2 a usage or
configuration mistake. Mistakes are reported in one message that says what to fix, without a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from streamwatch import __version__
from streamwatch.alerts import describe
from streamwatch.config import ConfigError, Settings, load_config
from streamwatch.logs import configure_logging
from streamwatch.simulate import SCENARIOS

log = logging.getLogger("streamwatch")

OK, FAILURE, USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _print_alert(ev: dict[str, Any]) -> None:
    print(describe(ev), flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    settings = load_config(args.config, **overrides)
    # the config's logging block applies from here on; flags on the command line win
    configure_logging(args.log_level or settings.logging.level, args.log_format or settings.logging.format)
    return settings


def _default_log_format() -> str:
    return "text" if sys.stderr.isatty() else "json"


def cmd_run(args: argparse.Namespace) -> int:
    from streamwatch.engine import Engine
    from streamwatch.exporter import Exporter, RuntimeCollector
    from streamwatch.runtime.kafka import KafkaSetupError, KafkaWorker, ensure_topics

    settings = _settings(args)
    if args.metrics_port is not None:
        settings.metrics.port = args.metrics_port
    engine = Engine(settings)
    exporter = Exporter(engine)
    try:
        port = exporter.serve(settings.metrics.host, settings.metrics.port)
    except OSError as e:
        raise UsageError(
            f"cannot serve metrics on {settings.metrics.host}:{settings.metrics.port}: {e.strerror}; "
            "choose another with --metrics-port or metrics.port"
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics.host, port)
    try:
        if settings.topics.create:
            ensure_topics(settings)
    except KafkaSetupError as e:
        log.error("%s", e)
        exporter.close()
        return FAILURE
    worker = KafkaWorker(settings, engine, exporter, on_alert=_print_alert if args.print_alerts else None)
    exporter.registry.register(RuntimeCollector(worker.stats))
    log.info(
        "consuming %s and %s as group %s from %s",
        settings.topics.predictions,
        settings.topics.labels,
        settings.kafka.group_id,
        settings.kafka.bootstrap_servers,
    )
    code = worker.run()
    exporter.close()
    return code


def cmd_replay(args: argparse.Namespace) -> int:
    from streamwatch.engine import Engine
    from streamwatch.runtime.files import replay

    settings = _settings(args)
    for p in (args.predictions, args.labels):
        if p is not None and not p.is_file():
            raise UsageError(f"{p} does not exist or is not a file")
    engine = Engine(settings)
    args.alerts.parent.mkdir(parents=True, exist_ok=True)
    with args.alerts.open("wb") as alerts_out:
        dl = args.dead_letters.open("wb") if args.dead_letters else None
        try:
            summary = replay(
                engine,
                args.predictions,
                args.labels,
                alerts_out,
                dl,
                on_alert=None if args.quiet else _print_alert,
                batch_size=settings.batch.max_events,
            )
        finally:
            if dl:
                dl.close()
    for line in summary.lines():
        print(line)
    print(f"alerts written to {args.alerts}")
    return OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamwatch.simulate import DEFAULT_START_MS, Scenario, generate

    start_ms = int(time.time() * 1000) if args.start == "now" else DEFAULT_START_MS
    try:
        scenario = Scenario(
            name=args.scenario,
            model_id=args.model,
            events=args.events,
            numeric_features=args.features,
            change_at=args.change_at if args.change_at is not None else args.events // 2,
            shift_feature=args.shift_feature,
            shift_sigmas=args.shift,
            rate_per_second=args.rate,
            seed=args.seed,
            start_ms=start_ms,
            label_share=args.label_share,
            label_delay_seconds=args.label_delay,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    predictions, labels = generate(scenario)
    truth = scenario.truth()
    if args.out:
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in predictions))
        (out / "labels.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in labels))
        (out / "truth.json").write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2))
        (out / "config.yaml").write_text(yaml.safe_dump({"models": scenario.config()}, sort_keys=False))
        print(
            f"wrote {len(predictions)} predictions, {len(labels)} labels, truth.json and config.yaml to {out}"
        )
    if args.to_kafka:
        from streamwatch.runtime.produce import produce_events

        settings = (
            _settings(args)
            if args.config
            else load_config(
                None,
                models=scenario.config(),
                **(
                    {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
                ),
            )
        )
        n = produce_events(settings, predictions, labels, realtime_rate=args.rate if args.realtime else None)
        print(
            f"produced {n} events to {settings.topics.predictions} and {settings.topics.labels} "
            f"at {settings.kafka.bootstrap_servers}"
        )
    if not args.quiet:
        for c in truth["changes"]:
            print(
                f"injected: {c['kind']} on {c['feature']} ({c['change']}) "
                f"at event {c['start_index']}, {c['start_time']}"
            )
    return OK


def cmd_check(args: argparse.Namespace) -> int:
    def _check_profiles(model_id: str, m: Any) -> list[str]:
        """Load and verify every profile of a model (content hash, configured features and types);
        print what each is, return the problems."""
        from streamwatch.profile import ProfileError, load_profile
        from streamwatch.quality.schema import profile_problems

        paths = ([("profile", m.profile)] if m.profile else []) + [
            (f"profiles_by_version[{v!r}]", path) for v, path in m.profiles_by_version.items()
        ]
        feats = {n: t.value for n, t in m.features.items()}
        problems = []
        for where, path in paths:
            try:
                prof = load_profile(path)
            except ProfileError as e:
                problems.append(f"model {model_id} {where}: {e}")
                continue
            found = profile_problems(feats, prof)
            problems += [f"model {model_id} {where} ({path}): {p}" for p in found]
            if not found:
                extra = sorted(set(prof["features"]) - set(feats))
                print(
                    f"  {where}: {path} ({prof['rows']:,} rows, {prof['content_hash'][:19]}) matches the "
                    "configured features"
                    + (f"; also describes {extra} (not unknown fields)" if extra else "")
                )
        return problems

    settings = _settings(args)
    k = settings.kafka
    print(f"config {args.config}: valid")
    print(
        f"kafka: {k.bootstrap_servers} group {k.group_id}"
        + (f" client {k.redacted_client()}" if k.client else "")
    )
    t = settings.topics
    print(
        f"topics: predictions={t.predictions} labels={t.labels} "
        f"alerts={t.alerts} dead_letters={t.dead_letters}"
    )
    print(f"metrics: http://{settings.metrics.host}:{settings.metrics.port}/metrics")
    problems: list[str] = []
    for model_id, m in settings.models.items():
        d = settings.drift_for(model_id)
        num = [n for n, ty in m.features.items() if ty.value == "numeric"]
        cat = [n for n, ty in m.features.items() if ty.value == "categorical"]
        print(f"model {model_id}: {len(num)} numeric {num}, {len(cat)} categorical {cat}")
        print(
            f"  reference: first {d.reference_size} events; window {d.window_size} events, evaluated every "
            f"{d.step} by {d.statistic} (numeric) and {d.categorical_statistic} (categorical)"
            + (f", plus a CUSUM per numeric feature for shifts >= {d.cusum_min_shift} sd" if d.cusum else "")
            + f"; one false alert per {d.false_alarm_events:,.0f} events at most"
        )
        problems += _check_profiles(model_id, m)
    if problems:
        raise UsageError(
            f"config {args.config}: {len(problems)} problem(s) with reference profiles:\n  "
            + "\n  ".join(problems)
        )
    return OK


def cmd_profile(args: argparse.Namespace) -> int:
    from streamwatch.profile import ProfileError, ProfileUsageError, profile_file, save_profile

    if not args.data.is_file():
        raise UsageError(f"{args.data} does not exist or is not a file")
    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be at least 1, got {args.chunk_rows}")
    try:
        profile = profile_file(
            args.data,
            args.model,
            args.label_column,
            args.prediction_column,
            args.score_columns,
            chunk_rows=args.chunk_rows,
        )
    except ProfileUsageError as e:
        raise UsageError(str(e)) from None
    except (ProfileError, OSError) as e:
        print(f"streamwatch profile: cannot profile {args.data}: {e}", file=sys.stderr)
        return FAILURE
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_profile(profile, args.out)
    except OSError as e:
        print(f"streamwatch profile: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return FAILURE
    feats = profile["features"].values()
    n_num = sum(f["type"] == "numeric" for f in feats)
    print(
        f"profiled {profile['rows']:,} rows of {args.data}: {n_num} numeric and {len(feats) - n_num} "
        f"categorical features{', with metrics' if profile['metrics'] else ''}; "
        f"wrote {args.out} ({profile['content_hash'][:19]})"
    )
    return OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamwatch", description="Watch ML models in production from their event streams."
    )
    p.add_argument("--version", action="version", version=f"streamwatch {__version__}")
    p.add_argument(
        "--log-level",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        help="overrides logging.level of the config (default info)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="overrides logging.format of the config (default: text on a terminal, else json)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser, required: bool = True) -> None:
        sp.add_argument(
            "--config",
            "-c",
            type=Path,
            required=required,
            help="YAML config file (STREAMWATCH_* variables override it)",
        )
        sp.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers")

    r = sub.add_parser(
        "run",
        help="run the worker on Kafka",
        description="Consume predictions and labels from Kafka, "
        "serve /metrics, /healthz and /readyz, publish alerts and dead letters.",
    )
    config_arg(r)
    r.add_argument("--metrics-port", type=int, help="override metrics.port (0 picks a free port)")
    r.add_argument("--print-alerts", action="store_true", help="also print each alert as one line on stdout")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser(
        "replay",
        help="run the same core over JSON Lines files",
        description="Process prediction (and label) files in event-time order, as the worker would.",
    )
    config_arg(rp)
    rp.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="prediction events, one JSON object per line",
    )
    rp.add_argument("--labels", type=Path, help="label events, one JSON object per line")
    rp.add_argument("--alerts", type=Path, required=True, help="where to write alert events (JSON Lines)")
    rp.add_argument("--dead-letters", type=Path, help="where to write dead letters (JSON Lines)")
    rp.add_argument("--quiet", "-q", action="store_true", help="do not print alerts as they happen")
    rp.set_defaults(func=cmd_replay)

    s = sub.add_parser(
        "simulate",
        help="write synthetic events with a known drift",
        description="Generate prediction and label events with an injected change and its ground truth.",
    )
    config_arg(s, required=False)
    s.add_argument("--scenario", default="mean_shift", choices=SCENARIOS)
    s.add_argument("--model", default="credit-risk", help="model_id of the events")
    s.add_argument("--events", type=int, default=20_000)
    s.add_argument(
        "--features",
        type=int,
        default=4,
        help="numeric features (a categorical 'country' is added)",
    )
    s.add_argument("--change-at", type=int, help="event index where the change begins (default: half way)")
    s.add_argument("--shift-feature", default="income")
    s.add_argument("--shift", type=float, default=1.0, help="mean shift in standard deviations")
    s.add_argument("--rate", type=float, default=100.0, help="events per second of event time")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--label-share", type=float, default=0.5, help="share of predictions that get a label")
    s.add_argument("--label-delay", type=float, default=600.0, help="mean label delay, seconds of event time")
    s.add_argument(
        "--start",
        choices=["fixed", "now"],
        default="fixed",
        help="event times from a fixed date or from now",
    )
    s.add_argument(
        "--out",
        type=Path,
        help="directory for predictions.jsonl, labels.jsonl, truth.json, config.yaml",
    )
    s.add_argument(
        "--to-kafka",
        action="store_true",
        help="produce to the topics of --config (or the defaults)",
    )
    s.add_argument(
        "--realtime",
        action="store_true",
        help="with --to-kafka, produce at --rate events per second",
    )
    s.add_argument("--quiet", "-q", action="store_true")
    s.set_defaults(func=cmd_simulate)

    c = sub.add_parser("check", help="validate a config and print what would be monitored")
    config_arg(c)
    c.set_defaults(func=cmd_check)

    pf = sub.add_parser(
        "profile",
        help="build a model's reference profile from development data",
        description="Profile a CSV, Parquet or JSON Lines table (read in chunks) into a versioned "
        "JSON reference: per-feature types, missing rates, quantiles, histograms, categories, "
        "correlations and development-set metrics. See docs/profiles.md.",
    )
    pf.add_argument("--data", type=Path, required=True, help="the table: .csv, .parquet or .jsonl")
    pf.add_argument("--model", required=True, help="model_id the profile is for")
    pf.add_argument("--label-column", help="column with the true label (or target value)")
    pf.add_argument("--prediction-column", help="column with the model's prediction")
    pf.add_argument("--score-columns", nargs="+", default=[], metavar="C", help="columns with model scores")
    pf.add_argument("--chunk-rows", type=int, default=50_000, help="rows read at a time (default 50000)")
    pf.add_argument("--out", type=Path, required=True, help="where to write the profile (JSON)")
    pf.set_defaults(func=cmd_profile)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or "info", args.log_format or _default_log_format())
    if args.command == "simulate" and not (args.out or args.to_kafka):
        parser.error("simulate needs --out DIR or --to-kafka")
    try:
        return int(args.func(args))
    except (ConfigError, UsageError) as e:
        print(f"streamwatch {args.command}: {e}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return FAILURE
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
