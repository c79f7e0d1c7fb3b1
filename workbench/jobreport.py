"""Progress of queue jobs for ``genwb queue work``: one rich progress bar per running job on a
terminal, plain lines prefixed with the job id when stdout is a file or a pipe (as ``genwb run``)."""
from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from workbench import events as ev
from workbench.headless import _fmt
from workbench.jobs import JobChanged, JobInfo


def job_line(info: JobInfo) -> str:
    """One line for ``genwb queue list``: id, name, state, step/total, loss, and why it failed."""
    loss = f"{info.loss:.4g}" if info.loss is not None else "-"
    what = "fid" if info.kind == "eval" else "loss"
    steps = f"{info.step}/{info.total or '?'}"
    extra = f"  after {info.after}" if info.after and info.state == "waiting" else ""
    eta = f"  eta {int(info.eta_s // 60)}:{int(info.eta_s % 60):02d}" if info.eta_s is not None else ""
    error = f"  {info.error}" if info.error else ""
    return f"{info.id:<5} {info.name:<20} {info.state:<9} {steps:>11}  {what} {loss}{eta}{extra}{error}"


class QueueReporter:
    """A queue subscriber: ``queue.subscribe(reporter)``; use it as a context manager."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self):
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def line(self, text: str) -> None:
        if self.progress:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def __call__(self, job_id: str, event) -> None:
        with self._lock:
            self._handle(job_id, event)

    def _handle(self, job_id: str, event) -> None:
        tag = f"[{job_id}]"
        if isinstance(event, JobChanged):
            info = event.info
            if info.state in ("done", "failed", "cancelled", "paused"):
                self.line(f"{tag} {info.name} {info.state}" + (f": {info.error}" if info.error else "")
                          + (f"  {info.run_dir}" if info.run_dir and info.state != "failed" else ""))
                if info.state == "failed":
                    self.failed.append(job_id)
                if self.progress and job_id in self.tasks:
                    self.progress.remove_task(self.tasks.pop(job_id))
        elif isinstance(event, ev.Started):
            self.line(f"{tag} run {event.run_dir}  device {event.device}  {event.num_params:,} parameters"
                      + (f"  resuming after step {event.step}" if event.step else ""))
            if self.progress:
                if job_id in self.tasks:
                    self.progress.remove_task(self.tasks.pop(job_id))
                self.tasks[job_id] = self.progress.add_task(f"{job_id} {event.run_dir.name}", total=event.total_steps,
                                                            completed=event.step, loss="-", speed="-")
        elif isinstance(event, ev.Step):
            if self.progress and job_id in self.tasks:
                self.progress.update(self.tasks[job_id], completed=event.step,
                                     loss=f"{event.metrics.get('loss', float('nan')):.4g}", speed=f"{event.images_per_s:,.0f}")
            elif not self.progress:
                self.line(f"{tag} step {event.step}/{event.total_steps}  {_fmt(event.metrics)}  "
                          f"lr {event.lr:.3g}  {event.images_per_s:,.0f} img/s")
        elif isinstance(event, ev.Evaluated):
            best = "  (best)" if event.best else ""
            self.line(f"{tag} {event.split} step {event.step}: nll {event.metrics['nll']:.3f} nats  "
                      f"{event.metrics['bpd']:.4f} bits/dim{best}")
        elif isinstance(event, ev.Samples):
            self.line(f"{tag} samples step {event.step}: {event.path}")
