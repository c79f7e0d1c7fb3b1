"""The job queue: training and evaluation jobs run by worker threads, one per device slot.

    q = JobQueue("runs")                       # the owner of runs/, or a client of the process that is
    a = q.submit("presets/vqvae.toml")
    b = q.submit("presets/vqvae_prior.toml", after=a)   # its vqvae_run becomes a's run folder
    q.subscribe(lambda job_id, event: ...)    # trainer events and JobChanged, off the training threads
    q.shutdown()                              # running jobs checkpoint and resume with the next owner

``JobQueue`` is the face the CLI and the app call; its parts live beside it:
``workbench.jobstate`` (a job's record and snapshot), ``workbench.queuefile`` (queue.json, read
without trusting it), ``workbench.lease`` (who works the queue; each run folder's writer),
``workbench.placement`` (slots), ``workbench.jobrunners`` (train, multi-GPU and eval runners)
and ``workbench.queueclient`` (what is read of jobs run elsewhere).

Durable state lives in ``runs_dir/queue.json`` (jobs, their order, states, dependencies, run
folders relative to ``runs_dir``), written atomically on every change while holding
``runs_dir/.queue.mutex`` (flock). Everything about a job's progress lives in its run folder
(status.json, metrics.jsonl, checkpoints), so nothing is lost when a process dies.

One process owns the workers: it holds the lease on ``runs_dir`` (``queue.lock`` says its pid,
host and a heartbeat; the OS frees it when the process dies). Any other process is a client: it
reads queue.json and the run folders, adds jobs to queue.json itself, and leaves
cancel/pause/resume/move/remove as numbered commands in queue.json that the owner applies in
order within ``POLL_S``; with no owner alive, a client applies every pending command, then its
own. A new owner requeues the jobs that were running when the last owner died (or ends them as
cancelled or paused, if that stop was asked and not yet done); they resume from their last
checkpoint and the Trainer truncates metrics logged after it, so every step is logged once.

A job never trains a run folder that another process (or another job) writes: it takes the
run's writer lease (``workbench.runs.writing``) to start, and while another holds it, the job
waits in the queue as blocked by that holder.

Events: the Trainer calls the queue in the worker thread, which updates the job's live figures
and bounded history and puts the event into one queue per subscriber; each subscriber has a
thread of its own, so a slow one delays no training and loses no event. A client's subscribers
get the same kinds of events, read from queue.json and the runs' metrics.jsonl.

CPU threads: ``torch.set_num_threads`` is process-wide, so with several CPU slots every job
gets ``run.threads = total // slots`` (all jobs set the same value).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue as queue_mod
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from workbench import events as ev
from workbench import jobrunners
from workbench.errors import UserError, os_error_text
from workbench.fileio import flocked
from workbench.history import History
from workbench.jobstate import (FINISHED, RESUMABLE, STATES, STOP_STATES, JobChanged, JobInfo,  # noqa: F401 (public names)
                                JobRemoved, Job)
from workbench.lease import Busy, Lease, holder
from workbench.placement import Slot, detect_slots, place
from workbench.queueclient import DiskHistories, RowEvents, live_from_disk
from workbench.queuefile import LOCK_FILE, MUTEX_FILE, QUEUE_FILE, Command, QueueData, read_queue, write_queue

POLL_S = 0.25          # how often the owner looks for commands from clients
HEARTBEAT_S = 2.0


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


class JobQueue:
    poll_s = POLL_S

    def __init__(self, runs_dir: str | os.PathLike, slots: list[str] | int | None = None, cpu_slots: int | None = None,
                 work: bool = True, label: str = "genwb queue work"):
        """``slots``: device strings ("cuda:0", "cpu", ...), one worker each, or a number of CPU
        slots; default: one per CUDA device plus ``cpu_slots`` CPU slots (default 1 without a GPU,
        0 with one). ``work``: become the owner if no live process owns ``runs_dir``, else (and
        with ``work=False``) a client; a client with ``work=True`` takes over when the owner goes.
        ``label``: what works the queue, for the other processes ("genwb queue work", "the app")."""
        self.runs_dir = Path(runs_dir).resolve()
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            with flocked(self.runs_dir / MUTEX_FILE):
                pass
        except OSError as e:
            raise UserError(f"{runs_dir}: cannot keep a job queue there ({os_error_text(e)}); give another --runs") from None
        self._slot_spec, self._cpu_slots = slots, cpu_slots
        self.lock = threading.RLock()        # the jobs, their order, the queue file
        self.live_lock = threading.Lock()    # a running job's live figures and history
        self._cond = threading.Condition(self.lock)
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._bad: list = []                 # job records queue.json holds that cannot be read, kept as they are
        self._problems: list[str] = []
        self._removed: set[str] = set()
        self._next, self._seq, self._applied = 1, 0, 0
        self._pending: list[Command] = []    # a client's commands for the owner
        self._subscribers: list[_Subscriber] = []
        self._stopping = threading.Event()
        self._closed = False
        self._written: tuple | None = None
        self._dirty = False
        self._slots: list[Slot] = []
        self.threads_per_job = 0
        self._want_work = work
        self.owner = False
        self._client_seen: dict[str, JobInfo] = {}
        self._rows = RowEvents()
        self._histories = DiskHistories()
        self._moved_at: float | None = None
        self.write_error: str | None = None  # why queue.json could not be written last, if it could not
        self.final_jobs: list[JobInfo] = []  # the jobs as this owner left them (shutdown)
        self._lease = Lease(self.runs_dir, LOCK_FILE, purpose="worked", label=label)
        if work and self._lease.take():
            self._become_owner()
        # An interpreter that exits with workers inside torch's native code aborts ("terminate
        # called without an active exception"): whatever ends the program, stop them first.
        atexit.register(self.shutdown)
        self._poller = threading.Thread(target=self._poll_loop, name="genwb-queue-poll", daemon=True)
        self._poller.start()

    @property
    def path(self) -> Path:
        return self.runs_dir / QUEUE_FILE

    @property
    def _mutex_path(self) -> Path:
        return self.runs_dir / MUTEX_FILE

    # -- ownership ---------------------------------------------------------------------------------
    def owner_info(self) -> dict | None:
        """pid, host, since and heartbeat of the live owner (this process included), else None."""
        if self._lease.held:
            return self._lease.info()
        who = holder(self.runs_dir, LOCK_FILE)
        return None if who is None else {"pid": who.pid, "host": who.host, "since": who.since, "heartbeat": who.heartbeat,
                                         "label": who.label}

    def _become_owner(self) -> None:
        try:
            read_queue(self.path, self.runs_dir)  # a damaged queue file is for the user to look at, not to overwrite
            self._slots, self.threads_per_job = detect_slots(self._slot_spec, self._cpu_slots)
        except BaseException:
            self._lease.release()
            raise
        self._has_cpu = any(s.device == "cpu" for s in self._slots)
        self._has_gpu = any(s.device != "cpu" for s in self._slots)
        self.owner = True
        with self.transaction():
            for job in self._jobs.values():
                if job.state == "running":  # its owner died: end the stop it was asked for, or resume it
                    asked = job.stopping if job.stopping in ("pause", "cancel") else None
                    job.state = {"pause": "paused", "cancel": "cancelled"}.get(asked, "queued")
                    job.restarts += asked is None
                    job.stopping = None
                    self._sync_status(job)
            self._reconcile()
        for slot in self._slots:
            slot.thread = threading.Thread(target=self._worker, args=(slot,), name=f"genwb-slot-{slot.index}", daemon=True)
            slot.thread.start()

    # -- the queue file --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold both locks, bring memory up to date with queue.json, let the caller change it, save it.

        The owner's memory is the truth: if queue.json cannot be read or written (damaged by hand,
        disk full), its jobs run on and the file is written again on the next tick. A client has
        nothing but the file, so there the problem is a UserError."""
        with self.lock:
            try:
                with contextlib.ExitStack() as stack:
                    try:
                        stack.enter_context(flocked(self._mutex_path))
                        data = read_queue(self.path, self.runs_dir)
                    except (OSError, UserError) as e:
                        if not self.owner:
                            raise e if isinstance(e, UserError) else UserError(
                                f"{self.path}: cannot read the queue ({os_error_text(e)})") from None
                        data, self._dirty = None, True
                    if data is not None:
                        self._merge(data) if self.owner else self._load(data)
                    yield
                    try:
                        self._write()
                        self._dirty, self.write_error = False, None
                    except OSError as e:
                        if not self.owner:
                            raise UserError(f"{self.path}: cannot update the queue ({os_error_text(e)})") from None
                        self._dirty, self.write_error = True, os_error_text(e)
            finally:
                self._cond.notify_all()

    def _load(self, data: QueueData) -> None:
        """A client's view: the file, whole."""
        self._jobs = {job.id: job for job in data.jobs}
        self._order = [job.id for job in data.jobs]
        self._bad, self._problems = data.bad, data.problems
        self._pending = list(data.commands)
        self._next, self._seq, self._applied = max(self._next, data.next_id), data.seq, data.applied

    def _merge(self, data: QueueData) -> None:
        """The owner takes in jobs added and commands left by clients, in the order they were given."""
        self._next = max(self._next, data.next_id)
        self._bad, self._problems = data.bad, data.problems
        for job in data.jobs:
            if job.id in self._jobs or job.id in self._removed:
                continue
            self._jobs[job.id] = job
            self._order.append(job.id)
            self._publish(job.id, JobChanged(job.info()))
        self._seq = max(self._seq, data.seq)
        applied = False
        for command in data.commands:
            if command.seq <= self._applied:
                continue
            self._applied = command.seq
            applied = True
            with contextlib.suppress(UserError):  # a command a job no longer fits (it finished meanwhile)
                self._apply(command)
        if applied:
            self._reconcile()

    def _write(self) -> None:
        data = QueueData(next_id=self._next, seq=self._seq, applied=self._applied,
                         jobs=[self._jobs[i] for i in self._order], bad=self._bad,
                         commands=[] if self.owner else self._pending)
        write_queue(self.path, data, self.runs_dir)
        st = self.path.stat()
        self._written = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _file_changed(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_ino, st.st_mtime_ns, st.st_size) != self._written

    def problems(self) -> list[str]:
        """One line for each job record or command in queue.json that cannot be read (and is kept, or ignored)."""
        if not self.owner:
            self._refresh()
        with self.lock:
            return [f"{self.path}: {p}" for p in self._problems]

    # -- events --------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str, object], None]) -> Callable[[], None]:
        """``callback(job_id, event)`` gets every trainer event of every job, and JobChanged /
        JobRemoved, in order, on a thread of its own. Returns a function that unsubscribes."""
        sub = _Subscriber(callback)
        with self.lock:
            self._subscribers.append(sub)

        def unsubscribe() -> None:
            with self.lock:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)
                    sub.queue.put(None)

        return unsubscribe

    def _publish(self, job_id: str, event: object) -> None:
        for sub in tuple(self._subscribers):
            sub.queue.put((job_id, event))

    def changed(self, job: Job, durable: bool = False) -> None:
        """Tell subscribers; ``durable``: also have the owner write queue.json on its next tick,
        for clients (an evaluation's progress)."""
        self._publish(job.id, JobChanged(job.info()))
        if durable:
            self._dirty = True

    def on_event(self, job: Job, run, event) -> None:
        """Called by the Trainer in the worker thread: cheap bookkeeping, then hand the event on."""
        if isinstance(event, ev.Started):  # the steps before a resume (the Trainer truncated the rest)
            history = History()
            for row in run.read_metrics():
                history.add(row)
        with self.live_lock:  # not self.lock: a slow write of queue.json never holds up training
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

    def live_procs(self, job: Job) -> None:
        """A multi-GPU job's figures, read from its run folder."""
        with self.live_lock:
            before = job.step
            live_from_disk(job)
            if job.step != before or not job.rate:
                job.rate.append((time.perf_counter(), job.step))
        self._rows.publish(job.id, job.run_dir, job.total, self._publish)

    def forget_tail(self, job_id: str) -> None:
        self._rows.forget(job_id)

    # -- reading -------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """A client's view: queue.json plus each running job's run folder."""
        data = read_queue(self.path, self.runs_dir)  # no lock needed: the file is only ever replaced whole
        with self.lock:
            self._load(data)
        from workbench.runs import run_holder

        for job in self._jobs.values():
            if job.state == "running" and job.run_dir and job.kind == "train":
                live_from_disk(job)
            elif job.state == "queued" and job.run_dir and os.path.isdir(job.run_dir):  # as the owner sees it now
                who = run_holder(job.run_dir)
                job.blocked = None if who is None else who.describe()

    def jobs(self) -> list[JobInfo]:
        """Every job, in queue order."""
        if not self.owner:
            self._refresh()
        with self.lock:
            return [self._jobs[i].info() for i in self._order]

    def job(self, job_id: str) -> JobInfo:
        if not self.owner:
            self._refresh()
        with self.lock:
            return self._get(job_id).info()

    def _get(self, job_id: str) -> Job:
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
        with self.lock:
            job = self._get(job_id)
            run_dir = job.run_dir
        with self.live_lock:
            if job.history is not None:
                return job.history.rows()
        return self._histories.history(run_dir).rows() if run_dir else []

    def busy(self) -> bool:
        """Whether any job is queued or running (what ``genwb queue work`` waits for)."""
        if not self.owner:
            self._refresh()
        with self.lock:
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
            config.run.device = device
        elif config.run.device != "auto":
            resolve_device(config.run.device)
        config.run.name = safe_name(name or config.run.name)
        device = None if config.run.device == "auto" else config.run.device
        if after is None:
            self._prepare(config)
        job = Job(id="", kind="train", name=config.run.name, model=config.model.name, dataset=config.data.dataset,
                  preset=str(Path(preset).resolve()), overrides=overrides, config=to_toml(config),
                  after=str(after) if after is not None else None, device=device,
                  total=config.train.max_steps, batch=config.data.batch_size, created=time.time(),
                  gpus=config.run.gpus)
        return self._add(job)

    @staticmethod
    def _prepare(config) -> None:
        from workbench.runs import prepare

        prepare(config)

    def submit_resume(self, run_dir: str | os.PathLike, checkpoint: str = "last", wait: bool = False) -> str:
        """Queue an unfinished run (paused, cancelled, interrupted, failed) to carry on from its
        checkpoint. If a paused, failed or cancelled job of this queue owns the run, that job is
        resumed instead and its id returned. A run another process writes now is refused
        (``lease.Busy``), unless ``wait``: then the job waits for it, blocked."""
        from workbench.config import to_toml
        from workbench.runs import open_run, run_holder, safe_name

        if checkpoint not in ("last", "best"):
            raise UserError(f"checkpoint {checkpoint!r}: use last or best")
        run = open_run(run_dir, check_model=False)  # a file operation: the run was checked when it was made
        path = str(run.path.resolve())
        status = run.status()
        if status.get("state") in ("finished", "early-stopped"):
            raise UserError(f"{run.path} has finished; start a new run instead")
        if not run.checkpoint_path(checkpoint).exists() and checkpoint == "best":
            raise UserError(f"{run.checkpoint_path(checkpoint)}: no such checkpoint; resume from last")
        who = None if wait else run_holder(run.path)
        cfg = run.config
        step = status.get("step")
        job = Job(id="", kind="train", name=safe_name(cfg.run.name), model=cfg.model.name, dataset=cfg.data.dataset,
                  preset=path, overrides=[], config=to_toml(cfg), run_dir=path, checkpoint=checkpoint,
                  device=None if cfg.run.device == "auto" else cfg.run.device,
                  total=cfg.train.max_steps, batch=cfg.data.batch_size,
                  step=step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0,
                  created=time.time(), gpus=cfg.run.gpus)
        return self._add(job, reuse_run=path, holder=who)

    def submit_eval(self, run_dir: str | os.PathLike, n: int = 10000, extractor: str = "classifier",
                    batch_size: int = 500) -> str:
        """Queue ``genwb eval`` of a run: FID, KID, IS, ... into its eval.json. It starts when the
        run's writer lease is free (after the run's training, if it trains now)."""
        from workbench.config import to_toml
        from workbench.evaluate import check_arguments
        from workbench.runs import open_run, safe_name

        if extractor not in ("classifier", "inception"):
            raise UserError(f"extractor {extractor!r}: use classifier or inception")
        check_arguments(int(n), int(batch_size))
        run = open_run(run_dir)
        if not (run.checkpoint_path("best").exists() or run.checkpoint_path("last").exists()):
            raise UserError(f"{run.path}: no checkpoint to evaluate yet")
        cfg = run.config
        job = Job(id="", kind="eval", name=safe_name(f"eval-{run.path.name}"), model=cfg.model.name,
                  dataset=cfg.data.dataset, preset=str(run.path.resolve()), overrides=[], config=to_toml(cfg),
                  run_dir=str(run.path.resolve()), eval={"n": int(n), "extractor": extractor, "batch_size": int(batch_size)},
                  device=None if cfg.run.device == "auto" else cfg.run.device, total=int(n), created=time.time())
        return self._add(job)

    def _add(self, job: Job, reuse_run: str | None = None, holder=None) -> str:
        """Add ``job``; ``reuse_run``: the run folder it resumes (its own job of this queue carries it
        on, if there is one), refused while ``holder`` (another process, or a job) writes it."""
        with self.transaction():
            if reuse_run:
                for other in self._jobs.values():
                    if other.run_dir != reuse_run or other.kind != "train" or other.state == "done":
                        continue
                    if other.state in RESUMABLE:  # the run's own job carries on, rather than a second one
                        refused = self._command_locked("resume", other.id)
                        if refused is not None:
                            raise refused
                        return other.id
                    raise UserError(f"{reuse_run} is already in the queue as {other.id} ({other.state})")
                if holder is not None:
                    raise Busy(reuse_run, holder, "wait for it or stop it first (or queue it to start when it is "
                                                  "free: genwb queue add RUN --wait)")
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
            self.changed(job)
        return job.id

    # -- commands --------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Stop a job for good (a running one within one training step, after a checkpoint; an
        evaluation at its next batch)."""
        self._command("cancel", job_id)

    def pause(self, job_id: str) -> None:
        """A running job checkpoints and waits as paused (an evaluation stops, and starts again from
        its beginning when resumed); a queued one is held back."""
        self._command("pause", job_id)

    def resume(self, job_id: str, overrides=()) -> None:
        """A paused, failed or cancelled job goes back into the queue; it carries on from its run
        folder's last checkpoint. ``overrides`` (e.g. a lower train.lr after a NaN) change its
        config.toml first, checked against the checkpoint when it starts."""
        self._command("resume", job_id, overrides=[str(o) for o in overrides])

    def move(self, job_id: str, position: int) -> None:
        """Put a job at ``position`` (0 = first) in the queue order."""
        if not isinstance(position, int) or position < 0:
            raise UserError(f"position {position!r}: give 0 (first) or more")
        self._command("move", job_id, position)

    def remove(self, job_id: str) -> None:
        """Take a finished (done, failed, cancelled) job off the list; its run folder stays."""
        self._command("remove", job_id)

    def _command(self, op: str, job_id: str, position: int | None = None, overrides: list[str] = ()) -> None:
        job_id = str(job_id)
        if overrides:
            from workbench.config import apply_override

            for item in overrides:
                apply_override({}, item)  # the form section.key=value; the values are checked when it starts
        with self.transaction():
            refused = self._command_locked(op, job_id, position, overrides)
        if refused is not None:
            raise refused

    def _command_locked(self, op: str, job_id: str, position: int | None = None,
                        overrides: list[str] = ()) -> UserError | None:
        """Apply (as the owner, or with no owner alive) or leave for the owner a numbered command;
        returns the UserError that refuses it, if one does, once what came before it is saved."""
        self._get(job_id)
        self._seq += 1
        command = Command(self._seq, op, job_id, position, list(overrides), time.time())
        try:
            if self.owner:
                self._applied = command.seq
                self._apply(command)
            elif self.owner_info() is None:  # nobody applies them: every pending command first, in order
                for pending in self._pending:
                    with contextlib.suppress(UserError):
                        self._apply(pending)
                self._pending = []
                self._applied = command.seq
                self._apply(command)
            else:  # the owner applies it within POLL_S
                self._check(op, self._get(job_id))
                self._pending.append(command)
                return None
        except UserError as e:
            return e
        finally:
            self._reconcile()
        return None

    @staticmethod
    def _check(op: str, job: Job) -> None:
        if op in ("cancel", "pause") and job.state in FINISHED:
            raise UserError(f"job {job.id} has already {'finished' if job.state == 'done' else job.state}")
        if op == "pause" and job.state == "paused":
            raise UserError(f"job {job.id} is already paused")
        if op == "resume" and job.state not in RESUMABLE:
            raise UserError(f"job {job.id} is {job.state}; only paused, failed or cancelled jobs resume")
        if op == "remove" and job.state not in FINISHED:
            raise UserError(f"job {job.id} is {job.state}; cancel it before removing it")

    def _apply(self, command: Command) -> None:
        """One command on the jobs in memory (the caller holds the locks)."""
        op, job = command.op, self._get(command.id)
        self._check(op, job)
        if op == "move":
            self._order.remove(job.id)
            self._order.insert(min(command.position or 0, len(self._order)), job.id)
        elif op == "remove":
            self._order.remove(job.id)
            del self._jobs[job.id]
            self._removed.add(job.id)
            self._publish(job.id, JobRemoved(job.id))
            return
        elif op in ("cancel", "pause"):
            if job.active:
                job.stopping = op
                if job.trainer is not None:
                    job.trainer.stop_state = STOP_STATES[op]
                job.cancel.set()
                self.changed(job)
                return  # the worker records the new state once the trainer has stopped
            job.state = "paused" if op == "pause" else "cancelled"
            job.ended = time.time() if op == "cancel" else job.ended
            self._sync_status(job)
        elif op == "resume":
            overrides = command.overrides
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
            job.state, job.error, job.stopping = "queued", None, None
            parent = self._jobs.get(job.after) if job.after is not None else None
            if parent is not None and parent.state != "done":
                job.state = "waiting"
            elif parent is not None and not job.run_dir:
                self._take_parent_run(job, parent)
            self._sync_status(job)
        self.changed(job)

    def _sync_status(self, job: Job) -> None:
        """A job the queue stops, ends or puts back in line without running it: its run folder's
        status.json says the same as the queue (unless another process writes that run now)."""
        if job.kind != "train" or not job.run_dir or job.active:
            return
        word = {"cancelled": "cancelled", "paused": "paused", "queued": "queued", "waiting": "queued"}.get(job.state)
        if word is None:
            return
        from workbench.runs import Run, writing

        with contextlib.suppress(UserError, OSError):
            run = Run(Path(job.run_dir), None)
            if not (Path(job.run_dir) / "status.json").exists():
                return
            with writing(job.run_dir, "updated", f"queue {job.id}"):
                old = run.status()
                if old.get("state") not in ("finished", "early-stopped", word):
                    run.write_status(word, old.get("step") if isinstance(old.get("step"), int) else job.step, old.get("error"))

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
                self.changed(job)

    @staticmethod
    def _take_parent_run(job: Job, parent: Job) -> None:
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
    def _ready(self, job: Job) -> bool:
        """Whether a queued job's run folder is free to write; else it waits, blocked by the holder."""
        from workbench.runs import run_holder

        who = run_holder(job.run_dir) if job.run_dir and os.path.isdir(job.run_dir) else None
        blocked = None if who is None else who.describe()
        if blocked != job.blocked:
            job.blocked = blocked
            self.changed(job, durable=True)
        return who is None

    def _worker(self, slot: Slot) -> None:
        while not self._stopping.is_set():
            try:
                self._work_one(slot)
            except Exception:  # bookkeeping went wrong (not the job: the runner catches that); keep the slot alive
                time.sleep(POLL_S)

    def _work_one(self, slot: Slot) -> None:
        """Wait for a job this slot can run, run it, record how it ended."""
        with self._cond:
            job, taken = None, []
            while not self._stopping.is_set():
                job, taken = place((self._jobs[i] for i in self._order), slot, self._slots, self._has_cpu,
                                   self._has_gpu, self._ready)
                if job is not None:
                    break
                self._cond.wait(POLL_S)
            if job is None:
                return
            if not taken:  # more GPUs than this queue has
                gpus = sum(s.gpu for s in self._slots)
                with self.transaction():
                    job.state, job.ended = "failed", time.time()
                    job.error = f"needs {job.gpus} GPUs; this machine has {gpus} visible; resume it with run.gpus={max(1, gpus)}"
                    self._reconcile()
                    self.changed(job)
                return
            for s in taken:
                s.job = job
            job.active, job.stopping, job.error, job.trainer, job.blocked = True, None, None, None, None
            job.cancel.clear()
            if len(taken) > 1:
                job.slot_device = ",".join(s.device for s in taken)
            else:
                job.slot_device = "cpu" if (job.device or "").lower() == "cpu" else slot.device
        final, error = "failed", "the queue failed to start this job; resume it"
        try:
            with self.transaction():
                job.state, job.started = "running", time.time()
                job.rate.clear()
                self.changed(job)
            final, error = jobrunners.run(self, job, slot, taken)
        finally:
            try:
                with self.transaction():
                    self._record_end(job, final, error)
            finally:
                job.active, job.trainer = False, None
                with self._cond:
                    for s in taken:
                        s.job = None
                    self._cond.notify_all()

    def _record_end(self, job: Job, final: str, error: str | None) -> None:
        job.active, job.trainer = False, None
        with self.live_lock:
            job.history = None  # only running jobs keep theirs in memory; history() reads the rest from disk
            job.phase = None
        if final == "failed":
            self._follow_move()  # a failure may be the first sign of it
        if final == "failed" and self._moved_at is not None and job.started is not None and job.started <= self._moved_at:
            final, job.stopping = "stopped", "shutdown"  # the runs folder moved under it: carry on at its new place
        if final == "failed":
            job.state, job.error = "failed", error
        elif final == "done":  # it may have finished in the very step a stop came in
            job.state = "done"
        elif final == "blocked":  # another process took its run folder first: wait for it
            job.state, job.blocked = "queued", error
        else:
            job.state = {"pause": "paused", "shutdown": "queued"}.get(job.stopping, "cancelled")
            if job.state == "queued":
                job.restarts += 1
        if job.state in FINISHED:
            job.ended = time.time()
        job.stopping = None
        self._reconcile()
        self.changed(job)

    def new_run(self, job: Job):
        """(config, run folder) of a job's first start."""
        from workbench.config import parse_config
        from workbench.runs import Run

        overrides = [f"run.threads={self.threads_per_job}"] if self.threads_per_job else []
        config = parse_config(job.config, f"job {job.id}", overrides)
        if job.after is None:
            self._prepare(config)
        run = Run.create(config, self.runs_dir)  # the folder's name made safe (runs.safe_name)
        if run.path.resolve().parent != self.runs_dir:
            raise UserError(f"run folder {run.path} would be outside {self.runs_dir}; refused")
        return config, run

    # -- background: commands from clients, heartbeat, client events, takeover ---------------------------
    def _poll_loop(self) -> None:
        beat = 0.0
        while not self._stopping.wait(POLL_S if self.owner else 0.5):
            try:
                if self.owner:
                    if time.time() - beat > HEARTBEAT_S:
                        self._lease.beat()
                        self._follow_move()
                        beat = time.time()
                    if self._dirty or self._file_changed():
                        with self.transaction():
                            pass
                else:
                    with self.lock:
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

    def _follow_move(self) -> None:
        """If the runs folder was renamed under this owner, follow it: the queue's files and the
        jobs' run folders are looked for at the new place, and running jobs, whose writes now
        fail, carry on there from their last checkpoint (see ``_record_end``)."""
        new = self._lease.current_folder()
        if new is None or new == self.runs_dir or not new.is_dir():
            return
        with self.lock:
            old, self.runs_dir = self.runs_dir, new
            self._moved_at = time.time()
            for job in self._jobs.values():
                if job.run_dir and Path(job.run_dir).parent == old:
                    job.run_dir = str(new / Path(job.run_dir).name)
                if job.active:
                    job.stopping = job.stopping or "shutdown"
                    job.cancel.set()
            self._dirty = True

    def _client_events(self) -> None:
        """A client's subscribers get JobChanged from queue.json and Step/Evaluated from metrics.jsonl."""
        for info in self.jobs():
            if self._client_seen.get(info.id) != info:
                self._client_seen[info.id] = info
                self._publish(info.id, JobChanged(info))
            if info.run_dir and info.kind == "train":
                self._rows.publish(info.id, info.run_dir, info.total, self._publish)
        for gone in set(self._client_seen) - set(self._order):
            del self._client_seen[gone]
            self._publish(gone, JobRemoved(gone))

    # -- the end ---------------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, checkpoint: bool = True) -> None:
        """Stop the workers. ``checkpoint``: running training jobs stop within one step, write a
        checkpoint and go back to queued (the next owner resumes them); a running evaluation stops
        at its next batch as cancelled (``resume`` starts it again); a stop already asked of a job
        (cancel, pause) still wins. Otherwise they are left to die with the
        process and resume from their last periodic checkpoint. ``wait``: join the workers and
        release ownership before returning."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._stopping.set()
            atexit.unregister(self.shutdown)
            for job in self._jobs.values():
                if not job.active:
                    continue
                if checkpoint:  # an evaluation is cancelled (resumable): it would start again from scratch
                    job.stopping = job.stopping or ("cancel" if job.kind == "eval" else "shutdown")
                    if job.trainer is not None:
                        job.trainer.stop_state = STOP_STATES[job.stopping]
                    job.cancel.set()
                elif job.proc is not None:  # the ranks of a multi-GPU job live in sessions of their own: stop them too
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(job.proc.pid, 15)
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
        """Wait for every worker: training jobs stop within a step, evaluations at their next batch."""
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join()

    def _release(self) -> None:
        with self.lock:
            self.final_jobs = [self._jobs[i].info() for i in self._order]
            with contextlib.suppress(OSError):
                with flocked(self._mutex_path):
                    with contextlib.suppress(UserError):
                        self._merge(read_queue(self.path, self.runs_dir))
                    try:
                        self._write()
                        self.write_error = None
                    except OSError as e:
                        self.write_error = os_error_text(e)
            self._lease.release()
            self.owner = False

    def _end_subscribers(self) -> None:
        with self.lock:
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
