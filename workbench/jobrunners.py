"""The runners of queue jobs, each called in a slot's worker thread: a training job (a Trainer in
this thread), a multi-GPU training job (``genwb run --nproc N`` in a process group of its own)
and an evaluation job (``evaluate_run``, stopped at its next batch).

``run(queue, job, slot, taken)`` runs one job to its end and says how it ended: "done",
"stopped" (paused, cancelled or shut down: ``job.stopping`` says which), "blocked" (its run
folder is written by another process: it waits in the queue for the lease) or "failed" with a
one-line error. Faults fail the job alone and never the queue: a NaN loss, running out of memory
and a failed checkpoint write are UserErrors from the Trainer (the run folder keeps its last
good checkpoint); any other exception fails that job with its type and message.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.errors import UserError, one_line
from workbench.history import History
from workbench.jobstate import STOP_STATES, Job
from workbench.lease import Busy
from workbench.placement import Slot, visible_devices


class EvalStopped(Exception):
    """Raised from an evaluation's progress callback when its job is cancelled, paused or shut down."""


def resume_advice(queue, job: Job) -> str:
    """How a user carries on a failed queue job: the queue's command, not ``genwb run --resume``."""
    return f"genwb queue resume {job.id} --runs {shlex.quote(str(queue.runs_dir))}"


def run(queue, job: Job, slot: Slot, taken: list[Slot]) -> tuple[str, str | None]:
    """Run one job to its end in this thread; returns ("done" | "stopped" | "blocked" | "failed", error)."""
    try:
        if job.kind == "eval":
            try:
                run_eval(queue, job)
            except EvalStopped:  # nothing to keep: an evaluation starts again from its beginning
                return "stopped", None
            return "done", None
        if len(taken) > 1:
            return run_procs(queue, job, taken), None
        return run_train(queue, job), None
    except Busy as e:  # another process writes its run folder: wait for the lease, in the queue
        return "blocked", e.holder.describe() if e.holder else "another process"
    except UserError as e:
        mark_failed(job, str(e))
        return "failed", str(e)
    except MemoryError:
        message = f"out of memory at step {job.step}; lower data.batch_size and resume: {resume_advice(queue, job)}"
        mark_failed(job, message)
        return "failed", message
    except Exception as e:  # this job fails alone; the queue and its neighbours carry on
        message = f"{type(e).__name__}: {one_line(e, 200)}".rstrip(": ")
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            message = f"disk full while writing the run folder ({e}); free space, then: {resume_advice(queue, job)}"
        mark_failed(job, message)
        return "failed", message


def mark_failed(job: Job, message: str) -> None:
    """status.json says failed too (the Trainer writes it itself; other failures are written here)."""
    if job.run_dir and job.kind == "train":
        from workbench.runs import Run

        with contextlib.suppress(Exception):
            run = Run(Path(job.run_dir), None)
            if run.status().get("state") != "failed":
                run.write_status("failed", job.step, message)


def run_train(queue, job: Job) -> str:
    from workbench.runs import open_run, writing
    from workbench.train import Trainer

    label = f"job {job.id}"
    with contextlib.ExitStack() as held:
        if job.run_dir:  # the Trainer resumes from the checkpoint, or from step 0 if there is none yet
            held.enter_context(writing(job.run_dir, "trained", label))
            run = open_run(job.run_dir)
            if job.resume_overrides:  # checked against the checkpoint before config.toml is rewritten
                from workbench.config import load_config
                from workbench.runs import check_resume

                try:
                    config = load_config(run.path / "config.toml", job.resume_overrides)
                    check_resume(run, config, job.checkpoint)
                except UserError as e:  # a rejected override is dropped, so that a plain resume works
                    with queue.transaction():
                        job.resume_overrides = []
                    raise UserError(f"{e}; the overrides were dropped: resume {job.id} without them, or with others",
                                    e.exit_code) from None
                run.config = config
                run.save_config()
                with queue.transaction():
                    job.overrides, job.resume_overrides = [*job.overrides, *job.resume_overrides], []
            config = copy.deepcopy(run.config)
            if queue.threads_per_job:  # process-wide in torch: every job sets the same value
                config.run.threads = queue.threads_per_job
            resume = True
        else:
            config, run = queue.new_run(job)
            held.enter_context(writing(run.path, "trained", label))
            resume = False
            with queue.transaction():
                job.run_dir = str(run.path.resolve())
                queue.changed(job)
        trainer = Trainer(config, run, device=job.slot_device, resume=resume, cancel=job.cancel,
                          checkpoint=job.checkpoint if resume else "last", label=label,
                          resume_advice=resume_advice(queue, job))
        with queue.lock:
            job.trainer = trainer
            job.checkpoint = "last"  # once it runs, later resumes carry on from its newest state
            if job.stopping is not None:
                trainer.stop_state = STOP_STATES[job.stopping]
        job.history = History()
        trainer.subscribe(lambda event: queue.on_event(job, run, event))
        done = trainer.fit()
    return "done" if done.reason != "cancelled" else "stopped"


def run_procs(queue, job: Job, slots: list[Slot]) -> str:
    """A multi-GPU job: ``genwb run --resume RUN --nproc N`` in a process group of its own, on the
    GPUs of ``slots``; its figures come from the run folder, as a client reads them. Rank 0 takes
    the run's writer lease; a run held by another process makes the launcher exit 2 at once."""
    from workbench.launch import PARENT_ENV
    from workbench.runs import open_run, run_holder

    if job.run_dir:
        who = run_holder(job.run_dir)
        if who is not None:
            raise Busy(job.run_dir, who)
        run, which = open_run(job.run_dir), job.checkpoint
        if job.resume_overrides:  # genwb run checks them against the checkpoint; the figures change now
            from workbench.config import load_config

            config = load_config(run.path / "config.toml", job.resume_overrides)
            job.total, job.batch = config.train.max_steps, config.data.batch_size
    else:  # the run folder is made here, as for a single-GPU job; the ranks resume it from step 0
        config, run = queue.new_run(job)
        which = "last"
    device = "cuda" if slots[0].device.startswith("cuda") else slots[0].device
    cmd = [sys.executable, "-m", "workbench.cli", "run", "--resume", str(run.path), "--checkpoint", which,
           "--nproc", str(len(slots)), "--device", device]
    for item in job.resume_overrides:  # checked against the checkpoint by genwb run
        cmd += ["--set", item]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env[PARENT_ENV] = str(os.getpid())  # the launcher stops its ranks if this process dies
    if device == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = visible_devices([s.device for s in slots], os.environ.get("CUDA_VISIBLE_DEVICES"))
    with queue.transaction():
        job.run_dir = str(run.path.resolve())
        job.overrides, job.resume_overrides = [*job.overrides, *job.resume_overrides], []
        job.checkpoint = "last"
        queue.changed(job)
    log_path = run.path / "launch.log"
    queue.forget_tail(job.id)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    job.proc = proc
    signalled = False
    while True:
        try:
            rc = proc.wait(timeout=queue.poll_s)
            break
        except subprocess.TimeoutExpired:
            pass
        if job.cancel.is_set() and not signalled:  # the launcher stops every rank at a checkpoint
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            signalled = True
        queue.live_procs(job)
    job.proc = None
    queue.live_procs(job)
    status = run.status()
    if status.get("state") in ("finished", "early-stopped"):
        return "done"
    if job.stopping is not None:
        run.write_status(STOP_STATES[job.stopping], int(status.get("step") or job.step))
        return "stopped"
    if rc == 0:
        return "done"
    raise UserError(_launch_error(status, log_path, rc, len(slots)), exit_code=1)


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


def run_eval(queue, job: Job) -> None:
    """``evaluate_run`` of the job's run, holding the run's writer lease; a stop takes effect at
    the next batch of any phase (the classifier's first training included)."""
    from workbench.evaluate import evaluate_run
    from workbench.runs import writing

    params = job.eval or {}
    shown = [0.0, None]

    def on_progress(phase: str, fraction: float) -> None:  # a stop takes effect here
        if job.cancel.is_set():
            raise EvalStopped
        with queue.live_lock:
            job.progress = max(0.0, min(1.0, float(fraction)))
            job.step = int(job.total * job.progress)
            job.phase = phase
        if time.monotonic() - shown[0] > 0.5 or job.progress == 1.0 or phase != shown[1]:  # at most twice a second
            shown[0], shown[1] = time.monotonic(), phase
            queue.changed(job, durable=True)

    batch = params.get("batch_size", 500)
    with writing(job.run_dir, "evaluated", f"job {job.id}"):
        try:
            result = evaluate_run(job.run_dir, n=params.get("n", 10000), extractor=params.get("extractor", "classifier"),
                                  batch_size=batch, device=job.slot_device or "auto", progress=False,
                                  on_progress=on_progress)
        except RuntimeError as e:
            if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
                raise
            raise UserError(f"out of memory evaluating with batch size {batch}; queue it again with a "
                            f"smaller batch size (e.g. {max(1, batch // 2)})", exit_code=1) from None
    with queue.lock:
        job.progress, job.step, job.phase = 1.0, job.total, None
        job.loss = result.get("fid")
