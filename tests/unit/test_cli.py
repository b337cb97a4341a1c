"""The ``streamwatch`` command line: help, shared flags, exit codes, messages, progress, secrets.

No broker: the Kafka paths are exercised up to the point where they would connect.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from streamwatch import cli
from streamwatch.cli import FAILURE, OK, USAGE, build_parser, main, masked

VERBS = ("run", "replay", "profile", "simulate", "report", "check")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _config(tmp: Path, **extra: object) -> Path:
    doc = {
        "models": {
            "credit-risk": {"features": {"age": "numeric", "income": "numeric", "country": "categorical"}}
        }
    }
    doc.update(extra)
    path = tmp / "streamwatch.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_of_every_verb(verb: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"] if verb else ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: streamwatch" in out
    if verb is None:
        assert all(v in out for v in VERBS) and "Exit codes" in out


def test_the_same_things_have_the_same_flags() -> None:
    verbs = _subparsers()
    assert set(VERBS) <= set(verbs)
    for verb in ("run", "replay", "check", "simulate"):
        assert {"--config", "-c"} <= _flags(verbs[verb]), verb
    for verb in ("run", "check", "simulate"):  # the verbs that talk to Kafka
        assert "--bootstrap-servers" in _flags(verbs[verb]), verb
    assert {"--predictions", "--labels", "--out"} <= _flags(verbs["replay"])
    for verb in ("profile", "simulate", "replay"):
        assert {"--out", "--quiet"} <= _flags(verbs[verb]), verb
    assert {"--model", "--seed", "--events", "--rate", "--features"} <= _flags(verbs["simulate"])
    assert "--model" in _flags(verbs["profile"]) and "--model" in _flags(verbs["check"])


def test_usage_mistakes_exit_2_with_a_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def err_of(*argv: str) -> str:
        assert main(list(argv)) == USAGE, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "does not exist" in err_of("check", "--config", str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("models: {m: {features: {a: numeric}\n")
    assert "not valid YAML" in err_of("check", "--config", str(tmp_path / "bad.yaml"))
    (tmp_path / "wrong.yaml").write_text("models: {m: {features: {a: number}}}\n")
    assert "models.m.features.a" in err_of("check", "--config", str(tmp_path / "wrong.yaml"))
    assert "is a directory" in err_of("check", "--config", str(tmp_path))
    cfg = _config(tmp_path)
    err = err_of("check", "--config", str(cfg), "--model", "fraud")
    assert "'fraud' is not in" in err and "credit-risk" in err
    err = err_of("replay", "--config", str(cfg), "--predictions", str(tmp_path / "p.jsonl"), "--alerts", "a")
    assert "--predictions" in err and "does not exist" in err
    assert "--out DIR" in err_of("simulate")
    err = err_of("simulate", "--out", str(tmp_path / "s"), "--events", "100", "--change-at", "500")
    assert "--change-at" in err and "change_at" not in err
    assert "--shift-feature 'salary'" in err_of(
        "simulate", "--out", str(tmp_path / "s"), "--shift-feature", "salary"
    ).replace("shift_feature", "--shift-feature")
    err = err_of("simulate", "--to-kafka", "--config", str(cfg), "--model", "fraud")
    assert "'fraud' is not in" in err and "--model" in err
    with pytest.raises(SystemExit) as e:  # argparse: an unknown scenario names the valid ones
        main(["simulate", "--scenario", "nope", "--out", str(tmp_path)])
    assert e.value.code == USAGE and "mean_shift" in capsys.readouterr().err


def test_an_unreachable_broker_exits_1_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--to-kafka", "--bootstrap-servers", "127.0.0.1:1", "--events", "50", "-q"]
    assert main(argv) == FAILURE
    err = capsys.readouterr().err
    assert "cannot reach Kafka (127.0.0.1:1" in err and "--bootstrap-servers" in err
    assert "Traceback" not in err


def test_simulate_then_replay_finds_the_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    argv = [
        "simulate",
        "--scenario",
        "unit_change",
        "--events",
        "4000",
        "--change-at",
        "2000",
        "--out",
        str(out),
    ]
    assert main(argv) == OK
    printed = capsys.readouterr().out
    assert "ground_truth.json" in printed and "expect unit_change" in printed
    truth = orjson.loads((out / "ground_truth.json").read_bytes())
    assert truth["scenario"] == "unit_change"
    assert truth["expected_alerts"] == [{"kind": "unit_change", "feature": "income"}]
    assert truth["changes"][0]["start_index"] == 2000
    code = main(
        [
            "replay",
            "--config",
            str(out / "config.yaml"),
            "--predictions",
            str(out / "predictions.jsonl"),
            "--labels",
            str(out / "labels.jsonl"),
            "--out",
            str(out / "result"),
            "--quiet",
        ]
    )
    assert code == OK
    alerts = [orjson.loads(x) for x in (out / "result" / "alerts.jsonl").read_bytes().splitlines()]
    assert ("unit_change", "income") in {(a["kind"], a["feature"]) for a in alerts}
    assert (out / "result" / "dead-letters.jsonl").exists()
    captured = capsys.readouterr()
    assert "alerts: " in captured.out and "unit_change/firing=1" in captured.out
    assert captured.err == ""  # not a terminal: no progress bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["simulate", "--scenario", "none", "--events", "500", "--out", str(tmp_path), "-q"]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert main(argv[:-1]) == OK
    assert "simulate none" in sys.stderr.getvalue()  # type: ignore[attr-defined]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert main(argv) == OK  # --quiet: no bar even on a terminal
    assert sys.stderr.getvalue() == ""  # type: ignore[attr-defined]
    (tmp_path / "dev.csv").write_text("x,c\n" + "".join(f"{i % 7},{'ab'[i % 2]}\n" for i in range(300)))
    monkeypatch.setattr(sys, "stderr", _Terminal())
    prof = ["profile", "--data", str(tmp_path / "dev.csv"), "--model", "m", "--out", str(tmp_path / "p.json")]
    assert main([*prof, "--chunk-rows", "100"]) == OK
    assert "profile dev.csv" in sys.stderr.getvalue()  # type: ignore[attr-defined]


def test_check_prints_what_will_be_monitored_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(
        tmp_path,
        kafka={
            "client": {"security.protocol": "SASL_SSL", "sasl.username": "svc", "sasl.password": "hunter2"}
        },
    )
    monkeypatch.setenv("STREAMWATCH_KAFKA__CLIENT__SSL_KEY_PASSWORD", "s3cret-key")
    assert main(["check", "--config", str(cfg), "--print-config"]) == OK
    out = capsys.readouterr().out
    assert "hunter2" not in out and "s3cret-key" not in out and "***" in out
    assert "SASL_SSL" in out
    assert "model credit-risk: 2 numeric ['age', 'income'], 1 categorical ['country']" in out
    assert "CUSUM per numeric feature" in out
    assert "false-alarm budget: at most one false drift alert per 100,000 events" in out
    assert "7 detector units" in out  # 3 features + predictions (2), labels, concept drift
    # 7 per numeric, 5 per categorical, 6 per class of a binary classifier
    assert "metric series: 31 per-feature and per-class (binary) + ~100 model-level = ~131" in out
    assert "total: 1 model(s), 3 features" in out


def test_masked_hides_every_secret() -> None:
    from pydantic import SecretStr

    doc = {
        "kafka": {"client": {"sasl.password": "x", "bootstrap": "h"}},
        "token": SecretStr("t"),
        "n": [SecretStr("u")],
    }
    assert masked(doc) == {
        "kafka": {"client": {"sasl.password": "***", "bootstrap": "h"}},
        "token": "***",
        "n": ["***"],
    }


def test_report_is_wired(capsys: pytest.CaptureFixture[str]) -> None:
    if cli._report_command() is not None:
        with pytest.raises(SystemExit) as e:
            main(["report", "--help"])
        assert e.value.code == 0
        return
    assert main(["report"]) == FAILURE
    assert "not available" in capsys.readouterr().err
