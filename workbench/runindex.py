"""Read run folders back for browsing and plotting, without Textual and without torch.

    rows = scan_runs("runs")                 # one RunRow per run folder, newest first
    evals = eval_rows("runs")                # one EvalRow per (run, extractor) in eval.json
    curves = Curves(); curves.feed(MetricsTail(run / "metrics.jsonl").read_new())

``Curves`` keeps each metric in a ``Series`` of bounded size (a ``history.Thinned``: when it
fills, every other point is dropped and only every second new point is kept from then on), so
memory stays flat however long a run logs, and a plot redraw costs the same after a million
steps as after a hundred.
``MetricsTail`` reads only the lines appended since its last call (and starts again when a
resumed run rewrote the file); the job queue tails metrics files with it too.
"""
from __future__ import annotations

import json
import math
import re
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.history import Thinned
from workbench.fileio import read_json

#: Keys of a metrics row that are bookkeeping, not curves.
_NOT_CURVES = {"step", "epoch", "split", "lr", "images_per_s", "time"}
_SAMPLE = re.compile(r"^(recon-)?step-(\d+)\.png$")


class Series(Thinned[tuple[float, float]]):
    """(x, y) points of one curve, fewer than ``capacity`` of them, thinned evenly as it grows."""

    def __init__(self, capacity: int = 512):
        super().__init__(max(4, capacity) - 1)

    def append(self, x: float, y: float) -> None:
        self.add((x, y))

    @property
    def xs(self) -> list[float]:
        return [x for x, _ in self.kept]

    @property
    def ys(self) -> list[float]:
        return [y for _, y in self.kept]

    def points(self) -> tuple[list[float], list[float]]:
        """The kept points, and the newest point even when thinning skipped it."""
        points = self.kept
        if self.latest is not None and (not points or points[-1][0] != self.latest[0]):
            points = points + [self.latest]
        return [x for x, _ in points], [y for _, y in points]

    @property
    def last(self) -> float | None:
        return self.latest[1] if self.latest else None


class Curves:
    """Every numeric metric of a run's rows, as ``Series`` named ``"<split>/<key>"``."""

    def __init__(self, capacity: int = 512):
        self.capacity = capacity
        self.series: dict[str, Series] = {}
        self.version = 0  # bumped on every change, so a plot can tell whether to redraw

    def feed(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            step = row.get("step")
            if not isinstance(step, (int, float)):
                continue
            split = row.get("split", "train")
            for key, value in row.items():
                if key in _NOT_CURVES or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if not math.isfinite(value):
                    continue
                name = f"{split}/{key}"
                if name not in self.series:
                    self.series[name] = Series(self.capacity)
                self.series[name].append(float(step), float(value))
        if rows:
            self.version += 1

    def clear(self) -> None:
        self.series.clear()
        self.version += 1

    def get(self, name: str) -> Series | None:
        return self.series.get(name)

    def names(self, split: str | None = None) -> list[str]:
        return [n for n in self.series if split is None or n.startswith(split + "/")]


#: A line longer than this is not a metrics row (a damaged or hostile file): it is skipped unread.
MAX_LINE_BYTES = 1 << 20
#: Bytes read from the file at a time: memory stays bounded however the file grows.
CHUNK_BYTES = 4 << 20


class MetricsTail:
    """The rows appended to a metrics.jsonl since the last ``read_new``.

    Reads go in chunks of ``CHUNK_BYTES``; a line longer than ``MAX_LINE_BYTES`` (whole or still
    unterminated) is skipped without being kept in memory, and never read again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self.inode: int | None = None
        self.restarted = False  # set by read_new when the file was rewritten (shorter, or replaced)
        self.more = False       # set by read_new when it stopped at its budget before the end of the file
        self._skipping = False  # inside an over-long line: drop bytes up to its newline

    def skip_to_tail(self, keep_bytes: int) -> None:
        """Start reading at the first whole line of the file's last ``keep_bytes`` (for a view
        that only needs recent rows of a long run)."""
        try:
            st = self.path.stat()
        except OSError:
            return
        size, self.inode = st.st_size, st.st_ino
        if size <= keep_bytes:
            return
        with open(self.path, "rb") as f:
            f.seek(size - keep_bytes)
            tail = f.read(keep_bytes)
        newline = tail.find(b"\n")
        # No newline in the window: the end is one over-long line; skip past it.
        self.offset = size - keep_bytes + (newline + 1 if newline >= 0 else len(tail))
        self._skipping = newline < 0

    def read_new(self, budget: int | None = None) -> list[dict[str, Any]]:
        """The whole rows appended since the last call. ``budget`` caps the bytes read in this call
        (the rest comes in later calls; ``more`` says so); None reads to the end, chunk by chunk."""
        self.restarted = self.more = False
        try:
            st = self.path.stat()
        except OSError:
            return []
        size = st.st_size
        if self.offset and (size < self.offset or st.st_ino != self.inode):  # a resume rewrote the file
            self.offset, self.restarted, self._skipping = 0, True, False
        self.inode = st.st_ino
        rows: list[dict[str, Any]] = []
        # A budget below the longest line kept would never finish a line.
        left = size - self.offset if budget is None else min(size - self.offset, max(budget, 2 * MAX_LINE_BYTES))
        if left <= 0:
            return rows
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            pending = b""
            while left > 0:
                data = f.read(min(CHUNK_BYTES, left))
                if not data:
                    break
                left -= len(data)
                if self._skipping:
                    newline = data.find(b"\n")
                    if newline < 0:
                        self.offset += len(data)
                        continue
                    self.offset += newline + 1
                    data, self._skipping = data[newline + 1:], False
                data = pending + data
                end = data.rfind(b"\n")
                if end >= 0:
                    self.offset += end + 1
                    rows.extend(_parse_rows(data[:end]))
                    data = data[end + 1:]
                if len(data) > MAX_LINE_BYTES:  # an unterminated line already too long: drop it
                    self.offset += len(data)
                    data, self._skipping = b"", True
                pending = data
        self.more = self.offset + len(pending) < size
        return rows


def _parse_rows(data: bytes) -> list[dict[str, Any]]:
    rows = []
    for line in data.split(b"\n"):
        if len(line) > MAX_LINE_BYTES or not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def sparkline(values: list[float], width: int = 12) -> str:
    """``values`` as unicode block characters, ``width`` wide (the last ``width`` buckets)."""
    blocks = "▁▂▃▄▅▆▇█"
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return ""
    if len(values) > width:  # mean of equal buckets, so the line spans the whole history
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return blocks[0] * len(values)
    return "".join(blocks[min(7, int((v - lo) / (hi - lo) * 8))] for v in values)


# -- run folders ---------------------------------------------------------------------------------
@dataclass
class RunRow:
    path: Path
    name: str
    model: str
    dataset: str
    binarize: str
    state: str
    step: int
    total: int | None
    best_val_nll: float | None
    bpd: float | None          # test bits/dim if evaluated, else the best validation's
    fid: float | None          # the classifier FID if there is one, else inception's
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("finished", "early-stopped")


class _Summary:
    """Best validation NLL and last step of one metrics file, folded in as the file grows."""

    def __init__(self, path: Path):
        self.tail = MetricsTail(path)
        self.best_nll: float | None = None
        self.best_bpd: float | None = None
        self.last_step = 0

    def update(self) -> "_Summary":
        rows = self.tail.read_new()
        if self.tail.restarted:
            self.best_nll = self.best_bpd = None
            self.last_step = 0
        for row in rows:
            step = row.get("step")
            if isinstance(step, int):
                self.last_step = max(self.last_step, step)
            nll = row.get("nll")
            if row.get("split") == "val" and isinstance(nll, (int, float)) and (self.best_nll is None or nll < self.best_nll):
                self.best_nll, self.best_bpd = float(nll), row.get("bpd")
        return self


_summaries: dict[Path, _Summary] = {}
_summaries_lock = threading.Lock()  # scans run in worker threads


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path) or {}


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.toml as plain tables ({} when unreadable); no validation, no models."""
    try:
        return tomllib.loads((Path(run_dir) / "config.toml").read_text())
    except (OSError, ValueError):
        return {}


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's status.json ({} when missing or being replaced)."""
    return _read_json(Path(run_dir) / "status.json")


def _metrics_summary(path: Path) -> _Summary:
    """Incremental: a rescan reads only the rows appended since the last one."""
    with _summaries_lock:
        summary = _summaries.get(path)
        if summary is None:
            summary = _summaries[path] = _Summary(path)
        return summary.update()


def total_steps(config: dict[str, Any]) -> int | None:
    steps = config.get("train", {}).get("max_steps")
    return steps if isinstance(steps, int) and steps > 0 else None


def nll_kind(evaluation: dict[str, Any]) -> str:
    """What eval.json's test NLL is: "exact", or an upper bound (from the model's lower bound on
    log p(x)) and which, and whether it is of a density rather than a probability mass."""
    if evaluation.get("likelihood") == "lower bound":
        kind = f"upper bound ({evaluation.get('bound') or 'from a lower bound on log p(x)'})"
    else:
        kind = "exact"
    if evaluation.get("density"):
        kind += "; of a density (mse/mae): not comparable with discrete models"
    return kind


def primary_fid(evaluation: dict[str, Any]) -> float | None:
    for extractor in ("classifier", "inception"):
        record = evaluation.get(extractor)
        if isinstance(record, dict) and isinstance(record.get("fid"), (int, float)):
            return float(record["fid"])
    return None


def read_run(path: str | Path) -> RunRow | None:
    """One run folder's row, or None if ``path`` is not a run folder."""
    path = Path(path)
    if not (path / "config.toml").is_file():
        return None
    config = read_config(path)
    status = _read_json(path / "status.json")
    evaluation = _read_json(path / "eval.json")
    summary = _metrics_summary(path / "metrics.jsonl")
    # status.json is written at checkpoints; the metrics say how far the run got since.
    step = max(status.get("step") if isinstance(status.get("step"), int) else 0, summary.last_step)
    bpd = evaluation.get("test_bpd") if isinstance(evaluation.get("test_bpd"), (int, float)) else summary.best_bpd
    data = config.get("data", {})
    return RunRow(path=path, name=path.name, model=str(config.get("model", {}).get("name", "?")),
                  dataset=str(data.get("dataset", "?")), binarize=str(data.get("binarize", "none")),
                  state=str(status.get("state", "unknown")), step=step, total=total_steps(config),
                  best_val_nll=summary.best_nll, bpd=bpd, fid=primary_fid(evaluation),
                  error=status.get("error"))


def run_folders(runs_dir: str | Path) -> list[Path]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / "config.toml").is_file()), key=lambda p: p.name)


def scan_runs(runs_dir: str | Path) -> list[RunRow]:
    """Every run folder directly under ``runs_dir``, by name."""
    return [row for row in (read_run(p) for p in run_folders(runs_dir)) if row is not None]


def has_checkpoint(run_dir: str | Path | None) -> bool:
    """Whether the run folder has a checkpoint (last.pt or best.pt) to sample, evaluate or resume from."""
    if not run_dir:
        return False
    folder = Path(run_dir) / "checkpoints"
    return (folder / "last.pt").exists() or (folder / "best.pt").exists()


def latest_samples(run_dir: str | Path) -> tuple[Path | None, Path | None]:
    """The newest samples/step-N.png and samples/recon-step-N.png (None where there is none)."""
    best: dict[bool, tuple[int, Path]] = {}
    folder = Path(run_dir) / "samples"
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SAMPLE.match(p.name)
            if m:
                recon, step = bool(m.group(1)), int(m.group(2))
                if recon not in best or step > best[recon][0]:
                    best[recon] = (step, p)
    return (best[False][1] if False in best else None, best[True][1] if True in best else None)


# -- evaluations ---------------------------------------------------------------------------------
#: The FID/IS panel's columns: (key in an eval.json record, heading).
EVAL_METRICS = [("fid", "FID"), ("kid_mean", "KID"), ("is_mean", "IS"), ("precision", "prec."),
                ("recall", "recall"), ("conditional_accuracy", "cond.acc"), ("test_nll", "NLL"),
                ("test_bpd", "bits/dim")]


@dataclass
class EvalRow:
    path: Path
    name: str
    model: str
    dataset: str
    binarize: str
    extractor: str            # "classifier", "inception", or "" when only the test NLL exists
    extractor_label: str
    values: dict[str, float | None] = field(default_factory=dict)
    levels: int = 256


def eval_rows(runs_dir: str | Path) -> list[EvalRow]:
    """A row per (run, extractor) of each eval.json; a run with only a test NLL gets one row too;
    a run never evaluated gets a row with no values, so it can be selected and evaluated."""
    out = []
    for path in run_folders(runs_dir):
        config = read_config(path)
        data = config.get("data", {})
        base = dict(path=path, name=path.name, model=str(config.get("model", {}).get("name", "?")),
                    dataset=str(data.get("dataset", "?")), binarize=str(data.get("binarize", "none")),
                    levels=data.get("levels", 256) if isinstance(data.get("levels", 256), int) else 256)
        evaluation = _read_json(path / "eval.json")
        likelihood = {k: evaluation.get(k) for k in ("test_nll", "test_bpd")}
        records = [(k, v) for k, v in evaluation.items() if isinstance(v, dict) and "fid" in v]
        if not records:
            out.append(EvalRow(**base, extractor="", extractor_label="", values=dict(likelihood)))
        for extractor, record in sorted(records):
            values = {key: record.get(key) for key, _ in EVAL_METRICS if key in record}
            out.append(EvalRow(**base, extractor=extractor, extractor_label=str(record.get("extractor_label", extractor)),
                               values={**values, **likelihood}))
    return out
