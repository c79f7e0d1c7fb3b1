"""A run folder read as a log, for the tools outside genwb (TensorBoard, W&B) and for comparing
runs: the scalars of metrics.jsonl under tags "<split>/<key>" (``train/loss``, ``val/nll``), the
sample grids and reconstruction strips by step, the resolved config as "section.key" names, and
the final figures (best validation, test, and each evaluation's FID, IS, ...).

It reads files only: no torch, no Textual, so ``genwb export`` and ``genwb diff`` start at once.
eval.json is read defensively: its flat ``test_nll``/``test_bpd`` and any nested dict holding
``fid`` or ``is_mean`` (an evaluation, however the evaluations are keyed) count.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import UserError
from workbench.fileio import read_json
from workbench.runindex import MetricsTail

#: Keys of a metrics row that are not scalars to log ("time" is a row's wall-clock time).
_NOT_SCALARS = {"step", "split", "time"}
#: The figures of an evaluation record worth logging, in the order they are shown.
EVALUATION_METRICS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "conditional_accuracy")
_SAMPLE = re.compile(r"^(recon-)?step-(\d+)\.png$")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class LoggedRow:
    step: int
    scalars: dict[str, float]   # tag -> value, e.g. {"train/loss": 0.7, "train/lr": 0.001}
    time: float | None          # the row's wall-clock time, where the row records one


def row_scalars(row: dict[str, Any]) -> dict[str, float]:
    """Every numeric value of a metrics row (or of a Step/Evaluated event made into one) as a
    tagged scalar: ``{"split": "train", "loss": 0.7}`` -> ``{"train/loss": 0.7}``."""
    split = row.get("split", "train")
    return {f"{split}/{key}": float(value) for key, value in row.items()
            if key not in _NOT_SCALARS and _number(value)}


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl's whole rows with an integer step, in file order ([] if there is none)."""
    rows = MetricsTail(Path(run_dir) / "metrics.jsonl").read_new()
    return [r for r in rows if isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)]


def logged_rows(rows: list[dict[str, Any]]) -> list[LoggedRow]:
    out = []
    for row in rows:
        scalars = row_scalars(row)
        if scalars:
            out.append(LoggedRow(row["step"], scalars, row["time"] if _number(row.get("time")) else None))
    return out


def sample_images(run_dir: str | Path) -> list[tuple[int, str, Path]]:
    """(step, tag, path) of every samples/step-N.png ("samples") and recon-step-N.png ("recon"),
    by step, a step's reconstructions before its samples (the Trainer's order)."""
    folder = Path(run_dir) / "samples"
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            m = _SAMPLE.match(path.name)
            if m:
                found.append((int(m.group(2)), "recon" if m.group(1) else "samples", path))
    return sorted(found, key=lambda item: (item[0], item[1] != "recon"))


def check_run_folder(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not (path / "config.toml").is_file():
        raise UserError(f"{path}: not a run folder (no config.toml); run folders live under runs/")
    return path


def read_config(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The run's config.toml as tables, with the defaults of tables and keys it predates (a run
    trained before [log] existed reads as log.tensorboard = false)."""
    from workbench.config import RunConfig

    path = check_run_folder(run_dir) / "config.toml"
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({type(e).__name__}); put back the config the run was trained with") from None
    tables = RunConfig().to_dict()  # the tables in their usual order
    for name, values in raw.items():
        if isinstance(values, dict):
            tables.setdefault(name, {}).update(values)
    return tables


def flat_config(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"model": {"hidden": [32]}}`` -> ``{"model.hidden": [32]}``."""
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def read_eval(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / "eval.json") or {}


def evaluations(evaluation: dict[str, Any], depth: int = 3) -> dict[str, dict[str, float]]:
    """Each evaluation record in eval.json (a dict with a numeric ``fid`` or ``is_mean``, at
    any nesting up to ``depth``), named by its keys joined with "/" ("classifier", or e.g.
    "classifier/10000" where evaluations are keyed by extractor and n): its logged figures."""
    found: dict[str, dict[str, float]] = {}

    def walk(node: dict, prefix: str, level: int) -> None:
        for key, value in node.items():
            if not isinstance(value, dict):
                continue
            name = f"{prefix}{key}"
            if _number(value.get("fid")) or _number(value.get("is_mean")):
                found[name] = {k: float(value[k]) for k in EVALUATION_METRICS if _number(value.get(k))}
            elif level > 1:
                walk(value, name + "/", level - 1)

    walk(evaluation, "", depth)
    return found


def best_validation(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The validation row with the lowest nll: {"nll": ..., "bpd": ..., "step": ...} ({} if none)."""
    best: dict[str, Any] = {}
    for row in rows:
        if row.get("split") == "val" and _number(row.get("nll")) and (not best or row["nll"] < best["nll"]):
            best = row
    return {k: float(best[k]) for k in ("nll", "bpd", "step") if _number(best.get(k))}


def final_metrics(rows: list[dict[str, Any]], evaluation: dict[str, Any]) -> dict[str, float]:
    """A run's final figures as tags: the best validation ("val/best_nll", "val/best_bpd"), the
    test likelihood of eval.json ("test/nll", "test/bpd") and every evaluation's figures
    ("eval/classifier/fid", ...). TensorBoard's hparams and W&B's summary show these."""
    out = {}
    best = best_validation(rows)
    for key in ("nll", "bpd"):
        if key in best:
            out[f"val/best_{key}"] = best[key]
    for key in ("nll", "bpd"):
        if _number(evaluation.get(f"test_{key}")):
            out[f"test/{key}"] = float(evaluation[f"test_{key}"])
    for name, figures in evaluations(evaluation).items():
        out.update({f"eval/{name}/{k}": v for k, v in figures.items()})
    return out


def last_step(run_dir: str | Path, rows: list[dict[str, Any]]) -> int:
    """The run's last step: status.json's, else its last logged row's (0 for neither)."""
    status = read_json(Path(run_dir) / "status.json") or {}
    step = status.get("step")
    logged = max((r["step"] for r in rows), default=0)
    return max(step, logged) if isinstance(step, int) and not isinstance(step, bool) else logged
