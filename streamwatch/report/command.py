"""The report command: its arguments and what it runs.

``streamwatch report`` is wired to :func:`add_arguments` and :func:`run`; ``python -m
streamwatch.report`` uses :func:`main`. Exit codes as elsewhere: 0 written, 1 the source failed
at run time (e.g. the broker cannot be reached), 2 a usage or configuration mistake, reported in
one message without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamwatch.config import ConfigError, load_config

OK, FAILURE, USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in the command line; the message says what to fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options, on ``parser`` (a subcommand's parser or a parser of its own)."""
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        required=True,
        help="YAML config file (STREAMWATCH_* variables override it)",
    )
    src = parser.add_argument_group("source: a replay of files, or a running worker's state")
    src.add_argument("--predictions", type=Path, help="prediction events to replay (JSON Lines)")
    src.add_argument("--labels", type=Path, help="label events to replay with them (JSON Lines)")
    src.add_argument(
        "--from-state",
        action="store_true",
        help="report the committed state of the config's worker group (state and alerts topics)",
    )
    src.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers (with --from-state)")
    src.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to read each Kafka topic (default 30)"
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help="report this model (repeat for several; default: every model with state or events)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report.html"), help="the HTML file (default report.html)"
    )


def _check(args: argparse.Namespace) -> None:
    if args.from_state and (args.predictions or args.labels):
        raise UsageError("choose one source: --predictions/--labels (a replay) or --from-state")
    if not args.from_state and args.predictions is None:
        raise UsageError("give --predictions FILE [--labels FILE] to replay, or --from-state")
    if args.bootstrap_servers and not args.from_state:
        raise UsageError("--bootstrap-servers only applies with --from-state")
    for p in (args.predictions, args.labels):
        if p is not None and not p.is_file():
            raise UsageError(f"{p} does not exist or is not a file")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.out.exists() and args.out.is_dir():
        raise UsageError(f"--out {args.out} is a directory; give a file name")


def _write(path: Path, text: str) -> None:
    """Write the page atomically: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(tmp, 0o666 & ~mask)  # as an ordinary new file, not mkstemp's private 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Gather the source, render, write ``args.out``; returns the exit code."""
    from streamwatch.report.render import render
    from streamwatch.report.sources import SourceError, from_replay, from_state

    name = "streamwatch report"
    try:
        _check(args)
        overrides: dict[str, Any] = {}
        if args.bootstrap_servers:
            overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
        settings = load_config(args.config, **overrides)
        unknown = [m for m in args.model or [] if m not in settings.models]
        if unknown:
            raise UsageError(
                f"model(s) {', '.join(map(repr, unknown))} not in the config; it has "
                + ", ".join(map(repr, settings.models))
            )
        if args.from_state:
            data = from_state(settings, args.model, timeout=args.timeout)
            if not data.models:
                print(
                    f"{name}: no committed state of "
                    + (", ".join(args.model) if args.model else "any model")
                    + f" in {settings.topics.state} for group {settings.kafka.group_id}: "
                    "is a worker with this config running and has it checkpointed?",
                    file=sys.stderr,
                )
                return FAILURE
        else:
            data = from_replay(settings, args.predictions, args.labels, args.model)
        _write(args.out, render(data))
    except (UsageError, ConfigError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return USAGE
    except SourceError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return FAILURE
    except OSError as e:
        print(f"{name}: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return FAILURE
    print(
        f"wrote {args.out}: {len(data.models)} model(s), {len(data.alerts)} alert event(s), "
        f"from {data.source}"
    )
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamwatch.report",
        description="Write one self-contained HTML report of the monitored models.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except KeyboardInterrupt:
        return FAILURE


__all__ = ["add_arguments", "main", "run"]
