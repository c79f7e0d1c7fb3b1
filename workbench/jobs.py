"""The job queue: training and evaluation jobs run by worker threads, one per device slot.

    q = JobQueue("runs")                       # the owner of runs/, or a client of the process that is
    a = q.submit("presets/vqvae.toml")
    b = q.submit("presets/vqvae_prior.toml", after=a)   # its vqvae_run becomes a's run folder
    q.subscribe(lambda job_id, event: ...)    # trainer events and JobChanged, off the training threads
    q.shutdown()                              # running jobs checkpoint and resume with the next owner

Durable state lives in ``runs_dir/queue.json`` (jobs, their order, states, dependencies, run
folders), written atomically on every change while holding ``runs_dir/.queue.mutex`` (flock).
Everything about a job's progress lives in its run folder (status.json, metrics.jsonl,
checkpoints), so nothing is lost when a process dies.

One process owns the workers: it holds an exclusive flock on ``runs_dir/queue.lock`` (the OS drops
it when the process dies; the file also says pid, host and a heartbeat). Any other process is a
client: it reads queue.json and the run folders, adds jobs to queue.json itself, and leaves
cancel/pause/resume/move/remove as commands in queue.json that the owner applies within
``POLL_S``; with no owner alive, a client applies them directly. A new owner requeues the jobs
that were running when the last owner died; they resume from their last checkpoint and the
Trainer truncates metrics logged after it, so every step is logged exactly once.

Events: the Trainer calls the queue in the worker thread, which updates the job's live figures
and bounded history (``History``: the whole curve, evenly thinned, so memory stays flat) and puts
the event into one queue per subscriber; each subscriber has a thread of its own, so a slow one
delays no training and loses no event. A client's subscribers get the same kinds of events, read
from queue.json and the runs' metrics.jsonl.

Faults fail one job and never the queue: a NaN loss, running out of memory and a failed
checkpoint write are UserErrors from the Trainer (the run folder keeps its last good
checkpoint); any other exception fails that job with its type and message. Paused, failed and
cancelled jobs resume from their run folder's last checkpoint.

Several GPUs: a train job whose config asks ``[run] gpus = N > 1`` runs as ``genwb run --resume RUN
--nproc N`` (torchrun, DDP) in a subprocess on N GPU slots reserved at once (see ``place`` for the
rule), with ``CUDA_VISIBLE_DEVICES`` naming those GPUs; its progress is read from the run folder,
and pause/cancel/shutdown send SIGTERM to the launcher, which stops every rank at a checkpoint.

CPU threads: ``torch.set_num_threads`` is process-wide, so with several CPU slots every job
gets ``run.threads = total // slots`` (all jobs set the same value).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import os
import queue as queue_mod
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from workbench import events as ev
from workbench.errors import UserError, os_error_text
from workbench.history import History
from workbench.queuefile import Lease, atomic_write_text, flocked, lease_holder, read_queue, tail_rows
from workbench.runindex import MetricsTail, read_status

STATES = ("queued", "waiting", "running", "paused", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
RESUMABLE = frozenset({"paused", "failed", "cancelled"})
QUEUE_FILE, LOCK_FILE, MUTEX_FILE = "queue.json", "queue.lock", ".queue.mutex"
POLL_S = 0.25          # how often the owner looks for commands from clients
HEARTBEAT_S = 2.0
FORMAT = 1
_STOP_STATES = {"pause": "paused", "cancel": "cancelled", "shutdown": "interrupted"}  # status.json's word


class _EvalStopped(Exception):
    """Raised from an evaluation's progress callback when its job is cancelled, paused or shut down."""


# -- public types -----------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class JobChanged:
    """A job's state (or anything else in its JobInfo but live step figures) changed."""
    info: JobInfo


@dataclass(frozen=True)
class JobRemoved:
    id: str


# -- jobs -------------------------------------------------------------------------------------------
_PERSISTED = ("id", "kind", "name", "model", "dataset", "preset", "overrides", "config", "after", "device",
              "state", "run_dir", "error", "step", "total", "loss", "progress", "batch", "checkpoint", "eval",
              "created", "started", "ended", "restarts", "resume_overrides", "slot_device", "gpus")


@dataclass(eq=False)
class _Job:
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
    run_dir: str | None = None
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
    # runtime only
    active: bool = False           # a worker of this process runs it
    stop: str | None = None        # "pause" | "cancel" | "shutdown"
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    trainer: Any = None
    proc: Any = None               # the launcher of a multi-GPU job
    images_per_s: float | None = None
    rate: deque = dataclasses.field(default_factory=lambda: deque(maxlen=20))
    history: History | None = None

    def record(self) -> dict:
        return {k: getattr(self, k) for k in _PERSISTED}

    @classmethod
    def from_record(cls, rec: dict) -> "_Job":
        known = {k: rec[k] for k in _PERSISTED if k in rec}
        known["overrides"] = list(known.get("overrides") or [])
        known["resume_overrides"] = list(known.get("resume_overrides") or [])
        return cls(**known)

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
                       self.gpus)


def _run_key(config, parent_model: str) -> str | None:
    """The ``<x>_run`` hyper-parameter a dependent job's parent run folder goes into."""
    keys = [k for k in config.model.hparams if k.endswith("_run")]
    for key in keys:
        if key[:-4] == parent_model:
            return key
    return keys[0] if len(keys) == 1 else None


def _with_overrides(config_text: str, overrides: list[str]) -> str:
    """A job's stored config with overrides applied (UserError if they do not validate)."""
    from workbench.config import parse_config, to_toml

    return to_toml(parse_config(config_text, "job config", list(overrides)))


def _is_gpu(device: str) -> bool:
    """Whether a slot is one GPU, a share of a multi-GPU job (tests patch this to use CPU slots)."""
    return device.startswith("cuda")


class _Slot:
    def __init__(self, index: int, device: str):
        self.index, self.device = index, device
        self.gpu = _is_gpu(device)
        self.job: _Job | None = None  # running here, or reserved with other slots for a multi-GPU job
        self.thread: threading.Thread | None = None

    def accepts(self, job: _Job, cpu_slots: bool, gpu_slots: bool) -> bool:
        want = (job.device or "auto").lower()
        if want == "auto":  # a GPU if there is one, as device = "auto" means everywhere
            return self.device != "cpu" or not gpu_slots
        if want == "cpu":  # on a CPU slot if there is one, else on CPU in whichever slot takes it
            return self.device == "cpu" or not cpu_slots
        if want == "cuda":
            return self.device.startswith("cuda")
        return want == self.device


def place(jobs, slot: _Slot, slots: list[_Slot], has_cpu: bool, has_gpu: bool) -> tuple[Any, list[_Slot]]:
    """What the free ``slot`` starts now: (job, the slots it takes, ``slot`` first) or (None, []).

    Jobs go in queue order. A train job with ``gpus = N > 1`` starts once N GPU slots are free at
    once (this one among them); until then, while it is the first queued job a GPU slot could
    take, free GPU slots start nothing behind it and wait for it, so single-GPU jobs cannot starve
    it; jobs ahead of it in the order, and CPU slots, run as usual. Single-GPU jobs fill the GPU
    slots a multi-GPU job leaves. A job asking for more GPUs than there are slots: (job, []), to fail."""
    if slot.job is not None:
        return None, []
    gpu_slots = [s for s in slots if s.gpu]
    for job in jobs:
        if job.state != "queued" or job.active:
            continue
        if job.kind != "train" or job.gpus <= 1:
            if slot.accepts(job, has_cpu, has_gpu):
                return job, [slot]
            continue
        if job.gpus > len(gpu_slots):
            return job, []
        if not slot.gpu:
            continue
        free = [s for s in gpu_slots if s.job is None and s is not slot]
        if len(free) + 1 < job.gpus:
            return None, []
        return job, [slot, *free[:job.gpus - 1]]
    return None, []


def visible_devices(devices: list[str], parent: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for slots ``cuda:i``: the i-th device visible to this process, so an
    existing CUDA_VISIBLE_DEVICES="3,5,7" and slots cuda:0, cuda:2 give "3,7"."""
    indices = [int(d.partition(":")[2] or 0) for d in devices]
    if parent is None or not parent.strip():
        return ",".join(map(str, indices))
    ids = [p.strip() for p in parent.split(",") if p.strip()]
    return ",".join(ids[i] for i in indices)


class _Subscriber:
    """Events go into an unbounded queue; a thread of its own calls the callback, so a slow callback
    delays nothing and loses nothing."""

    def __init__(self, callback: Callable[[str, object], None]):
        self.callback = callback
        self.queue: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="genwb-subscriber", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self.callback(*item)
            except Exception:  # a broken subscriber must not stop the others or the queue
                pass


# -- the queue ----------------------------------------------------------------------------------------
class JobQueue:
    def __init__(self, runs_dir: str | os.PathLike, slots: list[str] | int | None = None, cpu_slots: int | None = None,
                 work: bool = True):
        """``slots``: device strings ("cuda:0", "cpu", ...), one worker each, or a number of CPU
        slots; default: one per CUDA device plus ``cpu_slots`` CPU slots (default 1 without a GPU,
        0 with one). ``work``: become the owner if no live process owns ``runs_dir``, else (and
        with ``work=False``) a client; a client with ``work=True`` takes over when the owner goes."""
        self.runs_dir = Path(runs_dir).resolve()
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.runs_dir / MUTEX_FILE, os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as e:
            raise UserError(f"{runs_dir}: cannot keep a job queue there ({os_error_text(e)}); give another --runs") from None
        self.path = self.runs_dir / QUEUE_FILE
        self._lock_path, self._mutex_path = self.runs_dir / LOCK_FILE, self.runs_dir / MUTEX_FILE
        self._slot_spec, self._cpu_slots = slots, cpu_slots
        self._lock = threading.RLock()       # the jobs, their order, the queue file
        self._live_lock = threading.Lock()   # a running job's live figures and history
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}
        self._order: list[str] = []
        self._removed: set[str] = set()
        self._next = 1
        self._subscribers: list[_Subscriber] = []
        self._stopping = threading.Event()
        self._closed = False
        self._written: tuple | None = None
        self._slots: list[_Slot] = []
        self._threads_per_job = 0
        self._want_work = work
        self.owner = False
        self._client_seen: dict[str, JobInfo] = {}
        self._client_tails: dict[str, MetricsTail] = {}  # job id: its metrics.jsonl, read as far as published
        self._disk_histories: dict[str, tuple[MetricsTail, History]] = {}
        self._pending: list[dict] = []
        self._dirty = False
        self._lease = Lease(self._lock_path)
        if work and self._lease.take():
            self._become_owner()
        self._poller = threading.Thread(target=self._poll_loop, name="genwb-queue-poll", daemon=True)
        self._poller.start()

    # -- ownership ---------------------------------------------------------------------------------
    def owner_info(self) -> dict | None:
        """pid, host, since and heartbeat of the live owner (this process included), else None."""
        return self._lease.info() if self._lease.held else lease_holder(self._lock_path)

    def _detect_slots(self) -> list[_Slot]:
        import torch

        if isinstance(self._slot_spec, int):
            devices = ["cpu"] * self._slot_spec
        elif self._slot_spec:
            devices = [str(d) for d in self._slot_spec]
        else:
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            devices = [f"cuda:{i}" for i in range(gpus)]
            cpus = self._cpu_slots if self._cpu_slots is not None else (0 if gpus else 1)
            devices += ["cpu"] * cpus
        if not devices:
            raise UserError("no slots to run jobs on: give cpu_slots >= 1 (--cpu-slots N)")
        cpu = devices.count("cpu")
        if cpu > 1:
            self._threads_per_job = max(1, torch.get_num_threads() // cpu)
        return [_Slot(i, d) for i, d in enumerate(devices)]

    def _become_owner(self) -> None:
        try:
            read_queue(self.path)  # a damaged queue file is for the user to look at, not to overwrite
            self._slots = self._detect_slots()
        except BaseException:
            self._lease.release()
            raise
        self._has_cpu = any(s.device == "cpu" for s in self._slots)
        self._has_gpu = any(s.device != "cpu" for s in self._slots)
        self.owner = True
        with self._transaction():
            for job in self._jobs.values():
                if job.state == "running":  # its owner died: resume it from its last checkpoint
                    job.state, job.restarts = "queued", job.restarts + 1
            self._reconcile()
        for slot in self._slots:
            slot.thread = threading.Thread(target=self._worker, args=(slot,), name=f"genwb-slot-{slot.index}", daemon=True)
            slot.thread.start()

    # -- the queue file --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Hold both locks, bring memory up to date with queue.json, let the caller change it, save it.

        The owner's memory is the truth: if queue.json cannot be read or written (damaged by hand,
        disk full), its jobs run on and the file is written again on the next tick. A client has
        nothing but the file, so there the problem is a UserError."""
        with self._lock:
            try:
                with contextlib.ExitStack() as stack:
                    try:
                        stack.enter_context(flocked(self._mutex_path))
                        data = read_queue(self.path)
                    except (OSError, UserError) as e:
                        if not self.owner:
                            raise e if isinstance(e, UserError) else UserError(
                                f"{self.path}: cannot read the queue ({os_error_text(e)})") from None
                        data, self._dirty = {}, True
                    if self.owner:
                        self._merge(data)
                    else:
                        self._load(data)
                    yield
                    try:
                        self._write()
                        self._dirty = False
                    except OSError as e:
                        if not self.owner:
                            raise UserError(f"{self.path}: cannot update the queue ({os_error_text(e)})") from None
                        self._dirty = True
            finally:
                self._cond.notify_all()

    def _load(self, data: dict) -> None:
        self._jobs, self._order = {}, []
        for rec in data.get("jobs", []):
            with contextlib.suppress(TypeError, KeyError):
                job = _Job.from_record(rec)
                self._jobs[job.id] = job
                self._order.append(job.id)
        self._pending = list(data.get("commands", []))
        self._next = max(self._next, int(data.get("next_id", 1)))

    def _merge(self, data: dict) -> None:
        """The owner takes in jobs added and commands left by clients."""
        self._next = max(self._next, int(data.get("next_id", 1)))
        for rec in data.get("jobs", []):
            if rec.get("id") in self._jobs or rec.get("id") in self._removed:
                continue
            with contextlib.suppress(TypeError, KeyError):
                job = _Job.from_record(rec)
                self._jobs[job.id] = job
                self._order.append(job.id)
                self._publish(job.id, JobChanged(job.info()))
        self._pending = []
        for cmd in data.get("commands", []):
            with contextlib.suppress(UserError, KeyError, TypeError, ValueError):
                self._apply(cmd["op"], cmd["id"], cmd.get("position"), cmd.get("overrides") or [])
        if data.get("commands"):
            self._reconcile()

    def _write(self) -> None:
        data = {"format": FORMAT, "next_id": self._next, "jobs": [self._jobs[i].record() for i in self._order],
                "commands": [] if self.owner else self._pending}
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")
        st = self.path.stat()
        self._written = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _file_changed(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_ino, st.st_mtime_ns, st.st_size) != self._written

    # -- events --------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str, object], None]) -> Callable[[], None]:
        """``callback(job_id, event)`` gets every trainer event of every job, and JobChanged /
        JobRemoved, in order, on a thread of its own. Returns a function that unsubscribes."""
        sub = _Subscriber(callback)
        with self._lock:
            self._subscribers.append(sub)

        def unsubscribe() -> None:
            with self._lock:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)
                    sub.queue.put(None)

        return unsubscribe

    def _publish(self, job_id: str, event: object) -> None:
        for sub in tuple(self._subscribers):
            sub.queue.put((job_id, event))

    def _changed(self, job: _Job) -> None:
        self._publish(job.id, JobChanged(job.info()))

    # -- reading -------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """A client's view: queue.json plus each running job's run folder."""
        data = read_queue(self.path)  # no lock needed: the file is only ever replaced whole
        with self._lock:
            self._load(data)
        for job in self._jobs.values():
            if job.state == "running" and job.run_dir and job.kind == "train":
                self._live_from_disk(job)

    def _live_from_disk(self, job: _Job) -> None:
        run = Path(job.run_dir)
        status = read_status(run)
        job.step = max(job.step, int(status.get("step") or 0))
        train = [r for r in tail_rows(run / "metrics.jsonl") if r.get("split") == "train"]
        if train:
            last = train[-1]
            job.step, job.loss, job.images_per_s = max(job.step, last.get("step", 0)), last.get("loss"), last.get("images_per_s")

    def jobs(self) -> list[JobInfo]:
        """Every job, in queue order."""
        if not self.owner:
            self._refresh()
        with self._lock:
            return [self._jobs[i].info() for i in self._order]

    def job(self, job_id: str) -> JobInfo:
        if not self.owner:
            self._refresh()
        with self._lock:
            return self._get(job_id).info()

    def _get(self, job_id: str) -> _Job:
        job = self._jobs.get(str(job_id))
        if job is None:
            known = ", ".join(self._order[-8:]) or "none"
            raise UserError(f"no job {job_id!r} in {self.path} (jobs: {known}); see genwb queue list --runs {self.runs_dir}")
        return job

    def history(self, job_id: str) -> list[dict]:
        """The job's metrics rows (train and val, as in metrics.jsonl), at most history.HISTORY_ROWS per
        split: the whole curve, thinned evenly where it is long."""
        if not self.owner:
            self._refresh()
        with self._lock:
            job = self._get(job_id)
            run_dir = job.run_dir
        with self._live_lock:
            if job.history is not None:
                return job.history.rows()
        return self._disk_history(run_dir).rows() if run_dir else []

    def _disk_history(self, run_dir: str) -> History:
        """A run's metrics.jsonl as a History, read incrementally: only the bytes added since the
        last call (all of it again if a resume rewrote the file)."""
        with self._lock:  # taken out while read, so two threads never feed one History twice
            tail, history = self._disk_histories.pop(run_dir, None) or (MetricsTail(Path(run_dir) / "metrics.jsonl"), None)
        rows = tail.read_new()
        if history is None or tail.restarted:
            history = History()
        for row in rows:
            history.add(row)
        with self._lock:
            self._disk_histories[run_dir] = (tail, history)
            while len(self._disk_histories) > 16:  # the runs a screen looked at lately
                del self._disk_histories[next(iter(self._disk_histories))]
        return history

    def busy(self) -> bool:
        """Whether any job is queued or running (what ``genwb queue work`` waits for)."""
        if not self.owner:
            self._refresh()
        with self._lock:
            return any(self._jobs[i].state in ("queued", "running") for i in self._order)

    # -- adding jobs ---------------------------------------------------------------------------------
    def submit(self, preset: str | os.PathLike, overrides=(), after: str | None = None, name: str | None = None,
               device: str | None = None) -> str:
        """Queue a training job from a preset (TOML, read now) with ``section.key=value`` overrides.
        ``after``: start only once that job is done (its run folder goes into this job's ``*_run``)."""
        from workbench.config import load_config, to_toml
        from workbench.devices import resolve_device
        from workbench.runs import safe_name

        overrides = [str(o) for o in overrides]
        config = load_config(preset, overrides)
        if device is not None:
            resolve_device(device)
        elif config.run.device != "auto":
            resolve_device(config.run.device)
        config.run.name = safe_name(name or config.run.name)
        device = device or (None if config.run.device == "auto" else config.run.device)
        if after is None:
            self._prepare(config)
        job = _Job(id="", kind="train", name=config.run.name, model=config.model.name, dataset=config.data.dataset,
                   preset=str(Path(preset).resolve()), overrides=overrides, config=to_toml(config),
                   after=str(after) if after is not None else None, device=device,
                   total=config.train.max_steps, batch=config.data.batch_size, created=time.time(),
                   gpus=config.run.gpus)
        return self._add(job)

    @staticmethod
    def _prepare(config) -> None:
        from workbench.runs import prepare

        prepare(config)

    def submit_resume(self, run_dir: str | os.PathLike, checkpoint: str = "last") -> str:
        """Queue an unfinished run (paused, cancelled, interrupted, failed) to carry on from its
        checkpoint. If a paused, failed or cancelled job of this queue owns the run, that job is
        resumed instead and its id returned."""
        from workbench.config import to_toml
        from workbench.runs import open_run, safe_name

        if checkpoint not in ("last", "best"):
            raise UserError(f"checkpoint {checkpoint!r}: use last or best")
        run = open_run(run_dir)
        path = str(run.path.resolve())
        if run.status().get("state") in ("finished", "early-stopped"):
            raise UserError(f"{run.path} has finished; start a new run instead")
        if not run.checkpoint_path(checkpoint).exists() and checkpoint == "best":
            raise UserError(f"{run.checkpoint_path(checkpoint)}: no such checkpoint; resume from last")
        cfg = run.config
        job = _Job(id="", kind="train", name=safe_name(cfg.run.name), model=cfg.model.name, dataset=cfg.data.dataset,
                   preset=path, overrides=[], config=to_toml(cfg), run_dir=path, checkpoint=checkpoint,
                   device=None if cfg.run.device == "auto" else cfg.run.device,
                   total=cfg.train.max_steps, batch=cfg.data.batch_size, step=int(run.status().get("step") or 0),
                   created=time.time(), gpus=cfg.run.gpus)
        return self._add(job, reuse_run=path)

    def submit_eval(self, run_dir: str | os.PathLike, n: int = 10000, extractor: str = "classifier",
                    batch_size: int = 500) -> str:
        """Queue ``genwb eval`` of a run: FID, KID, IS, ... into its eval.json."""
        from workbench.config import to_toml
        from workbench.runs import open_run, safe_name

        if extractor not in ("classifier", "inception"):
            raise UserError(f"extractor {extractor!r}: use classifier or inception")
        from workbench.evaluate import check_arguments

        check_arguments(int(n), int(batch_size))
        run = open_run(run_dir)
        if not (run.checkpoint_path("best").exists() or run.checkpoint_path("last").exists()):
            raise UserError(f"{run.path}: no checkpoint to evaluate yet")
        cfg = run.config
        job = _Job(id="", kind="eval", name=safe_name(f"eval-{run.path.name}"), model=cfg.model.name,
                   dataset=cfg.data.dataset, preset=str(run.path.resolve()), overrides=[], config=to_toml(cfg),
                   run_dir=str(run.path.resolve()), eval={"n": int(n), "extractor": extractor, "batch_size": int(batch_size)},
                   device=None if cfg.run.device == "auto" else cfg.run.device, total=int(n), created=time.time())
        return self._add(job)

    def _add(self, job: _Job, reuse_run: str | None = None) -> str:
        with self._transaction():
            if reuse_run:
                for other in self._jobs.values():
                    if other.run_dir != reuse_run or other.kind != "train" or other.state == "done":
                        continue
                    if other.state in RESUMABLE:  # the run's own job carries on, rather than a second one
                        self._command_locked("resume", other.id)
                        return other.id
                    raise UserError(f"{reuse_run} is already in the queue as {other.id} ({other.state})")
            if job.after is not None:
                parent = self._get(job.after)
                if parent.state in ("failed", "cancelled"):
                    raise UserError(f"job {parent.id} ({parent.name}) has {parent.state}; resume it before queueing jobs after it")
                job.state = "queued" if parent.state == "done" else "waiting"
                if parent.state == "done":
                    self._take_parent_run(job, parent)
            job.id = f"j{self._next}"
            self._next += 1
            self._jobs[job.id] = job
            self._order.append(job.id)
            self._changed(job)
        return job.id

    # -- commands --------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Stop a job for good (a running one within one training step, after a checkpoint)."""
        self._command("cancel", job_id)

    def pause(self, job_id: str) -> None:
        """A running job checkpoints and waits as paused; a queued one is held back."""
        self._command("pause", job_id)

    def resume(self, job_id: str, overrides=()) -> None:
        """A paused, failed or cancelled job goes back into the queue; it carries on from its run
        folder's last checkpoint. ``overrides`` (e.g. a lower train.lr after a NaN) change its
        config.toml first, checked against the checkpoint when it starts."""
        self._command("resume", job_id, overrides=[str(o) for o in overrides])

    def move(self, job_id: str, position: int) -> None:
        """Put a job at ``position`` (0 = first) in the queue order."""
        self._command("move", job_id, int(position))

    def remove(self, job_id: str) -> None:
        """Take a finished (done, failed, cancelled) job off the list; its run folder stays."""
        self._command("remove", job_id)

    def _command(self, op: str, job_id: str, position: int | None = None, overrides: list[str] = ()) -> None:
        job_id = str(job_id)
        if overrides:
            from workbench.config import apply_override

            for item in overrides:
                apply_override({}, item)  # the form section.key=value; the values are checked when it starts
        with self._transaction():
            self._command_locked(op, job_id, position, overrides)

    def _command_locked(self, op: str, job_id: str, position: int | None = None, overrides: list[str] = ()) -> None:
        if self.owner or self.owner_info() is None:
            self._apply(op, job_id, position, overrides)
            self._reconcile()
        else:  # the owner applies it within POLL_S
            self._check(op, self._get(job_id))
            self._pending.append({"op": op, "id": job_id, "position": position, "overrides": list(overrides),
                                  "at": time.time()})

    @staticmethod
    def _check(op: str, job: _Job) -> None:
        if op in ("cancel", "pause") and job.state in FINISHED:
            raise UserError(f"job {job.id} has already {'finished' if job.state == 'done' else job.state}")
        if op == "pause" and job.state == "paused":
            raise UserError(f"job {job.id} is already paused")
        if op == "resume" and job.state not in RESUMABLE:
            raise UserError(f"job {job.id} is {job.state}; only paused, failed or cancelled jobs resume")
        if op == "remove" and job.state not in FINISHED:
            raise UserError(f"job {job.id} is {job.state}; cancel it before removing it")
        if op not in ("cancel", "pause", "resume", "move", "remove"):
            raise UserError(f"unknown queue command {op!r}")

    def _apply(self, op: str, job_id: str, position: int | None, overrides: list[str] = ()) -> None:
        """One command on the jobs in memory (the caller holds the locks)."""
        job = self._get(job_id)
        self._check(op, job)
        if op == "move":
            self._order.remove(job.id)
            self._order.insert(max(0, min(int(position or 0), len(self._order))), job.id)
        elif op == "remove":
            self._order.remove(job.id)
            del self._jobs[job.id]
            self._removed.add(job.id)
            self._publish(job.id, JobRemoved(job.id))
            return
        elif op in ("cancel", "pause"):
            if job.active:
                job.stop = op
                if job.trainer is not None:
                    job.trainer.stop_state = _STOP_STATES[op]
                job.cancel.set()
                return  # the worker records the new state once the trainer has stopped
            job.state = "paused" if op == "pause" else "cancelled"
            job.ended = time.time() if op == "cancel" else job.ended
        elif op == "resume":
            if overrides and not job.run_dir:
                job.config = _with_overrides(job.config, overrides)
                job.overrides = [*job.overrides, *overrides]
            elif overrides:
                job.resume_overrides = [*job.resume_overrides, *overrides]
            for item in overrides:  # placing the job needs it before the config is checked at its start
                key, _, value = item.partition("=")
                if key.strip() == "run.gpus":
                    with contextlib.suppress(ValueError):
                        job.gpus = max(1, int(value))
            job.state, job.error, job.stop = "queued", None, None
            parent = self._jobs.get(job.after) if job.after is not None else None
            if parent is not None and parent.state != "done":
                job.state = "waiting"
            elif parent is not None and not job.run_dir:
                self._take_parent_run(job, parent)
        self._changed(job)

    def _reconcile(self) -> None:
        """Waiting jobs whose parent is done become queued; those whose parent failed, fail."""
        for job in self._jobs.values():  # a paused child too: its parent may be removed before it resumes
            parent = self._jobs.get(job.after) if job.after is not None else None
            if (parent is not None and parent.state == "done" and parent.run_dir and not job.run_dir
                    and job.state not in FINISHED and "_run = " in job.config
                    and json.dumps(parent.run_dir) not in job.config):
                self._take_parent_run(job, parent)
        changed = True
        while changed:
            changed = False
            for job in self._jobs.values():
                if job.state != "waiting":
                    continue
                parent = self._jobs.get(job.after)
                if parent is None or parent.state == "done":
                    job.state = "queued"
                    if parent is not None:
                        self._take_parent_run(job, parent)
                elif parent.state in ("failed", "cancelled"):
                    job.state, job.ended = "failed", time.time()
                    job.error = (f"job {parent.id} ({parent.name}), which this job runs after, {parent.state}"
                                 + (f": {parent.error}" if parent.error else "") + f"; resume {parent.id}, then {job.id}")
                else:
                    continue
                changed = True
                self._changed(job)

    @staticmethod
    def _take_parent_run(job: _Job, parent: _Job) -> None:
        """Write the finished parent's run folder into the job's ``<x>_run`` hyper-parameter (the one
        named after the parent's model, or the only one), so the job needs the parent no more."""
        from workbench.config import parse_config

        try:
            key = _run_key(parse_config(job.config, f"job {job.id}"), parent.model)
            if key is not None and parent.run_dir and json.dumps(parent.run_dir) not in job.config:
                job.config = _with_overrides(job.config, [f"model.{key}={json.dumps(parent.run_dir)}"])
        except UserError as e:
            job.state, job.error, job.ended = "failed", str(e), time.time()

    # -- workers ---------------------------------------------------------------------------------------
    def _pick(self, slot: _Slot) -> tuple[_Job | None, list[_Slot]]:
        return place((self._jobs[i] for i in self._order), slot, self._slots, self._has_cpu, self._has_gpu)

    def _worker(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            try:
                self._work_one(slot)
            except Exception:  # bookkeeping went wrong (not the job: _run catches that); keep the slot alive
                time.sleep(POLL_S)

    def _work_one(self, slot: _Slot) -> None:
        """Wait for a job this slot can run, run it, record how it ended."""
        with self._cond:
            job, taken = None, []
            while not self._stopping.is_set():
                job, taken = self._pick(slot)
                if job is not None:
                    break
                self._cond.wait(POLL_S)
            if job is None:
                return
            if not taken:  # more GPUs than this queue has
                gpus = sum(s.gpu for s in self._slots)
                with self._transaction():
                    job.state, job.ended = "failed", time.time()
                    job.error = f"needs {job.gpus} GPUs; this machine has {gpus} visible; resume it with run.gpus={max(1, gpus)}"
                    self._reconcile()
                    self._changed(job)
                return
            for s in taken:
                s.job = job
            job.active, job.stop, job.error, job.trainer = True, None, None, None
            job.cancel.clear()
            if len(taken) > 1:
                job.slot_device = ",".join(s.device for s in taken)
            else:
                job.slot_device = "cpu" if (job.device or "").lower() == "cpu" else slot.device
        final, error = "failed", "the queue failed to start this job; resume it"
        try:
            with self._transaction():
                job.state, job.started = "running", time.time()
                job.rate.clear()
                self._changed(job)
            final, error = self._run(job, slot, taken)
        finally:
            try:
                with self._transaction():
                    self._record_end(job, final, error)
            finally:
                job.active, job.trainer = False, None
                with self._cond:
                    for s in taken:
                        s.job = None
                    self._cond.notify_all()

    def _record_end(self, job: _Job, final: str, error: str | None) -> None:
        job.active, job.trainer = False, None
        with self._live_lock:
            job.history = None  # only running jobs keep theirs in memory; history() reads the rest from disk
        if final == "failed":
            job.state, job.error = "failed", error
        elif final == "done":  # it may have finished in the very step a stop came in
            job.state = "done"
        else:
            job.state = {"pause": "paused", "shutdown": "queued"}.get(job.stop, "cancelled")
        if job.state in FINISHED:
            job.ended = time.time()
        job.stop = None
        self._reconcile()
        self._changed(job)

    def _run(self, job: _Job, slot: _Slot, taken: list[_Slot]) -> tuple[str, str | None]:
        """Run one job to its end in this thread; returns ("done" | "stopped" | "failed", error)."""
        try:
            if job.kind == "eval":
                try:
                    self._run_eval(job)
                except _EvalStopped:  # nothing to keep: an evaluation starts again from the beginning
                    return "stopped", None
            elif len(taken) > 1:
                return self._run_procs(job, taken), None
            else:
                return self._run_train(job), None
            return "done", None
        except UserError as e:
            self._mark_failed(job, str(e))
            return "failed", str(e)
        except MemoryError:
            message = f"out of memory at step {job.step}; lower data.batch_size and resume {job.id}"
            self._mark_failed(job, message)
            return "failed", message
        except Exception as e:  # this job fails alone; the queue and its neighbours carry on
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                message = f"disk full while writing the run folder ({e}); free space, then resume {job.id}"
            self._mark_failed(job, message)
            return "failed", message

    @staticmethod
    def _mark_failed(job: _Job, message: str) -> None:
        if job.run_dir and job.kind == "train":
            from workbench.runs import Run

            with contextlib.suppress(Exception):
                run = Run(Path(job.run_dir), None)
                if run.status().get("state") != "failed":
                    run.write_status("failed", job.step, message)

    def _job_config(self, job: _Job):
        from workbench.config import parse_config

        overrides = []
        if self._threads_per_job:  # process-wide in torch: every job sets the same value
            overrides.append(f"run.threads={self._threads_per_job}")
        return parse_config(job.config, f"job {job.id}", overrides)

    def _inside_runs(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved.parent != self.runs_dir:
            raise UserError(f"run folder {path} would be outside {self.runs_dir}; refused")

    def _new_run(self, job: _Job):
        """(config, run folder) of a job's first start."""
        from workbench.runs import Run

        config = self._job_config(job)
        if job.after is None:
            self._prepare(config)
        run = Run.create(config, self.runs_dir)  # the folder's name made safe (runs.safe_name)
        self._inside_runs(run.path)
        return config, run

    def _run_train(self, job: _Job) -> str:
        from workbench.runs import open_run
        from workbench.train import Trainer

        if job.run_dir:  # the Trainer resumes from the checkpoint, or from step 0 if there is none yet
            run = open_run(job.run_dir)
            if job.resume_overrides:  # checked against the checkpoint before config.toml is rewritten
                from workbench.config import load_config
                from workbench.runs import check_resume

                config = load_config(run.path / "config.toml", job.resume_overrides)
                check_resume(run, config, job.checkpoint)
                run.config = config
                run.save_config()
                with self._transaction():
                    job.overrides, job.resume_overrides = [*job.overrides, *job.resume_overrides], []
            config = copy.deepcopy(run.config)
            if self._threads_per_job:  # process-wide in torch: every job sets the same value
                config.run.threads = self._threads_per_job
            resume = True
        else:
            config, run = self._new_run(job)
            resume = False
            with self._transaction():
                job.run_dir = str(run.path.resolve())
                self._changed(job)
        trainer = Trainer(config, run, device=job.slot_device, resume=resume, cancel=job.cancel,
                          checkpoint=job.checkpoint if resume else "last")
        with self._lock:
            job.trainer = trainer
            job.checkpoint = "last"  # once it runs, later resumes carry on from its newest state
            if job.stop is not None:
                trainer.stop_state = _STOP_STATES[job.stop]
        job.history = History()
        trainer.subscribe(lambda event: self._on_event(job, run, event))
        done = trainer.fit()
        return "done" if done.reason != "cancelled" else "stopped"

    def _run_procs(self, job: _Job, slots: list[_Slot]) -> str:
        """A multi-GPU job: ``genwb run --resume RUN --nproc N`` in a process group of its own, on
        the GPUs of ``slots``; its figures come from the run folder, as a client reads them."""
        from workbench.runs import open_run

        if job.run_dir:
            run, which = open_run(job.run_dir), job.checkpoint
            if job.resume_overrides:  # genwb run checks them against the checkpoint; the figures change now
                from workbench.config import load_config

                config = load_config(run.path / "config.toml", job.resume_overrides)
                job.total, job.batch = config.train.max_steps, config.data.batch_size
        else:  # the run folder is made here, as for a single-GPU job; the ranks resume it from step 0
            config, run = self._new_run(job)
            which = "last"
        device = "cuda" if slots[0].device.startswith("cuda") else slots[0].device
        cmd = [sys.executable, "-m", "workbench.cli", "run", "--resume", str(run.path), "--checkpoint", which,
               "--nproc", str(len(slots)), "--device", device]
        for item in job.resume_overrides:  # checked against the checkpoint by genwb run
            cmd += ["--set", item]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        from workbench.launch import PARENT_ENV

        env[PARENT_ENV] = str(os.getpid())  # the launcher stops its ranks if this process dies
        if device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = visible_devices([s.device for s in slots], os.environ.get("CUDA_VISIBLE_DEVICES"))
        with self._transaction():
            job.run_dir = str(run.path.resolve())
            job.overrides, job.resume_overrides = [*job.overrides, *job.resume_overrides], []
            job.checkpoint = "last"
            self._changed(job)
        log_path = run.path / "launch.log"
        self._client_tails.pop(job.id, None)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        job.proc = proc
        signalled = False
        while True:
            try:
                rc = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if job.cancel.is_set() and not signalled:  # the launcher stops every rank at a checkpoint
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                signalled = True
            self._live_procs(job)
        job.proc = None
        self._live_procs(job)
        status = run.status()
        if status.get("state") in ("finished", "early-stopped"):
            return "done"
        if job.stop is not None:
            run.write_status(_STOP_STATES[job.stop], int(status.get("step") or job.step))
            return "stopped"
        if rc == 0:
            return "done"
        raise UserError(self._launch_error(status, log_path, rc, len(slots)), exit_code=1)

    def _live_procs(self, job: _Job) -> None:
        with self._live_lock:
            before = job.step
            self._live_from_disk(job)
            if job.step != before or not job.rate:
                job.rate.append((time.perf_counter(), job.step))
        self._publish_rows(job.id, job.run_dir, job.total)

    @staticmethod
    def _launch_error(status: dict, log_path: Path, rc: int, nproc: int) -> str:
        """One line: the run's own error, else the launcher's last error line, else the exit code."""
        if status.get("error"):
            return str(status["error"]).strip().splitlines()[0]
        with contextlib.suppress(OSError):
            lines = log_path.read_text(errors="replace").splitlines()
            errors = [line.strip() for line in lines if line.strip().startswith("error:")]
            if errors:
                return errors[-1][len("error:"):].strip()
        return f"the {nproc}-process run exited with code {rc}; see {log_path}"

    def _on_event(self, job: _Job, run, event) -> None:
        """Called by the Trainer in the worker thread: cheap bookkeeping, then hand the event on."""
        if isinstance(event, ev.Started):  # the steps before a resume (the Trainer truncated the rest)
            history = History()
            for row in run.read_metrics():
                history.add(row)
        with self._live_lock:  # not self._lock: a slow write of queue.json never holds up training
            if isinstance(event, ev.Step):
                job.step, job.total = event.step, event.total_steps
                job.loss, job.images_per_s = event.metrics.get("loss"), event.images_per_s
                job.rate.append((time.perf_counter(), event.step))
                job.history.add({"step": event.step, "epoch": event.epoch, "split": "train", **event.metrics,
                                 "lr": event.lr, "images_per_s": event.images_per_s})
            elif isinstance(event, ev.Evaluated):
                if event.split == "val":
                    job.history.add({"step": event.step, "split": "val", **event.metrics})
            elif isinstance(event, ev.Started):
                job.step, job.total = event.step, event.total_steps
                job.slot_device = event.device
                job.rate.append((time.perf_counter(), event.step))
                job.history = history
        self._publish(job.id, event)

    def _run_eval(self, job: _Job) -> None:
        from workbench.evaluate import evaluate_run

        params = job.eval or {}
        shown = [0.0]

        def on_progress(fraction: float) -> None:  # fraction done, 0..1; a stop takes effect here
            if job.cancel.is_set():
                raise _EvalStopped
            with self._live_lock:
                job.progress = max(0.0, min(1.0, float(fraction)))
                job.step = int(job.total * job.progress)
            if time.monotonic() - shown[0] > 0.5 or job.progress == 1.0:  # JobChanged at most twice a second
                shown[0] = time.monotonic()
                self._changed(job)

        try:
            result = evaluate_run(job.run_dir, n=params.get("n", 10000), extractor=params.get("extractor", "classifier"),
                                  batch_size=params.get("batch_size", 500), device=job.slot_device or "auto",
                                  progress=False, on_progress=on_progress)
        except RuntimeError as e:
            if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
                raise
            raise UserError(f"out of memory evaluating with batch size {params.get('batch_size')}; queue it again with a "
                            f"smaller batch size (e.g. {max(1, params.get('batch_size', 500) // 2)})", exit_code=1) from None
        with self._lock:
            job.progress, job.step = 1.0, job.total
            job.loss = result.get("fid")

    # -- background: commands from clients, heartbeat, client events, takeover ---------------------------
    def _poll_loop(self) -> None:
        beat = 0.0
        while not self._stopping.wait(POLL_S if self.owner else 0.5):
            try:
                if self.owner:
                    if time.time() - beat > HEARTBEAT_S:
                        self._lease.beat()
                        beat = time.time()
                    if self._dirty or self._file_changed():
                        with self._transaction():
                            pass
                else:
                    with self._lock:
                        if self._closed:
                            return
                        if self._want_work and self._lease.take():
                            self._jobs, self._order = {}, []
                            self._become_owner()
                            continue
                    if self._subscribers:
                        self._client_events()
            except Exception:  # a transient file error; try again on the next tick
                continue

    def _client_events(self) -> None:
        """A client's subscribers get JobChanged from queue.json and Step/Evaluated from metrics.jsonl."""
        for info in self.jobs():
            if self._client_seen.get(info.id) != info:
                self._client_seen[info.id] = info
                self._publish(info.id, JobChanged(info))
            if info.run_dir and info.kind == "train":
                self._publish_rows(info.id, info.run_dir, info.total)
        for gone in set(self._client_seen) - set(self._order):
            del self._client_seen[gone]
            self._publish(gone, JobRemoved(gone))

    def _publish_rows(self, job_id: str, run_dir: str, total: int) -> None:
        """Step/Evaluated events for the rows added to a run's metrics.jsonl since the last call."""
        path = Path(run_dir) / "metrics.jsonl"
        tail = self._client_tails.get(job_id)
        if tail is None or tail.path != path:
            tail = self._client_tails[job_id] = MetricsTail(path)
        for row in tail.read_new():  # a file rewritten by a resume is read again from its start
            with contextlib.suppress(KeyError, TypeError):
                metrics = {k: v for k, v in row.items() if k not in ("step", "epoch", "split", "lr", "images_per_s")}
                if row.get("split") == "val":
                    self._publish(job_id, ev.Evaluated(row["step"], "val", metrics))
                else:
                    self._publish(job_id, ev.Step(row["step"], total, row.get("epoch", 0), metrics,
                                                  row.get("lr", 0.0), row.get("images_per_s", 0.0)))

    # -- the end ---------------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, checkpoint: bool = True) -> None:
        """Stop the workers. ``checkpoint``: running jobs stop within one step, write a checkpoint
        and go back to queued (the next owner resumes them); otherwise they are left to die with
        the process and resume from their last periodic checkpoint. ``wait``: join the workers and
        release ownership before returning."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping.set()
            if checkpoint:
                for job in self._jobs.values():
                    if job.active:
                        job.stop = "shutdown"
                        if job.trainer is not None:
                            job.trainer.stop_state = _STOP_STATES["shutdown"]
                        job.cancel.set()
            else:  # the ranks of a multi-GPU job live in sessions of their own: stop them too
                for job in self._jobs.values():
                    if job.active and job.proc is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(job.proc.pid, signal.SIGTERM)
            self._cond.notify_all()
        if not self.owner:
            self._end_subscribers()
            return
        if checkpoint:
            finish = lambda: (self._join(), self._release(), self._end_subscribers())  # noqa: E731
            if wait:
                finish()
            else:
                threading.Thread(target=finish, name="genwb-queue-shutdown", daemon=True).start()
        # without checkpoint the lease stays held until the process exits, so no second owner
        # can start the jobs still running here

    def _join(self) -> None:
        """Wait for the workers, but not for an evaluation still training its classifier (where
        it cannot stop): its thread dies with the process, queue.json still says running, and the
        next owner starts it again, losing only the time it had run."""
        for slot in self._slots:
            if slot.thread is not None and not (slot.job is not None and slot.job.kind == "eval"):
                slot.thread.join()

    def _release(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError):
                with flocked(self._mutex_path):
                    with contextlib.suppress(UserError):
                        self._merge(read_queue(self.path))
                    self._write()
            self._lease.release()
            self.owner = False

    def _end_subscribers(self) -> None:
        with self._lock:
            subs, self._subscribers = self._subscribers, []
        for sub in subs:
            sub.queue.put(None)
        for sub in subs:
            if sub.thread is not threading.current_thread():
                sub.thread.join(timeout=5)

    def __enter__(self) -> "JobQueue":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
