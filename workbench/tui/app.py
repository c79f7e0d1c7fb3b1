"""The genwb app and its factory, shared by ``genwb`` (no sub-command) and the tests.

    app = create_app("runs")            # owns the queue's workers, or attaches to the owner's
    app.run()

The queue's events arrive on worker threads; the subscriber only posts a message (coalesced:
at most one pending message per job for training steps). The UI marks jobs dirty and a 4 Hz
timer takes one snapshot of the queue and hands it to the screens, so the UI never waits on
training and redraws at most four times a second however fast jobs log. When no event comes
(a client attached to another process's queue) the snapshot is still taken once a second.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from workbench import events as ev
from workbench.jobs import FINISHED
from workbench.runindex import MetricsTail, Series, sparkline
from workbench.tui.messages import JobsUpdated, QueueEvent
from workbench.tui.screens.confirm import ConfirmScreen

REFRESH_HZ = 4
POLL_S = 1.0  # a snapshot at least this often, events or not
SPARK_POINTS = 128
SPARK_WIDTH = 14
SPARK_READ_BYTES = 32_000_000  # a sparkline reads at most this much of a metrics file at first


def run_sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The whole run in ``width`` cells, scaled to the run after its first tenth: the first drop
    of a loss (from 540 to 120 in a few steps) would otherwise flatten the rest to one level."""
    finite = [v for v in values if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")]
    if len(finite) >= 10:
        hi = max(finite[len(finite) // 10:])
        finite = [min(v, hi) for v in finite]
    return sparkline(finite, width)


def describe_event(event) -> str | None:
    """One log line for a trainer event; None for steps and validations, which the detail
    screen's log reads from metrics.jsonl (every row, not only those that reached the UI)."""
    if isinstance(event, ev.Started):
        return (f"started at step {event.step} of {event.total_steps} on {event.device} ({event.step_mode}), "
                f"{event.num_params:,} parameters")
    if isinstance(event, ev.Evaluated) and event.split != "val":
        parts = " ".join(f"{k} {v:.4g}" for k, v in event.metrics.items() if isinstance(v, (int, float)))
        return f"step {event.step}: {event.split} {parts}{' (best)' if event.best else ''}"
    if isinstance(event, ev.Samples):
        return f"step {event.step}: samples {Path(event.path).name}"
    if isinstance(event, ev.Checkpointed):
        return f"step {event.step}: checkpoint {Path(event.path).name}"
    if isinstance(event, ev.Finished):
        return f"finished at step {event.step}: {event.reason}"
    if isinstance(event, ev.Failed):
        return f"failed at step {event.step}: {event.message}"
    if isinstance(event, str):
        return event
    return None


def quit_question(running: list, runs_dir) -> str:
    """The quit confirmation: what happens to each kind of running job."""
    train = [j.id for j in running if j.kind != "eval"]
    evals = [j.id for j in running if j.kind == "eval"]
    parts = [f"{len(running)} job(s) running. Quit?"]
    if train:
        parts.append(f"Training ({', '.join(train)}) stops at a checkpoint now and resumes the next time "
                     f"a genwb app or `genwb queue work` opens {runs_dir}.")
    if evals:
        parts.append(f"Evaluation ({', '.join(evals)}) is cancelled at its next batch; "
                     f"R on the jobs screen (or `genwb queue resume ID`) runs it again.")
    return " ".join(parts)


class GenwbApp(App):
    """Shows and drives a JobQueue; every view reads the run folders back from disk."""

    TITLE = "genwb"
    CSS = """
    Screen { layout: vertical; }
    .title-bar { height: 1; padding: 0 1; background: $boost; color: $text; }
    .hint { height: auto; color: $text-muted; padding: 0 1; }
    JobsScreen > JobTable { height: auto; max-height: 40%; min-height: 3; }
    JobsScreen.-table-only > JobTable { height: 1fr; max-height: 100%; }
    JobsScreen.-table-only > JobPanes { display: none; }
    """
    BINDINGS = [Binding("q", "quit", "Quit", priority=False), Binding("ctrl+q", "quit", "Quit", show=False),
                Binding("question_mark", "keys", "Keys", key_display="?")]

    def __init__(self, runs_dir: Path, queue, *, owns_queue: bool) -> None:
        super().__init__()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # Sliding tab underlines and scrolls redraw the screen dozens of times a second: over
            # SSH, next to training, that costs more than it shows (measured: a tab switch 2.5x slower).
            self.animation_level = "none"
        self.runs_dir = Path(runs_dir)  # as given, for the screens' titles; scanned resolved (see runs_root)
        self.queue = queue
        self.owns_queue = owns_queue
        self.jobs: list = []
        self.sparks: dict[str, str] = {}
        self._spark_due: set[str] = set()  # jobs whose sparkline is to be read again
        self._sparks_busy = False
        self._loss_tails: dict[str, tuple[MetricsTail, Series]] = {}
        self.event_log: dict[str, deque[tuple[int, int | None, str]]] = {}  # (sequence number, step, line) per job
        self._seq = 0
        self.resource_monitor = None  # a workbench.resources.ResourceMonitor for the meters (None: the real one)
        self.marked_runs: set[Path] = set()  # runs chosen (space) to overlay or evaluate
        self.devices = ["auto", "cpu"]  # completed by _probe_devices
        self._dirty: set[str] = set()
        self._pending: set[str] = set()   # jobs with a step message in flight (touched by threads)
        self._pending_lock = threading.Lock()
        self._last_poll = 0.0
        self._queue_closed = False
        self._unsubscribe = None

    # -- queue events (any thread) ---------------------------------------------------------------
    def _queue_callback(self, job_id: str, event) -> None:
        if isinstance(event, ev.Step):
            with self._pending_lock:
                if job_id in self._pending:
                    return
                self._pending.add(job_id)
        self.post_message(QueueEvent(job_id, event))

    def on_queue_event(self, message: QueueEvent) -> None:
        with self._pending_lock:
            self._pending.discard(message.job_id)
        self._dirty.add(message.job_id)
        line = describe_event(message.event)
        if line:
            self._seq += 1
            step = getattr(message.event, "step", None)
            self.event_log.setdefault(message.job_id, deque(maxlen=500)).append((self._seq, step, line))

    @property
    def event_seq(self) -> int:
        """The sequence number of the newest event line (a log view takes those up to it)."""
        return self._seq

    # -- lifecycle -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from workbench.tui.screens.jobs import JobsScreen

        self._unsubscribe = self.queue.subscribe(self._queue_callback)
        self.push_screen(JobsScreen())
        self.refresh_jobs(force=True)
        self.set_interval(1 / REFRESH_HZ, self.refresh_jobs)
        self._probe_devices()
        self._catch_hangup()

    def _catch_hangup(self) -> None:
        """A closed SSH session (SIGHUP) or a kill (SIGTERM) leaves like a confirmed quit: running
        jobs checkpoint and go back to the queue before the process ends."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._hung_up, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or Windows
                pass

    def _hung_up(self, signum: int) -> None:
        # Checkpoint first, here and now, then leave through the ordinary exit: the driver
        # (workbench.tui.driver) no longer blocks on a terminal that is gone.
        self.close_queue()
        self.exit()

    def on_terminal_gone(self, message) -> None:
        """The driver found the terminal gone (a write or read failed) before or without a SIGHUP."""
        self._hung_up(signal.SIGHUP)

    def get_driver_class(self):
        """Textual's driver for this platform; on Linux and macOS, one that survives a closed terminal."""
        driver = super().get_driver_class()
        if (driver.__module__, driver.__name__) == ("textual.drivers.linux_driver", "LinuxDriver"):
            from workbench.tui.driver import GenwbDriver

            return GenwbDriver
        return driver

    @work(thread=True, exit_on_error=False, group="devices")
    def _probe_devices(self) -> None:
        """The devices the new-job form offers; importing torch takes seconds, so not on the UI thread."""
        from workbench.tui.screens.newjob import device_choices

        self.devices = device_choices()

    def on_unmount(self) -> None:
        self.close_queue()

    def close_queue(self) -> None:
        """Stop listening; if this app opened the queue, shut it down with checkpoints (idempotent)."""
        if self._queue_closed:
            return
        self._queue_closed = True
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:  # the queue may be gone already
                pass
        if self.owns_queue:
            self.queue.shutdown(wait=True, checkpoint=True)

    def refresh_jobs(self, force: bool = False) -> None:
        now = time.monotonic()
        if not (force or self._dirty or now - self._last_poll >= POLL_S):
            return
        self._last_poll = now
        changed, self._dirty = self._dirty, set()
        try:
            jobs = self.queue.jobs()
        except Exception as e:  # a queue file being replaced, a vanished owner: try again next tick
            self.log.warning(f"queue snapshot failed: {e!r}")
            return
        previous = {j.id: j for j in self.jobs}
        for job in jobs:
            old = previous.get(job.id)
            if old != job:
                changed.add(job.id)
            if old is not None and old.state != job.state and job.state in ("done", "failed"):
                what = "evaluation" if job.kind == "eval" else "job"
                if job.state == "failed":
                    self.notify(f"{what} {job.id} ({job.name}) failed: {job.error or 'see its log'}",
                                severity="error", timeout=15)
                else:
                    self.notify(f"{what} {job.id} ({job.name}) done")
            if job.kind == "train" and (job.id in changed or job.id not in self.sparks):
                self._spark_due.add(job.id)
        self.jobs = jobs
        if self._spark_due and not self._sparks_busy:
            due, self._spark_due = [j for j in jobs if j.id in self._spark_due], set()
            self._sparks_busy = True
            self._update_sparks(due)
        if not changed and [j.id for j in jobs] == list(previous):
            return  # the same jobs as the last snapshot (a poll with no news): nothing to redraw
        for screen in self.screen_stack:
            screen.post_message(JobsUpdated(jobs, changed))

    def submit_job(self, what: str, submit: Callable[[], str], done: str) -> str | None:
        """Add a job with ``submit()``; a refusal is an error notification naming ``what``, success
        notifies ``done`` (``{id}`` is the new job's id) and refreshes the table at once."""
        try:
            job_id = submit()
        except Exception as e:  # a UserError from the queue, a run that changed meanwhile
            self.notify(f"{what}: {e}", severity="error")
            return None
        self.notify(done.replace("{id}", job_id))
        self.refresh_jobs(force=True)
        return job_id

    @property
    def runs_root(self) -> Path:
        """The runs folder, absolute: run folders found in it compare equal to the queue's."""
        return self.runs_dir.resolve()

    def active_job(self, run_dir: Path, kind: str | None = None):
        """The first unfinished job of ``run_dir`` (of ``kind``, "train" or "eval", if given), or None."""
        run_dir = Path(run_dir).resolve()
        return next((j for j in self.jobs if j.run_dir and j.state not in FINISHED and (kind is None or j.kind == kind)
                     and Path(j.run_dir).resolve() == run_dir), None)

    def evaluate_run(self, run_dir: Path, done: str, n: int | None = None) -> str | None:
        """Queue an evaluation of ``run_dir`` (see ``submit_job``), unless one is queued or running."""
        active = self.active_job(run_dir, "eval")
        if active is not None:
            self.notify(f"{Path(run_dir).name}: its evaluation is already job {active.id} ({active.state})",
                        severity="warning")
            return None
        kwargs = {} if n is None else {"n": n}
        return self.submit_job(f"evaluate {Path(run_dir).name}", lambda: self.queue.submit_eval(str(run_dir), **kwargs), done)

    @work(thread=True, exit_on_error=False, group="sparks")
    def _update_sparks(self, jobs: list) -> None:
        """Read the new rows of each job's metrics file (the whole run the first time, up to
        SPARK_READ_BYTES) off the UI thread, then hand the sparklines over."""
        try:
            sparks = {job.id: self._spark(job) for job in jobs}
        finally:
            self._sparks_busy = False
        self.call_from_thread(self._take_sparks, sparks)

    def _take_sparks(self, sparks: dict[str, str]) -> None:
        changed = {job_id for job_id, line in sparks.items() if self.sparks.get(job_id) != line}
        self.sparks.update(sparks)
        if changed:
            for screen in self.screen_stack:
                screen.post_message(JobsUpdated(self.jobs, changed))

    def _spark(self, job) -> str:
        """The job's training loss over its whole run as a sparkline (its metrics file read incrementally)."""
        if not job.run_dir:
            return ""
        path = Path(job.run_dir) / "metrics.jsonl"
        tail, series = self._loss_tails.get(job.id, (None, None))
        if tail is None or tail.path != path:
            tail, series = MetricsTail(path), Series(SPARK_POINTS)
            tail.skip_to_tail(SPARK_READ_BYTES)  # the whole run, unless it is huge
        rows = tail.read_new()
        if tail.restarted:
            series = Series(SPARK_POINTS)
        for row in rows:
            if row.get("split", "train") == "train" and isinstance(row.get("loss"), (int, float)):
                series.append(row["step"], row["loss"])
        self._loss_tails[job.id] = (tail, series)
        return run_sparkline(series.points()[1], SPARK_WIDTH)

    def job(self, job_id: str | None):
        return next((j for j in self.jobs if j.id == job_id), None)

    # -- quitting --------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        running = [j for j in self.jobs if j.state == "running"]
        if not (self.owns_queue and self.queue.owner and running):
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"checkpointing {len(running)} job(s)…", timeout=30)
                self._shutdown_then_exit()

        self.push_screen(ConfirmScreen(quit_question(running, self.runs_dir), yes="Quit", no="Stay"), answered)

    @work(thread=True, exit_on_error=False, group="shutdown")
    def _shutdown_then_exit(self) -> None:
        self.close_queue()
        self.call_from_thread(self.exit)

    # -- keys ----------------------------------------------------------------------------------------
    def action_keys(self) -> None:
        """``?``: the keys of the current screen (its focused list's, its own, the app's)."""
        from workbench.tui.screens.help import HelpScreen, screen_keys

        screen = self.screen
        if isinstance(screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(getattr(screen, "HELP_TITLE", None) or "this screen", screen_keys(screen, self)))

    # -- command palette -------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.show and binding.description:
                key = binding.key_display or binding.key.split(",")[0]
                yield SystemCommand(f"{binding.description} ({key})", f"{type(screen).__name__}: key {key}",
                                    lambda action=binding.action, s=screen: self.call_later(s.run_action, action))


def create_app(runs_dir: str | Path = "runs", *, queue=None, image_protocol: str = "auto",
               cpu_slots: int | None = None) -> GenwbApp:
    """The app on ``runs_dir``: with ``queue`` given, shows it (the caller shuts it down);
    else opens ``JobQueue(runs_dir, work=True)``: the owner of the workers if no other live
    process owns the folder, a client of that process otherwise."""
    from workbench.tui import settings

    settings.use_image_protocol(image_protocol)
    runs_dir = Path(runs_dir)
    owns = queue is None
    if queue is None:
        from workbench.errors import UserError
        from workbench.jobs import JobQueue

        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            queue = JobQueue(runs_dir, cpu_slots=cpu_slots, work=True, label="the genwb app")
        except OSError as e:
            raise UserError(f"{runs_dir}: cannot open the runs folder ({e.strerror or e}); choose another with --runs DIR") from None
    return GenwbApp(runs_dir, queue, owns_queue=owns)
