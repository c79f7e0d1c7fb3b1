"""What a process that does not run a job reads of it: live figures from its run folder, its
metrics rows as trainer events, and its whole curve as a bounded history. A client of the queue
(``genwb queue list``, an app attached to ``genwb queue work``) sees every job this way, and the
owner sees its multi-GPU jobs (whose ranks run in other processes) this way too. Every read is
bounded: the last few KiB of a metrics file, or only what was appended since the last read.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Callable

from workbench import events as ev
from workbench.fileio import tail_rows
from workbench.history import History
from workbench.jobstate import Job
from workbench.runindex import MetricsTail, read_status

_NOT_METRICS = ("step", "epoch", "split", "lr", "images_per_s")


def live_from_disk(job: Job) -> None:
    """A running job's step, loss and images/s from its run folder (status.json, metrics tail)."""
    run = Path(job.run_dir)
    status = read_status(run)
    step = status.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        job.step = max(job.step, step)
    train = [r for r in tail_rows(run / "metrics.jsonl") if r.get("split") == "train"]
    if train:
        last = train[-1]
        step, loss, speed = last.get("step"), last.get("loss"), last.get("images_per_s")
        if isinstance(step, int) and not isinstance(step, bool):
            job.step = max(job.step, step)
        job.loss = loss if isinstance(loss, (int, float)) and not isinstance(loss, bool) else job.loss
        job.images_per_s = speed if isinstance(speed, (int, float)) and not isinstance(speed, bool) else None


class RowEvents:
    """Step/Evaluated events for the rows a run's metrics.jsonl gained since the last call, per job."""

    def __init__(self):
        self._tails: dict[str, MetricsTail] = {}

    def forget(self, job_id: str) -> None:
        self._tails.pop(job_id, None)

    def publish(self, job_id: str, run_dir: str, total: int, publish: Callable[[str, object], None]) -> None:
        path = Path(run_dir) / "metrics.jsonl"
        tail = self._tails.get(job_id)
        if tail is None or tail.path != path:
            tail = self._tails[job_id] = MetricsTail(path)
        for row in tail.read_new():  # a file rewritten by a resume is read again from its start
            with contextlib.suppress(KeyError, TypeError):
                metrics = {k: v for k, v in row.items() if k not in _NOT_METRICS}
                if row.get("split") == "val":
                    publish(job_id, ev.Evaluated(row["step"], "val", metrics))
                else:
                    publish(job_id, ev.Step(row["step"], total, row.get("epoch", 0), metrics,
                                            row.get("lr", 0.0), row.get("images_per_s", 0.0)))


class DiskHistories:
    """Runs' metrics.jsonl as Histories, read incrementally (only the bytes added since the last
    call; all of it again if a resume rewrote the file), for the runs a screen looked at lately."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[MetricsTail, History | None]] = {}

    def history(self, run_dir: str) -> History:
        with self._lock:  # taken out while read, so two threads never feed one History twice
            tail, history = self._runs.pop(run_dir, None) or (MetricsTail(Path(run_dir) / "metrics.jsonl"), None)
        rows = tail.read_new()
        if history is None or tail.restarted:
            history = History()
        for row in rows:
            history.add(row)
        with self._lock:
            self._runs[run_dir] = (tail, history)
            while len(self._runs) > self.keep:
                del self._runs[next(iter(self._runs))]
        return history
