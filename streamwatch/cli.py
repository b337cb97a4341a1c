"""The ``streamwatch`` command: run, replay, profile, simulate, report, check.

Every verb takes the same names for the same things: ``--config`` (YAML; ``STREAMWATCH_*``
variables override it), ``--bootstrap-servers`` (wherever Kafka is used), ``--predictions`` /
``--labels`` (event files), ``--out`` (what the verb writes), ``--model``, ``--seed`` and
``--quiet``.

Exit codes: 0 success, 1 failure at run time (the broker cannot be reached, a file cannot be
written), 2 a usage or configuration mistake. Both kinds of error are reported in one message
that says what is wrong and how to fix it, without a traceback. Long work (profile, replay,
simulate) shows a progress bar on a terminal and nothing in a pipe.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, overload

import orjson
import yaml
from pydantic import SecretBytes, SecretStr
from tqdm import tqdm  # type: ignore[import-untyped]

from streamwatch import __version__
from streamwatch.alerts import describe
from streamwatch.config import ConfigError, Settings, load_config
from streamwatch.logs import REDACTED, configure_logging, is_secret_key
from streamwatch.simulate import DESCRIPTIONS, SCENARIOS

log = logging.getLogger("streamwatch")

OK, FAILURE, USAGE = 0, 1, 2
KAFKA_HINT = (
    "is the broker up (deploy/local/kafka.sh up)? else set --bootstrap-servers or kafka.bootstrap_servers"
)
# series a worker exports besides its models': build info, consumed messages and bytes (2 each),
# the batch-duration histogram (12 buckets, _sum, _count, _created); dead letters come on top
_WORKER_SERIES = 1 + 4 + 15
# model-level series of a binary classifier with scores and labels (docs/metrics.md#cardinality)
_MODEL_LEVEL_SERIES = 100
_CLASS_SERIES = 6  # per class: precision, recall, F1 in the judged and recent windows

T = TypeVar("T")


class UsageError(Exception):
    """A mistake of the person at the keyboard: exit 2."""


class FailureError(Exception):
    """Something outside the command failed (broker, disk): exit 1."""


# -- output helpers ------------------------------------------------------------------------------


def _progress(total: float | None, desc: str, unit: str = "events", quiet: bool = False, **kw: Any) -> Any:
    """A tqdm bar on stderr when it is a terminal; a disabled one (no output) elsewhere."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        leave=False,
        disable=quiet or not sys.stderr.isatty(),
        **kw,
    )


def _say(line: str) -> None:
    """Print a line on stdout without tearing a progress bar that is on screen."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _print_alert(ev: dict[str, Any]) -> None:
    _say(describe(ev))


def _count_lines(*paths: Path | None) -> int:
    """Lines of the files, for a progress bar's total (fast: counts newlines in 1 MiB blocks)."""
    n = 0
    for p in paths:
        if p is None:
            continue
        with p.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]
                n += block.count(b"\n")
    return n


class _Ticking(Sequence[T]):
    """A sequence that advances a progress bar as it is iterated (producing to Kafka)."""

    def __init__(self, items: Sequence[T], bar: Any) -> None:
        self.items, self.bar = items, bar

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[T]: ...
    def __getitem__(self, i: int | slice) -> T | Sequence[T]:
        return self.items[i]

    def __iter__(self) -> Iterator[T]:
        for k, item in enumerate(self.items, start=1):
            yield item
            if k % 1000 == 0:
                self.bar.update(1000)
        self.bar.update(len(self.items) % 1000)


def masked(value: Any) -> Any:
    """``value`` (a settings dump) with secrets as ``***``: every SecretStr and SecretBytes, and
    the values of keys that name a secret (``sasl.password``, ``ssl.key.password``, ``*_token``...).

    Examples
    --------
    >>> masked({"client": {"sasl.username": "u", "sasl.password": "p"}, "port": 1, "k": SecretStr("x")})
    {'client': {'sasl.username': '***', 'sasl.password': '***'}, 'port': 1, 'k': '***'}
    """
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, dict):  # an unset secret stays null: that reveals nothing
        return {k: REDACTED if v is not None and is_secret_key(k) else masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # paths and the like, printable as YAML


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    config = getattr(args, "config", None)
    if config is not None and config.is_dir():
        raise UsageError(f"--config {config} is a directory; give the YAML file (e.g. {config}/config.yaml)")
    settings = load_config(config, **overrides)
    # the config's logging block applies from here on; flags on the command line win
    configure_logging(args.log_level or settings.logging.level, args.log_format or settings.logging.format)
    return settings


def _default_log_format() -> str:
    return "text" if sys.stderr.isatty() else "json"


def _input_file(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"{flag} {path} {what}; give a JSON Lines file (one event per line)")


def _kafka_error(e: Exception, settings: Settings) -> FailureError:
    return FailureError(f"{e}; {KAFKA_HINT} (now {settings.kafka.bootstrap_servers})")


def _reachable(bootstrap_servers: str, timeout: float) -> str | None:
    """None when a TCP connection to one of the bootstrap servers opens, else why none did.

    A quick look before the Kafka clients start: they would retry for many seconds and log
    librdkafka's own lines before giving up. Addresses it cannot parse count as reachable.
    """
    why = []
    for server in bootstrap_servers.split(","):
        addr = server.strip().rpartition("://")[2]
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            return None
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return None
        except OSError as e:
            why.append(f"{addr}: {e.strerror or e}")
    return "; ".join(why)


def _require_broker(settings: Settings, timeout: float = 5.0) -> None:
    why = _reachable(settings.kafka.bootstrap_servers, timeout)
    if why:
        raise FailureError(f"cannot reach Kafka ({why}); {KAFKA_HINT}")


# -- run -----------------------------------------------------------------------------------------


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
    scheme = "https" if settings.metrics.tls_cert_file else "http"
    log.info("metrics on %s://%s:%d/metrics", scheme, settings.metrics.host, port)
    try:
        if settings.topics.create:
            _require_broker(settings)
            ensure_topics(settings)
    except (KafkaSetupError, FailureError) as e:
        exporter.close()
        raise e if isinstance(e, FailureError) else _kafka_error(e, settings) from None
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


# -- replay --------------------------------------------------------------------------------------


def _progress_engine(settings: Settings, bar: Any) -> Any:
    """The engine, advancing ``bar`` by the messages of each batch it processes."""
    from streamwatch.engine import BatchResult, Engine

    class ProgressEngine(Engine):
        def process_predictions(self, messages: Sequence[Any], source: str = "predictions") -> BatchResult:
            result = super().process_predictions(messages, source)
            bar.update(len(messages))
            return result

        def process_labels(self, messages: Sequence[Any], source: str = "labels") -> BatchResult:
            result = super().process_labels(messages, source)
            bar.update(len(messages))
            return result

    return ProgressEngine(settings)


def cmd_replay(args: argparse.Namespace) -> int:
    from streamwatch.runtime.files import replay

    settings = _settings(args)
    _input_file(args.predictions, "--predictions")
    _input_file(args.labels, "--labels")
    alerts_path: Path | None = args.alerts or (args.out / "alerts.jsonl" if args.out else None)
    if alerts_path is None:
        raise UsageError("say where the alerts go: --alerts FILE or --out DIR")
    dead_path: Path | None = args.dead_letters or (args.out / "dead-letters.jsonl" if args.out else None)
    try:
        alerts_path.parent.mkdir(parents=True, exist_ok=True)
        alerts_out = alerts_path.open("wb")
        dl = None
        if dead_path is not None:
            dead_path.parent.mkdir(parents=True, exist_ok=True)
            dl = dead_path.open("wb")
    except OSError as e:
        raise FailureError(f"cannot write {e.filename}: {e.strerror}") from None
    total = _count_lines(args.predictions, args.labels) if sys.stderr.isatty() and not args.quiet else None
    with alerts_out, _progress(total, "replay", quiet=args.quiet) as bar:
        engine = _progress_engine(settings, bar)
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
    print(f"alerts written to {alerts_path}" + (f", dead letters to {dead_path}" if dead_path else ""))
    return OK


# -- simulate ------------------------------------------------------------------------------------

# Scenario fields as the simulate flags name them, for error messages
_SIM_FLAGS = {
    "numeric_features": "--features",
    "change_at": "--change-at",
    "shift_feature": "--shift-feature",
    "rate_per_second": "--rate",
    "label_share": "--label-share",
    "label_delay_seconds": "--label-delay",
    "scale_factor": "--scale",
    "ramp_events": "--ramp-events",
    "delay_factor": "--delay-factor",
    "unit_factor": "--unit-factor",
    "events": "--events",
}


def _flag_names(message: str) -> str:
    for name, flag in sorted(_SIM_FLAGS.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(name, flag)
    return message


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamwatch.simulate import DEFAULT_START_MS, Scenario, generate

    if not (args.out or args.to_kafka):
        raise UsageError("say where the events go: --out DIR (files) or --to-kafka (the topics of --config)")
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
            scale_factor=args.scale,
            ramp_events=args.ramp_events,
            delay_factor=args.delay_factor,
            unit_factor=args.unit_factor,
            rate_per_second=args.rate,
            seed=args.seed,
            start_ms=start_ms,
            label_share=args.label_share,
            label_delay_seconds=args.label_delay,
        )
    except ValueError as e:
        raise UsageError(_flag_names(str(e))) from None
    settings = None
    if args.to_kafka:  # a config mistake should stop us before minutes of generating
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
        if scenario.model_id not in settings.models:
            raise UsageError(
                f"model {scenario.model_id!r} is not in {args.config} (it has {', '.join(settings.models)}); "
                "its events would be dead-lettered: choose one with --model"
            )
        _require_broker(settings)
    with _progress(args.events, f"simulate {args.scenario}", quiet=args.quiet) as bar:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            bar.update(n - done)
            done = n

        predictions, labels = generate(scenario, on_progress=advance)
    truth = scenario.truth()
    if args.out:
        out: Path = args.out
        try:
            out.mkdir(parents=True, exist_ok=True)
            with _progress(len(predictions) + len(labels), "write", quiet=args.quiet) as bar:
                for name, events in (("predictions.jsonl", predictions), ("labels.jsonl", labels)):
                    with (out / name).open("wb") as f:
                        for k in range(0, len(events), 10_000):
                            chunk = events[k : k + 10_000]
                            f.write(b"".join(orjson.dumps(e) + b"\n" for e in chunk))
                            bar.update(len(chunk))
            (out / "ground_truth.json").write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
            (out / "config.yaml").write_text(yaml.safe_dump({"models": scenario.config()}, sort_keys=False))
        except OSError as e:
            raise FailureError(f"cannot write {e.filename or out}: {e.strerror}") from None
        print(
            f"wrote {len(predictions)} predictions, {len(labels)} labels, ground_truth.json and "
            f"config.yaml to {out}"
        )
    if settings is not None:
        from streamwatch.runtime.kafka import KafkaSetupError
        from streamwatch.runtime.produce import produce_events

        total = len(predictions) + len(labels)
        try:
            with _progress(total, "produce", quiet=args.quiet) as bar:
                n = produce_events(
                    settings,
                    _Ticking(predictions, bar),
                    _Ticking(labels, bar),
                    realtime_rate=args.rate if args.realtime else None,
                )
        except (KafkaSetupError, RuntimeError) as e:
            raise _kafka_error(e, settings) from None
        print(
            f"produced {n} events to {settings.topics.predictions} and {settings.topics.labels} "
            f"at {settings.kafka.bootstrap_servers}"
        )
    if not args.quiet:
        if not truth["changes"]:
            print("injected: nothing (every detector should stay quiet)")
        for c in truth["changes"]:
            where = f" on {c['feature']}" if c["feature"] else ""
            print(
                f"injected: {c['scenario']}{where} ({c['change']}) at event {c['start_index']}, "
                f"{c['start_time']}; expect "
                + (", ".join(a["kind"] for a in c["expected_alerts"]) or "no alert")
            )
    return OK


# -- check ---------------------------------------------------------------------------------------


def expected_series(settings: Settings, model_id: str, classes: int = 2) -> tuple[int, int]:
    """(per-feature and per-class series, model-level series) a model exports at most, by the
    accounting of docs/metrics.md#cardinality: 7 per numeric feature (5 without the CUSUM), 5 per
    categorical feature, 6 per class, and about 100 model-level series (a binary classifier with
    scores and labels, before any alert)."""
    m = settings.models[model_id]
    per_numeric = 7 if settings.drift_for(model_id).cusum else 5
    num = sum(1 for t in m.features.values() if t.value == "numeric")
    cat = len(m.features) - num
    return per_numeric * num + 5 * cat + _CLASS_SERIES * classes, _MODEL_LEVEL_SERIES


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
                "configured features" + (f"; also describes {extra} (not unknown fields)" if extra else "")
            )
    return problems


def _describe_model(settings: Settings, model_id: str) -> tuple[int, int]:
    """Print what will be watched for one model; returns (features, series)."""
    from streamwatch.monitor import OUTPUT_UNITS

    m = settings.models[model_id]
    d = settings.drift_for(model_id)
    p = settings.performance_for(model_id)
    q = settings.quality
    num = [n for n, ty in m.features.items() if ty.value == "numeric"]
    cat = [n for n, ty in m.features.items() if ty.value == "categorical"]
    print(f"model {model_id}: {len(num)} numeric {num}, {len(cat)} categorical {cat}")
    ref = f"profile {m.profile}" if m.profile else f"the first {d.reference_size} events"
    if m.profiles_by_version:
        ref += f" (per version: {', '.join(sorted(m.profiles_by_version))})"
    print(
        f"  drift: against {ref}; window of {d.window_size} events every {d.step} by {d.statistic} "
        f"(numeric) and {d.categorical_statistic} (categorical)"
        + (f", min effect {d.min_effect:g}" if d.min_effect is not None else "")
        + (f"; a CUSUM per numeric feature for shifts >= {d.cusum_min_shift:g} sd" if d.cusum and num else "")
    )
    units = len(m.features) + OUTPUT_UNITS
    print(
        f"  false-alarm budget: at most one false drift alert per {d.false_alarm_events:,.0f} events "
        f"of the model, shared by {units} detector units ({len(m.features)} features + "
        f"{OUTPUT_UNITS} for predictions, labels and concept drift); resolve below "
        f"{d.resolve_ratio:g} x threshold"
    )
    if q.enabled:
        print(
            f"  quality: unit change, column swap, new category (>= {q.new_category_min_count} events, "
            f"{q.new_category_min_share:.1%}), missing and invalid values, unknown fields, duplicate ids; "
            f"window {q.window_size} every {q.step}, false-alarm level {q.alpha:g} per feature and window"
        )
    else:
        print("  quality: off (quality.enabled: false)")
    base = (
        ", ".join(f"{k} {v:g}" for k, v in p.baseline.items())
        if p.baseline
        else f"the first {p.reference_labels} labelled events"
    )
    print(
        f"  labels: {p.task} task, joined by event_id within {p.label_ttl_seconds:g} s "
        f"(store of {p.max_open_predictions:,}); windows of {p.window_seconds:g} s and "
        f"{p.window_events} joined events judged at >= {p.min_labels} labels and "
        f"{p.min_coverage:.0%} coverage against {base} (tolerance {p.tolerance:g})"
        + (", concept-drift CUSUM" if p.concept_drift else "")
        + (", CBPE estimates" if p.estimate else "")
    )
    per_feature, model_level = expected_series(settings, model_id)
    cap = settings.metrics.max_series_per_model
    total = per_feature + model_level
    verdict = (
        "within"
        if total <= cap
        else "over: the least drifted features are withheld at each scrape (docs/metrics.md#cardinality)"
    )
    print(
        f"  metric series: {per_feature} per-feature and per-class (binary) + ~{model_level} model-level "
        f"= ~{total}, {verdict} metrics.max_series_per_model {cap}"
    )
    return len(m.features), min(total, max(cap, model_level))


def cmd_check(args: argparse.Namespace) -> int:
    from streamwatch.decode import Reason

    settings = _settings(args)
    if args.model is not None and args.model not in settings.models:
        raise UsageError(
            f"model {args.model!r} is not in {args.config}; it configures {', '.join(settings.models)}"
        )
    k = settings.kafka
    t = settings.topics
    print(f"config {args.config}: valid")
    client = k.librdkafka()  # kafka.client plus the SASL/TLS fields, secrets masked below
    print(
        f"kafka: {k.bootstrap_servers} group {k.group_id}"
        + (f", {k.security_protocol}" if k.security_protocol else "")
        + (f", client {masked(client)}" if client else "")
    )
    print(
        f"topics: predictions={t.predictions} labels={t.labels} -> alerts={t.alerts} "
        f"dead_letters={t.dead_letters} state={t.state}"
        + (f" (created when missing: {t.partitions} partitions)" if t.create else "")
    )
    print(
        f"delivery: {settings.state.mode}, checkpoint every "
        f"{settings.state.checkpoint_interval_seconds or settings.batch.commit_interval_seconds:g} s"
    )
    ms = settings.metrics
    scheme = "https" if ms.tls_cert_file else "http"
    auth = ", basic auth" if ms.basic_auth_username else ""
    print(f"metrics: {scheme}://{ms.host}:{ms.port}/metrics{auth}")
    if args.print_config:
        print("effective configuration (file + environment, secrets masked):")
        dumped = masked(settings.model_dump(mode="python"))
        print("  " + yaml.safe_dump(dumped, sort_keys=False).rstrip().replace("\n", "\n  "))
    problems: list[str] = []
    features = series = 0
    models = [args.model] if args.model else list(settings.models)
    for model_id in models:
        f, s = _describe_model(settings, model_id)
        features, series = features + f, series + s
        problems += _check_profiles(model_id, settings.models[model_id])
    worker = _WORKER_SERIES + len(Reason.ALL)
    print(
        f"total: {len(models)} model(s), {features} features, ~{series + worker} metric series "
        f"({worker} of the worker itself)"
    )
    if problems:
        raise UsageError(
            f"config {args.config}: {len(problems)} problem(s) with reference profiles:\n  "
            + "\n  ".join(problems)
        )
    return OK


# -- profile -------------------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> int:
    from streamwatch.profile import (
        ProfileError,
        ProfileUsageError,
        build_profile,
        read_table_chunks,
        save_profile,
    )

    if not args.data.is_file():
        raise UsageError(f"--data {args.data} does not exist or is not a file")
    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be at least 1, got {args.chunk_rows}")
    try:
        with _progress(
            100.0,
            f"profile {args.data.name}",
            quiet=args.quiet,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]",
        ) as bar:

            def advance(fraction: float, rows: int) -> None:
                bar.update(round(100.0 * fraction, 1) - bar.n)
                bar.set_postfix_str(f"{rows:,} rows", refresh=False)

            chunks = read_table_chunks(args.data, args.chunk_rows, on_progress=advance)
            profile = build_profile(
                chunks, args.model, args.label_column, args.prediction_column, args.score_columns
            )
    except ProfileUsageError as e:
        raise UsageError(str(e)) from None
    except (ProfileError, OSError) as e:
        raise FailureError(f"cannot profile {args.data}: {e}") from None
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_profile(profile, args.out)
    except OSError as e:
        raise FailureError(f"cannot write {args.out}: {e.strerror or e}") from None
    feats = profile["features"].values()
    n_num = sum(f["type"] == "numeric" for f in feats)
    print(
        f"profiled {profile['rows']:,} rows of {args.data}: {n_num} numeric and {len(feats) - n_num} "
        f"categorical features{', with metrics' if profile['metrics'] else ''}; "
        f"wrote {args.out} ({profile['content_hash'][:19]})"
    )
    return OK


# -- report --------------------------------------------------------------------------------------

_REPORT_MODULE = "streamwatch.report.command"


def _report_command() -> Any | None:
    """``streamwatch.report.command`` (``add_arguments(parser)``, ``run(args) -> int``), or None
    when this installation lacks it."""
    try:
        if importlib.util.find_spec(_REPORT_MODULE) is None:
            return None
    except ModuleNotFoundError:  # the streamwatch.report package itself is missing
        return None
    return importlib.import_module(_REPORT_MODULE)


def cmd_report_missing(args: argparse.Namespace) -> int:
    raise FailureError(
        f"the report command is not available in this installation ({_REPORT_MODULE} is missing); "
        "reinstall streamwatch (pip install -e .) or use streamwatch replay for a text summary"
    )


# -- parser --------------------------------------------------------------------------------------


def _config_arg(sp: argparse.ArgumentParser, required: bool = True, kafka: bool = True) -> None:
    sp.add_argument(
        "--config",
        "-c",
        type=Path,
        required=required,
        metavar="FILE",
        help="YAML config file (STREAMWATCH_<SECTION>__<FIELD> variables override it)",
    )
    if kafka:
        sp.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="override kafka.bootstrap_servers")


def _quiet_arg(sp: argparse.ArgumentParser, what: str) -> None:
    sp.add_argument("--quiet", "-q", action="store_true", help=f"no progress bar{what}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every verb; the report's own options only when ``argv`` asks for the report
    (or is None): importing it costs seconds the other verbs should not pay."""
    p = argparse.ArgumentParser(
        prog="streamwatch",
        description="Watch ML models in production from their event streams.",
        epilog="Exit codes: 0 ok, 1 failure at run time, 2 usage or configuration mistake. "
        "`streamwatch COMMAND --help` describes each command; docs/quickstart.md starts from zero.",
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

    r = sub.add_parser(
        "run",
        help="run the worker on Kafka",
        description="Consume predictions and labels from Kafka, "
        "serve /metrics, /healthz and /readyz, publish alerts and dead letters.",
    )
    _config_arg(r)
    r.add_argument("--metrics-port", type=int, help="override metrics.port (0 picks a free port)")
    r.add_argument("--print-alerts", action="store_true", help="also print each alert as one line on stdout")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser(
        "replay",
        help="run the same core over JSON Lines files",
        description="Process prediction (and label) files in event-time order, as the worker would, "
        "and print a summary. Alerts go to --alerts FILE, or to DIR/alerts.jsonl with --out DIR "
        "(dead letters to DIR/dead-letters.jsonl).",
    )
    _config_arg(rp, kafka=False)
    rp.add_argument(
        "--predictions", type=Path, required=True, metavar="FILE", help="prediction events (JSON Lines)"
    )
    rp.add_argument("--labels", type=Path, metavar="FILE", help="label events (JSON Lines)")
    rp.add_argument("--alerts", type=Path, metavar="FILE", help="where to write alert events (JSON Lines)")
    rp.add_argument(
        "--dead-letters", type=Path, metavar="FILE", help="where to write dead letters (JSON Lines)"
    )
    rp.add_argument(
        "--out", type=Path, metavar="DIR", help="directory for alerts.jsonl and dead-letters.jsonl"
    )
    _quiet_arg(rp, ", and do not print alerts as they happen")
    rp.set_defaults(func=cmd_replay)

    pf = sub.add_parser(
        "profile",
        help="build a model's reference profile from development data",
        description="Profile a CSV, Parquet or JSON Lines table (read in chunks) into a versioned "
        "JSON reference: per-feature types, missing rates, quantiles, histograms, categories, "
        "correlations and development-set metrics. See docs/profiles.md.",
    )
    pf.add_argument(
        "--data", type=Path, required=True, metavar="FILE", help="the table: .csv, .parquet or .jsonl"
    )
    pf.add_argument("--model", required=True, metavar="ID", help="model_id the profile is for")
    pf.add_argument("--label-column", metavar="C", help="column with the true label (or target value)")
    pf.add_argument("--prediction-column", metavar="C", help="column with the model's prediction")
    pf.add_argument("--score-columns", nargs="+", default=[], metavar="C", help="columns with model scores")
    pf.add_argument("--chunk-rows", type=int, default=50_000, help="rows read at a time (default 50000)")
    pf.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="where to write the profile (JSON)"
    )
    _quiet_arg(pf, "")
    pf.set_defaults(func=cmd_profile)

    width = max(len(n) for n in SCENARIOS)
    s = sub.add_parser(
        "simulate",
        help="synthetic events with known, injected problems",
        description="Generate prediction and label events with injected changes, and their ground "
        "truth (which change, from which event and time, on which features, which alerts to expect). "
        "--out DIR writes predictions.jsonl, labels.jsonl, ground_truth.json and config.yaml; "
        "--to-kafka produces to the topics of --config (or the defaults).",
        epilog="scenarios:\n" + "\n".join(f"  {n:<{width}}  {DESCRIPTIONS[n]}" for n in SCENARIOS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arg(s, required=False)
    s.add_argument(
        "--scenario",
        default="mean_shift",
        choices=SCENARIOS,
        metavar="NAME",
        help="see below (default mean_shift)",
    )
    s.add_argument("--model", default="credit-risk", metavar="ID", help="model_id of the events")
    s.add_argument("--events", type=int, default=20_000, help="prediction events (default 20000)")
    s.add_argument(
        "--features",
        type=int,
        default=4,
        metavar="N",
        help="numeric features; a categorical 'country' is added",
    )
    s.add_argument(
        "--change-at", type=int, metavar="I", help="event index where the change begins (default: half way)"
    )
    s.add_argument(
        "--shift-feature", default="income", metavar="NAME", help="the feature that changes (default income)"
    )
    s.add_argument("--shift", type=float, default=1.0, help="mean shift in standard deviations (default 1)")
    s.add_argument(
        "--scale", type=float, default=2.0, help="variance_change: factor of the standard deviation"
    )
    s.add_argument(
        "--ramp-events",
        type=int,
        metavar="N",
        help="gradual_drift: events of the ramp (default: half the rest)",
    )
    s.add_argument(
        "--delay-factor", type=float, default=24.0, help="label_delay: how many times later labels come"
    )
    s.add_argument("--unit-factor", type=float, default=2.54, help="unit_change: the new unit per old one")
    s.add_argument("--rate", type=float, default=100.0, help="events per second of event time (default 100)")
    s.add_argument("--seed", type=int, default=7, help="random seed: same flags, same events")
    s.add_argument("--label-share", type=float, default=0.5, help="share of predictions that get a label")
    s.add_argument(
        "--label-delay", type=float, default=600.0, metavar="SECONDS", help="mean label delay (event time)"
    )
    s.add_argument(
        "--start", choices=["fixed", "now"], default="fixed", help="event times from a fixed date or from now"
    )
    s.add_argument("--out", type=Path, metavar="DIR", help="write the events and their ground truth here")
    s.add_argument(
        "--to-kafka", action="store_true", help="produce to the topics of --config (or the defaults)"
    )
    s.add_argument(
        "--realtime", action="store_true", help="with --to-kafka, produce at --rate events per second"
    )
    _quiet_arg(s, ", and do not print what was injected")
    s.set_defaults(func=cmd_simulate)

    rep = sub.add_parser(
        "report",
        help="an HTML report a person can read",
        description="Write one self-contained HTML report of the monitored models, from a replay of "
        "files (--predictions/--labels) or from a running worker's committed state (--from-state).",
    )
    command = _report_command() if argv is None or "report" in argv else None
    if command is not None:
        command.add_arguments(rep)
        rep.set_defaults(func=command.run)
    else:
        rep.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        rep.set_defaults(func=cmd_report_missing)

    c = sub.add_parser(
        "check",
        help="validate a config and its profiles; print what would be monitored",
        description="Validate the config (file + environment) and every reference profile, then print "
        "the models, features, detectors, false-alarm budget and expected metric series. "
        "Secrets are shown as ***. Exit 2 when something is wrong.",
    )
    _config_arg(c)
    c.add_argument("--model", metavar="ID", help="only this model")
    c.add_argument("--print-config", action="store_true", help="also print the effective configuration")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(args.log_level or "info", args.log_format or _default_log_format())
    try:
        return int(args.func(args))
    except (ConfigError, UsageError) as e:
        print(f"streamwatch {args.command}: {e}", file=sys.stderr)
        return USAGE
    except FailureError as e:
        print(f"streamwatch {args.command}: {e}", file=sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        print(f"streamwatch {args.command}: interrupted", file=sys.stderr)
        return FAILURE
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
