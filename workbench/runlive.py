"""The live state of a run folder as a reader sees it: its state, step and writer, without torch,
without Textual, and with bounded reads however large its metrics file grows.

    live = RunLive(run_dir)
    now = live.read()            # LiveRun(state="running", step=170, holder=Holder(pid=4242, ...), ...)
    now = live.read(job)         # a job of the queue for this run: its state and step win

State: the queue's job where there is one (``job.state``, ``job.step``), else ``status.json`` as
``workbench.runs.live_state`` corrects it ("interrupted" when its process died). Step: the largest
of the job's, status.json's and the last step in the tail of ``metrics.jsonl`` (status.json is
written only at checkpoints, so it lags behind the metrics).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.lease import Holder
from workbench.runindex import MetricsTail, read_status
from workbench.runs import live_state

#: Bytes of metrics.jsonl read at most per ``read``; the first read starts this far from the end.
TAIL_BUDGET = 2 << 20


@dataclass(frozen=True)
class LiveRun:
    state: str
    step: int
    holder: Holder | None
    error: str | None = None
    job_id: str | None = None

    def writer(self) -> str:
        """Who writes the run now, in a few words ("" when nobody does)."""
        h = self.holder
        if h is None:
            return ""
        if h.here:
            return h.label or "this app"
        return f"pid {h.pid}" + (f"@{h.host}" if h.host else "")


class RunLive:
    """Reads one run's live state again and again, each time reading only new metrics rows."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.tail = MetricsTail(self.run_dir / "metrics.jsonl")
        self.tail.skip_to_tail(TAIL_BUDGET)
        self.last_step = 0
        self.rows: list[dict[str, Any]] = []  # the rows the last read found (for a log view)

    def read(self, job: Any = None) -> LiveRun:
        self.rows = self.tail.read_new(TAIL_BUDGET)
        if self.tail.restarted:
            self.last_step = 0
        for row in self.rows:
            step = row.get("step")
            if isinstance(step, int) and not isinstance(step, bool):
                self.last_step = max(self.last_step, step)
        status = read_status(self.run_dir)
        state, holder = live_state(self.run_dir, status)
        step = status.get("step") if isinstance(status.get("step"), int) else 0
        step = max(step, self.last_step)
        error = status.get("error") if isinstance(status.get("error"), str) else None
        if job is not None:
            return LiveRun(job.state, max(step, job.step or 0), holder, job.error or error, job.id)
        return LiveRun(state, step, holder, error)
