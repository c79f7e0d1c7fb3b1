"""``genwb export wandb``: a run folder as an offline Weights & Biases run.

Each run folder becomes one offline W&B run (``<out>/wandb/offline-run-*``, by default inside the
run folder): the resolved config, every scalar of metrics.jsonl at its step under the same tags
as TensorBoard's ("train/loss", "val/nll"), the sample grids and reconstruction strips as images
at their steps, and the final figures (best validation, test, each evaluation's FID, IS, ...) as
the run's summary. It never goes online: WANDB_MODE=offline is forced whatever the environment
says; ``wandb sync`` uploads it later, and ``wandb leet`` reads it where it lies.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench import runlog
from workbench.errors import UserError
from workbench.fileio import read_json

INSTALL = "pip install 'genwb[wandb]'"


def _wandb():
    os.environ["WANDB_MODE"] = "offline"  # before wandb reads its settings
    os.environ["WANDB_SILENT"] = "true"
    try:
        import wandb
    except ImportError:
        raise UserError(f"genwb export wandb needs the wandb package, which is not installed: {INSTALL}") from None
    return wandb


def export_run(wandb, run_dir: Path, out: Path, project: str) -> Path:
    """Write one offline run; returns its folder."""
    config = runlog.read_config(run_dir)
    rows = runlog.read_rows(run_dir)
    history: dict[int, dict[str, Any]] = {}
    for row in runlog.logged_rows(rows):
        history.setdefault(row.step, {}).update(row.scalars)
    for step, tag, path in runlog.sample_images(run_dir):
        history.setdefault(step, {})[tag] = wandb.Image(str(path), caption=f"{tag} at step {step}")
    model = config.get("model", {})
    settings = wandb.Settings(console="off", save_code=False, disable_git=True, x_disable_stats=True,
                              x_save_requirements=False, silent=True)
    out.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=run_dir.resolve().name, dir=str(out), config=config, mode="offline",
                     group=str(model.get("name", "")) or None, job_type="train", settings=settings,
                     tags=[str(v) for v in (model.get("name"), config.get("data", {}).get("dataset")) if v])
    try:
        for step in sorted(history):  # W&B takes steps in increasing order only
            run.log(history[step], step=step)
        run.summary.update({**runlog.final_metrics(rows, runlog.read_eval(run_dir)),
                            "steps": runlog.last_step(run_dir, rows),
                            "state": (read_json(run_dir / "status.json") or {}).get("state", "unknown")})
        folder = Path(run.dir).parent  # wandb/offline-run-<time>-<id>/files -> the run's folder
    finally:
        run.finish()
    return folder


def export_runs(run_dirs: list[str | Path], out: str | Path | None = None, project: str = "genwb"):
    """Each run folder as an offline W&B run, under ``out`` (default: the run folder). Yields
    (run folder, offline run folder)."""
    paths = [runlog.check_run_folder(p) for p in run_dirs]
    wandb = _wandb()
    try:
        for path in paths:
            try:
                if out:
                    yield path, export_run(wandb, path, Path(out), project)
                    continue
                from workbench.runs import writing  # a write into the run folder: under its writer lease

                with writing(path, "exported", "genwb export wandb", advice="export it with --out DIR, or once it has stopped"):
                    folder = export_run(wandb, path, path, project)
                yield path, folder
            except OSError as e:
                raise UserError(f"{path}: cannot write the W&B run ({e.strerror or e})", exit_code=1) from None
    finally:
        wandb.teardown()  # stops wandb's service process
