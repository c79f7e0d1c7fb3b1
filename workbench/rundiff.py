"""How run folders differ: the config keys whose values differ, and the final figures side by
side. ``genwb diff`` prints it; the runs browser shows the same data for marked runs.

    d = diff_runs(["runs/made-a", "runs/made-b"])
    d.names                   # ["made-a", "made-b"]
    d.config                  # [ConfigRow("model.hidden", [[500], [1000]]), ConfigRow("train.lr", [0.001, 0.003])]
    d.metrics                 # [MetricRow("best val NLL (nats)", [88.1, 87.9], better="lower"), ...]
    row.text(i)               # the i-th run's value as shown ("—" where the run has none)
    row.best                  # MetricRow: indices of the best values
    diff_tables(d)            # two rich Tables: the config keys that differ, the final metrics

It reads files only (no torch), through ``workbench.runlog``.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import runlog
from workbench.errors import UserError
from workbench.fileio import read_json
from workbench.runindex import nll_kind
from workbench.runs import live_state

NONE = "—"
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")  # runs/<name>-<YYYYmmdd-HHMMSS>[-N]


@dataclass(frozen=True)
class ConfigRow:
    key: str                      # "section.key"
    values: list[Any]             # per run; None where the run's config has no such key

    def text(self, i: int) -> str:
        from workbench.config import toml_value

        value = self.values[i]
        if value is None:
            return NONE
        try:
            return toml_value(value)
        except TypeError:
            return str(value)


@dataclass(frozen=True)
class MetricRow:
    label: str
    values: list[float | int | str | None]  # per run; None where the run has no such figure
    better: str | None = None      # "lower" or "higher": which value is best; None: not a score
    format: str = "{:.3f}"         # how a number is shown; "duration" for seconds as h:mm:ss

    def text(self, i: int) -> str:
        value = self.values[i]
        if value is None:
            return NONE
        if isinstance(value, str):
            return value
        if self.format == "duration":
            minutes, seconds = divmod(int(round(value)), 60)
            return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
        return self.format.format(value)

    @property
    def best(self) -> set[int]:
        numbers = [(v, i) for i, v in enumerate(self.values) if isinstance(v, (int, float))]
        if self.better is None or len(numbers) < 2:
            return set()
        target = (min if self.better == "lower" else max)(v for v, _ in numbers)
        return {i for v, i in numbers if v == target}


@dataclass(frozen=True)
class RunDiff:
    paths: list[Path]
    names: list[str]
    config: list[ConfigRow]       # only the keys whose values differ
    metrics: list[MetricRow]


def config_differences(configs: list[dict[str, dict[str, Any]]]) -> list[ConfigRow]:
    """The "section.key" names whose values are not the same in every config, in table order."""
    flats = [runlog.flat_config(c) for c in configs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    rows = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append(ConfigRow(key, values))
    return rows


def wall_time(run_dir: Path) -> float | None:
    """Seconds from the run folder's creation (the stamp in its name) to its status's last
    update: pauses and the time between a stop and its resume included."""
    m = _STAMP.search(run_dir.resolve().name)
    updated = (read_json(run_dir / "status.json") or {}).get("updated")
    if not m or not isinstance(updated, str):
        return None
    try:
        seconds = (dt.datetime.fromisoformat(updated) - dt.datetime.strptime(m.group(1), "%Y%m%d-%H%M%S")).total_seconds()
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def training_time(rows: list[dict[str, Any]], batch_size: int) -> float | None:
    """Seconds spent in training steps, from the train rows' images/s over their intervals
    (validation, sampling and checkpoints left out, as images/s leaves them out)."""
    total, previous, seen = 0.0, 0, False
    for row in rows:
        if row.get("split", "train") != "train":
            continue
        speed = row.get("images_per_s")
        if isinstance(speed, (int, float)) and speed > 0 and row["step"] > previous:
            total += (row["step"] - previous) * batch_size / speed
            seen = True
        previous = row["step"]
    return total if seen else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def diff_runs(run_dirs: list[str | Path]) -> RunDiff:
    """The diff of two or more run folders; UserError if one is not a run folder."""
    if len(run_dirs) < 2:
        raise UserError("give two or more run folders to compare")
    paths = [runlog.check_run_folder(p) for p in run_dirs]
    configs = [runlog.read_config(p) for p in paths]
    rows = [runlog.read_rows(p) for p in paths]
    evals = [runlog.read_eval(p) for p in paths]
    best = [runlog.best_validation(r) for r in rows]
    metrics = [
        MetricRow("best val NLL (nats)", [b.get("nll") for b in best], "lower"),
        MetricRow("best val bits/dim", [b.get("bpd") for b in best], "lower", "{:.4f}"),
        MetricRow("test NLL (nats)", [_number(e.get("test_nll")) for e in evals], "lower"),
        MetricRow("test bits/dim", [_number(e.get("test_bpd")) for e in evals], "lower", "{:.4f}"),
        MetricRow("test NLL is", [nll_kind(e).split(";")[0] if "test_nll" in e else None for e in evals]),
    ]
    records = [runlog.evaluations(e) for e in evals]
    for name in dict.fromkeys(n for r in records for n in r):
        metrics.append(MetricRow(f"FID ({name})", [r.get(name, {}).get("fid") for r in records], "lower", "{:.2f}"))
        metrics.append(MetricRow(f"IS ({name})", [r.get(name, {}).get("is_mean") for r in records], "higher", "{:.2f}"))
    metrics += [
        MetricRow("steps", [runlog.last_step(p, r) for p, r in zip(paths, rows)], format="{:,}"),
        MetricRow("state", [live_state(p)[0] for p in paths]),  # "interrupted" for a run whose process died
        MetricRow("wall time", [wall_time(p) for p in paths], format="duration"),
        MetricRow("training time", [training_time(r, c["data"].get("batch_size", 0)) for r, c in zip(rows, configs)],
                  format="duration"),
    ]
    names = [p.resolve().name for p in paths]
    return RunDiff(paths, names, config_differences(configs), metrics)


def diff_tables(diff: RunDiff):
    """Two rich Tables: the config keys that differ (or a note that none does), the final metrics
    with each row's best value in bold."""
    from rich.table import Table
    from rich.text import Text  # cells as Text: a value like [32] is not markup

    runs = range(len(diff.names))
    config = Table("config key", *diff.names, title="config keys that differ", title_justify="left")
    for row in diff.config:
        config.add_row(Text(row.key), *(Text(row.text(i)) for i in runs))
    if not diff.config:
        config.add_row("(none: the configs are the same)", *[""] * len(diff.names))
    metrics = Table("", *diff.names, title="final metrics", title_justify="left")
    for row in diff.metrics:
        metrics.add_row(Text(row.label), *(Text(row.text(i), style="bold" if i in row.best else "") for i in runs))
    return config, metrics
