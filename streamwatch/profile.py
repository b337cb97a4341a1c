"""Reference profiles: what a model's development data looked like, as versioned JSON.

``streamwatch profile`` reads a table (CSV, Parquet or JSON Lines) in chunks and writes one
JSON document per model: for every feature its type, missing rate, moments, range, equal-mass
quantile bins with their counts, a finer 101-point quantile sketch (what the unit-change and
column-swap checks compare against), category frequencies and the full vocabulary (for new
categories), the correlation matrix of the numeric features, and development-set metrics when
label and prediction columns are given. The document carries its format, version, a schema
fingerprint and a content hash; see docs/profiles.md for every field.

Types are inferred the same way for every format: a column is numeric when all its non-null
values are numbers or strings that parse as numbers (CSV cells are strings), else categorical.
Null is ``None``, NaN, an empty string or one of ``NA``, ``N/A``, ``null``, ``none``, ``nan``
(any case). In a categorical column, values that are numbers are named by their canonical
form (:func:`canonical_value`: ``"1"`` for 1, 1.0 and ``"1.0"``; ``"2.5"``), booleans (and
the strings true/false in any case) as ``"true"``/``"false"``; so the same data gives the
same profile - and the same content hash - from every format, and whatever the chunk size.

Memory: quantiles are exact, so the numeric values of every column are kept, 8 bytes per
cell (a million rows of 50 features: 400 MB), plus one counter entry per distinct category.
A column that turns out categorical drops its numbers as soon as its first non-number shows up.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import importlib
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

FloatArray = npt.NDArray[np.float64]
Chunk = Mapping[str, Sequence[Any] | FloatArray]

PROFILE_FORMAT = "streamwatch.profile"
PROFILE_VERSION = 1
QUANTILE_POINTS = 101
BINS = 10
TOP_K = 20
MAX_VOCABULARY = 10_000
NULL_TOKENS = frozenset({"", "na", "n/a", "null", "none", "nan"})
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ProfileError(ValueError):
    """A table that cannot be profiled, or a document that is not a valid profile."""


class ProfileUsageError(ProfileError):
    """A mistake in what was asked: no such file, an unknown format or column, a bad setting."""


# ---------------------------------------------------------------------------------------------
# values


def canonical_value(v: Any) -> str | None:
    """The category name of a raw value; ``None`` when the value is null.

    Examples
    --------
    >>> [canonical_value(v) for v in [1, 1.0, "1.0", " 2.50", "M", True, "False", None, "NA", float("nan")]]
    ['1', '1', '1', '2.5', 'M', 'true', 'false', None, None, None]
    """
    f, s, null = _parse(v)
    if null:
        return None
    return s if s is not None else _number_name(f)


def _number_name(f: float) -> str:
    if math.isfinite(f) and f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return repr(f)


def _parse(v: Any) -> tuple[float, str | None, bool]:  # noqa: PLR0911
    """(number, non-numeric name, is null) of one raw value."""
    if v is None:
        return math.nan, None, True
    t = type(v)
    if t is bool:
        return math.nan, "true" if v else "false", False
    if t is int or t is float or t is Decimal or isinstance(v, (np.integer, np.floating)):
        f = float(v)
        return f, None, math.isnan(f)
    if t is str:
        if v.strip().lower() in NULL_TOKENS:
            return math.nan, None, True
        try:
            f = float(v)
        except ValueError:
            low = v.lower()
            return math.nan, low if low in ("true", "false") else v, False
        return f, None, math.isnan(f)
    if isinstance(v, (dt.date, dt.time)):
        return math.nan, v.isoformat(), False
    if isinstance(v, (dict, list)):
        return math.nan, orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode(), False
    return math.nan, str(v), False


class _Column:
    """Accumulates one column over chunks: numbers row-aligned while it may be numeric."""

    def __init__(self, name: str, rows_before: int, keep_aligned: bool = False) -> None:
        self.name = name
        self.missing = rows_before  # absent from the rows read before it first appeared
        self.floats: list[FloatArray] | None = [np.full(rows_before, np.nan)] if rows_before else []
        self.strings: Counter[str] = Counter()
        self.keep_aligned = keep_aligned  # label / prediction: keep each row's name for metrics
        self.aligned: list[str | None] = [None] * rows_before if keep_aligned else []

    def add(self, values: Sequence[Any] | FloatArray) -> None:
        arr = _fast_floats(values)
        if arr is not None:
            nulls = np.isnan(arr)
            self.missing += int(nulls.sum())
            if self.keep_aligned:
                self.aligned.extend(None if np.isnan(f) else _number_name(f) for f in arr.tolist())
            self._add_numbers(arr)
            return
        parsed = [_parse(v) for v in values]
        nums = np.array([p[0] for p in parsed], dtype=np.float64)
        self.missing += sum(p[2] for p in parsed)
        names = [p[1] for p in parsed if p[1] is not None]
        if self.keep_aligned:
            self.aligned.extend(
                None if null else (s if s is not None else _number_name(f)) for f, s, null in parsed
            )
        if names:
            self._to_categorical()
            self.strings.update(names)
        self._add_numbers(nums)

    def _add_numbers(self, arr: FloatArray) -> None:
        if self.floats is not None:
            self.floats.append(arr)
        else:
            self._count_numbers(arr)

    def _count_numbers(self, arr: FloatArray) -> None:
        arr = arr[~np.isnan(arr)]
        if len(arr):
            uniq, cnt = np.unique(arr, return_counts=True)
            for f, c in zip(uniq.tolist(), cnt.tolist(), strict=True):
                self.strings[_number_name(f)] += c

    def _to_categorical(self) -> None:
        if self.floats is not None:
            floats, self.floats = self.floats, None
            if floats:
                self._count_numbers(np.concatenate(floats))

    def pad(self, rows: int) -> None:
        """The column is absent from ``rows`` rows of a chunk."""
        self.missing += rows
        if self.keep_aligned:
            self.aligned.extend([None] * rows)
        if self.floats is not None:
            self.floats.append(np.full(rows, np.nan))

    @property
    def numeric(self) -> bool:
        return self.floats is not None

    def values(self) -> FloatArray:
        assert self.floats is not None
        return np.concatenate(self.floats) if self.floats else np.zeros(0)


def _fast_floats(values: Sequence[Any] | FloatArray) -> FloatArray | None:
    """The values as floats (NaN for null) when they are all numbers or numeric strings, else None."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values.astype(np.float64, copy=False)
    kinds = set(map(type, values))
    if kinds <= {int, float, type(None)}:
        return np.array(values, dtype=np.float64).reshape(-1)
    if kinds == {str}:
        try:
            return np.array(values, dtype=np.float64).reshape(-1)  # same rules as float()
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------------------------------------
# reading


def table_format(path: Path) -> str:
    """``"csv"``, ``"parquet"`` or ``"jsonl"`` from the file name."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ProfileUsageError(f"{path}: unknown table format {path.suffix!r}; use .csv, .parquet or .jsonl")
    return fmt


def read_table_chunks(
    path: str | Path, chunk_rows: int = 50_000, on_progress: Callable[[float, int], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Read a CSV, Parquet or JSON Lines table as column chunks of at most ``chunk_rows`` rows.

    Each chunk maps column name to a list of raw values (or a float array for Parquet numbers).
    ``on_progress(fraction_done, rows_so_far)`` is called after each chunk.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("a,b\\n1,x\\n2,\\n3,y\\n")
    >>> list(read_table_chunks(p, chunk_rows=2))
    [{'a': ['1', '2'], 'b': ['x', '']}, {'a': ['3'], 'b': ['y']}]
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ProfileUsageError(f"chunk_rows must be at least 1, got {chunk_rows}")
    fmt = table_format(path)
    if not path.is_file():
        raise ProfileUsageError(f"{path} does not exist or is not a file")
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows, on_progress)
        return
    size = max(path.stat().st_size, 1)
    with path.open("rb") as f:
        counter = _ByteCounter(f)
        gen = (
            _csv_chunks(counter, chunk_rows, path)
            if fmt == "csv"
            else _jsonl_chunks(counter, chunk_rows, path)
        )
        rows = 0
        for chunk in gen:
            rows += len(next(iter(chunk.values()), []))
            if on_progress:
                on_progress(min(counter.bytes / size, 1.0), rows)
            yield chunk


class _ByteCounter:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.bytes = 0

    def lines(self) -> Iterator[bytes]:
        for line in self.f:
            self.bytes += len(line)
            yield line


def _csv_chunks(src: _ByteCounter, chunk_rows: int, path: Path) -> Iterator[dict[str, Any]]:
    text = (
        line.decode("utf-8-sig") if i == 0 else line.decode("utf-8") for i, line in enumerate(src.lines())
    )
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        raise ProfileError(f"{path}: empty file, expected a header row")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise ProfileError(f"{path}: duplicate column names {dup}")
    cols: list[list[Any]] = [[] for _ in header]
    for row in reader:
        if not row:
            continue
        if len(row) > len(header):
            raise ProfileError(
                f"{path}: line {reader.line_num} has {len(row)} cells, the header {len(header)}"
            )
        cells = row + [""] * (len(header) - len(row))
        for c, v in zip(cols, cells, strict=True):
            c.append(v)
        if len(cols[0]) >= chunk_rows:
            yield dict(zip(header, cols, strict=True))
            cols = [[] for _ in header]
    if cols and cols[0]:
        yield dict(zip(header, cols, strict=True))


def _jsonl_chunks(src: _ByteCounter, chunk_rows: int, path: Path) -> Iterator[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for no, line in enumerate(src.lines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise ProfileError(f"{path}: line {no} is not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ProfileError(f"{path}: line {no} is not a JSON object")
        rows.append(obj)
        if len(rows) >= chunk_rows:
            yield _rows_to_columns(rows)
            rows = []
    if rows:
        yield _rows_to_columns(rows)


def _rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in names}


def _parquet_chunks(
    path: Path, chunk_rows: int, on_progress: Callable[[float, int], None] | None
) -> Iterator[dict[str, Any]]:
    try:
        pa: Any = importlib.import_module("pyarrow")
        pq: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ProfileError("reading Parquet needs pyarrow: pip install 'streamwatch[parquet]'") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise ProfileError(f"{path}: not a readable Parquet file ({e})") from None
    total = max(int(pf.metadata.num_rows), 1)
    rows = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        chunk: dict[str, Any] = {}
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                chunk[name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            else:
                chunk[name] = col.to_pylist()
        rows += batch.num_rows
        if on_progress:
            on_progress(min(rows / total, 1.0), rows)
        yield chunk


class Progress:
    """A one-line progress report on a terminal (``\\r`` updates), silent elsewhere."""

    def __init__(self, label: str, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._last = 0.0
        self._shown = False

    def __call__(self, fraction: float, rows: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and fraction < 1.0):
            return
        self._last = now
        self._shown = True
        self.stream.write(f"\r{self.label}: {fraction:6.1%}  {rows:,} rows")
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------------------
# statistics


def _clean(x: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    return x


def _numeric_profile(col: _Column, rows: int, bins: int, points: int) -> dict[str, Any]:
    raw = col.values()
    non_finite = int(np.isinf(raw).sum())
    v = np.sort(raw[np.isfinite(raw)])
    out: dict[str, Any] = {
        "type": "numeric",
        "count": rows,
        "missing": col.missing,
        "missing_rate": col.missing / rows if rows else 0.0,
        "non_finite": non_finite,
        "valid": len(v),
    }
    if not len(v):
        return out | {
            "mean": None, "std": None, "min": None, "max": None, "distinct": 0,
            "mode": None, "mode_share": None, "bins": None, "quantiles": None,
        }  # fmt: skip
    starts = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]]))
    runs = np.diff(np.concatenate([starts, [len(v)]]))
    top = int(np.argmax(runs))
    edges = np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=bins)
    return out | {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v[0]),
        "max": float(v[-1]),
        "distinct": len(starts),
        "mode": float(v[starts[top]]),
        "mode_share": float(runs[top] / len(v)),
        "bins": {"edges": edges.tolist(), "counts": counts.tolist()},
        "quantiles": np.quantile(v, np.linspace(0.0, 1.0, points)).tolist(),
    }


def _categorical_profile(col: _Column, rows: int, top_k: int, max_vocabulary: int) -> dict[str, Any]:
    ordered = sorted(col.strings.items(), key=lambda kv: (-kv[1], kv[0]))
    valid = sum(col.strings.values())
    top = ordered[:top_k]
    return {
        "type": "categorical",
        "count": rows,
        "missing": col.missing,
        "missing_rate": col.missing / rows if rows else 0.0,
        "valid": valid,
        "distinct": len(ordered),
        "singletons": sum(1 for _, c in ordered if c == 1),
        "top": [[k, c] for k, c in top],
        "other": valid - sum(c for _, c in top),
        "vocabulary": [k for k, _ in ordered[:max_vocabulary]],
        "vocabulary_truncated": len(ordered) > max_vocabulary,
    }


def correlation(x: FloatArray) -> FloatArray:
    """Pearson correlations of the columns of ``x`` over pairwise complete rows (NaN: undefined).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 5.0], [2.0, 4.0, np.nan], [3.0, 6.0, 5.0], [4.0, 8.1, 5.0]])
    >>> correlation(x).round(3).tolist()
    [[1.0, 1.0, nan], [1.0, 1.0, nan], [nan, nan, nan]]
    """
    m = np.isfinite(x).astype(np.float64)
    x0 = np.where(m > 0, x, 0.0)
    n = m.T @ m
    sx = x0.T @ m  # sx[i, j]: sum of x_i over rows where x_i and x_j are both present
    sxx = (x0 * x0).T @ m
    sxy = x0.T @ x0
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx * sx / n
        r = cov / np.sqrt(var_i * var_i.T)
    defined = var_i > 1e-12 * np.abs(sxx)  # not constant (up to rounding) over the pairwise rows
    r = np.where(np.isfinite(r) & defined & defined.T, r, np.nan)
    return np.asarray(np.clip(r, -1.0, 1.0), dtype=np.float64)


def _metrics(label: _Column, prediction: _Column) -> dict[str, Any]:
    pairs = [
        (y, p)
        for y, p in zip(label.aligned, prediction.aligned, strict=True)
        if y is not None and p is not None
    ]
    if not pairs:
        return {"task": None, "n": 0}
    ys, ps = [y for y, _ in pairs], [p for _, p in pairs]
    classes = sorted(set(ys) | set(ps))

    def as_float(names: list[str]) -> FloatArray | None:
        try:
            return np.array([float(s) for s in names])
        except ValueError:
            return None

    yf, pf = as_float(ys), as_float(ps)
    discrete = yf is not None and len(set(ys)) <= 20 and bool(np.all(yf == np.round(yf)))
    if yf is not None and pf is not None and not (discrete and bool(np.all(pf == np.round(pf)))):
        if discrete and set(ys) <= {"0", "1"} and bool(np.all((pf >= 0) & (pf <= 1))):
            return _binary_score_metrics(yf, pf)
        err = pf - yf
        ss = float(((yf - yf.mean()) ** 2).sum())
        return {
            "task": "regression",
            "n": len(pairs),
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "bias": float(err.mean()),
            "r2": 1.0 - float((err**2).sum()) / ss if ss > 0 else None,
        }
    y = np.array(ys, dtype=object)
    p = np.array(ps, dtype=object)
    per_class = {}
    for c in classes:
        tp = int(((y == c) & (p == c)).sum())
        support, predicted = int((y == c).sum()), int((p == c).sum())
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[c] = {
            "precision": prec,
            "recall": rec,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
    with_support = [m["f1"] for m in per_class.values() if m["support"]]
    return {
        "task": "classification",
        "n": len(pairs),
        "accuracy": float((y == p).mean()),
        "macro_f1": float(np.mean(with_support)) if with_support else None,
        "classes": per_class,
    }


def _binary_score_metrics(y: FloatArray, s: FloatArray) -> dict[str, Any]:
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_s[1:] != sorted_s[:-1]]))
    ends = np.concatenate([starts[1:], [len(s)]])
    avg = (starts + ends + 1) / 2.0  # mid-ranks of ties, 1-based
    ranks[order] = np.repeat(avg, ends - starts)
    auc = (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg) if pos and neg else None
    return {
        "task": "binary_scores",
        "n": len(y),
        "auc": None if auc is None else float(auc),
        "brier": float(((s - y) ** 2).mean()),
        "accuracy": float(((s >= 0.5) == (y == 1)).mean()),
        "positive_rate": pos / len(y),
    }


# ---------------------------------------------------------------------------------------------
# the profile


def build_profile(
    frame_chunks: Iterable[Chunk],
    model_id: str,
    label_column: str | None = None,
    prediction_column: str | None = None,
    score_columns: Sequence[str] | None = None,
    *,
    bins: int = BINS,
    quantile_points: int = QUANTILE_POINTS,
    top_k: int = TOP_K,
    max_vocabulary: int = MAX_VOCABULARY,
) -> dict[str, Any]:
    """The reference profile of a table given as column chunks (see :func:`read_table_chunks`).

    Every column that is not the label, the prediction or a score is a feature. Raises
    :class:`ProfileError` for an empty table or a named column the table does not have.

    Examples
    --------
    >>> chunks = [{"x": [1, 2, 3], "c": ["a", "b", "a"], "y": [0, 1, 1], "p": [0, 1, 0]}]
    >>> prof = build_profile(chunks, "m", label_column="y", prediction_column="p", bins=2)
    >>> prof["features"]["x"]["type"], prof["features"]["x"]["bins"]
    ('numeric', {'edges': [2.0], 'counts': [2, 1]})
    >>> prof["features"]["c"]["top"], prof["metrics"]["accuracy"]
    ([['a', 2], ['b', 1]], 0.6666666666666666)
    >>> validate_profile(prof) is prof
    True
    """
    scores = list(score_columns or [])
    special = [c for c in (label_column, prediction_column) if c] + scores
    if len(set(special)) != len(special):
        raise ProfileUsageError(f"a column is named twice among label, prediction and scores: {special}")
    cols: dict[str, _Column] = {}
    rows = 0
    for chunk in frame_chunks:
        lengths = {len(v) for v in chunk.values()}
        if len(lengths) > 1:
            raise ProfileError(f"columns of a chunk differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        for name in chunk:
            if name not in cols:
                cols[name] = _Column(name, rows, keep_aligned=name in (label_column, prediction_column))
        for name, col in cols.items():
            if name in chunk:
                col.add(chunk[name])
            else:
                col.pad(n)
        rows += n
    if rows == 0:
        raise ProfileError("the table has no rows")
    unknown = [c for c in special if c not in cols]
    if unknown:
        raise ProfileUsageError(
            f"no column {', '.join(map(repr, unknown))} in the table; columns: {list(cols)}"
        )

    def column_profile(col: _Column) -> dict[str, Any]:
        if col.numeric:
            return _numeric_profile(col, rows, bins, quantile_points)
        return _categorical_profile(col, rows, top_k, max_vocabulary)

    features = {name: column_profile(c) for name, c in cols.items() if name not in special}
    numeric = [name for name, p in features.items() if p["type"] == "numeric"]
    corr = correlation(np.column_stack([cols[f].values() for f in numeric])) if numeric else np.zeros((0, 0))
    schema = [[name, p["type"]] for name, p in features.items()]
    profile: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "schema_version": hashlib.sha256(orjson.dumps(schema)).hexdigest()[:16],
        "model_id": model_id,
        "rows": rows,
        "settings": {
            "bins": bins,
            "quantile_points": quantile_points,
            "top_k": top_k,
            "max_vocabulary": max_vocabulary,
        },
        "columns": {
            "features": list(features),
            "label": label_column,
            "prediction": prediction_column,
            "scores": scores,
        },
        "features": features,
        "label": column_profile(cols[label_column]) if label_column else None,
        "prediction": column_profile(cols[prediction_column]) if prediction_column else None,
        "scores": {s: column_profile(cols[s]) for s in scores},
        "correlation": {"features": numeric, "matrix": corr},
        "metrics": _metrics(cols[label_column], cols[prediction_column])
        if label_column and prediction_column
        else None,
    }
    profile = _clean(profile)
    profile["content_hash"] = content_hash(profile)
    return profile


def profile_file(
    path: str | Path,
    model_id: str,
    label_column: str | None = None,
    prediction_column: str | None = None,
    score_columns: Sequence[str] | None = None,
    *,
    chunk_rows: int = 50_000,
    progress: bool | None = None,
) -> dict[str, Any]:
    """:func:`build_profile` of a file, with a progress line on a terminal (``progress=None``)."""
    path = Path(path)
    bar = Progress(f"profiling {path.name}", enabled=progress)
    try:
        chunks = read_table_chunks(path, chunk_rows, on_progress=bar)
        return build_profile(chunks, model_id, label_column, prediction_column, score_columns)
    finally:
        bar.close()


def content_hash(profile: Mapping[str, Any]) -> str:
    """``sha256:`` of the canonical JSON (sorted keys) of the profile without its hash."""
    body = {k: v for k, v in profile.items() if k != "content_hash"}
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------------------------------------
# validation and files

_TOP_KEYS = {
    "format": str, "version": int, "schema_version": str, "model_id": str, "rows": int,
    "settings": dict, "columns": dict, "features": dict, "scores": dict, "correlation": dict,
    "content_hash": str,
}  # fmt: skip
_NUMERIC_KEYS = (
    "count",
    "missing",
    "missing_rate",
    "valid",
    "mean",
    "std",
    "min",
    "max",
    "quantiles",
    "bins",
)
_CATEGORICAL_KEYS = ("count", "missing", "missing_rate", "valid", "distinct", "top", "other", "vocabulary")


def validate_profile(doc: Any, *, verify_hash: bool = True) -> dict[str, Any]:
    """``doc`` itself when it is a valid profile of this format version, else :class:`ProfileError`.

    Examples
    --------
    >>> validate_profile({"format": "x"})
    Traceback (most recent call last):
    ...
    streamwatch.profile.ProfileError: not a streamwatch profile: format is 'x', expected 'streamwatch.profile'
    """
    if not isinstance(doc, dict):
        raise ProfileError(f"not a streamwatch profile: a JSON {type(doc).__name__}, expected an object")
    if doc.get("format") != PROFILE_FORMAT:
        raise ProfileError(
            f"not a streamwatch profile: format is {doc.get('format')!r}, expected {PROFILE_FORMAT!r}"
        )
    if doc.get("version") != PROFILE_VERSION:
        raise ProfileError(
            f"profile version {doc.get('version')!r} is not supported by this streamwatch "
            f"(it reads version {PROFILE_VERSION}); rebuild it with `streamwatch profile`"
        )
    for key, typ in _TOP_KEYS.items():
        if not isinstance(doc.get(key), typ) or isinstance(doc.get(key), bool):
            raise ProfileError(f"profile field {key!r} is missing or not a {typ.__name__}")
    for key in ("label", "prediction", "metrics"):
        if key not in doc or not (doc[key] is None or isinstance(doc[key], dict)):
            raise ProfileError(f"profile field {key!r} is missing or not an object or null")
    extra = set(doc) - set(_TOP_KEYS) - {"label", "prediction", "metrics"}
    if extra:
        raise ProfileError(f"unknown profile fields {sorted(extra)}")
    columns = [("features", n, p) for n, p in doc["features"].items()]
    columns += [("scores", n, p) for n, p in doc["scores"].items()]
    columns += [(k, k, doc[k]) for k in ("label", "prediction") if doc[k] is not None]
    points = doc["settings"].get("quantile_points")
    for where, name, p in columns:
        if not isinstance(p, dict) or p.get("type") not in ("numeric", "categorical"):
            raise ProfileError(f"profile {where} {name!r}: type must be 'numeric' or 'categorical'")
        needed = _NUMERIC_KEYS if p["type"] == "numeric" else _CATEGORICAL_KEYS
        missing = [k for k in needed if k not in p]
        if missing:
            raise ProfileError(f"profile {where} {name!r}: missing fields {missing}")
        q = p.get("quantiles")
        if p["type"] == "numeric" and q is not None and (not isinstance(q, list) or len(q) != points):
            raise ProfileError(f"profile {where} {name!r}: quantiles must be a list of {points} numbers")
    if doc["columns"].get("features") != list(doc["features"]):
        raise ProfileError("profile columns.features does not list the features in order")
    if verify_hash and doc["content_hash"] != content_hash(doc):
        raise ProfileError("profile content_hash does not match its content: the file was modified")
    return doc


def save_profile(profile: Mapping[str, Any], path: str | Path) -> None:
    """Write the profile as indented JSON (keys in profile order)."""
    Path(path).write_bytes(orjson.dumps(profile, option=orjson.OPT_INDENT_2) + b"\n")


def load_profile(path: str | Path, *, verify_hash: bool = True) -> dict[str, Any]:
    """Read and validate a profile file; :class:`ProfileError` says what is wrong."""
    p = Path(path)
    try:
        doc = orjson.loads(p.read_bytes())
    except FileNotFoundError:
        raise ProfileError(f"{p} does not exist") from None
    except orjson.JSONDecodeError as e:
        raise ProfileError(f"{p} is not JSON: {e}") from None
    try:
        return validate_profile(doc, verify_hash=verify_hash)
    except ProfileError as e:
        raise ProfileError(f"{p}: {e}") from None
