"""A queue job: its record in queue.json, read back field by field without trusting it, and the
snapshot (``JobInfo``) the CLI and the app show.

``Job.from_record`` checks every field's type and range and raises ``BadRecord`` naming the
first bad field, so that a hand-edited or damaged record is reported in one line and kept as it
is in the file, never dropped or rewritten from a guess. Run folders are recorded relative to
the runs folder (the name of a folder inside it), so a renamed runs folder keeps its jobs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "waiting", "running", "paused", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
RESUMABLE = frozenset({"paused", "failed", "cancelled"})
STOPS = ("pause", "cancel", "shutdown")
STOP_STATES = {"pause": "paused", "cancel": "cancelled", "shutdown": "interrupted"}  # status.json's word
JOB_ID = re.compile(r"j[1-9][0-9]{0,8}")


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str                  # "train" | "eval"
    name: str
    model: str
    dataset: str
    device: str                # requested ("auto", "cpu", ...) until it runs, then the slot's device
    state: str
    step: int
    total: int
    loss: float | None
    images_per_s: float | None
    eta_s: float | None
    run_dir: str | None
    error: str | None
    after: str | None
    preset: str
    overrides: tuple[str, ...]
    progress: float            # 0..1
    gpus: int = 1              # [run] gpus: the GPU slots (processes) it takes
    blocked: str | None = None  # who holds its run folder while it waits for it: "pid 4242 on gpu-01 since 10:31"
    phase: str | None = None   # what an evaluation does now: "training the classifier", "sampling", ...


@dataclass(frozen=True)
class JobChanged:
    """A job's state (or anything else in its JobInfo but live step figures) changed."""
    info: JobInfo


@dataclass(frozen=True)
class JobRemoved:
    id: str


class BadRecord(ValueError):
    """A job record in queue.json that cannot be read: the message names the field."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _optional(check):
    return lambda v: v is None or check(v)


def _eval_params(v) -> bool:
    return (isinstance(v, dict) and _is_int(v.get("n")) and v["n"] > 0 and isinstance(v.get("extractor"), str)
            and _is_int(v.get("batch_size")) and v["batch_size"] > 0)


# field: (check, what it must be)
_FIELDS: dict[str, tuple[Any, str]] = {
    "id": (lambda v: isinstance(v, str) and JOB_ID.fullmatch(v) is not None, "a job id such as j3"),
    "kind": (lambda v: v in ("train", "eval"), '"train" or "eval"'),
    "name": (lambda v: isinstance(v, str), "a string"),
    "model": (lambda v: isinstance(v, str), "a string"),
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "preset": (lambda v: isinstance(v, str), "a string"),
    "overrides": (_strings, "a list of strings"),
    "config": (lambda v: isinstance(v, str), "a string (TOML)"),
    "after": (_optional(lambda v: isinstance(v, str) and JOB_ID.fullmatch(v) is not None), "null or a job id"),
    "device": (_optional(lambda v: isinstance(v, str) and v.strip() != ""), "null or a device such as cpu or cuda:0"),
    "state": (lambda v: v in STATES, "one of " + ", ".join(STATES)),
    "run_dir": (_optional(lambda v: isinstance(v, str) and v != ""), "null or a run folder"),
    "error": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "total": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "loss": (_optional(_is_number), "null or a finite number"),
    "progress": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "batch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "checkpoint": (lambda v: v in ("last", "best"), '"last" or "best"'),
    "eval": (_optional(_eval_params), "null or {n, extractor, batch_size}"),
    "created": (_is_number, "a number (seconds since 1970)"),
    "started": (_optional(_is_number), "null or a number"),
    "ended": (_optional(_is_number), "null or a number"),
    "restarts": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "resume_overrides": (_strings, "a list of strings"),
    "slot_device": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "gpus": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "stopping": (_optional(lambda v: v in STOPS), "null or one of " + ", ".join(STOPS)),
    "blocked": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "phase": (_optional(lambda v: isinstance(v, str)), "null or a string"),
}
_REQUIRED = ("id", "kind", "name", "config", "state")


@dataclass(eq=False)
class Job:
    id: str
    kind: str
    name: str
    model: str
    dataset: str
    preset: str
    overrides: list[str]
    config: str                    # the resolved config as TOML (data, never code)
    after: str | None = None
    device: str | None = None      # asked for at submit; None: the slot's
    state: str = "queued"
    run_dir: str | None = None     # absolute in memory; relative to the runs folder in queue.json
    error: str | None = None
    step: int = 0
    total: int = 0
    loss: float | None = None
    progress: float = 0.0
    batch: int = 0                 # images per step, for the ETA a client works out from images/s
    checkpoint: str = "last"
    eval: dict | None = None       # n, extractor, batch_size for an evaluation
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    restarts: int = 0
    resume_overrides: list[str] = dataclasses.field(default_factory=list)  # applied to config.toml at the next start
    slot_device: str | None = None  # where it runs (or last ran); "cuda:0,cuda:1" for a multi-GPU job
    gpus: int = 1                   # [run] gpus
    stopping: str | None = None     # a stop asked of it while it runs, kept so that an owner's death loses none
    blocked: str | None = None      # the holder of its run folder's lease, while it waits for it
    phase: str | None = None        # what a running evaluation does now
    # runtime only
    active: bool = False           # a worker of this process runs it
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    trainer: Any = None
    proc: Any = None               # the launcher of a multi-GPU job
    images_per_s: float | None = None
    rate: deque = dataclasses.field(default_factory=lambda: deque(maxlen=20))
    history: Any = None            # workbench.history.History of a running job

    def record(self, runs_dir: Path) -> dict:
        rec = {name: getattr(self, name) for name in _FIELDS}
        rec["run_dir"] = relative_run(self.run_dir, runs_dir)
        return rec

    @classmethod
    def from_record(cls, rec: Any, runs_dir: Path) -> "Job":
        """A job from its queue.json record; ``BadRecord`` naming the first field that is wrong."""
        if not isinstance(rec, dict):
            raise BadRecord(f"a job record must be an object, not {type(rec).__name__}")
        for name in _REQUIRED:
            if name not in rec:
                raise BadRecord(f"field {name!r} is missing")
        values = {}
        for name, (check, what) in _FIELDS.items():
            if name in rec:
                if not check(rec[name]):
                    raise BadRecord(f"field {name!r} must be {what}, not {_shown(rec[name])}")
                values[name] = rec[name]
        values.setdefault("model", "")
        values.setdefault("dataset", "")
        values.setdefault("preset", "")
        values.setdefault("overrides", [])
        values["overrides"] = list(values["overrides"])
        values["resume_overrides"] = list(values.get("resume_overrides", []))
        if values.get("eval") is not None:
            values["eval"] = dict(values["eval"])
        values["run_dir"] = absolute_run(values.get("run_dir"), runs_dir)
        return cls(**values)

    def eta(self) -> float | None:
        if self.state != "running" or not self.total:
            return None
        if len(self.rate) >= 2:
            (t0, s0), (t1, s1) = self.rate[0], self.rate[-1]
            if s1 > s0:
                return max(0.0, (self.total - s1) * (t1 - t0) / (s1 - s0))
        if self.images_per_s and self.batch:  # a client: from the last logged images/s
            return max(0.0, (self.total - self.step) * self.batch / self.images_per_s)
        return None

    def info(self) -> JobInfo:
        device = self.slot_device if self.state == "running" and self.slot_device else (self.device or "auto")
        progress = self.progress if self.kind == "eval" else (min(1.0, self.step / self.total) if self.total else 0.0)
        return JobInfo(self.id, self.kind, self.name, self.model, self.dataset, device, self.state, self.step,
                       self.total, self.loss, self.images_per_s if self.state == "running" else None, self.eta(),
                       self.run_dir, self.error, self.after, self.preset, tuple(self.overrides), progress,
                       self.gpus, self.blocked if self.state == "queued" else None,
                       self.phase if self.state == "running" else None)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def relative_run(run_dir: str | None, runs_dir: Path) -> str | None:
    """A run folder as queue.json records it: its name when it lies in ``runs_dir``."""
    if not run_dir:
        return None
    path = Path(run_dir)
    return path.name if path.parent == runs_dir else str(path)


def absolute_run(run_dir: str | None, runs_dir: Path) -> str | None:
    if not run_dir:
        return None
    return str(runs_dir / run_dir) if not os.path.isabs(run_dir) else run_dir
