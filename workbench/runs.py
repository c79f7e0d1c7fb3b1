"""Run folders: everything needed to resume, sample, evaluate or compare a run.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      config.toml        the resolved config
      metrics.jsonl      one JSON object per logged step; append-only
      samples/step-<N>.png
      checkpoints/last.pt, best.pt
      status.json        state, step, last error
      eval.json          test NLL, bits/dim, FID, ...
      writer.lock        who holds the run's writer lease (pid, host, since, what for)

One process writes a run folder at a time: training (``genwb run``, a resume, a queue job, rank 0
of a data-parallel run), an evaluation writing eval.json and sampling into samples/ each hold the
run's writer lease (``writing``; ``workbench.lease``) for as long as they write. A second writer
is refused before it writes anything, in one line naming the holder. Readers never take it.

Checkpoints, status and eval files are written to a temporary file, flushed, fsynced and
renamed, so a crash leaves either the old file or the new one (and a failed write, e.g. on a
full disk, leaves no temporary file). Checkpoints load with ``weights_only=True``.

``prepare(config)`` is the one validation pass before a run folder exists: the model is built
(on the meta device where the model allows it) and the dataset is located and its split sizes
checked, so bad input never leaves a folder behind.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import gzip
import json
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

from workbench.config import RunConfig, load_config, to_toml
from workbench.errors import UserError, one_line, os_error_text
from workbench.fileio import append_bytes, atomic_write_bytes, read_bytes, read_json
from workbench.lease import Busy, Holder, Lease, held_here, holder

WRITER_FILE = "writer.lock"  # the run's writer lease: who trains, evaluates or samples into it now


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


@contextlib.contextmanager
def writing(run_dir: str | Path, purpose: str = "trained", label: str | None = None,
            advice: str = "wait for it or stop it first") -> Iterator[Lease]:
    """Hold ``run_dir``'s writer lease while the block runs; ``Busy`` (exit code 2, one line that
    names the holder) if another process or another thread of this one holds it. Re-entrant in
    the thread that holds it (the queue's worker takes it, then the Trainer it runs)."""
    mine = held_here(run_dir)
    if mine is not None:
        if mine.owner_thread != threading.get_ident():
            raise Busy(run_dir, mine.holder(), advice)
        yield mine
        return
    lease = Lease(run_dir, WRITER_FILE, purpose, label)
    if not lease.take():
        raise Busy(run_dir, holder(run_dir, WRITER_FILE), advice)
    try:
        yield lease
    finally:
        lease.release()


@contextlib.contextmanager
def writing_beside(run_dir: str | Path, purpose: str = "sampled", label: str | None = None,
                   advice: str = "wait for it or stop it first") -> Iterator[None]:
    """A short write into a run folder beside its training (a sampling session's picture): free
    while this process holds the lease in any thread, else the lease is held for the write."""
    if held_here(run_dir) is not None:
        yield
        return
    with writing(run_dir, purpose, label, advice):
        yield


def run_holder(run_dir: str | Path) -> Holder | None:
    """Who holds the run's writer lease now (this process included), or None. Never blocks."""
    return holder(run_dir, WRITER_FILE)


def live_state(run_dir: str | Path, status: dict | None = None) -> tuple[str, Holder | None]:
    """The run's state as a reader should show it: status.json's, except that a run whose status
    says it is running while nobody holds its lease was stopped by its process dying
    ("interrupted"); and the holder of its lease, if any."""
    status = status if status is not None else (read_json(Path(run_dir) / "status.json") or {})
    state = status.get("state") if isinstance(status.get("state"), str) else "unknown"
    who = run_holder(run_dir)
    if state in ("running", "created") and who is None:
        state = "interrupted" if state == "running" else state
    return state, who


def safe_name(name: str) -> str:
    """``run.name`` (or a job's name) as one harmless path component: letters, digits, ``.``,
    ``_`` and ``-`` only, no ``..`` anywhere, no leading dot or dash, at most 80 characters."""
    safe = re.sub(r"\.{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)))
    safe = re.sub(r"-{2,}", "-", safe).strip(".-")[:80].strip(".-")
    return safe or "run"


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
        name = safe_name(config.run.name)
        config.run.out, config.run.name = str(root), name  # what config.toml records is what was used
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"{name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{name}-{stamp}-{suffix}"
        try:
            if root.exists() and not root.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder")
            (path / "checkpoints").mkdir(parents=True)
        except OSError as e:
            raise UserError(f"{root}: cannot make a run folder there ({os_error_text(e)}); give another --out") from None
        try:
            (path / "samples").mkdir()
            run = cls(path, config)
            run.save_config()
            run.write_status("created", 0)
        except OSError as e:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
            raise UserError(f"{path}: cannot write the run folder ({os_error_text(e)})", exit_code=1) from None
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
        append_bytes(self.metrics_path, (json.dumps(row) + "\n").encode())  # no half row: a resume redoes this step

    def read_metrics(self) -> list[dict[str, Any]]:
        try:
            text = read_bytes(self.metrics_path).decode(errors="replace")
        except FileNotFoundError:
            return []
        rows = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if isinstance(row, dict) and isinstance(row.get("step", 0), int):  # a hand-edited line is skipped too
                rows.append(row)
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after ``step`` (they are redone on resume), atomically."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        try:
            atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        except OSError as e:
            raise UserError(f"{os_error_text(e)} rewriting {self.metrics_path} to resume at step {step}; "
                            f"free space and resume again", exit_code=1) from None

    def write_status(self, state: str, step: int, error: str | None = None) -> None:
        atomic_write_json(self.path / "status.json", {"state": state, "step": step, "error": error,
                                                      "updated": dt.datetime.now().isoformat(timespec="seconds")})

    def status(self) -> dict[str, Any]:
        return read_json(self.path / "status.json") or {"state": "unknown", "step": 0, "error": None}

    def read_eval(self) -> dict[str, Any]:
        return read_json(self.path / "eval.json", limit=64 << 20) or {}

    def update_eval(self, values: dict[str, Any]) -> None:
        atomic_write_json(self.path / "eval.json", {**self.read_eval(), **values})

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, which: str, state: dict[str, Any]) -> Path:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self.checkpoint_path(which)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def resume_checkpoint(self, which: str = "last") -> str | None:
        """The checkpoint a resume from ``which`` starts from: "last" falls back to "best" (a run
        stopped before its first last.pt, after a validation); None where there is none (step 0)."""
        if which == "last" and not self.checkpoint_path("last").exists():
            which = "best"
        return which if self.checkpoint_path(which).exists() else None

    def no_checkpoint(self, otherwise: str) -> str:
        """What to say of a run with no checkpoint to read: to wait, while it is being trained."""
        who = run_holder(self.path)
        if who is None or who.purpose != "trained":
            return otherwise
        every = self.config.train.checkpoint_every if self.config is not None else None
        return (f"{self.path}: being trained by {who.describe()} and has written no checkpoint yet; wait for its "
                f"first checkpoint" + (f" (every {every} steps)" if every else ""))

    def load_checkpoint(self, which: str = "last", map_location="cpu") -> dict[str, Any]:
        """A checkpoint's dict; UserError if it is missing, unreadable or not a genwb checkpoint."""
        import torch

        path = self.checkpoint_path(which)
        if not path.exists():
            raise UserError(self.no_checkpoint(f"{path}: no such checkpoint; the run wrote none yet "
                                               f"(see {self.path / 'status.json'})"))
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
            problem = None if isinstance(state, dict) and isinstance(state.get("model"), dict) else "not a genwb checkpoint"
        except Exception as e:  # truncated, corrupt, or pickled code that weights_only refuses
            problem = type(e).__name__
        if problem:
            other = "best" if which == "last" else "last"
            advice = (f"use checkpoints/{other}.pt instead: pass --checkpoint {other}, or delete this file"
                      if self.checkpoint_path(other).exists()
                      else f"delete it and start the run again (genwb run --resume {self.path} starts from step 0)")
            raise UserError(f"{path}: checkpoint is corrupt or unreadable ({problem}); {advice}")
        return state

    def load_model(self, which: str = "best", device="cpu"):
        """The run's model with the weights of checkpoint ``which`` ("last" if there is no best);
        UserError if the checkpoint does not fit the model that config.toml describes."""
        if which == "best" and not self.checkpoint_path("best").exists():
            which = "last"
        state = self.load_checkpoint(which, map_location=device)
        model = build_model(self.config).to(device)
        load_weights(model, state, self.checkpoint_path(which))
        model.checkpoint_step = state.get("step") if isinstance(state, dict) else None  # what an evaluation is of
        return model.eval()


def open_run(path: str | Path, check_model: bool = True) -> Run:
    """The run folder at ``path``; ``check_model=False`` reads its config without building the
    model's registry (no torch import), for what only needs the run's settings."""
    path = Path(path)
    if not (path / "config.toml").is_file():
        raise UserError(f"{path}: not a run folder (no config.toml); run folders live under runs/")
    return Run(path, load_config(path / "config.toml", check_model=check_model))


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


def load_weights(model, state: dict[str, Any], path: Path, advice: str | None = None) -> None:
    """``model.load_state_dict(state["model"])``, with a mismatch (missing keys, wrong shapes, a
    config edited to another model) as a one-line UserError."""
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        detail = one_line(e)
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        advice = advice or (f"does not fit the model in {path.parent.parent / 'config.toml'}; was config.toml "
                            f"edited? put back the config the run was trained with")
        raise UserError(f"{path}: {advice} ({detail})") from None


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
    except TypeError as e:  # a hyper-parameter of a type the model cannot use
        raise UserError(f"[model] {config.model.name}: {e}") from None


def _build_checked(config: RunConfig):
    """The model on the meta device (no memory, no time) where the model allows it; else at its
    real size. Either way a model that cannot be built is a UserError."""
    import torch

    try:
        with torch.device("meta"):
            return build_model(config)
    except Exception:  # a model that computes on its tensors while being built (e.g. MADE's masks):
        pass           # the real build below gives the error that counts
    try:
        return build_model(config)
    except UserError:
        raise
    except Exception as e:
        detail = one_line(e, 160)
        raise UserError(f"[model] cannot build {config.model.name!r} with these hyper-parameters ({type(e).__name__}: {detail})") from None


def _train_size(data) -> int:
    """Images in the dataset's training split, from the file headers (the data itself is read
    once, by the Trainer); finding or downloading the dataset raises UserError if it is missing."""
    from workbench.data import IDX_FILES, _idx_path, find_dataset, load_split

    folder = find_dataset(data.dataset, data.root or None)
    if folder is None:
        return len(load_split(data.dataset, "train", data.root or None, data.download)[1])
    if data.dataset == "cifar10":
        return 50000
    path = _idx_path(folder, IDX_FILES["train"][1])
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            header = f.read(8)
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}; delete the file and fetch the dataset again") from None
    if len(header) < 8:
        raise UserError(f"cannot read {path}: too short; delete the file and fetch the dataset again")
    return int.from_bytes(header[4:8], "big")


def prepare(config: RunConfig):
    """The one validation pass before a run folder exists: the config can be written, the model
    builds, the dataset is there and ``val_size`` leaves images to train on. Raises UserError;
    returns the model it built (on the meta device where the model allows it)."""
    try:
        to_toml(config)
    except TypeError as e:
        raise UserError(f"[model] {e}; use numbers, strings, booleans or lists") from None
    if config.log.tensorboard:
        from workbench.tensorboard import require

        require()
    n = _train_size(config.data)
    if config.data.val_size >= n:
        raise UserError(f"[data] val_size = {config.data.val_size} leaves no training images "
                        f"({n} in {config.data.dataset}'s training split); lower it")
    return _build_checked(config)


def check_resume(run: Run, config: RunConfig, which: str = "last") -> None:
    """Will ``config`` (the run's config with new overrides) resume from checkpoint ``which``?
    Checked before config.toml is rewritten, so a mismatch leaves the run as it was."""
    model = prepare(config)
    which = run.resume_checkpoint(which)  # where the Trainer resumes from
    if which is None:
        return
    state = run.load_checkpoint(which)
    with warnings.catch_warnings():  # loading into a meta model checks keys and shapes, copies nothing
        warnings.simplefilter("ignore")
        load_weights(model, state, run.checkpoint_path(which),
                     "the overrides do not fit this checkpoint, so config.toml is left unchanged; start a new run to change the model")
