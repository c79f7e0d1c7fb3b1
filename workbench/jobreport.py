"""Progress of queue jobs for ``genwb queue work``: one rich progress bar per running job on a
terminal, plain lines prefixed with the job id when stdout is a file or a pipe (as ``genwb run``)."""
from __future__ import annotations

import threading

from rich.console import Console

from workbench import events as ev
from workbench.headless import ProgressConsole, evaluated_line, samples_line, started_line, step_line
from workbench.jobs import JobChanged, JobInfo


def job_line(info: JobInfo) -> str:
    """One line for ``genwb queue list``: id, name, state, step/total, loss, and why it failed."""
    loss = f"{info.loss:.4g}" if info.loss is not None else "-"
    what = "fid" if info.kind == "eval" else "loss"
    steps = f"{info.step}/{info.total or '?'}"
    extra = f"  after {info.after}" if info.after and info.state == "waiting" else ""
    eta = f"  eta {int(info.eta_s // 60)}:{int(info.eta_s % 60):02d}" if info.eta_s is not None else ""
    error = f"  {info.error}" if info.error else ""
    blocked = f"  blocked by {info.blocked}" if info.blocked else ""
    phase = f"  {info.phase}" if info.phase else ""
    return f"{info.id:<5} {info.name:<20} {info.state:<9} {steps:>11}  {what} {loss}{eta}{extra}{phase}{blocked}{error}"


class QueueReporter(ProgressConsole):
    """A queue subscriber: ``queue.subscribe(reporter)``; use it as a context manager."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        super().__init__(console, live)
        self.tasks: dict[str, int] = {}
        self.failed: list[str] = []
        self._lock = threading.Lock()

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
            self.line(f"{tag} {started_line(event)}")
            if self.progress:
                if job_id in self.tasks:
                    self.progress.remove_task(self.tasks.pop(job_id))
                self.tasks[job_id] = self.add_task(f"{job_id} {event.run_dir.name}", event)
        elif isinstance(event, ev.Step):
            if self.progress and job_id in self.tasks:
                self.update_task(self.tasks[job_id], event)
            elif not self.progress:
                self.line(f"{tag} {step_line(event)}")
        elif isinstance(event, ev.Evaluated):
            self.line(f"{tag} {evaluated_line(event)}")
        elif isinstance(event, ev.Samples):
            self.line(f"{tag} {samples_line(event)}")
