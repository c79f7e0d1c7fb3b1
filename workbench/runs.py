"""Run folders: everything needed to resume, sample, evaluate or compare a run.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      config.toml        the resolved config
      metrics.jsonl      one JSON object per logged step; append-only
      samples/step-<N>.png
      checkpoints/last.pt, best.pt
      status.json        state, step, last error
      eval.json          test NLL, bits/dim, FID, ...

Checkpoints, status and eval files are written to a temporary file, flushed, fsynced and
renamed, so a crash leaves either the old file or the new one. Checkpoints load with
``weights_only=True``.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import torch

from workbench.config import RunConfig, load_config, to_toml
from workbench.errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


class Run:
    def __init__(self, path: Path, config: RunConfig):
        self.path = Path(path)
        self.config = config

    # -- creating and opening ----------------------------------------------------------------
    @classmethod
    def create(cls, config: RunConfig, out_dir: str | Path | None = None) -> "Run":
        # Pin run references ("runs/vqvae" -> the run folder it means today) so that a resume
        # next week uses the same upstream run.
        for key, value in config.model.hparams.items():
            if key.endswith("_run"):
                config.model.hparams[key] = str(latest_run(value))
        root = Path(out_dir or config.run.out)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"{config.run.name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{config.run.name}-{stamp}-{suffix}"
        (path / "checkpoints").mkdir(parents=True)
        (path / "samples").mkdir()
        run = cls(path, config)
        run.save_config()
        run.write_status("created", 0)
        return run

    def save_config(self) -> None:
        atomic_write_bytes(self.path / "config.toml", to_toml(self.config).encode())

    # -- files ---------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def checkpoint_path(self, which: str) -> Path:
        return self.path / "checkpoints" / f"{which}.pt"

    def sample_path(self, step: int) -> Path:
        return self.path / "samples" / f"step-{step}.png"

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: the only possible damage
                continue
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after ``step`` (they are redone on resume), atomically."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def write_status(self, state: str, step: int, error: str | None = None) -> None:
        atomic_write_json(self.path / "status.json", {"state": state, "step": step, "error": error,
                                                      "updated": dt.datetime.now().isoformat(timespec="seconds")})

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {"state": "unknown", "step": 0, "error": None}

    def read_eval(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "eval.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def update_eval(self, values: dict[str, Any]) -> None:
        atomic_write_json(self.path / "eval.json", {**self.read_eval(), **values})

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, which: str, state: dict[str, Any]) -> Path:
        import io

        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self.checkpoint_path(which)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def load_checkpoint(self, which: str = "last", map_location="cpu") -> dict[str, Any]:
        path = self.checkpoint_path(which)
        if not path.exists():
            raise UserError(f"{path}: no such checkpoint; the run wrote none yet (see {self.path / 'status.json'})")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated, corrupt, or not a checkpoint at all
            other = "best" if which == "last" else "last"
            raise UserError(f"{path}: checkpoint is corrupt or unreadable ({type(e).__name__}); "
                            f"delete it and use checkpoints/{other}.pt, or start the run again") from None

    def load_model(self, which: str = "best", device="cpu"):
        """The run's model with the weights of checkpoint ``which`` ("last" if there is no best)."""
        if which == "best" and not self.checkpoint_path("best").exists():
            which = "last"
        state = self.load_checkpoint(which, map_location=device)
        model = build_model(self.config).to(device)
        model.load_state_dict(state["model"])
        return model.eval()


def open_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "config.toml").is_file():
        raise UserError(f"{path}: not a run folder (no config.toml); run folders live under runs/")
    return Run(path, load_config(path / "config.toml"))


def latest_run(prefix: str | Path) -> Path:
    """``prefix`` itself if it is a run folder, else the newest ``<prefix>-*`` run with a checkpoint."""
    prefix = Path(prefix)
    if (prefix / "config.toml").is_file():
        return prefix
    candidates = sorted(p for p in prefix.parent.glob(f"{prefix.name}-*")
                        if (p / "checkpoints" / "best.pt").exists() or (p / "checkpoints" / "last.pt").exists())
    if not candidates:
        raise UserError(f"{prefix}: no run folder, and no run named {prefix.name}-* with a checkpoint in {prefix.parent}; train it first")
    return candidates[-1]


def build_model(config: RunConfig):
    """Build the model a config describes. A hyper-parameter ``<x>_run = "runs/..."`` names a
    finished run whose best model is passed in as ``<x>`` (e.g. the VQ-VAE under a prior)."""
    import models
    from workbench.data import dataset_info

    info = dataset_info(config.data.dataset)
    hparams = dict(config.model.hparams)
    for key in [k for k in hparams if k.endswith("_run")]:
        hparams[key[:-4]] = open_run(latest_run(hparams.pop(key))).load_model("best")
    try:
        return models.build(config.model.name, image_shape=info.image_shape, levels=config.data.levels,
                            num_classes=info.num_classes if config.model.conditional else None, **hparams)
    except ValueError as e:
        raise UserError(f"[model] {e}") from None
