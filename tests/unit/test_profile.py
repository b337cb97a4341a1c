"""Reference profiles: the same data gives the same profile from every format and chunking."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamwatch.cli import main
from streamwatch.profile import (
    PROFILE_FORMAT,
    ProfileError,
    build_profile,
    content_hash,
    load_profile,
    profile_file,
    read_table_chunks,
    save_profile,
    validate_profile,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N = 400


def _table(seed: int = 3) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    height = rng.normal(170.0, 10.0, N).round(3)
    width = 0.5 * height + rng.normal(0.0, 5.0, N)
    age = rng.integers(18, 90, N)
    gender = rng.choice(["F", "M", "X"], N, p=[0.49, 0.49, 0.02])
    label = rng.choice(["approve", "reject"], N)
    pred = np.where(rng.random(N) < 0.8, label, np.where(label == "approve", "reject", "approve"))
    score = rng.random(N)
    t: dict[str, list[Any]] = {
        "height": height.tolist(),
        "width": width.tolist(),
        "age": age.tolist(),
        "gender": gender.tolist(),
        "member": (rng.random(N) < 0.3).tolist(),
        "y": label.tolist(),
        "p": pred.tolist(),
        "score": score.tolist(),
    }
    for name, every in (("height", 17), ("age", 23), ("gender", 29)):  # some nulls
        for i in range(0, N, every):
            t[name][i] = None
    return t


def _write_all(t: dict[str, list[Any]], d: Path) -> dict[str, Path]:
    names = list(t)
    rows = [dict(zip(names, r, strict=True)) for r in zip(*t.values(), strict=True)]
    paths = {"csv": d / "dev.csv", "jsonl": d / "dev.jsonl", "parquet": d / "dev.parquet"}
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in r.values()])
    paths["jsonl"].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    pq.write_table(pa.table(t), paths["parquet"])
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _write_all(_table(), tmp_path_factory.mktemp("profile"))


def _profile(path: Path, chunk_rows: int = 50_000) -> dict[str, Any]:
    return profile_file(path, "credit", "y", "p", ["score"], chunk_rows=chunk_rows, progress=False)


def test_csv_parquet_and_jsonl_give_the_same_profile(files: dict[str, Path]) -> None:
    profiles = {fmt: _profile(p) for fmt, p in files.items()}
    assert profiles["csv"] == profiles["jsonl"] == profiles["parquet"]
    assert len({p["content_hash"] for p in profiles.values()}) == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_chunked_equals_unchunked(files: dict[str, Path], fmt: str) -> None:
    assert _profile(files[fmt], chunk_rows=7) == _profile(files[fmt])


def test_profile_content(files: dict[str, Path]) -> None:
    prof = _profile(files["csv"])
    t = _table()
    assert prof["format"] == PROFILE_FORMAT and prof["version"] == 1 and prof["rows"] == N
    assert prof["columns"]["features"] == ["height", "width", "age", "gender", "member"]
    h = prof["features"]["height"]
    vals = np.array([v for v in t["height"] if v is not None])
    assert h["type"] == "numeric" and h["missing"] == N - len(vals)
    assert h["missing_rate"] == pytest.approx((N - len(vals)) / N)
    assert h["mean"] == pytest.approx(vals.mean()) and h["max"] == vals.max()
    assert len(h["quantiles"]) == 101 and h["quantiles"][50] == pytest.approx(np.median(vals))
    assert len(h["bins"]["edges"]) == 9 and sum(h["bins"]["counts"]) == len(vals)
    assert max(h["bins"]["counts"]) - min(h["bins"]["counts"]) <= 2  # equal mass
    g = prof["features"]["gender"]
    assert g["type"] == "categorical" and set(g["vocabulary"]) == {"F", "M", "X"}
    assert g["top"][-1][0] == "X" and g["other"] == 0
    assert prof["features"]["member"]["vocabulary"] == ["false", "true"]
    assert prof["features"]["age"]["type"] == "numeric"
    corr = prof["correlation"]
    assert corr["features"] == ["height", "width", "age"]
    assert corr["matrix"][0][1] > 0.5 and corr["matrix"][0][0] == pytest.approx(1.0)
    m = prof["metrics"]
    assert m["task"] == "classification" and m["n"] == N and 0.7 < m["accuracy"] < 0.9
    assert set(m["classes"]) == {"approve", "reject"}
    assert prof["scores"]["score"]["type"] == "numeric" and prof["label"]["type"] == "categorical"
    assert prof["content_hash"] == content_hash(prof)


def test_regression_metrics_and_a_column_that_turns_categorical() -> None:
    chunks = [
        {"x": ["1", "2"], "c": [1, 2], "y": [1.0, 2.0], "p": [1.5, 2.5]},
        {"x": ["3", "4"], "c": ["z", 2.0], "y": [3.0, 4.0], "p": [2.0, 4.0]},
    ]
    prof = build_profile(chunks, "m", "y", "p")
    assert prof["features"]["x"]["type"] == "numeric"
    c = prof["features"]["c"]
    assert c["type"] == "categorical" and c["top"] == [["2", 2], ["1", 1], ["z", 1]]
    m = prof["metrics"]
    assert m["task"] == "regression" and m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0.25 + 1 + 0) / 4))


def test_save_load_round_trip_and_validator(tmp_path: Path, files: dict[str, Path]) -> None:
    prof = _profile(files["jsonl"])
    out = tmp_path / "p.json"
    save_profile(prof, out)
    assert load_profile(out) == prof
    for bad, msg in [
        ({**prof, "format": "great_expectations.suite"}, "not a streamwatch profile"),
        ({**prof, "version": 2}, "version 2 is not supported"),
        ({**prof, "rows": prof["rows"] + 1}, "content_hash does not match"),
        ({**prof, "surprise": 1}, "unknown profile fields"),
        ([1, 2], "expected an object"),
    ]:
        with pytest.raises(ProfileError, match=msg):
            validate_profile(bad)
    broken = {k: v for k, v in prof.items() if k != "features"}
    with pytest.raises(ProfileError, match="'features' is missing"):
        validate_profile(broken)
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ProfileError, match=r"x\.json: not a streamwatch profile"):
        load_profile(tmp_path / "x.json")


def test_read_table_chunks_reports_progress(files: dict[str, Path]) -> None:
    seen: list[tuple[float, int]] = []
    chunks = list(read_table_chunks(files["csv"], 100, on_progress=lambda f, r: seen.append((f, r))))
    assert len(chunks) == 4 and seen[-1] == (1.0, N)
    assert [r for _, r in seen] == [100, 200, 300, 400]


def test_cli_profile_exit_codes(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prof.json"
    base = ["profile", "--model", "credit", "--out", str(out)]
    args = ["--label-column", "y", "--prediction-column", "p", "--score-columns", "score"]
    assert main([*base, "--data", str(files["parquet"]), *args, "--chunk-rows", "50"]) == 0
    assert load_profile(out)["content_hash"] == _profile(files["csv"])["content_hash"]
    assert "profiled 400 rows" in capsys.readouterr().out

    assert main([*base, "--data", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--data", str(files["csv"]), "--label-column", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no column 'nope'" in err and "Traceback" not in err
    (tmp_path / "t.xlsx").write_text("x")
    assert main([*base, "--data", str(tmp_path / "t.xlsx")]) == 2
    assert "unknown table format" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n')
    assert main([*base, "--data", str(bad)]) == 1
    assert "line 2 is not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["profile", "--data", str(files["csv"])])  # --model and --out missing
    assert e.value.code == 2


def test_progress_line_only_when_enabled() -> None:
    import io

    from streamwatch.profile import Progress

    shown, quiet = io.StringIO(), io.StringIO()
    for stream, enabled in ((shown, True), (quiet, None)):  # StringIO is not a terminal
        bar = Progress("profiling dev.csv", stream=stream, enabled=enabled)
        bar(0.5, 1000)
        bar(1.0, 2000)
        bar.close()
    line = "\rprofiling dev.csv: {:>6}  {} rows"
    assert shown.getvalue() == line.format("50.0%", "1,000") + line.format("100.0%", "2,000") + "\n"
    assert quiet.getvalue() == ""
